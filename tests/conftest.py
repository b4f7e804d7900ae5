"""Shared fixtures: every runtime test runs at procs 1, 2 and 4, on uvloop and asyncio.

The README's test command runs that whole matrix. CI runs it once, and a reduced one
elsewhere (other interpreters, the pure-Python driver, the sanitizer): there
``MNSCHED_TEST_PROCS`` (say ``2``) and ``MNSCHED_TEST_LOOPS`` (say ``uvloop``) keep only
those P counts and loop kinds. A test whose point needs P counts of its own
(``at_procs``, ``matrix_procs``) keeps the ones it shares with the list, or else its
first.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import mnsched
from mnsched.sysmon import ignore_signal_handler

pytest_plugins = ["pytester"]


def _env_list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = os.environ.get(name, "")
    return tuple(v.strip() for v in value.split(",") if v.strip()) or default


LOOPS = _env_list("MNSCHED_TEST_LOOPS", ("uvloop", "asyncio"))
_KEEP_PROCS = tuple(int(p) for p in _env_list("MNSCHED_TEST_PROCS", ("1", "2", "4")))


def matrix_procs(*procs: int) -> tuple[int, ...]:
    """The P counts of procs that this run's matrix keeps (or else the first)."""
    return tuple(p for p in procs if p in _KEEP_PROCS) or procs[:1]


def matrix_loops(*loops: str) -> tuple[str, ...]:
    """The loop kinds of loops that this run's matrix keeps (or else the first)."""
    return tuple(lk for lk in loops if lk in LOOPS) or loops[:1]


def _rt_id(v: tuple[int, str]) -> str:
    return f"procs{v[0]}-{v[1]}"


@pytest.fixture(params=[(p, lk) for lk in LOOPS for p in matrix_procs(1, 2, 4)], ids=_rt_id)
def rt_params(request: pytest.FixtureRequest) -> tuple[int, str]:
    return request.param


def at_procs(*procs: int) -> pytest.MarkDecorator:
    """For a test whose point exists only at some P counts (stealing needs two Ps): run
    it at those, on both loop kinds, instead of at every count."""
    return pytest.mark.parametrize(
        "rt_params", [(p, lk) for lk in LOOPS for p in matrix_procs(*procs)], ids=_rt_id
    )


@pytest.fixture
def procs(rt_params: tuple[int, str]) -> int:
    return rt_params[0]


@pytest.fixture
def run(rt_params: tuple[int, str]) -> Callable[..., Any]:
    """mnsched.run at this test's procs and loop kind; other options (sysmon=, debug=,
    max_threads=) pass through."""
    nprocs, loop = rt_params

    def _run(main: Coroutine[Any, Any, Any], **options: Any) -> Any:
        return mnsched.run(main, procs=nprocs, loop=loop, **options)

    return _run


@pytest.fixture
def runtime(rt_params: tuple[int, str]):
    """A started Runtime at this test's procs and loop kind, closed afterwards."""
    nprocs, loop = rt_params
    rt = mnsched.Runtime(procs=nprocs, loop=loop).start()
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture(autouse=True)
def timeout_alarm_wakes_nobody():
    """pytest-timeout's SIGALRM handler (installed before each test) is a signal handler
    the deadlock detector would count as a possible waker: tell it that it is not."""
    handler = signal.getsignal(signal.SIGALRM)
    if callable(handler):
        ignore_signal_handler(handler)


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Nothing a test starts may outlive it: every P and M thread is joined."""
    before = {t.ident for t in threading.enumerate()}
    yield
    leaked = [
        t for t in threading.enumerate() if t.ident not in before and t.name.startswith("mnsched")
    ]
    assert not leaked, f"threads leaked: {leaked}"


# -- waiting and burning: the one helper for each --------------------------------------


async def settle(n: int = 50) -> None:
    """From a goroutine: let every runnable goroutine run for a while (n yields). For
    asserting that something did *not* happen; to wait for something, use wait_until."""
    for _ in range(n):
        await mnsched.gosched()


def wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until pred() holds, for state that has no event to wait on (bounded: fails
    after timeout seconds). From plain threads: it blocks."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.001)


def burn(seconds: float) -> None:
    """Hold the CPU (and the GIL, between switches) for seconds, never yielding."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def burn_until(pred: Callable[[], bool], timeout: float = 20.0) -> None:
    """Hold the CPU, never yielding, until pred() holds; fail after timeout seconds.
    A hog whose end depends on other goroutines' progress proves that they progressed
    while it ran, however slow the machine."""
    deadline = time.perf_counter() + timeout
    while not pred():
        if time.perf_counter() > deadline:
            raise AssertionError(f"condition not met within {timeout} s while burning")


async def ticker(every: float, ticks: list[float], stop: threading.Event) -> None:
    """A goroutine noting the time every ``every`` s (mnsched.sleep) until ``stop``: it
    shows whether goroutines kept running beside something (a hog, a big tree)."""
    while not stop.is_set():
        await mnsched.sleep(every)
        ticks.append(time.monotonic())


def default_sigint() -> None:
    """preexec_fn for a child that a test sends SIGINT to: a shell starts background jobs
    with SIGINT ignored, and a child inherits that (Python then installs no
    KeyboardInterrupt handler); a test of Ctrl-C needs the default, as at a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
