"""sched: the coordinator shared by all Ps of a runtime (Go: ``schedt``).

It owns the global run queue, the set of idle Ps and the spinning count, the steal
order, and the set of all live Gs. The rule that keeps cross-thread traffic low is
Go's ``wakep``: when work appears, wake a parked P only if one is idle and none is
already spinning (awake and looking for work); a spinning P that finds work wakes the
next one (``reset_spinning``), so Ps come up one at a time, only as fast as work does.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import check
from .g import RUNNABLE, G
from .runq import LOCAL_QUEUE_SIZE

if TYPE_CHECKING:
    from .m import Call, MPool
    from .p import P
    from .runtime import Runtime

class StealOrder:
    """Go's randomOrder: visit all n Ps once, from a random start with a random stride
    coprime to n, so that thieves spread over victims instead of all trying P0 first."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.coprimes = [i for i in range(1, n + 1) if math.gcd(i, n) == 1]

    def walk(self, r: int) -> Iterator[int]:
        n = self.n
        pos = r % n
        inc = self.coprimes[(r // n) % len(self.coprimes)]
        for _ in range(n):
            yield pos
            pos = (pos + inc) % n


class Sched:
    def __init__(self) -> None:
        self.lock = threading.Lock()  # guards idle, nspinning, P.active and the id generator
        self.runq: deque[G[Any]] = deque()  # the global run queue; pinned Gs never enter it
        # The running Ps and their steal order, swapped together by procresize.
        self.allp: tuple[P, ...] = ()
        self.order = StealOrder(1)
        self.idle: list[P] = []
        self.nspinning = 0
        self.allg: set[G[Any]] = set()
        self.closing = False
        self.all_done = threading.Event()  # set once closing and no G is left
        self.fatal: BaseException | None = None  # a KeyboardInterrupt/SystemExit from a G
        self._goidgen = 0
        self.rt: Runtime  # set by the runtime
        self.mpool: MPool  # set by the runtime
        self.nsyscall = 0  # goroutines in a blocking call right now (under lock)
        self.nspawned_outside = 0  # spawned from threads that are not Ps (under lock)
        self.nfinished_outside = 0  # ended outside any P: abandoned at shutdown (under lock)

    @property
    def nprocs(self) -> int:
        return len(self.allp)

    def newgoid(self) -> int:
        """Goroutine ids are given out on first use (repr, logs, traces), not at spawn."""
        with self.lock:
            self._goidgen += 1
            return self._goidgen

    # -- the global run queue ------------------------------------------------------------

    def globrunqget(self, p: P, most: int = LOCAL_QUEUE_SIZE // 2) -> G[Any] | None:
        """Take a fair share of the global queue (at most ``most``) into p's local queue;
        return one G."""
        q = self.runq
        n = min(len(q), len(q) // max(1, self.nprocs) + 1, most)
        first = None
        put = p.runq.append
        try:
            for _ in range(n):
                g = q.popleft()
                g._p = p
                if first is None:
                    first = g
                else:
                    put(g)
        except IndexError:
            pass
        return first

    def globrunqputbatch(self, gs: list[G[Any]]) -> None:
        """Put free Gs on the global queue (from any thread) and wake a P for them."""
        for g in gs:
            g._p = None
        self.runq.extend(gs)
        self.wakep_locked()

    def submit_syscall(self, call: Call) -> None:
        with self.lock:
            self.nsyscall += 1
        try:
            self.mpool.submit(call)
        except BaseException:
            with self.lock:
                self.nsyscall -= 1
            raise

    def exitsyscall(self, g: G[Any]) -> None:
        """g's blocking call returned (on an M thread): ready it on its old P if that P is
        idle or no other is, else let any idle P take it (Go: exitsyscall)."""
        with self.lock:
            self.nsyscall -= 1
        g._waitq = None
        old = g._p
        if g._home is None and old is not None and not old.retiring and old in self.allp \
                and (not old.active or not self.idle):
            g._status = RUNNABLE
            old.inbox.append(g)
            old.wake()
        else:
            self.ready_remote(g)

    def ready_remote(self, g: G[Any]) -> None:
        """Ready a G from a thread that may not run it: home P if pinned, else global."""
        g._status = RUNNABLE
        home = g._home
        if home is not None:
            home.inbox.append(g)
            home.wake()
        else:
            self.globrunqputbatch([g])

    # -- idle Ps and spinning --------------------------------------------------------------

    def wakep(self) -> None:
        """Work appeared on an active P: wake an idle P if none is spinning. The unlocked
        check may miss a P parking at this instant; the caller's P runs the work then."""
        if self.idle and not self.nspinning:
            self.wakep_locked()

    def wakep_locked(self) -> None:
        with self.lock:
            if not self.idle or self.nspinning:
                return
            p = self.idle.pop()
            check(not p.active, "an idle P is marked active")
            p.active = True
            p.spinning = True
            self.nspinning += 1
        p.post_schedule()

    def reset_spinning(self, p: P) -> None:
        """p was spinning and found work: if it was the last spinner, wake another P to
        keep looking (Go: resetspinning), since more work may be coming."""
        with self.lock:
            p.spinning = False
            self.nspinning -= 1
            check(self.nspinning >= 0, "negative spinning count")
            last = self.nspinning == 0
        if last:
            self.wakep()

    def unidle_locked(self, p: P) -> None:
        if p in self.idle:
            self.idle.remove(p)

