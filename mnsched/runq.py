"""A P's local run queue (and its runnext slot): FIFO, bounded, and stealable by half.

Go keeps a 256-slot lock-free ring per P (runtime2.go: ``runq [256]guintptr``). The C
driver has a ring too (``_core.RunQ``: every operation whole under the queue's critical
section). In the pure driver a ``collections.deque`` plays the ring: its append/popleft
are atomic (under the GIL, and under per-object locking on free-threaded builds), so the
owner and a thief may pop the head at the same time and every item still leaves exactly
once.
"""

import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from .g import CORE
from .lockrank import RANK_LEAF, lock_factory

# Go: len(p.runq) == 256. When the local queue is full, half of it moves to the global
# queue (runqputslow), so other Ps can find it without stealing.
LOCAL_QUEUE_SIZE = 256


# A join (P.join) looks for the awaited G this far from the queue's tail (and at its
# head): a G that spawns up to this many children and then awaits them keeps the tree
# depth-first.
JOIN_WINDOW = 16


_new_lock = lock_factory(RANK_LEAF, "a run queue's lock (thieves)", threading.Lock)


class _PureRunQ(deque[Any]):
    """The owner appends and pops the head; thieves take half from the head.

    ``lock`` is taken only by thieves, so that two grabs at once each take their half.
    The owner's appends, pops and removals (P.join) never take it.
    """

    __slots__ = ("lock",)

    def __init__(self) -> None:
        super().__init__()
        self.lock = _new_lock()

    def steal_half(self) -> list[Any]:
        """Take half of the queue, rounded up, from the head (Go: runqgrab).

        Safe against the owner popping at the same time: a pop that loses the race
        ends the grab early instead of taking an item twice.
        """
        out = []
        pop = self.popleft
        with self.lock:
            n = len(self)
            try:
                for _ in range(n - n // 2):
                    out.append(pop())
            except IndexError:
                pass
        return out

    def take_half_for_global(self) -> list[Any]:
        """Take half of a full queue (Go: runqputslow moves len/2 to the global queue)."""
        out = []
        pop = self.popleft
        try:
            for _ in range(len(self) // 2):
                out.append(pop())
        except IndexError:
            pass
        return out


# The driver's: the C driver works on its ring directly.
RunQ = _PureRunQ if TYPE_CHECKING or CORE is None else CORE.RunQ
