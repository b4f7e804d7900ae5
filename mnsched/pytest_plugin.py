"""pytest plugin (entry point ``pytest11: mnsched``): async tests as goroutines.

- ``@pytest.mark.mnsched`` (or ``mnsched(procs=2, loop="asyncio")``) on an ``async def``
  test runs it as the main goroutine of ``mnsched.run``: a fresh runtime per test, every
  goroutine cancelled and every thread joined when it returns.
- the ``mnsched_runtime`` fixture is a started ``mnsched.Runtime`` (procs and loop from the
  test's ``mnsched`` marker if it has one), closed after the test.

It coexists with pytest-asyncio in strict and auto modes: a marked test is turned into a
plain function at collection, before pytest-asyncio looks for coroutine functions, so
only one of the two runs it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from typing import Any

import pytest

import mnsched

MARKER = "mnsched"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(procs=None, loop='uvloop'): run this async test as the main "
        "goroutine of mnsched.run(procs=..., loop=...)",
    )


def _options(mark: pytest.Mark) -> dict[str, Any]:
    """procs and loop from a ``mnsched`` marker (procs may be given positionally)."""
    kwargs = dict(mark.kwargs)
    if mark.args:
        kwargs.setdefault("procs", mark.args[0])
    unknown = set(kwargs) - {"procs", "loop"}
    if unknown:
        raise pytest.UsageError(
            f"@pytest.mark.{MARKER} takes procs= and loop=, not {sorted(unknown)}"
        )
    return {"procs": kwargs.get("procs"), "loop": kwargs.get("loop", "uvloop")}


def _marker_of(collector: pytest.Collector, obj: object) -> pytest.Mark | None:
    for mark in getattr(obj, "pytestmark", []):
        if mark.name == MARKER:
            return mark  # type: ignore[no-any-return]
    return collector.get_closest_marker(MARKER)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Any:
    if not isinstance(collector, pytest.Module) or not inspect.iscoroutinefunction(obj):
        return None
    if not collector.istestfunction(obj, name):
        return None
    mark = _marker_of(collector, obj)
    if mark is None:
        return None
    opts = _options(mark)
    test = obj

    @functools.wraps(test)
    def run_as_goroutine(*args: Any, **kwargs: Any) -> Any:
        return mnsched.run(test(*args, **kwargs), procs=opts["procs"], loop=opts["loop"])

    items = list(collector._genfunctions(name, run_as_goroutine))
    for item in items:
        item.obj = run_as_goroutine  # items look their function up by name otherwise
    return items


@pytest.fixture
def mnsched_runtime(request: pytest.FixtureRequest) -> Iterator[mnsched.Runtime]:
    """A started mnsched.Runtime, closed after the test."""
    mark = request.node.get_closest_marker(MARKER)
    opts: dict[str, Any] = _options(mark) if mark is not None else {"procs": None, "loop": "uvloop"}
    with mnsched.Runtime(procs=opts["procs"], loop=str(opts["loop"])) as rt:
        yield rt
