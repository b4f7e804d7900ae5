"""sched: the coordinator shared by all Ps of a runtime (Go: ``schedt``).

It owns the global run queue, the idle Ps and the spinning count, the steal order, the
set of all live Gs, spawning (``newproc``), the number of Ps (``procresize``, spare and
warm Ps for sysmon) and the runtime's fatal error. The rule that keeps cross-thread
traffic low is Go's ``wakep``: when work appears, wake a parked P only if one is idle and
none is already spinning; a spinning P that finds work wakes the next one
(``reset_spinning``). docs/design.md has the lock order and who may touch what.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from types import CoroutineType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from . import instrument
from .aio import install_all_tasks_hook
from .errors import RuntimeClosedError, check
from .g import (
    CORE,
    RUNNABLE,
    SYSCALL,
    G,
    Unretrieved,
    casgstatus,
    check_coroutine,
    new_lock,
    sample_ready,
)
from .lockrank import RANK_RESIZE, RANK_SCHED, lock_factory
from .m import Call, MPool, m
from .p import P, PTotals
from .runq import LOCAL_QUEUE_SIZE
from .steptoken import StepToken

if TYPE_CHECKING:
    from .runtime import Runtime

T = TypeVar("T")
logger = logging.getLogger("mnsched")


_new_sched_lock = lock_factory(RANK_SCHED, "Sched.lock", new_lock)
_new_resize_lock = lock_factory(RANK_RESIZE, "Sched.resize_lock", threading.Lock)


class StealOrder:
    """Go's randomOrder: visit all n Ps once, from a random start with a random stride
    coprime to n, so that thieves spread over victims instead of all trying P0 first.
    One per n, made once (steal_order): the P count changes with every hog spell, and a
    long-lived object made during a spawn storm pins the storm's memory (design.md)."""

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


_STEAL_ORDERS: dict[int, StealOrder] = {}


def steal_order(n: int) -> StealOrder:
    """The StealOrder for n Ps (a race makes two equal ones: either will do)."""
    if (order := _STEAL_ORDERS.get(n)) is None:
        order = _STEAL_ORDERS.setdefault(n, StealOrder(n))
    return order


# Every scheduler not yet collected, for asyncio.all_tasks().
_SCHEDS: weakref.WeakSet[Sched] = weakref.WeakSet()


def live_scheds() -> list[Sched]:
    """Every runtime's scheduler not yet collected (the dump and metrics read them)."""
    return list(_SCHEDS)


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's runtimes: their threads are not copied (as
    Go's, as threads). Each is closed here, so that using one says so at once instead of
    queueing goroutines nobody will run; runtime.py forgets the current ones."""
    for sched in live_scheds():
        sched.closing = True
        sched.rt.forked_away()
    _SCHEDS.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _all_goroutines() -> Iterator[G[Any]]:
    for sched in live_scheds():
        yield from sched.allg.copy()


install_all_tasks_hook(_all_goroutines)


def _global_instruments_changed() -> None:
    for sched in live_scheds():
        sched.reinstall()


instrument.on_global_change(_global_instruments_changed)


class Sched:
    # Slots: the C core reads allg, closing, idle, nspinning, all_done, runq, lock and
    # instr at their offsets (bind_sched, below) instead of looking them up by name.
    __slots__ = (
        "__weakref__", "all_done", "allg", "allp", "closing", "fatal", "gone", "idle",
        "instr", "instruments", "lock", "main", "make_loop", "mpool", "nspawned_outside",
        "nspinning", "nsyscall", "on_throw", "order", "resize_lock", "retired", "rt", "runq",
        "spares", "steady", "token", "unretrieved", "warm",
    )  # fmt: skip

    def __init__(
        self,
        rt: Runtime,
        make_loop: Callable[[], asyncio.AbstractEventLoop],
        mpool: MPool,
        parallel: bool = False,
    ) -> None:
        self.rt = rt  # the Runtime this belongs to (what current_runtime() answers on a P)
        # Serial steps: the token a P holds while it steps goroutines (steptoken.py).
        # None: parallel steps, Go's (Runtime(parallel=True)).
        self.token: Any = None if parallel else StepToken()
        self.make_loop = make_loop
        self.mpool = mpool
        self.lock = _new_sched_lock()  # guards idle, nspinning, P.active, ids
        self.runq: deque[G[Any]] = deque()  # the global run queue; pinned Gs never enter it
        # The running Ps and their steal order, swapped together by procresize.
        self.allp: tuple[P, ...] = ()
        # allp when no spare runs: put back as the same tuple when the spares retire
        # (a new one, made at the end of a hog spell, would pin its memory: StealOrder).
        self.steady: tuple[P, ...] = ()
        self.order = steal_order(1)
        self.idle: list[P] = []
        self.nspinning = 0
        self.allg: set[G[Any]] = set()
        # Failed Gs' exceptions not retrieved yet: reported at close if still so.
        self.unretrieved: weakref.WeakSet[Unretrieved] = weakref.WeakSet()
        self.main: G[Any] | None = None  # run()'s main goroutine
        self.closing = False  # no new goroutines; set once, at the start of shutdown
        self.all_done = threading.Event()  # set once closing and no G is left
        # Why the runtime must end: KeyboardInterrupt/SystemExit from a G, a Deadlock, or
        # an InternalError. run(), close() and aclose() raise it.
        self.fatal: BaseException | None = None
        # Called (from any thread) after an InternalError: run() stops waiting for main,
        # whose P may be the broken one.
        self.on_throw: Callable[[], None] | None = None
        # This runtime's own instruments; instr is what the driver calls: None when there
        # are none here or global (the hot path's one check), else an Instruments.
        self.instruments: list[object] = []
        self.instr: Any = None  # None, an Instruments, or a lone direct instrument
        self.nsyscall = 0  # goroutines in a blocking call right now (under lock)
        self.nspawned_outside = 0  # spawned from threads that are not its Ps (under lock)
        # Changing the Ps (under resize_lock, taken before lock): Ps removed by gomaxprocs
        # (joined at close), spares sysmon started because every P was stuck, and a
        # parked P kept ready for sysmon, outside allp.
        self.resize_lock = _new_resize_lock()
        self.retired: list[P] = []
        self.gone = PTotals()  # the counters of retired Ps whose threads have ended
        self.spares: list[P] = []
        self.warm: P | None = None
        _SCHEDS.add(self)
        self.reinstall()

    @property
    def nprocs(self) -> int:
        return len(self.allp)

    # -- instruments ---------------------------------------------------------------------

    def instrument(self, obj: object) -> None:
        if obj not in self.instruments:
            self.instruments = [*self.instruments, obj]
        self.reinstall()

    def uninstrument(self, obj: object) -> None:
        self.instruments = [o for o in self.instruments if o is not obj]
        self.reinstall()

    def reinstall(self) -> None:
        """Rebuild instr from this runtime's instruments and the global ones: one store,
        so a hook on another thread sees the old set or the new one."""
        objs = [*self.instruments]
        objs += [o for o in instrument.global_instruments() if o not in objs]
        self.instr = instrument.build(objs, self._instrument_failed)
        # The C driver looks at a P's flag first (one load where the slot costs three).
        flag = self.instr is not None
        for p in (*self.allp, *self.retired, *([self.warm] if self.warm else [])):
            p._instrumented = flag

    def _instrument_failed(self, obj: object) -> None:
        self.uninstrument(obj)
        instrument.remove_global(obj)

    # -- goroutines ------------------------------------------------------------------------

    def newproc(
        self,
        coro: Coroutine[Any, Any, T],
        name: str | None = None,
        *,
        pin: bool = False,
        eager: bool = False,
        context: contextvars.Context | None = None,
        here: P | None = None,
    ) -> G[T]:
        """Make a G (Go: newproc). From one of this runtime's Ps it goes to that P's
        runnext (or, ``eager``, is stepped at once, from a loop callback); from any
        other thread, to the global queue. ``pin`` pins it to the calling P; it runs in
        ``context`` if given, else in a copy of the caller's (as ``create_task``).
        ``here`` is the caller's P (m.p) when it has read it already: a thread-local
        read costs more than the rest of the spawn's own checks."""
        if (  # the common case inline; check_coroutine says what is wrong otherwise
            type(coro) is not CoroutineType
            or coro.cr_frame is None
            or coro.cr_suspended
            or coro.cr_running
        ):
            check_coroutine(coro)
        if self.closing or not self.allp:
            self._refuse(coro)
        p = here if here is not None else m.p
        if p is None or p.sched is not self:
            if pin:
                coro.close()
                raise ValueError(
                    f"go(..., pin=True) pins to the spawner's P, and this thread runs no P "
                    f"of {self.rt!r}: spawn it from a goroutine or the runtime's loop"
                )
            g = G(coro, self, None, name, context)
            self._add_outside(g, coro, from_p=False)
            if (ins := self.instr) is not None:
                ins.spawned(g)
            self.globrunqputbatch([g])
            return g
        g = G(coro, self, p, name, context)
        if p.curg is None:
            self._add_outside(g, coro, from_p=True)  # a loop callback or plain task on the P
        else:
            # The spawner is a live G: shutdown cannot find allg empty before this add,
            # and sweeps it up with the newcomers (runtime.py, step 2).
            self.allg.add(g)
        p.nspawned += 1
        if pin:
            p.pin(g)
        if (ins := self.instr) is not None:
            ins.spawned(g)
        if eager:
            p.step_from_callback(g)  # (which queues g if it fails before g's step)
        else:
            p.ready_here(g)  # runnext, as Go's newproc
        return g

    def _add_outside(self, g: G[Any], coro: Coroutine[Any, Any, Any], from_p: bool) -> None:
        """Add a G spawned by no goroutine: the closing check again, under the lock
        shutdown takes to set closing and look at allg (runtime.py, step 1), so that it
        never finds allg empty with this spawn in flight and stops the Ps under it."""
        with self.lock:
            if self.closing:
                self._refuse(coro)
            self.allg.add(g)
            if not from_p:
                self.nspawned_outside += 1

    def _refuse(self, coro: Coroutine[Any, Any, Any]) -> NoReturn:
        coro.close()  # it will never run; close it so Python does not warn "never awaited"
        fatal = self.fatal
        if fatal is not None:
            raise RuntimeClosedError(
                f"cannot spawn a goroutine: {self.rt!r} is ending, because of "
                f"{type(fatal).__name__}{': ' + str(fatal) if str(fatal) else ''} "
                "(close() raises it)"
            ) from fatal
        raise RuntimeClosedError(f"cannot spawn a goroutine: {self.rt!r}")

    def fatal_error(self, exc: BaseException) -> None:
        """The program must end (a G raised KeyboardInterrupt or SystemExit, as it would
        under asyncio; a deadlock; an internal error): refuse new Gs and cancel every one;
        ``run``, ``close`` and ``aclose`` raise exc. The first one counts."""
        with self.lock:  # as shutdown's step 1: a spawn in flight is refused or seen
            if self.fatal is None:
                self.fatal = exc
            self.closing = True
            empty = not self.allg
        if empty:
            self.all_done.set()
        for g in self.allg.copy():
            g.cancel()

    def throw(self, err: BaseException) -> None:
        """A scheduler invariant broke (Go: throw): say so loudly and end the runtime.
        Only the first is reported: what follows from it is noise."""
        if self.fatal is None:
            logger.critical("mnsched internal error (please report it): %s", err, exc_info=err)
        self.fatal_error(err)
        if (on_throw := self.on_throw) is not None:
            on_throw()

    # -- the global run queue ------------------------------------------------------------

    def globrunqget(self, p: P, most: int = LOCAL_QUEUE_SIZE // 2) -> G[Any] | None:
        """Take a fair share of the global queue (at most ``most``) into p's local queue;
        return one G."""
        q = self.runq
        n = min(len(q), len(q) // max(1, self.nprocs) + 1, most)
        batch = []
        try:
            for _ in range(n):
                g = q.popleft()
                g._p = p
                batch.append(g)
        except IndexError:
            pass
        if not batch:
            return None
        p.runqputbatch(batch[1:])
        return batch[0]

    def globrunqputbatch(self, gs: list[G[Any]]) -> None:
        """Put free runnable Gs on the global queue (from any thread); wake a P for them.
        Under serial steps a running P that puts them there (its local queue is full)
        takes them back itself, as it would run them."""
        for g in gs:
            g._p = None
        self.runq.extend(gs)
        p = m.p
        if self.token is None or p is None or p.sched is not self or p.retiring:
            self.wakep()

    def ready_remote(self, g: G[Any]) -> None:
        """Queue a runnable G from a thread that may not run it: its home P's inbox if it
        is pinned, else the global queue."""
        home = g._home
        if home is not None:
            home.inbox.append(g)
            home.wake()
        else:
            self.globrunqputbatch([g])

    # -- blocking calls ------------------------------------------------------------------

    def entersyscall(self, call: Call) -> None:
        """Hand a blocking call to an M thread. A goroutine's counts in ``nsyscall`` until
        exitsyscall; a plain task's (no G: it completes a future) is not a goroutine's."""
        counted = call.g is not None
        if counted:
            with self.lock:
                self.nsyscall += 1
        try:
            self.mpool.submit(call)
        except BaseException:
            if counted:
                with self.lock:
                    self.nsyscall -= 1
            raise

    def exitsyscall(self, g: G[Any]) -> None:
        """g's blocking call returned, or g was cancelled while it runs (on any thread):
        ready it on its old P if that P is idle or no other is, else let any idle P take
        it (Go: exitsyscall)."""
        with self.lock:
            self.nsyscall -= 1
        casgstatus(g, SYSCALL, RUNNABLE)
        g._waitq = None
        sample_ready(g)
        if (ins := self.instr) is not None:
            ins.readied(g)
        old = g._p
        if (
            g._home is None
            and old is not None
            and not old.retiring
            and old in self.allp
            and (not old.active or not self.idle)
        ):
            old.inbox.append(g)
            old.wake()
        else:
            self.ready_remote(g)

    # -- idle Ps and spinning --------------------------------------------------------------

    def maybe_wakep(self) -> None:
        """Work appeared on an active P: wake an idle P if none is spinning. The unlocked
        check may miss a P parking at this instant; the caller's P runs the work then.
        Not under serial steps: another P could only wait for the step token while this
        one runs, so the P that has the work runs it (it spreads when that P cannot:
        sysmon's retake of a stuck P, the global queue, a stale victim: P._steal)."""
        if self.token is None and self.idle and not self.nspinning:
            self.wakep()

    def wakep(self) -> None:
        """Wake an idle P to look for work, unless one is already spinning (Go: wakep).
        Checked under the lock, so that a P parking at this instant cannot be missed."""
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
            self.maybe_wakep()

    def unidle_locked(self, p: P) -> None:
        if p in self.idle:
            self.idle.remove(p)

    # -- the number of Ps ------------------------------------------------------------------

    def start_ps(
        self,
        n: int,
        borrow: asyncio.AbstractEventLoop | None = None,
        caller_is_p0: bool = False,
        warm: bool = False,
    ) -> None:
        """Start the first n Ps: P0 on the calling thread when caller_is_p0 (on a new
        loop, or on the running loop it borrows), the others on threads of their own; and
        the warm P (ensure_warm) if sysmon runs. It starts now, before any goroutine: made
        in the middle of a spawn storm, its hundreds of objects would each pin an arena of
        the storm's goroutines for as long as it lives (and it lives as long as the
        runtime: rewarm)."""
        ps = [P(self, i, self.make_loop) for i in range(n + warm)]

        def start(p: P) -> None:
            if caller_is_p0 and p.id == 0:
                p.create_loop(borrow)
            else:
                p.start_thread()

        _start_all(ps, start)
        if warm:
            self.warm = ps.pop()
        with self.lock:
            self.idle = list(reversed(ps))
            self.order = steal_order(len(ps))
            self.allp = self.steady = tuple(ps)

    def procresize(self, n: int) -> None:
        """Make the regular (non-spare) Ps n: start new ones, or retire the last ones."""
        with self.resize_lock:
            regular = [p for p in self.allp if p not in self.spares]
            if n > len(regular):
                self._add_ps(self._new_ps(n - len(regular)))
            elif n < len(regular):
                self._remove_ps(regular[n:])
            if not self.spares:
                self.steady = self.allp

    def add_spare(self) -> P:
        """For sysmon: every P is stuck; add one more to run their goroutines. The warm
        spare is used when there is one: starting a thread and a loop while a hog holds
        the GIL takes several GIL hand-offs, and the point is to be quick."""
        with self.resize_lock:
            p, self.warm = self.warm, None
            if p is None:
                # A spare of the last spell that has not drained yet (its thread waits
                # for the GIL the new hog holds) runs again rather than a new P being
                # made now, in the middle of the storm (see start_ps).
                p = next((r for r in self.retired if not r.leaving), None)
                if p is not None:
                    self.retired.remove(p)
            p = self._add_ps([p] if p is not None else self._new_ps(1))[0]
            self.spares.append(p)
            return p

    def ensure_warm(self) -> None:
        """For sysmon, when it has time: keep one parked P ready for the next stuck spell
        (a retired P still draining will be it: rewarm)."""
        with self.resize_lock:
            if self.warm is None and not self.closing and not self.retired:
                self.warm = self._new_ps(1)[0]

    def retire_spares(self, keep: int = 0) -> None:
        """For sysmon: spares beyond ``keep`` (the Ps stuck now) retire, idle ones first;
        once no P is stuck, all of them, back to the regular Ps."""
        with self.resize_lock:
            if self.closing or len(self.spares) <= keep:
                return  # (shutting down: every P is stopped anyway)
            by_idle = sorted(self.spares, key=lambda p: p.active)
            gone = by_idle[: len(self.spares) - keep]
            for p in gone:
                self.spares.remove(p)  # (in place: see StealOrder)
            self._remove_ps(gone)

    def rewarm(self, p: P) -> bool:
        """From a retired P that has drained, on its thread: become the warm P, if none
        is, rather than stop; True if it runs on (warm, or a spare again: add_spare took
        it back). Decided under resize_lock, as add_spare takes one back: a P told to stop
        (leaving; it closes its PerP instances first) is never taken back. A P started at
        the peak of a stuck spell (its loop, thread and hooks:
        hundreds of objects, each in a pymalloc arena full of that spell's goroutines)
        and stopped after it kept those arenas from being freed: RSS grew a few MiB with
        every spell. Go keeps its idle Ms too."""
        with self.resize_lock:
            if p not in self.retired:
                return True  # a spare again
            if self.warm is not None or self.closing or p.active or p.resources:
                p.leaving = True  # it stops: add_spare must not take it back
                return False
            self.retired.remove(p)
            self.warm = p  # still retiring: it takes no work until add_spare takes it
            return True

    def forget_retired(self, p: P) -> None:
        """p's thread has ended: if p was retired, keep its counters, not p. (Checked
        first without the lock: a P that failed to start is joined under it, and was
        never retired; a retired one was before its thread could end.)"""
        if p not in self.retired:
            return
        with self.resize_lock:
            if p in self.retired:
                self.retired.remove(p)
                self.gone.add(p)

    def ps_with_resources(self) -> list[P]:
        """Every P holding PerP instances, for shutdown to close them on its loop: running
        (spares are among them) or retired; the warm P has run nothing."""
        with self.resize_lock:
            return [p for p in (*self.allp, *self.retired) if p.resources]

    def every_p(self) -> list[P]:
        """Every P with a thread of its own that may still run: for shutdown to stop."""
        with self.resize_lock:
            ps = [*self.allp, *self.retired]
            if self.warm is not None:
                ps.append(self.warm)
                self.warm = None
            return ps

    def _new_ps(self, k: int) -> list[P]:
        """Start k Ps' threads and loops, with ids not in use (under resize_lock)."""
        taken = {p.id for p in (*self.allp, *self.retired) if not p.stopped}
        if self.warm is not None:
            taken.add(self.warm.id)
        ids = [i for i in range(len(taken) + k) if i not in taken][:k]
        new = [P(self, i, self.make_loop) for i in ids]
        _start_all(new, P.start_thread)
        return new

    def _add_ps(self, new: list[P]) -> list[P]:
        """Add started Ps to the running ones (under resize_lock)."""
        with self.lock:
            self.order = steal_order(len(self.allp) + len(new))
            self.allp = self.allp + tuple(new)
            for p in new:
                p.retiring = False  # (a warm P, or a retired spare taken back)
                # (An active one is after a stray wake-up: it idles itself. A spare taken
                # back before its retire() ran is idle still.)
                if not p.active and p not in self.idle:
                    self.idle.append(p)
        for p in new:
            p._instrumented = self.instr is not None  # a reinstall may have missed it
        if (ins := self.instr) is not None:
            for p in new:
                ins.procs_changed(p, True)
        self.wakep()
        return new

    def _remove_ps(self, gone: list[P]) -> None:
        """Retire these Ps (under resize_lock): their free goroutines move to others."""
        with self.lock:
            keep = tuple(p for p in self.allp if p not in gone)
            if keep == self.steady:
                keep = self.steady
            self.order = steal_order(len(keep))
            self.allp = keep
        self.retired.extend(gone)
        for p in gone:
            if (ins := self.instr) is not None:
                ins.procs_changed(p, False)
            p.loop.call_soon_threadsafe(p.retire)


def _start_all(ps: list[P], start: Callable[[P], None]) -> None:
    """start(p) each of ps; if one cannot start (out of threads or fds), stop the ones
    that did, close their loops and join their threads (nothing is left behind: the
    runtime stays as it was) and raise its error."""
    started: list[P] = []
    try:
        for p in ps:
            start(p)
            started.append(p)
    except BaseException:
        for p in started:
            if p.thread is None:  # P0 on the caller's thread: its loop is closed here
                p.close_loop()
            else:
                p.stop()
        for p in started:
            if p.thread is not None:
                p.thread.join()
        raise


if CORE is not None:
    CORE.bind_sched(Sched=Sched)
