"""lockrank: the lock order as ranks, checked when asked (Go's lockrank.go, with
GOEXPERIMENT=staticlockranking).

docs/design.md, section 5, orders mnsched's locks: a lock may be taken while holding
only locks of lower rank. Each lock is made by the factory of its rank
(``lock_factory(RANK_CHAN, "a channel's _lock")``). Normally that factory is the
driver's plain lock (the C core's ``Lock``, or ``threading.Lock``), at no cost. With
``MNSCHED_LOCKCHECK=1`` (the stress tests run with it) it makes a ``RankedLock``, which
remembers what each thread holds and raises ``InternalError`` at once, naming both
locks, when one is taken out of order: a deadlock that two threads would need to meet
in the same microsecond to show shows at the first wrong acquisition.

Equal ranks: only channel locks (and sync objects', the same rank) may be held several
at a time; ``select`` takes them in ``id()`` order itself (Go's lockrank allows hchan
under hchan the same way, and ``sellock`` orders them by address).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from .errors import InternalError

# The order of docs/design.md, section 5 (lower first).
RANK_RUNTIME = 1  # Runtime._lock
RANK_RESIZE = 2  # Sched.resize_lock
RANK_CHAN = 3  # a channel's, a sync object's or a Group's _lock
RANK_SELECT = 4  # Select.lock
RANK_G = 5  # lock_of(g)
RANK_LEAF = 6  # a P's timers.lock, a Call.lock, a run queue's lock (thieves)
RANK_SCHED = 7  # Sched.lock
RANK_STATE = 8  # state_lock_of(g)
RANK_NAMES = {
    RANK_RUNTIME: "runtime",
    RANK_RESIZE: "resize",
    RANK_CHAN: "chan",
    RANK_SELECT: "select",
    RANK_G: "g",
    RANK_LEAF: "leaf",
    RANK_SCHED: "sched",
    RANK_STATE: "state",
}
# Ranks whose locks may be held several at once.
MULTIPLE = frozenset({RANK_CHAN})


def _lockcheck() -> bool:
    value = os.environ.get("MNSCHED_LOCKCHECK", "0")
    if value not in ("0", "1", ""):
        raise ValueError(f"MNSCHED_LOCKCHECK={value!r}: set it to 1 to check the lock order, or 0")
    return value == "1"


LOCKCHECK = _lockcheck()
_held = threading.local()  # .locks: the RankedLocks this thread holds, in order taken


def _held_by_me() -> list[RankedLock]:
    try:
        return _held.locks  # type: ignore[no-any-return]
    except AttributeError:
        _held.locks = []
        return _held.locks  # type: ignore[no-any-return]


class RankedLock:
    """A lock (threading.Lock's semantics, any thread may release it) that checks the
    lock order as it is taken."""

    __slots__ = ("_holder", "_lock", "name", "rank")

    def __init__(self, rank: int, name: str) -> None:
        self.rank = rank
        self.name = name
        self._lock = threading.Lock()
        self._holder: list[RankedLock] | None = None  # the holding thread's list

    def _check(self, held: list[RankedLock]) -> None:
        for h in held:
            if h.rank > self.rank or (h.rank == self.rank and self.rank not in MULTIPLE):
                raise InternalError(
                    f"lock order: taking {self.name} (rank {self.rank}, "
                    f"{RANK_NAMES[self.rank]}) while holding {h.name} (rank {h.rank}, "
                    f"{RANK_NAMES[h.rank]}); docs/design.md, section 5, orders them"
                )

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        held = _held_by_me()
        if blocking and timeout < 0:  # (a try, or a bounded wait, cannot deadlock)
            self._check(held)
        if not self._lock.acquire(blocking, timeout):
            return False
        held.append(self)
        self._holder = held
        return True

    def release(self) -> None:
        holder, self._holder = self._holder, None
        self._lock.release()
        if holder is not None:
            holder.remove(self)  # (the taker's list, whichever thread releases)

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _at_fork_reinit(self) -> None:
        self._lock._at_fork_reinit()  # type: ignore[attr-defined]
        self._holder = None

    def __repr__(self) -> str:
        state = "locked" if self.locked() else "unlocked"
        return f"<RankedLock {self.name} rank {self.rank} {state}>"


def lock_factory(rank: int, name: str, plain: Callable[[], Any]) -> Callable[[], Any]:
    """What makes the locks of this rank: plain (the driver's lock) normally; under
    MNSCHED_LOCKCHECK=1, RankedLocks."""
    if rank not in RANK_NAMES:
        raise InternalError(f"lock rank {rank} for {name} is not one of {sorted(RANK_NAMES)}")
    if not LOCKCHECK:
        return plain
    return lambda: RankedLock(rank, name)
