"""sigqueue: a Python signal handler that interrupts mnsched's own code is queued and run
at a safe point; one that interrupts the user's code runs at once. End to end (a SIGTERM
handler raising SystemExit while P0 is inside a channel operation) in test_signals.py."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from types import SimpleNamespace
from typing import Any

import pytest

import mnsched
from conftest import matrix_loops
from mnsched.sigqueue import SignalGuard, interrupted_in_driver

MNSCHED_FILE = mnsched.chan.__file__
STDLIB_FILE = asyncio.base_events.__file__
THREADING_FILE = threading.__file__


def chain(*where: tuple[str, str]) -> Any:
    """A frame chain as interrupted_in_driver walks it (f_code, f_back), innermost
    first: a thread's stack at chosen places."""
    frame = None
    for file, name in reversed(where):
        code = SimpleNamespace(co_filename=file, co_name=name)
        frame = SimpleNamespace(f_code=code, f_back=frame)
    return frame


@pytest.mark.parametrize(
    "where, inside",
    [
        ([(__file__, "user")], False),
        ([(MNSCHED_FILE, "recv"), (__file__, "user")], True),
        # the standard library decides nothing: whoever called it does
        ([(STDLIB_FILE, "call_soon"), (MNSCHED_FILE, "goready"), (__file__, "user")], True),
        ([(STDLIB_FILE, "call_soon"), (__file__, "user"), (MNSCHED_FILE, "step")], False),
        ([(STDLIB_FILE, "_run_once"), (STDLIB_FILE, "run_forever")], False),
        # joining a thread holds no lock of mnsched's
        ([(THREADING_FILE, "join"), (MNSCHED_FILE, "_join")], False),
        ([(THREADING_FILE, "wait"), (MNSCHED_FILE, "close")], True),
        ([("<frozen importlib._bootstrap>", "_find_and_load"), (MNSCHED_FILE, "go")], True),
    ],
)
def test_where_a_signal_interrupted_the_thread(where, inside):
    assert interrupted_in_driver(chain(*where)) is inside


def test_real_frames():
    coro = mnsched.Chan()._recv()  # a frame of mnsched's code, not started
    try:
        assert interrupted_in_driver(coro.cr_frame)
    finally:
        coro.close()
    assert not interrupted_in_driver(sys._getframe())
    assert not interrupted_in_driver(None)


@pytest.fixture
def usr1():
    """SIGUSR1's handler records the signals it gets (and may do more)."""
    got: list[int] = []
    also: list[Any] = []

    def handler(signum: int, frame: object) -> None:
        got.append(signum)
        for f in also:
            f()

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        yield handler, got, also
    finally:
        signal.signal(signal.SIGUSR1, old)


DRIVER_FRAME = chain((MNSCHED_FILE, "recv"))
USER_FRAME = chain((__file__, "main"))


@pytest.mark.parametrize("kind", matrix_loops("uvloop", "asyncio"))
def test_under_run_a_handler_in_the_driver_waits_for_p0s_loop(usr1, kind):
    handler, got, also = usr1

    async def main() -> None:
        guarded = signal.getsignal(signal.SIGUSR1)
        assert guarded is not handler and guarded.__wrapped__ is handler  # type: ignore[union-attr]
        guarded(signal.SIGUSR1, USER_FRAME)  # type: ignore[operator, arg-type]
        assert got == [signal.SIGUSR1]  # in the user's code: at once
        called = mnsched.Chan[None]()
        also.append(called.close)
        guarded(signal.SIGUSR1, DRIVER_FRAME)  # type: ignore[operator, arg-type]
        assert got == [signal.SIGUSR1]  # queued
        _, ok = await called.recv_ok()  # the handler ran, on P0's loop
        assert not ok and got == [signal.SIGUSR1] * 2

    mnsched.run(main(), procs=2, loop=kind)
    assert signal.getsignal(signal.SIGUSR1) is handler  # put back


def test_a_second_signal_while_one_is_queued_delivers_both(usr1):
    _, got, _ = usr1

    async def main() -> None:
        guarded: Any = signal.getsignal(signal.SIGUSR1)
        guarded(signal.SIGUSR1, DRIVER_FRAME)
        assert got == []
        guarded(signal.SIGUSR1, DRIVER_FRAME)
        assert got == [signal.SIGUSR1] * 2

    mnsched.run(main(), procs=1)


def _unexpected(exc: BaseException, queued: bool) -> None:
    raise AssertionError(f"nothing was delivered on a loop, yet {exc!r}")


def test_a_signal_queued_when_the_loop_is_gone_is_raised_by_restore(usr1):
    handler, got, also = usr1
    loop = asyncio.new_event_loop()
    loop.close()
    guard = SignalGuard(loop, _unexpected)
    guard.install()
    guarded: Any = signal.getsignal(signal.SIGUSR1)

    def exit_() -> None:
        raise SystemExit(143)

    also.append(exit_)
    guarded(signal.SIGUSR1, DRIVER_FRAME)
    assert got == []
    with pytest.raises(SystemExit):
        guard.restore()
    assert got == [signal.SIGUSR1]
    assert signal.getsignal(signal.SIGUSR1) is handler


def test_restore_leaves_a_handler_installed_meanwhile(usr1):
    loop = asyncio.new_event_loop()
    try:
        guard = SignalGuard(loop, _unexpected)
        guard.install()

        def theirs(signum: int, frame: object) -> None:
            pass

        signal.signal(signal.SIGUSR1, theirs)
        guard.restore()
        assert signal.getsignal(signal.SIGUSR1) is theirs
    finally:
        loop.close()


def test_a_real_signal_in_the_users_code_is_handled_there(usr1):
    _, got, _ = usr1

    async def main() -> None:
        signal.raise_signal(signal.SIGUSR1)  # handled before it returns
        assert got == [signal.SIGUSR1]

    mnsched.run(main(), procs=1)
