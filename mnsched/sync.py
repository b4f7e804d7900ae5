"""sync: WaitGroup, Mutex and Once (Go's sync package), for goroutines on any P, plain
threads and foreign asyncio loops.

Each keeps a lock and a FIFO queue of sudogs, and parks and wakes its waiters exactly as
a channel does (sudog.py; docs/design.md, "Channels"), cancellation included.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .g import WAIT_MUTEX, WAIT_ONCE, WAIT_WAITGROUP, new_lock
from .lockrank import RANK_CHAN, lock_factory
from .m import m
from .sudog import Sudog, WaitQ, wait, wait_blocking

_new_lock = lock_factory(RANK_CHAN, "a sync object's _lock", new_lock)


class _Waitable:
    """A lock and a FIFO queue of waiting sudogs: a sudog's owner."""

    def __init__(self, reason: str) -> None:
        self._lock = _new_lock()
        self._waiters = WaitQ()
        self._foreign = False
        self._reason = reason

    async def _wait(self) -> Sudog:
        """Queue the caller and wait until it is completed (lock held on entry)."""
        sg = Sudog(self, "wait on")
        await wait(self, sg, self._waiters, self._reason, m.p)
        return sg

    def _wait_blocking(self, timeout: float | None, what: str, instead: str) -> bool:
        """A plain thread waits (lock held on entry); False on timeout."""
        sg = Sudog(self, "wait on")
        return wait_blocking(self, sg, self._waiters, timeout, what, instead)

    def _wake_all(self) -> list[Sudog]:
        """Complete every waiter (under the lock); wake them once it is released."""
        woken = []
        while (sg := self._waiters.pop()) is not None:
            sg.done = True
            woken.append(sg)
        return woken


class WaitGroup(_Waitable):
    """Go's sync.WaitGroup: ``add(n)`` before starting work, ``done()`` as each piece
    ends, ``await wg.wait()`` until the counter is back to zero (``wait_blocking`` from a
    plain thread)."""

    def __init__(self) -> None:
        super().__init__(WAIT_WAITGROUP)
        self._n = 0

    def add(self, delta: int = 1) -> None:
        with self._lock:
            n = self._n + delta
            if n < 0:
                raise ValueError(f"negative WaitGroup counter ({n})")
            self._n = n
            woken = self._wake_all() if n == 0 else ()
        for sg in woken:
            sg.wake()

    def done(self) -> None:
        self.add(-1)

    @property
    def count(self) -> int:
        return self._n

    async def wait(self) -> None:
        self._lock.acquire()
        if self._n == 0:
            self._lock.release()
            return
        await self._wait()

    def wait_blocking(self, timeout: float | None = None) -> None:
        self._lock.acquire()
        if self._n == 0:
            self._lock.release()
            return
        if not self._wait_blocking(timeout, "wg.wait_blocking", "await wg.wait()"):
            raise TimeoutError(f"WaitGroup still at {self._n} after {timeout} s")

    def __repr__(self) -> str:
        return f"<WaitGroup count={self._n} waiters={self._waiters.count()}>"


class Mutex(_Waitable):
    """Go's sync.Mutex, with FIFO hand-off to waiters: ``await mu.lock()`` /
    ``mu.unlock()``, or ``async with mu:``. Unlocking an unlocked mutex raises.
    ``lock_blocking`` serves plain threads."""

    def __init__(self) -> None:
        super().__init__(WAIT_MUTEX)
        self._locked = False

    def locked(self) -> bool:
        return self._locked

    async def lock(self) -> None:
        self._lock.acquire()
        if not self._locked:
            self._locked = True
            self._lock.release()
            return
        await self._wait()  # woken owning it: unlock hands it over

    def lock_blocking(self, timeout: float | None = None) -> None:
        self._lock.acquire()
        if not self._locked:
            self._locked = True
            self._lock.release()
            return
        if not self._wait_blocking(timeout, "mu.lock_blocking", "await mu.lock()"):
            raise TimeoutError(f"mutex not acquired within {timeout} s")

    def try_lock(self) -> bool:
        with self._lock:
            if self._locked:
                return False
            self._locked = True
            return True

    def unlock(self) -> None:
        with self._lock:
            if not self._locked:
                raise RuntimeError("unlock of unlocked mutex")
            sg = self._waiters.pop()
            if sg is not None:
                sg.done = True  # ownership passes to it; _locked stays True
            else:
                self._locked = False
        if sg is not None:
            sg.wake()

    async def __aenter__(self) -> Mutex:
        await self.lock()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.unlock()

    def __repr__(self) -> str:
        return f"<Mutex {'locked' if self._locked else 'unlocked'} waiters={self._waiters.count()}>"


class Once(_Waitable):
    """Go's sync.Once: ``await once.do(fn, *args)`` calls fn (sync or async) the first
    time only; callers arriving while it runs wait for it to end. As in Go, if fn
    raises, it counts as done: the exception goes to its caller, later calls do nothing."""

    def __init__(self) -> None:
        super().__init__(WAIT_ONCE)
        self._done = False
        self._running = False

    async def do(self, fn: Callable[..., Any], *args: Any) -> None:
        if not callable(fn):
            raise TypeError(f"Once.do() needs a callable, not {type(fn).__name__} {fn!r}")
        if self._done:
            return
        self._lock.acquire()
        if self._done:
            self._lock.release()
            return
        if self._running:
            await self._wait()
            return
        self._running = True
        self._lock.release()
        try:
            r = fn(*args)
            if inspect.isawaitable(r):
                await r
        finally:
            with self._lock:
                self._done, self._running = True, False
                woken = self._wake_all()
            for sg in woken:
                sg.wake()

    @property
    def done(self) -> bool:
        return self._done
