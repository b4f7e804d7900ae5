"""A P's timers: the heap behind ``mnsched.sleep`` (Go: ``p.timers``).

A sleeping G parks on an entry of its P's heap and the P's loop fires the earliest entry
with one ``call_later``. The heap has its own lock, so cancellation can come from any
thread, and so that a thread other than the owner can fire the due timers of a P that
is stuck (sysmon).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import threading
import time
from typing import TYPE_CHECKING, Any

from .g import G, ready

if TYPE_CHECKING:
    from .p import P

# Rebuild the heap once this many cancelled entries linger in it (and they are half of it).
COMPACT_MIN = 64


class Timer:
    """One sleeping G. It is the G's wait queue while it sleeps."""

    __slots__ = ("g", "timers", "when")

    def __init__(self, when: float, g: G[Any], timers: Timers) -> None:
        self.when = when
        self.g: G[Any] | None = g  # None once fired or cancelled
        self.timers = timers

    def _cancel_wait(self, g: G[Any]) -> None:
        self.timers.cancel(self, g)


class Timers:
    def __init__(self, p: P) -> None:
        self.p = p
        self.heap: list[tuple[float, int, Timer]] = []
        self.lock = threading.Lock()
        self._seq = itertools.count()
        self._handle: asyncio.TimerHandle | None = None  # armed for the earliest entry
        self._armed = math.inf
        self._ndead = 0

    def __len__(self) -> int:
        return len(self.heap) - self._ndead

    def add_locked(self, when: float, g: G[Any]) -> Timer:
        """Add a timer for ``g``; the caller holds ``self.lock`` and runs on the P's thread."""
        t = Timer(when, g, self)
        heapq.heappush(self.heap, (when, next(self._seq), t))
        if when < self._armed:
            self._arm(when)
        return t

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = when
        # Round up to whole milliseconds: uvloop's timers have ms resolution, and an early
        # wake-up would only re-arm for the rest.
        delay = math.ceil(max(0.0, when - time.monotonic()) * 1000) / 1000
        self._handle = self.p.loop.call_later(delay, self.fire)

    def fire(self) -> None:
        """The loop's timer callback: ready every due G here, re-arm for the next one."""
        self._handle = None
        self._armed = math.inf
        due = self.take_due(time.monotonic())
        for g in due:
            ready(g)
        with self.lock:
            if self.heap and self._handle is None:
                self._arm(self.heap[0][0])

    def take_due(self, now: float) -> list[G[Any]]:
        """Pop the Gs whose time has come (any thread)."""
        due = []
        with self.lock:
            heap = self.heap
            while heap and heap[0][0] <= now:
                t = heapq.heappop(heap)[2]
                if t.g is None:
                    self._ndead -= 1
                else:
                    due.append(t.g)
                    t.g = None
        return due

    def next_when(self) -> float:
        with self.lock:
            return self.heap[0][0] if self.heap else math.inf

    def cancel(self, t: Timer, g: G[Any]) -> None:
        with self.lock:
            if t.g is not g:
                return  # already fired
            t.g = None
            self._ndead += 1
            if self._ndead >= COMPACT_MIN and self._ndead * 2 > len(self.heap):
                self.heap = [e for e in self.heap if e[2].g is not None]
                heapq.heapify(self.heap)
                self._ndead = 0
        ready(g)
