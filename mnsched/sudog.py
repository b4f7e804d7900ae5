"""sudog: one party waiting on a channel or a sync object (Go's ``sudog``), and the ways
a party waits: a goroutine parks, a task of a foreign asyncio loop awaits a future, a
plain thread blocks on a semaphore. Channels (chan.py), select (selectgo.py) and sync
objects (sync.py) queue sudogs in a ``WaitQ`` and complete them; see docs/design.md,
"Channels".

An *owner* (a channel, a WaitGroup, ...) has ``_lock``, which guards its queues and the
sudogs in them, and ``_foreign``, set once a party from outside any runtime has used it
(the deadlock detector then leaves it alone: a thread might still complete it).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from .aio import complete_future
from .errors import BlockingCallError
from .g import PARKED, G, gopark_op, goready
from .m import m

if TYPE_CHECKING:
    from .p import P
    from .selectgo import Select


class Owner(Protocol):
    _lock: threading.Lock
    _foreign: bool


class Sudog:
    """One waiting party: what it sends or received, and how to wake it."""

    __slots__ = (
        "case", "done", "elem", "fut", "g", "next", "ok", "op", "owner", "prev", "q", "sel",
        "sem",
    )  # fmt: skip

    def __init__(self, owner: Owner, op: str, elem: Any = None) -> None:
        self.owner = owner
        self.op = op  # "send to", "receive from", "wait on": for deadlock reports
        self.elem = elem
        self.ok = False  # a receive got a value (False: the channel was closed)
        self.done = False  # a partner completed the operation (under the owner's lock)
        self.q: WaitQ | None = None  # the queue it waits in (None once taken out)
        self.prev: Sudog | None  # its neighbours there: set by push
        self.next: Sudog | None
        self.g: G[Any] | None = None
        self.sel: Select | None = None
        self.case = -1
        self.fut: asyncio.Future[Any] | None = None  # a foreign task's
        self.sem: threading.Lock | None = None  # a plain thread's: a lock it blocks on

    def unqueue(self) -> bool:
        """Take it out of its queue (under the owner's lock); False if a partner (or a
        close) already took it out, and so will wake it."""
        q = self.q
        if q is None:
            return False
        q.remove(self)
        return True

    def wake(self, p: P | None = None) -> None:
        """The operation is decided (under the owner's lock, now released): let the party
        go on. p is the caller's P when it knows it, saving a thread-local lookup."""
        g = self.g
        if g is not None:
            goready(g, PARKED, p)
        elif self.fut is not None:
            complete_future(self.fut)
        elif self.sem is not None:
            self.sem.release()

    def blocked_on(self) -> str | None:
        """What the goroutine waits for, if only another goroutine can end the wait."""
        return None if self.owner._foreign else f"{self.op} {self.owner!r}"

    def cancel_wait(self, g: G[Any]) -> None:
        """g, parked here, was cancelled: take it out, unless a partner already has (it
        resumes with that partner's outcome then)."""
        with self.owner._lock:
            if not self.unqueue():
                return
        goready(g)


class WaitQ:
    """Go's waitq: sudogs in a doubly linked list, first in first out, so that any one
    of them leaves in O(1): a fired select's other cases, a cancelled waiter. (A deque's
    ``remove`` scans: waking n selects back to front cost O(n^2).) Guarded by the
    owner's lock. A sudog is in at most one queue, and ``sg.q`` is None once out."""

    __slots__ = ("first", "last")

    def __init__(self) -> None:
        self.first: Sudog | None = None
        self.last: Sudog | None = None

    def push(self, sg: Sudog) -> None:
        last = self.last
        sg.q, sg.prev, sg.next = self, last, None
        if last is None:
            self.first = sg
        else:
            last.next = sg
        self.last = sg

    def pop(self) -> Sudog | None:
        """Take out the first sudog, if any."""
        sg = self.first
        if sg is not None:
            self.first = nxt = sg.next
            if nxt is None:
                self.last = None
            else:
                nxt.prev = None
            sg.q = sg.next = None
        return sg

    def remove(self, sg: Sudog) -> None:
        """Take sg (in this queue) out, wherever it is."""
        prev, nxt = sg.prev, sg.next
        if prev is None:
            self.first = nxt
        else:
            prev.next = nxt
        if nxt is None:
            self.last = prev
        else:
            nxt.prev = prev
        sg.q = sg.prev = sg.next = None

    def __iter__(self) -> Iterator[Sudog]:
        sg = self.first
        while sg is not None:
            yield sg
            sg = sg.next

    def count(self) -> int:
        """How many wait (O(n): for reprs and reports)."""
        return sum(1 for _ in self)


def count(q: WaitQ | None) -> int:
    """How many wait in q, a queue made only once someone waited (None before)."""
    return 0 if q is None else q.count()


def wait(owner: Owner, sg: Sudog, q: WaitQ, reason: str, p: P | None) -> Awaitable[None]:
    """Queue sg in q and wait until a partner completes it (or the owner closes). The
    owner's lock is held on entry and released by the wait. From a goroutine (p is the
    caller's P) it parks; from any other asyncio task it awaits a future."""
    g = p.curg if p is not None else None
    if g is None:
        return wait_foreign(owner, sg, q)
    sg.g = g
    q.push(sg)
    return gopark_op(g, owner._lock, sg, reason)


async def wait_foreign(owner: Owner, sg: Sudog, q: WaitQ) -> None:
    """A task of an asyncio loop that is not a goroutine waits for a partner. The owner
    is locked on entry and unlocked here."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        owner._lock.release()
        raise
    owner._foreign = True
    sg.fut = loop.create_future()
    q.push(sg)
    owner._lock.release()
    try:
        await sg.fut
    except asyncio.CancelledError:
        with owner._lock:
            if not sg.done:
                sg.unqueue()
                raise
        # Completed just as it was cancelled: keep the result, and cancel again so the
        # task still sees its cancellation at its next await.
        task = asyncio.current_task()
        if task is not None:
            task.cancel()


def wait_blocking(
    owner: Owner, sg: Sudog, q: WaitQ, timeout: float | None, what: str, instead: str
) -> bool:
    """A plain thread waits for a partner (owner locked on entry, unlocked here). False
    if the time ran out first; True once a partner (or a close) has taken it out."""
    try:
        refuse_on_p(what, instead)
    except BaseException:
        owner._lock.release()
        raise
    owner._foreign = True
    sem = sg.sem = threading.Lock()
    sem.acquire()
    q.push(sg)
    owner._lock.release()
    if sem.acquire(timeout=-1 if timeout is None else timeout):
        return True
    with owner._lock:
        return not sg.unqueue()  # taken out just as the time ran out: it completed


def refuse_on_p(what: str, instead: str) -> None:
    """A blocking wait on a P's thread would stall every goroutine there."""
    if m.p is not None:
        raise BlockingCallError(
            f"{what}() would block this P and its goroutines; inside a goroutine use '{instead}'"
        )
