"""sigqueue: Python signal handlers while the main thread drives P0 (``mnsched.run``).

A Python signal handler runs on the main thread between two bytecodes of whatever that
thread was running. Under ``run`` that thread is P0's, and much of the time it is inside
mnsched: holding a channel's lock between ``acquire`` and the park that releases it, or
half-way through moving a goroutine between queues. A handler that raises there (a
service's SIGTERM handler calling ``sys.exit``) leaves the lock held and the state torn,
and the shutdown that follows waits on that lock for ever: SIGTERM during a channel
ping-pong on P0 hung the process in 1 run of 2 (tests/test_signals.py, "busy on
channels"). trio shields its core from KeyboardInterrupt for the same reason
(``trio/_core/_ki.py``); Go's signal handler only queues the signal
(``runtime/sigqueue.go``).

So while ``run`` runs, each Python handler installed when it started is wrapped. The
wrapper looks at where the signal interrupted the thread (``interrupted_in_driver``):

1. In the user's code, or the standard library called from it: the handler runs at once,
   as without mnsched (a CPU hog in a goroutine is interrupted where it is). What it
   raises fails that goroutine, as it would a Task; ``on_error`` hears of it too, so
   that ``run`` ends with it even if the goroutine was not main (KeyboardInterrupt and
   SystemExit end the runtime by themselves).
2. Inside mnsched, or the standard library called from it: the signal is queued and the
   handler runs at the next safe point, a callback on P0's loop (woken through its
   self-pipe, which takes no lock this thread can hold). What the handler raises ends
   the loop's run as it would have ended ``asyncio.run``'s (a loop logs what its
   callbacks raise, but for KeyboardInterrupt and SystemExit: the guard's ``on_error``
   passes the rest on, so that pytest-timeout's ``Failed`` fails the test). If the loop
   is not running (the shutdown's own waits), the queue is run when ``run`` has shut down
   (``restore``), and what a handler raises goes on from there.
3. Two cases deliver at once even inside mnsched: a wait for a thread to end
   (``Thread.join``: shutdown joins holding no lock), and a signal arriving while an
   earlier one is still queued (the thread is not reaching a safe point: stuck, or the
   user insists; a second Ctrl-C must always get through).

Handlers the program installs after ``run`` started are not wrapped (``signal.signal``
is not intercepted): install them before, or use ``loop.add_signal_handler``, whose
callbacks run on the loop. This module depends on nothing else of mnsched's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections import deque
from collections.abc import Callable
from types import FrameType
from typing import Any

Handler = Callable[[int, FrameType | None], Any]

_MNSCHED_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_STDLIB_DIR = os.path.dirname(os.path.abspath(os.__file__)) + os.sep
_THREADING = os.path.abspath(threading.__file__)


def _is_stdlib(file: str) -> bool:
    return file.startswith("<frozen ") or (
        file.startswith(_STDLIB_DIR) and "-packages" + os.sep not in file
    )


def interrupted_in_driver(frame: FrameType | None) -> bool:
    """Whether a thread interrupted in ``frame`` is inside mnsched (maybe holding a lock)
    rather than in the user's code: the innermost frame outside the standard library
    decides, and a ``Thread.join`` counts as outside (the thread holds no lock there)."""
    while frame is not None:
        code = frame.f_code
        file = code.co_filename
        if file.startswith(_MNSCHED_DIR):
            return True
        if not _is_stdlib(file) or (file == _THREADING and code.co_name == "join"):
            return False
        frame = frame.f_back
    return False


class SignalGuard:
    """The wrapped handlers of one ``run``: ``install`` on the main thread when it starts,
    ``restore`` once it has shut down."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_error: Callable[[BaseException, bool], None]
    ) -> None:
        self._loop = loop
        # on_error(exc, queued): a handler raised exc, queued (2.) or at once (1.)
        self._on_error = on_error
        self._installed: dict[int, tuple[Handler, Handler]] = {}  # signum: (theirs, ours)
        # Signals caught inside mnsched, not yet handled. Only this thread touches it,
        # and deque appends and pops are atomic against a handler interrupting them.
        self._pending: deque[tuple[Handler, int, FrameType | None]] = deque()

    def install(self) -> None:
        """Wrap every Python-level handler now installed (the caller is the main thread)."""
        for signum in signal.valid_signals():
            try:
                theirs = signal.getsignal(signum)
            except (OSError, ValueError):
                continue
            if callable(theirs):
                ours = self._wrap(theirs)
                signal.signal(signum, ours)
                self._installed[signum] = (theirs, ours)

    def _wrap(self, handler: Handler) -> Handler:
        def guarded(signum: int, frame: FrameType | None) -> Any:
            pending = self._pending
            if not pending and not interrupted_in_driver(frame):
                try:
                    return handler(signum, frame)  # 1.
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as e:
                    self._on_error(e, False)
                    raise
            earlier = bool(pending)
            pending.append((handler, signum, frame))
            if earlier:  # 3. an earlier one never reached a safe point
                self.deliver()
                return None
            try:  # 2.
                self._loop.call_soon_threadsafe(self._deliver_on_loop)
            except RuntimeError:  # the loop is closed: restore() delivers it
                pass
            return None

        guarded.__wrapped__ = handler  # type: ignore[attr-defined]
        return guarded

    def deliver(self) -> None:
        """Run the queued handlers, oldest first (one that raises leaves the rest queued)."""
        pending = self._pending
        while pending:
            handler, signum, frame = pending.popleft()
            handler(signum, frame)

    def _deliver_on_loop(self) -> None:
        try:
            self.deliver()
        except (KeyboardInterrupt, SystemExit):
            raise  # the loop passes these on itself, out of its run
        except BaseException as e:
            self._on_error(e, True)

    def restore(self) -> None:
        """Put the program's handlers back (where nobody replaced ours meanwhile), then
        run what is still queued: its exceptions (SystemExit) go to the caller."""
        self.forget()
        self.deliver()

    def forget(self) -> None:
        """Put the program's handlers back, leaving what is queued (a forked child: it
        was the parent's)."""
        for signum, (theirs, ours) in self._installed.items():
            if signal.getsignal(signum) is ours:
                signal.signal(signum, theirs)
        self._installed.clear()
