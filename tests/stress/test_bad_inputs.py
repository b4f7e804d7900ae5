"""Bad input to every entry point gives a clear error naming the fix, raised to the
caller, and leaves the runtime usable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

import mnsched


async def one() -> int:
    return 1


def _closed_chan() -> mnsched.Chan[int]:
    ch: mnsched.Chan[int] = mnsched.Chan()
    ch.close()
    return ch


SYNC_CASES: dict[str, tuple[Callable[[], Any], type[BaseException], str]] = {
    "go(42)": (lambda: mnsched.go(42), TypeError, "needs a coroutine, not int"),
    "Chan(-1)": (lambda: mnsched.Chan(-1), ValueError, "capacity must be an int >= 0"),
    "gomaxprocs(10**6)": (lambda: mnsched.gomaxprocs(10**6), ValueError, "limit of 256 Ps"),
    "gomaxprocs('2')": (lambda: mnsched.gomaxprocs("2"), TypeError, "must be an int >= 1"),
    "WaitGroup.add(-1)": (lambda: mnsched.WaitGroup().add(-1), ValueError, "negative"),
    "Mutex.unlock()": (lambda: mnsched.Mutex().unlock(), RuntimeError, "unlock of unlocked"),
    "close twice": (lambda: _closed_chan().close(), mnsched.ChannelClosed, "close of closed"),
    "Recv(42)": (lambda: mnsched.Recv(42), TypeError, "Recv needs a Chan"),
    "after('x')": (lambda: mnsched.after("x"), TypeError, "needs a number of seconds"),
    "tick(0)": (lambda: mnsched.tick(0), ValueError, "period must be > 0"),
    "Ticker('x')": (lambda: mnsched.Ticker("x"), TypeError, "needs a number of seconds"),
}

ASYNC_CASES: dict[str, tuple[Callable[[], Any], type[BaseException], str]] = {
    "sleep('x')": (lambda: mnsched.sleep("x"), TypeError, "needs a number of seconds"),
    "sleep(nan)": (lambda: mnsched.sleep(float("nan")), TypeError, "needs a number"),
    "syscall(42)": (lambda: mnsched.syscall(42), TypeError, "needs a callable"),
    "select(42)": (lambda: mnsched.select(42), TypeError, "takes Recv and Send cases"),
    "send on closed": (lambda: _closed_chan().send(1), mnsched.ChannelClosed, "send on"),
    "a failing syscall": (lambda: mnsched.syscall(time.sleep, -1), ValueError, "non-negative"),
    "Once.do(42)": (lambda: mnsched.Once().do(42), TypeError, "needs a callable"),
    "go(started coroutine)": (None, RuntimeError, "already started"),  # below
}


async def _go_a_started_coroutine() -> None:
    ch: mnsched.Chan[int] = mnsched.Chan()
    coro = ch.recv()
    g = mnsched.go(coro)
    while not g.wait_reason:
        await mnsched.gosched()
    try:
        mnsched.go(coro)
    finally:
        g.cancel()


@pytest.mark.parametrize("case", [*SYNC_CASES, *ASYNC_CASES])
def test_bad_input_raises_clearly_and_the_runtime_goes_on(run, case):
    async def main() -> int:
        if case in SYNC_CASES:
            fn, exc, match = SYNC_CASES[case]
            with pytest.raises(exc, match=match):
                fn()
        else:
            fn, exc, match = ASYNC_CASES[case]
            with pytest.raises(exc, match=match):
                await (fn() if fn is not None else _go_a_started_coroutine())
        # Usable afterwards: goroutines spawn, run on any P, and finish.
        return sum([await g for g in [mnsched.go(one()) for _ in range(50)]])

    assert run(main()) == 50


@pytest.mark.parametrize(
    ("options", "exc", "match"),
    [
        ({"procs": 0}, ValueError, "procs must be >= 1"),
        ({"procs": "2"}, TypeError, "procs must be an int"),
        ({"loop": "x"}, ValueError, "loop must be one of"),
    ],
)
def test_bad_runtime_options(options, exc, match):
    with pytest.raises(exc, match=match):
        mnsched.Runtime(**options)
    with pytest.raises(exc, match=match):
        mnsched.run(one(), **options)
    assert mnsched.run(one(), procs=2) == 1  # and the next runtime is fine


def test_run_of_a_non_coroutine():
    with pytest.raises(TypeError, match="needs a coroutine"):
        mnsched.run(42)  # type: ignore[arg-type]


def test_bad_procs_in_the_environment(monkeypatch):
    monkeypatch.setenv("MNSCHED_PROCS", "many")
    with pytest.raises(ValueError, match="MNSCHED_PROCS"):
        mnsched.Runtime()


@pytest.mark.parametrize(
    ("env", "options"),
    [({}, {"procs": 10**6}), ({"MNSCHED_PROCS": "500"}, {})],
    ids=["procs=", "MNSCHED_PROCS"],
)
def test_absurd_procs_are_refused_with_the_limit(monkeypatch, env, options):
    # gomaxprocs(10**6) spent minutes starting threads; 500 Ps took 1.9 s and 190 MB.
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match="limit of 256 Ps"):
        mnsched.Runtime(**options)


def test_go_of_the_function_itself_says_what_to_write(run):
    # go(worker) is @go's call, which makes a spawner: as a statement nothing ran, and
    # awaited it failed with an unrelated TypeError.
    async def worker() -> int:
        return 1

    async def main() -> list[str]:
        said = []
        try:
            mnsched.go(worker)
        except TypeError as e:
            said.append(str(e))
        try:
            await mnsched.go(worker)
        except TypeError as e:
            said.append(str(e))
        spawn = mnsched.go(worker)  # kept: the decorator's use, which works
        said.append(str(await spawn()))
        return said

    said = run(main())
    assert said[2] == "1" and len(said) == 3
    for s in said[:2]:
        assert "go(test_go_of_the_function_itself_says_what_to_write.<locals>.worker(...))" in s


@pytest.mark.parametrize("debug", [True, False, None, "", "hogs"])
def test_run_takes_asyncio_runs_debug_flag(debug):
    # run(main(), debug=True), asyncio.run's habit, crashed with an AttributeError.
    async def main() -> bool:
        return asyncio.get_running_loop().get_debug()

    assert mnsched.run(main(), procs=2, debug=debug) is (debug is True)
    with pytest.raises(TypeError, match="debug must be a string of options"):
        mnsched.run(main(), debug=1)  # type: ignore[arg-type]
