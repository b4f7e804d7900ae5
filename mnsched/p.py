"""P: a processor. An event loop on its own thread, its run queues, the scheduling loop
(``schedule``, Go's schedule/findRunnable) and the G driver (``step``).

A P's loop runs ``schedule`` as an ordinary callback: it steps runnable Gs for a bounded
batch, then hands control back to the loop so that I/O callbacks and timers run. With no
work it parks: it returns, and the loop waits in epoll until I/O, a timer or a
cross-thread wake-up brings it back. docs/design.md is the authority on the rules used
here: the G state machine, where a G may be, who may touch which field, the lock order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import random
import threading
import time
import traceback
from asyncio import CancelledError
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .aio import (
    CURRENT_TASKS,
    guard_call_soon,
    hook_task_factory,
    install_loop_getter_hook,
    serialise_spawns,
    wake_on_signals,
)
from .errors import InternalError, check, resource_limit
from .g import (
    CANCEL,
    CANCELLING,
    CORE,
    DEFERRED,
    DELIVERED,
    DONE,
    GOSCHED,
    LOCK_MASK,
    LOCKS,
    METRICS_SAMPLE,
    NEVER_QUEUED,
    PACKAGE_DIR,
    PARKED,
    RUNNABLE,
    RUNNING,
    STATE_LOCKS,
    SYSCALL,
    WAIT_FUTURE,
    WAIT_GOROUTINE,
    WAIT_LOOP,
    WAITING,
    G,
    Join,
    LockType,
    casgstatus,
    explain_loop_mismatch,
    goexit,
    logger,
)
from .m import Call, m, thread_cpu_clock
from .runq import JOIN_WINDOW, LOCAL_QUEUE_SIZE, RunQ
from .timers import Timers

if TYPE_CHECKING:
    from .sched import Sched

# A P runs Gs for about 1-2 ms, then yields to its loop so I/O and timers run.
BATCH_TIME = 0.001
# Reading the clock costs about as much as a small step; read it every this many steps.
CLOCK_EVERY = 16
# Go (proc.go, forcePreemptNS): a time slice is 10 ms. Gs taken from runnext inherit the
# slice of the G that readied them; once the chain has run this long, runnext goes to
# the back of the queue so that the rest of the queue is not starved.
TIME_SLICE = 0.010
# ForkJoin runs a joined task on the joiner's stack, to any depth. A Python step nests
# about five frames per level under a recursion limit of 1000: nest at most this deep,
# and let deeper joins park.
INLINE_JOIN_DEPTH = 32
# Under serial steps, a P whose clock is older than this (it has not run a batch or a
# step for two batches' time: its loop is busy with something else) may be stolen from.
STEAL_STALE = 2 * BATCH_TIME
# Go (proc.go, findRunnable): every 61st schedule tick takes one G from the global queue
# first, so that a busy local queue cannot starve it. 61 is prime, to avoid resonances.
GLOBAL_CHECK_TICKS = 61


def _pin_on_get_loop(loop: asyncio.AbstractEventLoop) -> None:
    """A goroutine that asks for its loop is about to hold something bound to it (a
    session, a stream, a timer handle): from then on it is pinned to that P."""
    p = m.p
    if p is not None and (g := p.curg) is not None and g._home is None and loop is p.loop:
        p.pin(g)


install_loop_getter_hook(_pin_on_get_loop)


class Resource:
    """A PerP instance and how to close it."""

    __slots__ = ("close", "obj")

    def __init__(self, obj: object, close: Callable[[Any], Any] | None) -> None:
        self.obj, self.close = obj, close

    async def aclose(self) -> None:
        obj = self.obj
        if self.close is not None:
            result = self.close(obj)
        else:
            for name in ("aclose", "close", "dispose"):
                method = getattr(obj, name, None)
                if callable(method):
                    result = method()
                    break
            else:
                return  # nothing to close
        if inspect.isawaitable(result):
            await result


# The metrics' histograms: log2 buckets of microseconds (bucket 0 below 1 us, bucket i
# in [2^(i-1), 2^i) us, the last one all above); the C driver's HIST_BUCKETS.
METRICS_BUCKETS = 26


def hist_bucket(ns: int) -> int:
    return min(max(ns // 1000, 0).bit_length(), METRICS_BUCKETS - 1)


# Each bucket's upper bound in microseconds (the last one has none: infinity).
BUCKET_BOUNDS_US = tuple([float(1 << i) for i in range(METRICS_BUCKETS - 1)] + [float("inf")])


def histograms(ps: Iterable[P | PTotals]) -> dict[str, dict[str, Any]]:
    """The sampled latency and step-duration histograms of ps, summed (stats())."""
    lat = [0] * METRICS_BUCKETS
    step = [0] * METRICS_BUCKETS
    for p in ps:
        pl, pst = p._histograms()
        for i in range(METRICS_BUCKETS):
            lat[i] += pl[i]
            step[i] += pst[i]
    bounds = list(BUCKET_BOUNDS_US)
    return {
        "sched_latency": {"bounds_us": bounds, "counts": lat},
        "step_time": {"bounds_us": bounds, "counts": step},
    }


class PTotals:
    """The counters of the Ps that are gone (retired, their threads ended), for stats()'
    totals: a P itself is not kept once its thread has ended (its loop held megabytes,
    and sysmon retires a spare every time a hog spell ends)."""

    __slots__ = ("_lat", "_steptime", "nfinished", "njoined", "njoinmiss", "nspawned",
                 "nsteals", "nstolen")  # fmt: skip

    def __init__(self) -> None:
        self.nspawned = self.nfinished = self.nsteals = self.nstolen = 0
        self.njoined = self.njoinmiss = 0
        self._lat = [0] * METRICS_BUCKETS
        self._steptime = [0] * METRICS_BUCKETS

    def add(self, p: P) -> None:
        self.nspawned += p.nspawned
        self.nfinished += p.nfinished
        self.nsteals += p.nsteals
        self.nstolen += p.nstolen
        self.njoined += p.njoined
        self.njoinmiss += p.njoinmiss
        lat, step = p._histograms()
        for i in range(METRICS_BUCKETS):
            self._lat[i] += lat[i]
            self._steptime[i] += step[i]

    def _histograms(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return tuple(self._lat), tuple(self._steptime)


class _PurePBase:
    # The counters, histograms and clocks: C numbers in the C driver's PBase (there, making
    # a Python int per update cost ~130 instructions, several times per goroutine; and a
    # long-lived float or int replaced during a spawn storm pins the storm's pymalloc
    # arena: see _core.c's PBase).
    __slots__ = (
        "_clock_tick",
        "_instrumented",
        "_last_cpu",
        "_lat",
        "_long_steps",
        "_steptime",
        "batch_deadline",
        "busy",
        "goidcache",  # goroutine ids taken for this P (g._newgoid), not given out yet
        "goidend",
        "joinat",  # the pure driver's join: where its last G was taken from the queue
        "last_clock",
        "nfinished",
        "njoin",
        "njoined",
        "njoinmiss",
        "nparks",
        "npinned",
        "nspawned",
        "nsteals",
        "nstolen",
        "qseq",
        "slice_start",
        "sm_cpu",
        "sm_cpu0",
        "sm_pre",
        "sm_ran",
        "sm_tick",
        "sm_when",
        "stuck_since",
        "tick",
        "tok_since",
    )

    def __init__(self) -> None:
        self._lat = [0] * METRICS_BUCKETS  # scheduling latency (sampled: METRICS_SAMPLE)
        self._steptime = [0] * METRICS_BUCKETS  # step duration (every 64th step)
        self.joinat = 0
        self.goidcache = self.goidend = 0  # none taken yet (g._newgoid)

    def _histograms(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return tuple(self._lat), tuple(self._steptime)


if TYPE_CHECKING:
    _PBase = _PurePBase
else:
    _PBase = _PurePBase if CORE is None else CORE.PBase


class P(_PBase):
    # Slots: the C driver reads and writes curg, loop and sched at their offsets
    # (mnsched/_core.c), and counters in a dict cost a hash per store.
    __slots__ = (
        "_closing",
        "_make_loop",
        "_unguard_call_soon",
        "_unhook_task_factory",
        "_unserialise_spawns",
        "_unwake_on_signals",
        "active",
        "borrowed",
        "cpuclk",
        "curg",
        "id",
        "inbox",
        "leaving",
        "loop",
        "native_id",
        "rand",
        "resources",
        "retiring",
        "runnext",
        "runq",
        "sched",
        "spinning",
        "stopped",
        "stuck_g",
        "thread",
        "thread_ident",
        "timers",
        "tok_posted",
    )

    def __init__(self, sched: Sched, pid: int, make_loop: Callable[[], asyncio.AbstractEventLoop]):
        super().__init__()
        self._instrumented = sched.instr is not None  # kept by Sched.reinstall
        self.sched = sched
        self.id = pid
        self._make_loop = make_loop
        self.loop: asyncio.AbstractEventLoop  # set by create_loop, on the P's thread
        self.thread: threading.Thread | None = None
        # The G to run next, just spawned or woken here: a run queue holding at most one,
        # because sysmon may take it from another thread while this P's thread is stuck
        # in a step that spawns. Its append and popleft are atomic, so a G leaves it once.
        self.runnext = RunQ()
        self.runq = RunQ()  # local FIFO run queue, stealable
        self.inbox: deque[G[Any]] = deque()  # Gs readied for this P by other threads
        self.timers = Timers(self)
        self.curg: G[Any] | None = None  # the G being stepped right now
        self.tick = 0  # steps taken; sysmon watches it move
        self.slice_start = 0.0  # when the current time slice began (see TIME_SLICE)
        # sysmon's view: the tick it last saw, when it saw it change, and the current
        # stuck episode (when it began, and in which G).
        self.sm_tick = -1
        self.sm_when = 0.0
        # Its thread's CPU clock and id (create_loop), and sysmon's view of the current
        # step's CPU time: the thread's at the last round, at the round that first saw
        # the step, what the step used before that round (known if the P read its CPU
        # time just before the step, else 0), and when the thread's CPU time last moved.
        self.cpuclk: int | None = None
        self.native_id = 0
        self.sm_cpu = 0.0
        self.sm_cpu0 = 0.0
        self.sm_pre = 0.0
        self.sm_ran = 0.0
        # The clock reading the scheduling loop takes every CLOCK_EVERY steps anyway: a
        # step that is stuck began after it (give or take a few short steps).
        self.last_clock = 0.0
        self.batch_deadline = 0.0  # when the current batch should end (see BATCH_TIME)
        self._long_steps = False  # read the clock after every step (see _schedule)
        # Its tick and thread CPU time (-1: not read) when it last read the clock: if the
        # step running is the next one, sysmon knows how much CPU it has used.
        self._clock_tick = 0
        self._last_cpu = -1.0
        self.njoin = 0  # joins running inline, nested (see join)
        self.njoined = 0  # joins that ran the awaited G inline (stats: joins_inline)
        self.njoinmiss = 0  # joins that did not find it where they look (join_misses)
        self.stuck_since = 0.0
        self.stuck_g: G[Any] | None = None
        self.thread_ident = 0
        # active: a schedule callback is queued or running (else the P is idle, parked in
        # its loop). Changed under sched.lock, except that the owner may read it unlocked.
        self.active = False
        self.spinning = False  # woken to look for work and has not found any yet
        self.retiring = False  # removed by gomaxprocs; runs only its pinned Gs until done
        self.stopped = False  # its loop has stopped
        self.leaving = False  # retired and about to stop (Sched.rewarm said so)
        self.borrowed = False  # its loop is the host's (attach mode): not ours to close
        self._unhook_task_factory: Callable[[], None] | None = None
        self._unwake_on_signals: Callable[[], None] = lambda: None
        self._unguard_call_soon: Callable[[], None] = lambda: None
        self._unserialise_spawns: Callable[[], None] = lambda: None
        self.npinned = 0
        # PerP instances made on this P (only its thread touches it), closed at shutdown,
        # or by the P itself once retired and drained (then _closing is that task).
        self.resources: dict[object, Resource] = {}
        self._closing: asyncio.Task[None] | None = None
        # Pushes by runqput less joins from inside the queue, stamped on a G as it is
        # pushed (G._qpos): the difference estimates its distance from the tail (join).
        self.qseq = 0
        self.rand = random.Random()
        self.nspawned = 0
        self.nfinished = 0
        self.nsteals = 0  # successful steals by this P
        self.nstolen = 0  # Gs it took by stealing
        self.nparks = 0  # goroutines that parked or waited here
        self.busy = 0.0  # seconds spent in scheduling batches and steps from callbacks
        # The step token (steptoken.py), when taken for steps from loop callbacks: since
        # when, and whether a callback to hand it on at the end of this loop turn is posted.
        self.tok_since = 0.0
        self.tok_posted = False

    def __repr__(self) -> str:
        return f"<P{self.id} runq={len(self.runq)} {'active' if self.active else 'idle'}>"

    # -- thread and loop ---------------------------------------------------------------

    def create_loop(self, borrow: asyncio.AbstractEventLoop | None = None) -> None:
        """Make this P's loop on the calling thread; or borrow that thread's running loop
        (attach mode), to be given back as it was by close_loop."""
        self.thread_ident = threading.get_ident()
        self.native_id = threading.get_native_id()
        self.cpuclk = thread_cpu_clock()
        loop = self._make_loop() if borrow is None else borrow
        self.borrowed = borrow is not None
        # A task created from inside a goroutine belongs to this loop; so does the G now.
        self._unhook_task_factory = hook_task_factory(loop, self.pin_current)
        self._unwake_on_signals = wake_on_signals(loop)
        self._unguard_call_soon = guard_call_soon(loop, self.thread_ident)
        self._unserialise_spawns = serialise_spawns(loop)
        self.loop = loop

    def start_thread(self) -> None:
        """Start this P's thread and loop; raise (ResourceLimitError where the OS refused
        a thread or fds) with nothing left behind if either cannot be made."""
        started = threading.Event()
        failed: list[BaseException] = []

        def main() -> None:
            m.p = self
            try:
                try:
                    self.create_loop()
                except BaseException as e:
                    # Its frames' locals go: a half-made loop there holds fds (EMFILE).
                    traceback.clear_frames(e.__traceback__)
                    failed.append(e)  # for the starter to raise
                    return
                finally:
                    started.set()
                self.loop.run_forever()
            finally:
                self.stopped = True
                self.close_loop()
                m.p = None
                self.sched.forget_retired(self)

        t = threading.Thread(target=main, name=f"mnsched-P{self.id}", daemon=True)
        try:
            t.start()
        except RuntimeError as e:
            raise resource_limit(f"P{self.id}'s thread", e)  # noqa: B904 (its __cause__ is e)
        self.thread = t
        started.wait()
        if failed:
            t.join()
            raise resource_limit(f"P{self.id}'s event loop", failed[0])
        check(hasattr(self, "loop"), f"P{self.id} failed to create its loop")

    def stop(self) -> None:
        """Stop the loop from any thread; its thread then closes it and exits."""
        loop = getattr(self, "loop", None)
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass  # closed meanwhile

    def close_loop(self, force: bool = False) -> None:
        """Finish the loop as asyncio.run does: leftover tasks, async generators, executor
        (``force``, after a second Ctrl-C: none of that, only close it)."""
        loop = getattr(self, "loop", None)
        if loop is None or loop.is_closed():
            return
        self.give_token()  # it steps no more goroutines
        if self._unhook_task_factory is not None:
            self._unhook_task_factory()
            self._unhook_task_factory = None
        self._unwake_on_signals()
        self._unwake_on_signals = lambda: None
        self._unguard_call_soon()
        self._unguard_call_soon = lambda: None
        self._unserialise_spawns()
        self._unserialise_spawns = lambda: None
        if self.borrowed:
            return
        if force:
            loop.close()
            return
        try:
            tasks = self.tasks()
            for t in tasks:
                t.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    def pin_current(self) -> None:
        """The running G is about to hold something of this P's loop: pin it here."""
        g = self.curg
        if g is not None and g._home is None:
            self.pin(g)

    async def close_resources(self) -> None:
        """On this P's loop, at shutdown: close its PerP instances, newest first (a later
        one may use an earlier one). A failure is logged, and the others still close."""
        resources, self.resources = self.resources, {}
        for res in reversed(resources.values()):
            try:
                await res.aclose()
            except Exception:
                logger.exception("shutdown: closing %r on P%d failed", res.obj, self.id)

    def tasks(self) -> list[asyncio.Task[Any]]:
        """The plain asyncio tasks alive on this loop (all_tasks lists goroutines too)."""
        tasks: set[Any] = asyncio.all_tasks(self.loop)
        return [t for t in tasks if type(t) is not G and not t.done()]

    def has_tasks(self) -> bool:
        """Whether asyncio tasks are alive on this loop (from sysmon, while this P is
        idle: a set changing under the count means yes, conservatively)."""
        try:
            return bool(self.tasks())
        except RuntimeError:
            return True

    def pin(self, g: G[Any]) -> None:
        check(g._home is None, "pinning a pinned G")
        g._home = self
        self.npinned += 1

    # -- making work runnable ---------------------------------------------------------------

    def requeue_interrupted(self) -> None:
        """On this P's thread, outside any step, after an asynchronous exception (a
        signal handler's SystemExit or KeyboardInterrupt) came out of its loop: it may
        have cut a step in the driver, not in the G's code, leaving the G RUNNING for
        good, and shutdown waiting for it. If its coroutine is intact (suspended, not in
        a wait queue), it is made runnable again, so that shutdown cancels it and its
        ``finally`` runs. One cut while parking (in a queue, holding its lock) cannot be
        told apart from a live wait: it is left to shutdown's report."""
        for g in self.sched.allg.copy():
            if (
                g._p is self
                and g._status == RUNNING
                and g._waitq is None
                and not getattr(g._coro, "cr_running", True)
            ):
                if asyncio.current_task(self.loop) is g:  # type: ignore[comparison-overlap]
                    CURRENT_TASKS.pop(self.loop, None)
                self.curg = None
                casgstatus(g, RUNNING, RUNNABLE)
                self.runqput(g)
                if not self.active:
                    self.wake()

    def runqput(self, g: G[Any]) -> None:
        """Put g at the tail of the local queue; when it is full, move half of it and g to
        the global queue (Go: runqput/runqputslow). Owner thread only."""
        q = self.runq
        if len(q) < LOCAL_QUEUE_SIZE or g._home is not None:
            g._qpos = self.qseq
            self.qseq += 1
            q.append(g)
            return
        batch = q.take_half_for_global()
        q.extend([x for x in batch if x._home is not None])  # pinned Gs cannot leave
        batch = [x for x in batch if x._home is None]
        batch.append(g)
        self.sched.globrunqputbatch(batch)

    def runqputbatch(self, gs: list[G[Any]]) -> None:
        """Put gs (taken from the global queue or stolen: at most half a queue) at the
        tail of the local queue, stamped as runqput stamps (join reads the stamp). Owner
        thread only."""
        seq = self.qseq
        for g in gs:
            g._qpos = seq
            seq += 1
        self.qseq = seq
        self.runq.extend(gs)

    def ready_here(self, g: G[Any]) -> None:
        """Put the runnable g next in line here (runnext); whatever was there goes to the
        tail of the queue. Owner thread only."""
        if self.retiring and g._home is None:
            self.sched.globrunqputbatch([g])
            return
        g._p = self
        rn = self.runnext
        rn.append(g)
        if len(rn) > 1:
            try:
                self.runqput(rn.popleft())
            except IndexError:
                pass  # sysmon took it meanwhile
            else:
                # Work another P could steal: wake one if none is looking (Go's wakep). A
                # G in runnext alone is not worth a cross-thread wake-up: nobody may steal it.
                sched = self.sched
                if sched.token is None and sched.idle and not sched.nspinning:
                    sched.wakep()  # (maybe_wakep's test, saving a call)
        if not self.active:
            self.wake()

    def join(self, g: G[Any]) -> None:
        """The running G is about to wait for g, which is runnable here. As ForkJoin's
        join does, take g out of the queue and run it right here, inside the waiter's
        step: a child that simply finishes then costs the waiter no park, no wake-up and
        no second step, and fork-join trees run depth-first (flat memory, little GC).
        Only within the batch's time and INLINE_JOIN_DEPTH levels deep; beyond either, g
        is handed the P next instead (runnext). Owner thread only.

        g is taken only where a join looks: runnext, the last JOIN_WINDOW slots of the
        queue (a fork-join parent awaits its newest children), or the first ones (Gs
        awaited in spawn order). Thieves and sysmon pop the head meanwhile, without a
        lock; only this thread pushes, so an index counted from the tail stays valid
        until g itself is popped (IndexError then), and one counted from the head is
        checked against the length. ``qseq - g._qpos`` estimates g's distance from the
        tail: pushes since g's, less the joins from the tail window since (each brings
        the Gs before it one nearer the tail). Taking a G at or near the head brings
        nobody nearer the tail, so it does not count (counting it made every later G
        look recent, and their joins miss: the join-miss bug that test_driver guards)."""
        try:
            rn = self.runnext
            if rn and rn[0] is g:
                rn.popleft()  # g itself, or IndexError if sysmon took it just now
            else:
                q = self.runq
                n = len(q)
                i = -1
                tail = False
                if n and q[0] is g:
                    i = 0
                elif (j := self.joinat) < n and q[j] is g:
                    # Where the last join took its G: a parent awaits its children in
                    # spawn order, and each moved into its elder's place (no scan).
                    i = j
                    tail = j >= n - JOIN_WINDOW
                elif self.qseq - g._qpos < JOIN_WINDOW:
                    try:
                        i = q.index(g, max(0, n - JOIN_WINDOW))
                        tail = True
                    except ValueError:
                        pass
                if i < 0:
                    # Near the head (awaited in spawn order, a few left before it)?
                    for i in range(1, min(n, JOIN_WINDOW)):
                        if q[i] is g:
                            break
                    else:
                        self.njoinmiss += 1  # in the middle of the queue
                        return
                if len(q) != n:
                    self.njoinmiss += 1  # the head moved while we looked: i may be stale
                    return
                del q[i - n]
                self.joinat = i
                if tail:
                    self.qseq -= 1  # those before it are now one nearer the tail (above)
        except (IndexError, ValueError, RuntimeError):  # RuntimeError: mutated while searched
            self.njoinmiss += 1
            return
        if self.njoin < INLINE_JOIN_DEPTH and (now := time.monotonic()) < self.batch_deadline:
            self.last_clock = now  # for sysmon: this P is making progress
            rn = self.runnext
            if rn:
                # g takes runnext's turn: what sits there now goes where a thief can take
                # it, in case g runs long.
                try:
                    nxt = rn.popleft()
                except IndexError:
                    pass  # sysmon took it
                else:
                    self.runqput(nxt)
                    self.sched.maybe_wakep()
            self.njoin += 1
            self.njoined += 1
            self._clock_tick += 1  # for sysmon: g's step began when its joiner's did
            # step_eagerly, inline: the joiner is the loop's current task; g takes its
            # place (CURRENT_TASKS: a store replaces whoever is current), and gives it back.
            joiner = self.curg
            try:
                STEP(self, g)
            finally:
                self.njoin -= 1
                self.curg = joiner
                CURRENT_TASKS[self.loop] = joiner
        else:
            self.ready_here(g)

    def handoff(self) -> list[G[Any]]:
        """Give up this stuck P's runnable goroutines (Go: handoffp), from sysmon's
        thread: returns those free to run anywhere, for the global queue; the pinned
        ones go back to its inbox, the only place they can run. Its own thread may be
        readying goroutines here at the same time (user code in the stuck step): every
        queue is taken an item at a time, with atomic pops."""
        free: list[G[Any]] = []
        pinned: list[G[Any]] = []
        for q in (self.runnext, self.runq, self.inbox):
            try:
                while q:
                    g = q.popleft()
                    (free if g._home is None else pinned).append(g)
            except IndexError:
                pass
        self.inbox.extend(pinned)
        return free

    def wake(self) -> None:
        """Work appeared for this P (from any thread): if it is idle, make it active and
        post its schedule (Go: startp). A wake-up from its own thread costs no syscall."""
        sched = self.sched
        with sched.lock:
            if self.active:
                return
            self.active = True
            sched.unidle_locked(self)
        self.post_schedule()

    def post_schedule(self) -> None:
        """Queue this P's schedule callback (it is active). From another thread that
        writes the loop's self-pipe, so keep it to real wake-ups."""
        if m.p is self:
            self.loop.call_soon(self.schedule)
            return
        try:
            self.loop.call_soon_threadsafe(self.schedule)
        except RuntimeError:
            # Closed: this P has stopped, so shutdown is past waiting for goroutines,
            # and the G we woke it for has finished (a spawner from another thread queues
            # its G, and another P may run it to its end, and the runtime close, before
            # the spawner gets to wake anyone). A retired P stops only with nothing left.
            if not self.loop.is_closed():
                raise

    def resume(self, g: G[Any], _fut: object = None) -> None:
        """g's wait on this P's loop is over (its asyncio future completed: this is its
        done-callback; or the loop turned after a bare yield): step it right here, in
        this loop callback, as a Task runs its step from its wake-up. Resuming in a
        later callback instead would let asyncio and anyio see g awaiting nothing in
        between (anyio then cancels it, and results are lost) and reorder it against
        tasks."""
        g._futw = None
        casgstatus(g, WAITING, RUNNABLE)
        if (ins := self.sched.instr) is not None:
            ins.readied(g)
        self.step_from_callback(g)

    def _drain_inbox(self) -> None:
        inbox = self.inbox
        put = self.runqput
        while inbox:
            put(inbox.popleft())

    # -- the scheduling loop ---------------------------------------------------------------

    def schedule(self) -> None:
        """Run one batch of Gs (a loop callback). The error boundary: the P never stays
        wedged "active" with nothing queued to run it, and a failure inside the scheduler
        is an InternalError that ends the runtime loudly."""
        if m.p is not self:
            m.p = self  # a host loop that runs again after another one ran here
        start = time.monotonic()
        try:
            self._schedule()
        except BaseException as e:
            self._crashed(e)
        finally:
            if (tok := self.sched.token) is not None:
                tok.release(self)  # the batch is over: the next P steps (if it held it)
            self.busy += time.monotonic() - start

    def _crashed(self, e: BaseException) -> None:
        self.curg = None
        self.njoin = 0
        if not self.loop.is_closed():
            self.loop.call_soon(self.schedule)  # still active: keep serving
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise e  # a signal handler ran here: the loop's caller handles it, as asyncio
        err = (
            e
            if isinstance(e, InternalError)
            else InternalError(f"P{self.id}'s scheduler failed: {type(e).__name__}: {e}")
        )
        if err is not e:
            err.__cause__ = e
        self.sched.throw(err)

    def _schedule(self) -> None:
        """The order in which a P looks for work (Go's schedule and findRunnable), as a
        priority list; each step is one block below, or in _findrunnable:

        1. at the start of a batch, the inbox (Gs other threads readied for this P);
        2. every 61st tick, one G from the global queue, so that it cannot starve;
        3. runnext: the G this P just spawned or woke (it inherits the time slice);
        4. the local run queue, FIFO;
        5. the inbox again;
        6. a fair share of the global queue;
        7. half of a random victim's local queue (stealing);
        8. nothing: park, by returning to the loop, which waits in epoll.

        This loop and ``step`` are the hottest code in mnsched: the C core runs the same
        loop (run_batch), from step 2 on.
        """
        if not self.active:  # a stray wake-up of an idle P
            self.wake()
            return
        sched = self.sched
        runq = self.runq
        rn = self.runnext

        # 1. The inbox: Gs pinned here, or back from a blocking call, readied by other
        #    threads. They have waited a cross-thread hop already: into the queue first.
        if self.inbox:
            self._drain_inbox()
        if self.spinning and (rn or runq):
            sched.reset_spinning(self)  # woken to look for work, and it has some here

        self.last_clock = now = time.monotonic()
        self._clock_tick = self.tick
        self._last_cpu = time.thread_time()  # (~0.4 us: per batch, for sysmon)
        self.batch_deadline = deadline = now + BATCH_TIME
        tok = sched.token
        if CORE is not None:  # the same loop, in C (mnsched/_core.c: run_batch)
            if CORE.run_batch(self, now, deadline, TIME_SLICE, tok):
                self.loop.call_soon(self.schedule)
            return
        glob = sched.runq
        popleft = runq.popleft
        popnext = rn.popleft
        step = STEP
        # The clock is read every CLOCK_EVERY steps: as costly as a short step. A batch
        # that runs out within CLOCK_EVERY steps had long steps (60 us and more): the
        # next one reads it after every step, so that sysmon knows when a step began
        # (it tells a hog by the CPU time a step used since then).
        every = 1 if self._long_steps else CLOCK_EVERY
        n = 0
        while True:
            # 2. Every GLOBAL_CHECK_TICKS ticks, the global queue first.
            if (
                glob
                and self.tick % GLOBAL_CHECK_TICKS == 0
                and (g := sched.globrunqget(self, 1)) is not None
            ):
                if self.spinning:
                    sched.reset_spinning(self)
                self.slice_start = now
            else:
                # 3. runnext, in the current time slice.
                g = None
                if rn:
                    try:
                        g = popnext()
                    except IndexError:
                        pass  # sysmon took it
                if g is None:
                    self.slice_start = now
                    # 4. The local queue.
                    if runq:
                        g = popleft()
                    else:
                        # 5-8. Elsewhere, or park.
                        g = self._findrunnable()
                        if g is None:
                            return  # parked

            # The step token: taken before the batch's first step (a P that finds no
            # work has nothing to wait for), and again if sysmon took it between steps.
            if tok is not None and tok.owner is not self:
                try:
                    tok.acquire(self)
                except BaseException:
                    self.ready_here(g)  # a signal handler raised while we waited: keep g
                    raise
            step(self, g)
            if tok is not None and tok.owner is not self:
                break  # sysmon took it from that step (a hog): let the others run
            n += 1
            if n % every == 0:
                self.last_clock = now = time.monotonic()
                self._clock_tick = self.tick
                self._last_cpu = time.thread_time() if every == 1 else -1.0
                if now - self.slice_start >= TIME_SLICE and rn:
                    # The runnext chain used up its slice: to the back of the queue.
                    try:
                        self.runqput(popnext())
                    except IndexError:
                        pass
                if now >= deadline:
                    self._long_steps = n <= CLOCK_EVERY
                    break
        # The batch is over: let the loop run I/O and timers. runnext keeps its place.
        self.loop.call_soon(self.schedule)

    def _findrunnable(self) -> G[Any] | None:
        """Steps 5-8 of the priority list; None means this P has parked."""
        sched = self.sched
        rechecked = False
        while True:
            # 5. The inbox.
            if self.inbox:
                self._drain_inbox()
                return self._got(self.runq.popleft())
            # 6. A fair share of the global queue.
            if sched.runq and not self.retiring:
                g = sched.globrunqget(self)
                if g is not None:
                    return self._got(g)
            # 7. Steal.
            if len(sched.allp) > 1 and not self.retiring:
                g = self._steal()
                if g is not None:
                    return self._got(g)
            # 8. Park, unless work arrived meanwhile.
            if not self._park():
                continue
            # Parked. Go re-checks every P's queue after dropping spinning, since work
            # may have appeared after we looked. Do it once; a failed second steal parks.
            if rechecked or self.retiring or not any(len(p.runq) > 1 for p in sched.allp):
                return None
            with sched.lock:
                if self.active:
                    return None  # someone already woke us: their callback will run
                self.active = True
                sched.unidle_locked(self)
            rechecked = True

    def _got(self, g: G[Any]) -> G[Any]:
        if self.spinning:
            self.sched.reset_spinning(self)
        return g

    def _steal(self) -> G[Any] | None:
        sched = self.sched
        allp, order = sched.allp, sched.order
        if order.n != len(allp):
            return None  # procresize in flight; look again next time
        # Under serial steps a P that is running its queue is left alone: only one P
        # steps at a time, so a thief would only wait for the step token, and break up
        # fork-join trees that join inline. One whose loop is busy elsewhere is robbed,
        # as in Go.
        serial = sched.token is not None
        now = time.monotonic()
        for i in order.walk(self.rand.getrandbits(32)):
            victim = allp[i]
            if victim is self or not victim.runq or (serial and victim.stepping(now)):
                continue
            batch = victim.runq.steal_half()
            free = []
            for g in batch:
                if g._home is None:
                    free.append(g)
                else:  # pinned to the victim: give it back
                    victim.inbox.append(g)
            if len(free) < len(batch):
                victim.wake()
            if free:
                self.nsteals += 1
                self.nstolen += len(free)
                if (ins := sched.instr) is not None:
                    ins.stolen(free, self, victim)
                for g in free:
                    g._p = self
                self.runqputbatch(free[1:])
                return free[0]  # type: ignore[no-any-return]
        return None

    def stepping(self, now: float) -> bool:
        """Whether this P is running its goroutines: active, and its clock (read at each
        batch, and every few steps) is younger than STEAL_STALE."""
        return self.active and now - self.last_clock < STEAL_STALE

    def _park(self) -> bool:
        """Go idle unless work arrived meanwhile; True if parked."""
        sched = self.sched
        with sched.lock:
            if self.inbox or (sched.runq and not self.retiring):
                return False
            self.active = False
            if not self.retiring:
                sched.idle.append(self)
            if self.spinning:
                self.spinning = False
                sched.nspinning -= 1
        if self.retiring:
            self.stop_if_drained()
        return True

    def stop_if_drained(self) -> None:
        """A retired P whose pinned Gs and sleepers are all done stops: its thread closes
        the loop and exits. Its PerP instances are closed first, on this loop (no
        goroutine can reach them any more: they are this P's). Checked whenever it goes
        idle: on parking, after a step from a loop callback (a G's last step may be one:
        resumed by the future it awaited), and after its timers fire (its last sleeper
        may leave: free Gs woken on a retired P go to the global queue). The warm P
        (a retired one, waiting for sysmon's next stuck spell) stays."""
        if self.sched.warm is self:
            return
        if self.npinned == 0 and len(self.timers) == 0 and self._closing is None:
            if self.sched.rewarm(self):
                return  # the warm P now, or a spare again
            if self.resources:
                self._closing = self.loop.create_task(self._close_and_stop())
            else:
                self.loop.stop()

    async def _close_and_stop(self) -> None:
        await self.close_resources()
        self.loop.stop()

    def retire(self) -> None:
        """gomaxprocs or sysmon removed this P (run on its own thread). Its free Gs go to
        the global queue and its timer channels to another P; it keeps running only the
        Gs pinned to it (and its sleepers' timers), and stops once none is left. Nothing
        to do if sysmon took it back as a spare before this ran (Sched.add_spare): under
        resize_lock, as that is."""
        sched = self.sched
        with sched.resize_lock:
            if self not in sched.retired:
                return
            self.retiring = True
            while self.runnext:
                self.runq.appendleft(self.runnext.popleft())
            while self.inbox:
                self.runq.append(self.inbox.popleft())
            mine = [g for g in self.runq if g._home is not None]
            free = [g for g in self.runq if g._home is None]
            self.runq.clear()
            self.runq.extend(mine)
            heir = sched.allp[0]
            for t in self.timers.take_funcs():
                heir.timers.add_func(t)
            with sched.lock:
                sched.unidle_locked(self)
            if free:
                sched.globrunqputbatch(free)
        if not self.active:
            self.wake()  # its schedule parks at once, and stops the loop if drained

    # -- the G driver -------------------------------------------------------------------------

    def step(self, g: G[Any]) -> None:
        """The G driver: step g once (send into its coroutine, in its context, as the
        loop's current task), then act on what it yielded, the way a kernel acts on a
        trap (curio's kernel.py):

        - a lock: gopark (an mnsched park point); park g, then release the lock; if g
          waits in a ``Call`` (entersyscall), it is in SYSCALL while the call runs;
        - ``GOSCHED``: yield the processor; back into a run queue;
        - ``None``: a bare yield (``asyncio.sleep(0)``); resume after the loop's callbacks;
        - an asyncio future: wait for it on its loop, pinning g to this P.

        On this P's thread, outside any other step (but see step_eagerly). This is the
        pure-Python driver; mnsched/_core.c's ``step`` does the same in C, and ``STEP``
        (below) is whichever of the two runs."""
        loop = self.loop
        ct = CURRENT_TASKS
        casgstatus(g, RUNNABLE, RUNNING)
        self.curg = g
        self.tick = tick = self.tick + 1
        # The metrics: a sampled latency, and every METRICS_SAMPLE-th step's duration.
        t0 = 0
        if g._readyts or tick & (METRICS_SAMPLE - 1) == 0:
            t0 = time.perf_counter_ns()
            if g._readyts:
                self._lat[hist_bucket(t0 - g._readyts)] += 1
                g._readyts = 0
            if tick & (METRICS_SAMPLE - 1):
                t0 = 0
        if (ins := self.sched.instr) is not None:
            ins.before_step(g, self)
        ct[loop] = g
        # One try, whose handlers only note the outcome: the step's end is dealt with
        # after the cleanup (as the instruments see it: after_step, then exited), and a
        # StopIteration caught here is not raised again out of a nested finally (the
        # common end of a goroutine: that re-raise cost ~850 instructions per goroutine).
        try:
            y = g._ctx.run(g._coro.send, None) if g._pend is None else self._throw_pending(g)
        except StopIteration as e:
            y, result, raised = _ENDED, e.value, None
        except BaseException as e:
            y, raised = _ENDED, e
        finally:
            del ct[loop]
            self.curg = None
            if t0:
                self._steptime[hist_bucket(time.perf_counter_ns() - t0)] += 1
            if (ins := self.sched.instr) is not None:  # again: the step may have set it
                ins.after_step(g, self)
        if type(y) is LockType:
            # gopark: g put itself in a wait queue (a Call, for a blocking call) under
            # that lock. Mark it parked (in SYSCALL) before releasing the lock, so
            # whoever finds g there finds it parked; the state lock orders this
            # against a concurrent cancel().
            sl = STATE_LOCKS[hash(g) & LOCK_MASK]
            sl.acquire()
            try:
                casgstatus(g, RUNNING, SYSCALL if type(g._waitq) is Call else PARKED)
            except BaseException:
                sl.release()
                y.release()
                raise
            g._waitsince = self.last_clock
            self.nparks += 1
            if ins is not None:
                ins.parked(g, g._waitreason)
            if (pend := g._pend) is CANCEL or pend is DEFERRED:
                g._pend = DELIVERED  # cancel() came first: we deliver it
                # Read under the queue's lock: once it is released a waker may ready
                # g and clear _waitq (cancel_wait then finds g taken: a no-op).
                waitq = g._waitq
                sl.release()
                y.release()
                waitq.cancel_wait(g)
            else:
                sl.release()
                y.release()
        elif y is _ENDED:
            if raised is not None:
                raised.__traceback__ = _user_frames(raised.__traceback__)
                try:
                    goexit(g, None, raised, self)
                    if isinstance(raised, (KeyboardInterrupt, SystemExit)):
                        self.sched.fatal_error(raised)
                finally:
                    del raised  # (a frame holding its own exception: a cycle)
                return
            pend = g._pend
            if pend is CANCEL:
                # Cancelled during its last step (a Ctrl-C while main computes): it ends
                # cancelled, as a Task whose coroutine returns with _must_cancel set.
                g._pend = None
                goexit(g, None, _cancelled_error(g), self)
            else:
                if pend is not None:
                    g._pend = None  # DEFERRED: no wait came, it keeps its result
                goexit(g, result, None, self)
        else:
            self._trap(g, y)

    def step_eagerly(self, g: G[Any]) -> None:
        """Step g at once, from a loop callback or an asyncio task running on this P (as
        asyncio's eager tasks start): the running task steps aside meanwhile (join does
        the same for a G, inline). A G that finishes without waiting then costs no trip
        through the loop."""
        loop = self.loop
        ct = CURRENT_TASKS
        prev = ct.pop(loop, None)
        curg = self.curg
        try:
            STEP(self, g)
        finally:
            self.curg = curg
            if prev is not None:
                ct[loop] = prev

    def step_from_callback(self, g: G[Any]) -> None:
        """Step g from a loop callback of this P (a wait on the loop ended, a goroutine
        started eagerly), outside any step: the P may be idle and its clock old."""
        try:
            if self.curg is not None:
                raise InternalError(f"stepping {g!r} from a callback inside {self.curg!r}'s step")
            if m.p is not self:
                m.p = self  # as in schedule
            self.take_token()  # (a signal handler may raise while this P waits for it)
        except BaseException:
            self.ready_here(g)  # it never ran: queue it rather than lose it
            raise
        self.last_clock = start = time.monotonic()  # for sysmon: a step starts now
        self._last_cpu = -1.0  # (not read: a system call per I/O wake-up)
        try:
            self.step_eagerly(g)
        finally:
            end = time.monotonic()
            self.busy += end - start
            self.yield_token(end)
        if not self.active:
            if self.runq or self.runnext or self.sched.runq:
                self.wake()  # g queued work (gosched, a retry) while the P was idle
            elif self.retiring:
                self.stop_if_drained()

    def take_token(self) -> None:
        """Before a step from a loop callback (outside any step): take the runtime's step
        token unless this P holds it. Callbacks that resume goroutines come in runs (a
        loop turn's I/O), so it is kept for the rest of this loop turn, and handed on by
        a callback posted now (give_token); or after a step, if another P waits and this
        one has held it a batch's time (yield_token)."""
        tok = self.sched.token
        if tok is not None and tok.acquire(self):  # (held already: stepping again)
            self.tok_since = time.monotonic()
            if not self.tok_posted:
                self.tok_posted = True
                self.loop.call_soon(self.give_token)

    def give_token(self) -> None:
        """The end of the loop turn in which take_token took the token; or of this P's
        loop running at all (its thread ends; run's P0 between goroutines it runs)."""
        self.tok_posted = False
        if (tok := self.sched.token) is not None:
            tok.release(self)

    def yield_token(self, now: float) -> None:
        """After a step from a loop callback: hand the token on if another P waits and
        this one has held it for a batch (BATCH_TIME), as a batch would; else keep it for
        the loop turn, not stepping (sysmon may reclaim it meanwhile)."""
        tok = self.sched.token
        if tok is None:
            return
        if tok.waiting and now - self.tok_since >= BATCH_TIME:
            tok.release(self)
        else:
            tok.idle(self)

    def _throw_pending(self, g: G[Any]) -> Any:
        pend = g._pend
        g._pend = None
        if pend in CANCELLING:
            if getattr(g, "_abandoned", False):
                g._ctx.run(g._coro.close)  # finally blocks run, through GeneratorExit
                raise _cancelled_error(g)
            pend = _cancelled_error(g)
        return g._ctx.run(g._coro.throw, pend)  # type: ignore[arg-type]

    def _trap(self, g: G[Any], y: Any) -> None:
        """Act on what g yielded, other than a park lock."""
        if y is GOSCHED:
            # To the tail of the local queue (not Go's global queue: design.md, rejected
            # approaches). If it is not alone there, an idle P could take work: wake one,
            # as Go's goschedImpl does; a G yielding alone is not worth chasing.
            casgstatus(g, RUNNING, RUNNABLE)
            self.runqput(g)
            if len(self.runq) > 1:
                self.sched.maybe_wakep()
        elif y is None:
            # A bare yield (asyncio.sleep(0)): as for a Task, resume after the loop's
            # other ready callbacks.
            self._wait(g, WAIT_LOOP)
            self.loop.call_soon(self.resume, g)
        elif getattr(y, "_asyncio_future_blocking", None):
            self._await_future(g, y)
        else:
            self._retry_with(
                g,
                RuntimeError(
                    f"goroutine {g!r} yielded {y!r}; goroutines may await coroutines, "
                    "asyncio futures and mnsched calls"
                ),
            )

    def _wait(self, g: G[Any], reason: str) -> None:
        """g waits on this P's loop (WAITING), for reason."""
        casgstatus(g, RUNNING, WAITING)
        g._waitreason = reason
        g._waitsince = self.last_clock
        self.nparks += 1
        if (ins := self.sched.instr) is not None:
            ins.parked(g, reason)

    def _retry_with(self, g: G[Any], exc: BaseException) -> None:
        """Put g back in the queue, to have exc thrown in at its next step."""
        g._pend = exc
        casgstatus(g, RUNNING, RUNNABLE)
        self.runqput(g)

    def _await_future(self, g: G[Any], fut: asyncio.Future[Any]) -> None:
        """g awaits an asyncio future: it waits for it on this P's loop, pinned here. A
        future of another loop is refused as a Task refuses it: a G waiting on a loop
        that may never run could be neither woken nor cancelled."""
        fut._asyncio_future_blocking = False
        if fut.get_loop() is not self.loop:
            err = RuntimeError(f"Task {g!r} got Future {fut!r} attached to a different loop")
            explain_loop_mismatch(err, g, self)
            self._retry_with(g, err)
            return
        if g._home is None:
            self.pin(g)
        self._wait(g, WAIT_FUTURE)
        g._futw = fut
        fut.add_done_callback(functools.partial(self.resume, g))
        if ((pend := g._pend) is CANCEL or pend is DEFERRED) and fut.cancel(
            msg=getattr(g, "_cancel_msg", None)
        ):
            g._pend = None  # the future carries the cancellation now (as asyncio.Task)


# What step notes as "yielded" when the coroutine returned or raised instead (no
# coroutine can yield it: nothing outside p.py sees it).
_ENDED = object()


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """A goroutine's traceback without the driver's frames at its head: they are noise
    to the user, and they hold the G (a reference cycle through its own exception, which
    would leave a failed G, and the locals of its frames, to the cyclic GC). mnsched's
    frames further in (where it parked: gopark_op holds the G) keep their lines but lose
    their locals, for the same reason; they have all returned."""
    while tb is not None and tb.tb_frame.f_code in _DRIVER_CODE:
        tb = tb.tb_next
    t = tb
    while t is not None:
        if t.tb_frame.f_code.co_filename.startswith(PACKAGE_DIR):
            with contextlib.suppress(RuntimeError):  # (a frame still running: none is)
                t.tb_frame.clear()
        t = t.tb_next
    return tb


_DRIVER_CODE = frozenset({P.step.__code__, P._throw_pending.__code__})


def _cancelled_error(g: G[Any]) -> CancelledError:
    """The CancelledError a cancelled G raises, with cancel()'s message if it had one."""
    msg = getattr(g, "_cancel_msg", None)
    return CancelledError() if msg is None else CancelledError(msg)


if CORE is not None:
    CORE.bind(
        G=G, P=P, Call=Call, Join=Join, CancelledError=CancelledError,
        m=m, RUNNABLE=RUNNABLE, RUNNING=RUNNING, PARKED=PARKED, SYSCALL=SYSCALL, DONE=DONE,
        CANCEL=CANCEL, DELIVERED=DELIVERED, DEFERRED=DEFERRED, NEVER_QUEUED=NEVER_QUEUED,
        WAIT_GOROUTINE=WAIT_GOROUTINE, CURRENT_TASKS=CURRENT_TASKS, LOCKS=LOCKS,
        STATE_LOCKS=STATE_LOCKS, goexit=goexit, cancelled_error=_cancelled_error,
        casgstatus=casgstatus, LOCK_MASK=LOCK_MASK, JOIN_WINDOW=JOIN_WINDOW,
        LOCAL_QUEUE_SIZE=LOCAL_QUEUE_SIZE, INLINE_JOIN_DEPTH=INLINE_JOIN_DEPTH,
        GLOBAL_CHECK_TICKS=GLOBAL_CHECK_TICKS, CLOCK_EVERY=CLOCK_EVERY, LockType=LockType,
    )  # fmt: skip
# The driver's step(p, g): the C one, or P.step.
STEP: Callable[[P, G[Any]], None] = P.step if CORE is None else CORE.step
