"""The step token: at most one goroutine step of a runtime executes at a time.

asyncio code is written on one promise: between two ``await``s nothing else runs. A
runtime keeps it across its Ps (serial steps, the default): a P holds its runtime's
token while it steps goroutines, and only then. It takes it before its first step of a
batch, or of a loop callback that resumes a goroutine, and hands it on when the batch
ends (it parks, or yields to its loop), or at the end of the loop turn in which the
callbacks ran; so the cost is per batch, not per step. Waiting Ps get it in FIFO order,
so busy Ps take turns a batch each (a P waiting for the token holds no GIL). sysmon
takes it from a step that hogs (``revoke``): the hog then runs on beside the others,
the one exception to the promise, reported as a hog (docs/design.md, "Serial steps").
``Runtime(parallel=True)`` has no token (Go's parallel steps).

This is the pure-Python token; the C driver's is ``_core.StepToken``, the same in C.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from .g import CORE


class _PureStepToken:
    """``owner``: the P holding it, or None; ``stepping``: whether the owner is running
    steps now (from its ``acquire`` to its ``idle`` or ``release``), or holds it between
    them. Every change is made under ``_lock``: sysmon's ``revoke`` and ``reclaim`` decide
    against the owner's own moves under it, so that the token is never taken from a P
    about to step."""

    __slots__ = ("_lock", "_waiters", "nhandoffs", "nrevokes", "owner", "stepping")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.owner: Any = None
        self.stepping = False
        self._waiters: deque[tuple[Any, threading.Lock]] = deque()  # (P, its gate), FIFO
        self.nhandoffs = 0  # given to a waiting P
        self.nrevokes = 0  # taken from a hogging step by sysmon

    @property
    def waiting(self) -> int:
        """How many Ps wait for it."""
        return len(self._waiters)

    def acquire(self, p: Any) -> bool:
        """p is about to step (its own thread, outside any step): make it the owner,
        waiting for its turn, and mark it stepping. False if p held it already.
        Interruptible as a lock's wait on the main thread: the turn is then given up."""
        with self._lock:
            if self.owner is p:
                self.stepping = True
                return False
            if self.owner is None:
                self.owner, self.stepping = p, True
                return True
            gate = threading.Lock()
            gate.acquire()
            entry = (p, gate)
            self._waiters.append(entry)
        try:
            gate.acquire()  # released by whoever hands it to p (stepping, then)
        except BaseException:
            with self._lock:
                if self.owner is p:
                    self._pass_on()  # given to p meanwhile: on to the next
                else:
                    self._waiters.remove(entry)
            raise
        return True

    def idle(self, p: Any) -> None:
        """p stepped, and keeps the token until its loop turn ends (P.take_token): not
        stepping meanwhile, so that sysmon may ``reclaim`` it."""
        with self._lock:
            if self.owner is p:
                self.stepping = False

    def release(self, p: Any) -> None:
        """p is done stepping for now: the next waiting P gets the token. A no-op if p
        does not hold it (sysmon took it)."""
        with self._lock:
            if self.owner is p:
                self._pass_on()

    def revoke(self, p: Any, tick: int) -> bool:
        """sysmon: p's step number ``tick`` hogs; give the token to the next P, if p holds
        it and is still in that step (it may have ended since sysmon looked)."""
        with self._lock:
            if self.owner is not p or p.tick != tick:
                return False
            self.nrevokes += 1
            self._pass_on()
            return True

    def reclaim(self, p: Any) -> bool:
        """sysmon: p holds the token between steps while others wait (its loop is busy
        elsewhere): give it to the next P, unless p is stepping."""
        with self._lock:
            if self.owner is not p or self.stepping:
                return False
            self._pass_on()
            return True

    def _pass_on(self) -> None:
        if self._waiters:
            p, gate = self._waiters.popleft()
            self.owner, self.stepping = p, True
            self.nhandoffs += 1
            gate.release()
        else:
            self.owner, self.stepping = None, False


# The driver's: the C one when the C driver runs (run_batch reads its owner directly).
StepToken = _PureStepToken if TYPE_CHECKING or CORE is None else CORE.StepToken
