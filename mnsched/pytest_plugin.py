"""pytest plugin (entry point ``pytest11: mnsched``): async tests as goroutines.

- ``@pytest.mark.mnsched`` (or ``mnsched(procs=2, loop="asyncio")``) on an ``async def``
  test, on its class or module (``pytestmark``), runs it as a goroutine of a fresh
  runtime whose P0 is pytest's thread, as ``mnsched.run`` runs main: pinned to P0, every
  goroutine cancelled and every thread joined once the test's teardown is done.
- Function-scoped async fixtures of such a test run as goroutines of that same runtime,
  on P0 before the test (so loop-bound objects they make are usable from the test
  body), and their teardown after it.
- the ``mnsched_runtime`` fixture is that runtime in a marked async test, and in any
  other test a started ``mnsched.Runtime`` (procs and loop from the nearest ``mnsched``
  marker), closed after the test.
- a test that starts the default runtime (``mnsched.go`` outside any other) gets it
  closed afterwards, so later tests see no stray P threads.

Tests are run in ``pytest_pyfunc_call``. To coexist with pytest-asyncio in auto mode
(which claims every coroutine function at collection), a marked test's function is
swapped at collection for a placeholder that carries it; the pyfunc hook finds it there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

import mnsched
from mnsched.errors import InternalError
from mnsched.runtime import CallerP0, Runtime, started_default_runtime

MARKER = "mnsched"
_TEST_ATTR = "__mnsched_test__"  # on the placeholder: the async test function it stands for
_HOST = pytest.StashKey[CallerP0]()  # the runtime of a marked async test, once started
_DEFAULT_BEFORE = pytest.StashKey[Runtime | None]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(procs=None, loop='uvloop'): run this async test (and its async "
        "fixtures) as goroutines of a fresh mnsched runtime",
    )


def _options(node: pytest.Item) -> dict[str, Any]:
    """procs and loop from the nearest ``mnsched`` marker (procs may be positional)."""
    mark = node.get_closest_marker(MARKER)
    if mark is None:
        return {"procs": None, "loop": "uvloop"}
    kwargs = dict(mark.kwargs)
    if mark.args:
        kwargs.setdefault("procs", mark.args[0])
    unknown = set(kwargs) - {"procs", "loop"}
    if unknown:
        raise pytest.UsageError(
            f"@pytest.mark.{MARKER} takes procs= and loop=, not {sorted(unknown)}"
        )
    return {"procs": kwargs.get("procs"), "loop": kwargs.get("loop", "uvloop")}


def _placeholder(test: Callable[..., Any]) -> Callable[..., Any]:
    def placeholder(*args: Any, **kwargs: Any) -> Any:
        raise InternalError(f"{test.__qualname__} was called past mnsched's pytest hook")

    setattr(placeholder, _TEST_ATTR, test)
    placeholder.__name__ = test.__name__
    placeholder.__qualname__ = test.__qualname__
    return placeholder


@pytest.hookimpl(trylast=True, hookwrapper=True)  # innermost: before pytest-asyncio's
def pytest_pycollect_makeitem(
    collector: pytest.Collector, name: str, obj: object
) -> Generator[None, Any, None]:
    outcome = yield
    if not inspect.iscoroutinefunction(obj):
        return
    result = outcome.get_result()
    for item in result if isinstance(result, list) else [result]:
        if isinstance(item, pytest.Function) and item.get_closest_marker(MARKER) is not None:
            item.obj = _placeholder(obj)


def _marked_test(item: pytest.Item) -> Callable[..., Any] | None:
    """The async test function of a marked item (bound to its instance), else None."""
    if not isinstance(item, pytest.Function):
        return None
    test: Callable[..., Any] | None = getattr(item.obj, _TEST_ATTR, None)
    if test is not None and item.instance is not None:
        test = test.__get__(item.instance)
    return test


def _host(item: pytest.Item) -> CallerP0:
    """The marked test's runtime, started on first use (by a fixture or the test)."""
    host = item.stash.get(_HOST, None)
    if host is None:
        opts = _options(item)
        host = item.stash[_HOST] = CallerP0(Runtime(opts["procs"], loop=str(opts["loop"])))
    return host


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    test = _marked_test(pyfuncitem)
    if test is None:
        return None
    params = inspect.signature(test).parameters
    kwargs = {k: v for k, v in pyfuncitem.funcargs.items() if k in params}
    host = _host(pyfuncitem)
    host.outcome(host.run_pinned(test(**kwargs)))  # (a Deadlock is the test's failure)
    return True


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, None]:
    func: Any
    # Function-scoped ones only (request.node is the test then): each marked test has a
    # runtime of its own. pytest reports wider async fixtures that no plugin handles.
    original = func = fixturedef.func
    is_gen = inspect.isasyncgenfunction(func)
    if not (is_gen or inspect.iscoroutinefunction(func)) or _marked_test(request.node) is None:
        yield
        return
    item = request.node
    instance = getattr(request, "instance", None)
    if instance is not None and hasattr(func, "__func__"):
        func = func.__func__.__get__(instance)  # as pytest binds fixture methods

    def run_coroutine(**kwargs: Any) -> Any:
        host = _host(item)
        return host.result(host.run_pinned(func(**kwargs)))

    def run_generator(**kwargs: Any) -> Iterator[Any]:
        host = _host(item)
        agen = func(**kwargs)
        yield host.result(host.run_pinned(agen.__anext__()))
        host.result(host.run_pinned(_finish(agen, fixturedef.argname)))

    fixturedef.func = run_generator if is_gen else run_coroutine  # type: ignore[misc]
    try:
        yield
    finally:
        fixturedef.func = original  # type: ignore[misc]


async def _finish(agen: Any, name: str) -> None:
    try:
        await agen.__anext__()
    except StopAsyncIteration:
        return
    await agen.aclose()
    raise RuntimeError(f"async fixture {name!r} yielded more than once")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, None]:
    item.stash[_DEFAULT_BEFORE] = started_default_runtime()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, Any, None]:
    yield  # the fixtures' teardown, async ones on the test's runtime
    host = item.stash.get(_HOST, None)
    default = started_default_runtime()
    if default is not None and default is not item.stash.get(_DEFAULT_BEFORE, None):
        default.close()
    if host is not None:
        del item.stash[_HOST]
        host.close()


@pytest.fixture
def mnsched_runtime(request: pytest.FixtureRequest) -> Iterator[mnsched.Runtime]:
    """The marked async test's runtime; in other tests a started Runtime, closed after."""
    if _marked_test(request.node) is not None:
        yield _host(request.node).rt
        return
    opts = _options(request.node)
    with mnsched.Runtime(procs=opts["procs"], loop=str(opts["loop"])) as rt:
        yield rt
