"""timers: each P's timer heap (Go: ``p.timers``), and the timer channels built on it
(Go's ``time.After``, ``time.Ticker``, ``time.Tick``).

A timer either readies a sleeping G (``mnsched.sleep``) or calls a function (a timer
channel's send: Go's ``sendTime``; no goroutine is involved). The P's loop fires the
earliest entry with one ``call_later``. The heap has its own lock, so a timer can be
stopped from any thread, and a thread other than the owner can run the due timers of a
P that is stuck (sysmon). See docs/design.md, "Timers".
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .aio import call_on_loop
from .chan import Chan, WouldBlock
from .g import PARKED, G, goready, new_lock
from .lockrank import RANK_LEAF, lock_factory
from .m import m

if TYPE_CHECKING:
    from .p import P

# Rebuild the heap once this many stopped entries linger in it (and they are half of it).
COMPACT_MIN = 64


_new_lock = lock_factory(RANK_LEAF, "a P's timers.lock", new_lock)


class Timer:
    """One pending timer: a sleeping G (it is the G's wait queue meanwhile) or a
    function to call. Both are None once it has fired or been stopped."""

    __slots__ = ("fn", "g", "timers", "when")

    def __init__(
        self,
        when: float,
        timers: Timers,
        g: G[Any] | None = None,
        fn: Callable[[], None] | None = None,
    ) -> None:
        self.when = when
        self.timers = timers
        self.g = g
        self.fn = fn

    def cancel_wait(self, g: G[Any]) -> None:
        if self.timers.stop(self):
            goready(g)  # else it fired: the timer readied g

    def stop(self) -> bool:
        """Stop it; False if it has already fired (or was stopped)."""
        return self.timers.stop(self)


class Timers:
    def __init__(self, p: P) -> None:
        self.p = p
        self.heap: list[tuple[float, int, Timer]] = []
        self.lock = _new_lock()
        self._seq = itertools.count()
        self._handle: asyncio.TimerHandle | None = None  # armed for the earliest entry
        self._armed = math.inf
        self._ndead = 0

    def __len__(self) -> int:
        """Pending timers."""
        return len(self.heap) - self._ndead

    def add_locked(self, when: float, g: G[Any]) -> Timer:
        """A timer that readies g at ``when``. The caller holds ``self.lock`` (g's park
        lock: it fires only once g is parked) and runs on the P's thread."""
        t = Timer(when, self, g=g)
        self._push(t)
        return t

    def add_func(self, t: Timer) -> None:
        """Add a function timer, from any thread."""
        with self.lock:
            t.timers = self
            self._push(t)

    def _push(self, t: Timer) -> None:
        """Under self.lock."""
        heapq.heappush(self.heap, (t.when, next(self._seq), t))
        if t.when < self._armed:
            self._armed = t.when
            if m.p is self.p:
                self._arm_at(t.when)
            else:
                call_on_loop(self.p.loop, self._rearm)  # the loop is not ours to touch

    def _arm_at(self, when: float) -> None:
        """Arm the loop's timer for ``when`` (on the P's thread)."""
        if self._handle is not None:
            self._handle.cancel()
        # Round up to whole milliseconds: uvloop's timers have ms resolution, and an early
        # wake-up would only re-arm for the rest.
        delay = math.ceil(max(0.0, when - time.monotonic()) * 1000) / 1000
        self._handle = self.p.loop.call_later(delay, self.fire)

    def _rearm(self) -> None:
        """Arm for the earliest entry, if there is one (on the P's thread)."""
        with self.lock:
            self._armed = when = self.heap[0][0] if self.heap else math.inf
            if when != math.inf:
                self._arm_at(when)
            elif self._handle is not None:
                self._handle.cancel()
                self._handle = None

    def fire(self) -> None:
        """The loop's timer callback: run every due timer here, re-arm for the next one."""
        self._handle = None
        self.run_due(time.monotonic())
        self._rearm()
        p = self.p
        if p.retiring and not p.active:
            p.stop_if_drained()  # its last sleeper may just have left

    def run_due(self, now: float) -> int:
        """Ready the due sleepers and call the due functions (from any thread: sysmon
        runs a stuck P's). Returns how many sleepers, free to run on any P, it readied."""
        due: list[Timer] = []
        with self.lock:
            heap = self.heap
            while heap and heap[0][0] <= now:
                t = heapq.heappop(heap)[2]
                if t.g is None and t.fn is None:
                    self._ndead -= 1
                else:
                    due.append(t)
        nfree = 0
        for t in due:
            g, fn, t.g, t.fn = t.g, t.fn, None, None
            if g is not None:
                nfree += g._home is None
                goready(g, PARKED)
            elif fn is not None:
                fn()
        return nfree

    def stop(self, t: Timer) -> bool:
        """Stop t if it is still pending (any thread)."""
        with self.lock:
            if t.g is None and t.fn is None:
                return False  # fired, or stopped already
            t.g = t.fn = None
            self._ndead += 1
            if self._ndead >= COMPACT_MIN and self._ndead * 2 > len(self.heap):
                self.heap[:] = [e for e in self.heap if e[2].g is not None or e[2].fn is not None]
                heapq.heapify(self.heap)
                self._ndead = 0
            return True

    def take_funcs(self) -> list[Timer]:
        """Take the pending function timers out (a retiring P hands them on)."""
        with self.lock:
            funcs = [e[2] for e in self.heap if e[2].fn is not None]
            # (In place: a new list, made as a hog spell ends, would pin its memory.)
            self.heap[:] = [e for e in self.heap if e[2].g is not None]
            heapq.heapify(self.heap)
            self._ndead = 0
        return funcs


# -- timer channels ------------------------------------------------------------------------


class _Clock:
    """Where timer channels made here get their timers: on a P, its heap; elsewhere, the
    running asyncio loop, else a timer thread."""

    __slots__ = ("loop", "timers")

    def __init__(self) -> None:
        p = m.p
        self.timers = p.timers if p is not None else None
        self.loop = asyncio._get_running_loop() if p is None else None

    def call_at(self, when: float, fn: Callable[[], None]) -> Callable[[], object]:
        """Call fn at ``when`` (time.monotonic()); return a function that stops it."""
        timers = self.timers
        if timers is not None:
            if timers.p.retiring:  # gomaxprocs took that P away: follow the runtime
                timers = self.timers = timers.p.sched.allp[0].timers
            t = Timer(when, timers, fn=fn)
            timers.add_func(t)
            return t.stop
        delay = max(0.0, when - time.monotonic())
        if self.loop is not None and not self.loop.is_closed():
            # Made on that loop's thread, re-armed from its callbacks: always on it.
            return self.loop.call_later(delay, fn).cancel
        th = threading.Timer(delay, fn)
        th.daemon = True
        th.start()
        return th.cancel


def check_seconds(value: object, what: str) -> float:
    """A duration given by the user: a real number of seconds, or a clear TypeError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise TypeError(f"{what} needs a number of seconds, not {value!r}")
    return value


def after(seconds: float) -> Chan[float]:
    """A channel that receives the time (``time.monotonic()``) once, after ``seconds``
    (Go's ``time.After``). Use it as a timeout case: ``Recv(after(0.5))``."""
    check_seconds(seconds, "after()")
    ch: Chan[float] = Chan(1)
    _Clock().call_at(time.monotonic() + seconds, lambda: ch.try_send(time.monotonic()))
    return ch


class Ticker:
    """Receives the time every ``period`` seconds on ``.c`` (Go's ``time.Ticker``): slow
    receivers miss ticks rather than pile them up. ``stop()`` ends it."""

    def __init__(self, period: float) -> None:
        if not check_seconds(period, "Ticker()") > 0:
            raise ValueError(f"ticker period must be > 0, not {period!r}")
        self.period = period
        self.c: Chan[float] = Chan(1)
        self._clock = _Clock()
        self._lock = threading.Lock()
        self._stopped = False
        self._next = time.monotonic() + period
        self._stop_timer = self._clock.call_at(self._next, self._tick)

    def _tick(self) -> None:
        try:
            self.c.try_send(time.monotonic())
        except WouldBlock:
            pass  # the last tick is still unread: drop this one
        with self._lock:
            if self._stopped:
                return
            self._next = max(self._next + self.period, time.monotonic())
            self._stop_timer = self._clock.call_at(self._next, self._tick)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._stop_timer()


def tick(period: float) -> Chan[float]:
    """A channel receiving the time every ``period`` seconds (Go's ``time.Tick``)."""
    return Ticker(period).c
