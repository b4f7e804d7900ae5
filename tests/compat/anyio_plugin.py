"""A pytest plugin for anyio's own test suite: run every async test and fixture body
as a goroutine (see goroutines.py), and write each test's outcome as JSON to
``$MNSCHED_COMPAT_OUT``. Used by run.py: ``pytest -p anyio_plugin`` in anyio's sdist."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

import goroutines
import mnsched
from mnsched.aio import call_on_loop, complete_future

_outcomes: dict[str, str] = {}
_details: dict[str, str] = {}
_start = time.monotonic()


def pytest_configure(config: pytest.Config) -> None:
    if goroutines.MODE == "plain":
        return
    from anyio._backends._asyncio import TestRunner

    TestRunner._call_in_runner_task = _call_in_runner_goroutine  # type: ignore[method-assign]
    goroutines.install_runtime_per_loop()


async def _call_in_runner_goroutine(
    self: Any, func: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> Any:
    """anyio runs every fixture and test of a runner in one task (a fixture's task
    group spans its setup and teardown): here that task is a goroutine, fed through a
    channel (which, unlike anyio's memory stream, may cross Ps)."""
    requests = getattr(self, "_mnsched_requests", None)
    if requests is None:
        requests = self._mnsched_requests = mnsched.Chan()
        goroutines.spawn_soon(_runner_goroutine(requests))
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    await requests.send((func(*args, **kwargs), future))
    return await future


async def _runner_goroutine(requests: mnsched.Chan[Any]) -> None:
    # As anyio's _run_tests_and_fixtures, with futures completed from any P's thread.
    from _pytest.outcomes import OutcomeException

    async for coro, future in requests:
        try:
            retval = await coro
        except asyncio.CancelledError:
            call_on_loop(future.get_loop(), future.cancel)
            raise
        except BaseException as exc:
            complete_future(future, exc=exc)
            if not isinstance(exc, (Exception, OutcomeException)):
                raise
        else:
            complete_future(future, retval)


_MAIN_THREAD = "needs the main thread (signal handlers)"
# Tests that cannot run in a body that starts on another P, and why. That P runs on
# another thread, where Python refuses signal handlers; and on another loop, where
# anyio's lookup of its root task (the task run_until_complete runs, on the test's loop)
# finds the long-lived runner instead, which holds the test's context in its callbacks.
NOT_ON_ANOTHER_P = {
    "tests/test_signals.py::": _MAIN_THREAD,
    "tests/test_from_thread.py::TestBlockingPortal::test_call_corofunc": _MAIN_THREAD,
    "tests/test_from_thread.py::TestBlockingPortal::test_call_non_corofunc": _MAIN_THREAD,
    "tests/test_from_thread.py::TestRunAsyncFromThread::": _MAIN_THREAD,
    "tests/test_to_thread.py::test_run_sync_worker_cyclic_references": (
        "counts references to the test's context, which anyio's root task holds"
    ),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if goroutines.MODE != "other":
        return
    for item in items:
        for prefix, why in NOT_ON_ANOTHER_P.items():
            if item.nodeid.startswith(prefix):
                _outcomes[item.nodeid] = "n/a"
                item.add_marker(pytest.mark.skip(reason=f"mnsched compat: {why}"))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # A test's outcome: the first failing phase, else its call phase (or a skip).
    if _outcomes.get(report.nodeid) == "n/a":
        return
    if report.when == "call" or report.outcome != "passed":
        prev = _outcomes.get(report.nodeid)
        if prev is None or prev == "passed":
            outcome = report.outcome
            if hasattr(report, "wasxfail"):
                outcome = "xfail" if report.skipped else "xpass"
            if report.when != "call" and report.failed:
                outcome = f"error({report.when})"
            _outcomes[report.nodeid] = outcome
            if report.failed:
                _details[report.nodeid] = report.longreprtext[-3000:]


def pytest_sessionfinish(session: pytest.Session) -> None:
    out = os.environ.get("MNSCHED_COMPAT_OUT")
    if out:
        with open(out, "w") as f:
            json.dump(
                {"outcomes": _outcomes, "details": _details, "seconds": time.monotonic() - _start},
                f,
                indent=0,
            )
