"""Shared fixtures: every runtime test runs at procs 1, 2 and 4, on uvloop and asyncio."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import mnsched

pytest_plugins = ["pytester"]

PROCS = (1, 2, 4)
LOOPS = ("uvloop", "asyncio")


def _rt_id(v: tuple[int, str]) -> str:
    return f"procs{v[0]}-{v[1]}"


@pytest.fixture(params=[(p, lk) for lk in LOOPS for p in PROCS], ids=_rt_id)
def rt_params(request: pytest.FixtureRequest) -> tuple[int, str]:
    return request.param


def at_procs(*procs: int) -> pytest.MarkDecorator:
    """For a test whose point exists only at some P counts (stealing needs two Ps): run
    it at those, on both loop kinds, instead of at every count."""
    return pytest.mark.parametrize("rt_params", [(p, lk) for lk in LOOPS for p in procs],
                                   ids=_rt_id)


@pytest.fixture
def procs(rt_params: tuple[int, str]) -> int:
    return rt_params[0]


@pytest.fixture
def run(rt_params: tuple[int, str]) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """mnsched.run at this test's procs and loop kind."""
    nprocs, loop = rt_params

    def _run(main: Coroutine[Any, Any, Any]) -> Any:
        return mnsched.run(main, procs=nprocs, loop=loop)

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
def no_leaked_threads():
    """Nothing a test starts may outlive it: every P and M thread is joined."""
    before = {t.ident for t in threading.enumerate()}
    yield
    leaked = [t for t in threading.enumerate()
              if t.ident not in before and t.name.startswith("mnsched")]
    assert not leaked, f"threads leaked: {leaked}"


async def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition from a goroutine, bounded: for state that has no event to await."""
    loop_deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > loop_deadline:
            raise AssertionError("condition not met within timeout")
        await mnsched.sleep(0.001)


async def ticker(every: float, ticks: list[float], stop: threading.Event) -> None:
    """A goroutine noting the time every ``every`` s (mnsched.sleep) until ``stop``: it
    shows whether goroutines kept running beside something (a hog, a big tree)."""
    while not stop.is_set():
        await mnsched.sleep(every)
        ticks.append(time.monotonic())
