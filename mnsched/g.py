"""G: a goroutine, the handle users hold, and the G state machine.

A G is a coroutine that mnsched steps itself (``P.step``), deliberately not an
``asyncio.Task``; while it runs it *is* asyncio's current task on its P's loop, so it
speaks the part of the Task protocol that asyncio and anyio use. Its states, their legal
transitions, the park protocol and the lock order are in docs/design.md ("The G state
machine", "Parking", "Locks"); ``casgstatus`` is the only code that changes a status.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import inspect
import itertools
import logging
import os
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .aio import call_on_loop, complete_future, install_loop_bound_hook
from .errors import BlockingCallError, InternalError
from .lockrank import RANK_G, RANK_STATE, lock_factory
from .m import m

if TYPE_CHECKING:
    from .p import P
    from .sched import Sched

T = TypeVar("T")
logger = logging.getLogger("mnsched")


def _load_core() -> Any:
    """The C driver (mnsched/_core.c; p.py binds it), or None for the pure-Python one:
    when MNSCHED_PURE=1, or when the extension was not built (no compiler)."""
    pure = os.environ.get("MNSCHED_PURE", "0")
    if pure not in ("0", "1", ""):
        raise ValueError(
            f"MNSCHED_PURE={pure!r}: set it to 1 for the pure-Python driver, 0 (or unset) "
            "for the C one"
        )
    if pure == "1":
        return None
    try:
        return importlib.import_module("mnsched._core")
    except ImportError:
        return None


CORE = _load_core()
# Which driver runs goroutines: "c" or "python" (stats()["driver"]).
DRIVER = "python" if CORE is None else "c"


class _PureGBase:
    # C integers in the C driver's GBase: P.qseq when it was last pushed into a local
    # queue (see P.join), the goroutine id, where it was spawned (the offset in _gocode),
    # the spawning goroutine's id (0: none), when it became runnable if that is being
    # timed (sample_ready; 0: not), and when it last parked or began to wait (its P's
    # last_clock; 0.0, or unset on this pure base, until then: read with getattr).
    __slots__ = ("_goid", "_golasti", "_goparent", "_qpos", "_readyts", "_waitsince")
    _waitsince: float  # (declared, not assigned: a spawn does not pay for it)


if TYPE_CHECKING:
    _GBase = _PureGBase
else:
    # The C driver's G base gives G its await (GBase.__await__, in C).
    _GBase = _PureGBase if CORE is None else CORE.GBase

# G statuses (Go: _Grunnable, _Grunning, _Gwaiting, _Gsyscall, _Gdead).
RUNNABLE = 0  # in a run queue (runnext, local, inbox or global), or about to be
RUNNING = 1  # being stepped by a P
PARKED = 2  # waiting at an mnsched park point (a G, a timer, a channel): may resume anywhere
WAITING = 3  # waiting on an asyncio future or the loop: resumes on that loop
SYSCALL = 4  # a blocking call runs on an M thread on its behalf
DONE = 5
STATUS_NAMES = ("runnable", "running", "parked", "waiting", "syscall", "done")
STATUS_NAMES_BY_CONST = ("RUNNABLE", "RUNNING", "PARKED", "WAITING", "SYSCALL", "DONE")

# Every legal transition (docs/design.md draws them). A G starts RUNNABLE; it is DONE
# only after a step, so a G is never finished from a queue or a wait.
LEGAL_TRANSITIONS = frozenset({
    (RUNNABLE, RUNNING),  # a P steps it
    (RUNNING, RUNNABLE),  # gosched, or a step that must be retried (a bad yield)
    (RUNNING, PARKED),  # gopark
    (RUNNING, WAITING),  # awaits an asyncio future, or yields to the loop
    (RUNNING, SYSCALL),  # entersyscall
    (RUNNING, DONE),  # returned or raised
    (PARKED, RUNNABLE),  # goready
    (WAITING, RUNNABLE),  # its future completed; the loop turned
    (SYSCALL, RUNNABLE),  # exitsyscall, or cancelled while the call runs
})  # fmt: skip

# Wait reasons (Go: waitReason), kept on a waiting G with the time it started waiting.
WAIT_CHAN_RECEIVE = "chan receive"
WAIT_CHAN_SEND = "chan send"
WAIT_SELECT = "select"
WAIT_SELECT_NO_CASES = "select (no cases)"  # Go's waitReasonSelectNoCases: parked for ever
WAIT_SLEEP = "sleep"
WAIT_GOROUTINE = "await goroutine"
WAIT_SYSCALL = "syscall"
WAIT_FUTURE = "asyncio future"
WAIT_LOOP = "loop turn"  # a bare yield (asyncio.sleep(0)): after the loop's callbacks
WAIT_WAITGROUP = "sync.WaitGroup.Wait"
WAIT_MUTEX = "sync.Mutex.Lock"
WAIT_ONCE = "sync.Once.Do"


def casgstatus(g: G[Any], old: int, new: int) -> None:
    """Change g's status from old to new (Go: casgstatus): anything else is a bug. Every
    call names its transition with constants, and tests/test_layout.py checks each one
    against LEGAL_TRANSITIONS; at run time only the old status needs checking."""
    if g._status != old:
        raise InternalError(
            f"{g!r}: illegal status change {STATUS_NAMES[old]} -> {STATUS_NAMES[new]} "
            f"(it is {STATUS_NAMES[g._status]})"
        )
    g._status = new


# Striped locks (a per-G lock would cost an allocation per spawn); a power of two.
# Two separate sets, always taken in this order and never the other way round:
#  - lock_of(g): g's completion and its list of waiters; it is also the wait-queue lock
#    of a G that awaits g;
#  - state_lock_of(g): g's park state against cancel(); held only briefly, never while
#    taking another lock.
_NLOCKS = 64
LOCK_MASK = _NLOCKS - 1
# The locks a park point yields (the driver releases one once the G is parked) and the
# striped G locks: the C core's Lock in the C driver, which takes and drops them without
# a method call; threading's otherwise. The C driver also accepts a threading.Lock (a
# Call's: m is below g). Each lock is made by its rank's factory (lockrank.py): this
# plain lock, or a RankedLock under MNSCHED_LOCKCHECK=1.
new_lock: Callable[[], threading.Lock] = threading.Lock if CORE is None else CORE.Lock
_new_g_lock = lock_factory(RANK_G, "lock_of(g)", new_lock)
_new_state_lock = lock_factory(RANK_STATE, "state_lock_of(g)", new_lock)
LOCKS: tuple[threading.Lock, ...] = tuple(_new_g_lock() for _ in range(_NLOCKS))
STATE_LOCKS: tuple[threading.Lock, ...] = tuple(_new_state_lock() for _ in range(_NLOCKS))
LockType = type(LOCKS[0])  # the park locks' type (the driver tells a park by it)


def lock_of(g: object) -> threading.Lock:
    return LOCKS[hash(g) & LOCK_MASK]


def _after_fork_in_child() -> None:
    """A forked child has only the thread that forked: the parent's other threads may
    have held these locks, and this thread may have forked from inside a step (the C
    driver's running P). The child has no runtime (runtime.py forgets the parent's)."""
    for lock in (*LOCKS, *STATE_LOCKS, _goid_lock):
        lock._at_fork_reinit()  # type: ignore[attr-defined]
    if CORE is not None:
        CORE.after_fork()


def state_lock_of(g: object) -> threading.Lock:
    return STATE_LOCKS[hash(g) & LOCK_MASK]


NEVER_QUEUED = -(1 << 62)


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# In ``G._pend``: throw CancelledError at the G's next resumption.
CANCEL = _Marker("CANCEL")  # requested
DELIVERED = _Marker("DELIVERED")  # requested, and handed to the wait queue it was parked in
# Requested as the operation g waited in completed (gopark_op): g keeps the outcome and
# takes the cancellation at its next wait; a G that returns before any keeps its result
# too (as trio's checkpoints: no wait, no cancellation), since the value it received or
# the lock it took would otherwise be lost with it.
DEFERRED = _Marker("DEFERRED")
CANCELLING = (CANCEL, DELIVERED, DEFERRED)
# What a G yields to give up the processor (Go: Gosched).
GOSCHED = _Marker("GOSCHED")


class WaitQueue(Protocol):
    """Whatever a parked G waits in: it can take a cancelled G out again (and readies it,
    unless a partner already has). ``blocked_on()``, if it has one, names what only
    another goroutine can complete (the deadlock detector reads it), or None."""

    def cancel_wait(self, g: G[Any]) -> None: ...


class Operation(WaitQueue, Protocol):
    """A wait that a partner may complete (a channel op, a select, a sync wait):
    ``done`` once it has, even if the G was cancelled at the same time."""

    @property
    def done(self) -> bool: ...


@types.coroutine
def gopark(g: G[Any], lock: Any, waitq: WaitQueue, reason: str) -> Generator[Any, None, None]:
    """Park g in waitq (Go: gopark). g has put itself in waitq while holding lock; the
    driver marks g parked, then releases lock, so a waker (who needs lock to find g)
    always finds it fully parked. Returns when woken; raises CancelledError if cancelled."""
    g._waitq = waitq
    g._waitreason = reason
    yield lock


@types.coroutine
def gopark_op(g: G[Any], lock: Any, op: Operation, reason: str) -> Generator[Any, None, None]:
    """gopark for an operation a partner may complete. If it completed just as g was
    cancelled, g keeps the outcome (no value is lost) and takes the cancellation at its
    next wait instead."""
    g._waitq = op
    g._waitreason = reason
    try:
        yield lock
    except asyncio.CancelledError:
        if not op.done:
            raise
        g._pend = DEFERRED


CO_ITERABLE = inspect.CO_ITERABLE_COROUTINE
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def check_coroutine(coro: object) -> None:
    """A goroutine needs a coroutine that has not started: say what was given instead,
    and the fix. (newproc checks a plain coroutine's freshness itself, inline.)"""
    if type(coro) is types.CoroutineType:
        if coro.cr_frame is None or coro.cr_suspended or coro.cr_running:
            raise_started(coro)
        return
    if isinstance(coro, types.GeneratorType) and coro.gi_code.co_flags & CO_ITERABLE:
        # a @types.coroutine generator (asyncio stopped accepting them in 3.12)
        if coro.gi_frame is None or coro.gi_suspended or coro.gi_running:
            raise_started(coro)
        return
    if asyncio.iscoroutine(coro):
        # another implementation's (Cython's, the C core's channel operations): refused
        # if it says it is running or suspended, else its state is not known
        if getattr(coro, "cr_running", False) or getattr(coro, "cr_suspended", False):
            raise_started(coro)
        return
    if callable(coro):
        hint = " (call it: go(f(...)), or decorate an async def with @go)"
    elif hasattr(coro, "__await__"):
        hint = " (an awaitable that is not a coroutine: wrap it in an async def)"
    else:
        hint = ""
    raise TypeError(f"a goroutine needs a coroutine, not {type(coro).__name__} {coro!r}{hint}")


def coro_frames(coro: Any, limit: int | None = None) -> list[types.FrameType]:
    """The frames of a suspended coroutine chain, outermost first (following what each
    awaits: cr_await, or a generator's gi_yieldfrom)."""
    frames: list[types.FrameType] = []
    while coro is not None and (limit is None or len(frames) < limit):
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames


def user_frames(frames: list[types.FrameType]) -> list[traceback.FrameSummary]:
    """Frames as a traceback lists them, without mnsched's own (where a goroutine parks
    inside a channel or a sleep: noise to the user)."""
    return [
        traceback.FrameSummary(f.f_code.co_filename, f.f_lineno, f.f_code.co_name)
        for f in frames
        if not f.f_code.co_filename.startswith(PACKAGE_DIR)
    ]


def raise_started(coro: Coroutine[Any, Any, Any] | types.GeneratorType[Any, Any, Any]) -> None:
    """A coroutine already started cannot be a goroutine: its next step belongs to
    whoever runs it now (another goroutine or task awaiting it), and taking it would lose
    what that one is waiting for. It is left alone, not closed: it is not ours."""
    state: str
    if isinstance(coro, types.GeneratorType):
        state = inspect.getgeneratorstate(coro)
    else:
        state = inspect.getcoroutinestate(coro)
    raise RuntimeError(
        f"cannot make a goroutine of {coro!r}: it has already started ({state}), so "
        "another goroutine or task is running or awaiting it (or it has finished). "
        "Pass a fresh coroutine: go(f(...)), not one that is being awaited"
    )


def _goready(g: G[Any], old: int = PARKED, p: P | None = None) -> None:
    """Make a waiting G runnable (Go: goready). On a P that may run it (p, the caller's
    P when it knows it, else this thread's: one of g's runtime, and g free or pinned to
    it), it goes to that P's runnext, so a wake-up within a P never crosses threads;
    otherwise to its home P or the global queue."""
    casgstatus(g, old, RUNNABLE)
    g._waitq = None
    sample_ready(g)
    if (ins := g._sched.instr) is not None:
        ins.readied(g)
    if p is None:
        p = m.p
    if p is not None and p.sched is g._sched and (g._home is None or g._home is p):
        p.ready_here(g)
    else:
        g._sched.ready_remote(g)


# Go: proc.go's _GoidCacheBatch; _core.c's GOID_BATCH (the same ids in both drivers).
GOID_BATCH = 16
_goidgen = 0  # the last goroutine id taken from the shared counter
_goid_lock = threading.Lock()


def _newgoid(p: P | None) -> int:
    """The pure driver's newgoid: a spawn on no P takes one id; a P takes GOID_BATCH
    (its goidcache, which G.__init__ gives out inline) and the first of them."""
    global _goidgen
    with _goid_lock:  # (a += is not atomic without the GIL)
        first = _goidgen + 1
        _goidgen += 1 if p is None else GOID_BATCH
    if p is not None:
        p.goidcache, p.goidend = first + 1, first + GOID_BATCH
    return first


os.register_at_fork(after_in_child=_after_fork_in_child)


# Goroutine ids: process-wide, as Go's goid, and in spawn order on each P (the C driver's
# counter when it runs, so that Gs made in C and in Python share one sequence: a P takes
# them 16 at a time there, as Go's goidcache). p: the spawning P, on its thread, or None.
newgoid: Callable[[P | None], int] = _newgoid if CORE is None else CORE.newgoid


# Go (proc.go, gTrackingPeriod = 8) times a G's scheduling latency on every 8th
# transition: here every 64th readying is timed until its next step, and every 64th step
# (the C driver's METRICS_SAMPLE says why 64). A power of 2.
METRICS_SAMPLE = 64
_ready_ctr = itertools.count()


METRICS_MASK = METRICS_SAMPLE - 1


def _sample_ready(g: G[Any]) -> None:
    if next(_ready_ctr) & METRICS_MASK == 0:
        g._readyts = time.perf_counter_ns()


# g became runnable: maybe time how long it waits for a P (p.py's step reads it).
sample_ready: Callable[[G[Any]], None] = _sample_ready if CORE is None else CORE.sample_ready


def spawn_site(g: G[Any]) -> tuple[str, int] | None:
    """Where g was spawned: (file, line) of the ``go`` call, or None if unknown."""
    code = g._gocode
    lasti = g._golasti
    if code is None or lasti < 0:
        return None
    line = None
    for start, end, lineno in code.co_lines():
        if start <= lasti < end:
            line = lineno
            break
    return code.co_filename, line if line is not None else code.co_firstlineno


def _runtime_files() -> frozenset[str]:
    """The runtime's own source files (mnsched/*.py, as code objects name them), not its
    subpackages: a goroutine spawned by the bench's workloads was created there. The
    pure driver's spawn site is the first frame outside them: a set lookup per frame,
    not a prefix test, as spawns nest deep when goroutines are stepped eagerly."""
    here = os.path.dirname(__file__)
    names = [n for n in os.listdir(here) if n.endswith(".py")]
    return frozenset(os.path.join(d, n) for d in {here, PACKAGE_DIR.rstrip(os.sep)} for n in names)


_RUNTIME_FILES = _runtime_files()
# From G.__init__, the frames above newproc and the runtime function that called it.
SPAWN_DEPTH = 3


# The driver's goready: the C one (the same, in mnsched/_core.c), or _goready.
goready: Callable[..., None] = _goready if CORE is None else CORE.goready


class G(_GBase, Generic[T]):
    """A goroutine handle: ``await g`` for its result, ``g.cancel()`` to cancel it.

    ``await g`` works from a goroutine on any P and from any asyncio loop;
    ``g.result(timeout)`` blocks a plain thread until it finishes.
    """

    # Grouped, not sorted: those set at spawn, then those set when first needed (the
    # fewer stores, the cheaper a spawn).
    __slots__ = (  # noqa: RUF023
        "__weakref__",
        "_coro",
        "_ctx",
        "_gocode",  # the code that spawned it (with _golasti: the spawn site), or None
        "_futw",  # the asyncio future it awaits
        "_home",  # the P it is pinned to, once it has used asyncio there
        "_p",  # the P that holds it (queued) or runs it; None in the global queue
        "_pend",  # an exception, CANCEL or DELIVERED, to throw in at the next resumption
        "_sched",
        "_status",
        "_waiters",  # what to wake when it finishes: None, one G or callback, or a list
        "_waitq",  # what it is parked on, for cancel()
        # set when first needed:
        "_abandoned",  # shutdown gave up on it: close its coroutine at its next step
        "_cancel_msg",
        "_exc",
        "_name",
        "_ncancel",
        "_result",
        "_unretrieved",  # an Unretrieved while its exception is not retrieved
        "_waitreason",  # why it waits (a WAIT_* string), while not runnable
    )

    # Those set when first needed (declared, not assigned: they are slots).
    _abandoned: bool
    _cancel_msg: Any
    _exc: BaseException | None
    _name: str
    _ncancel: int
    _result: Any
    _unretrieved: Unretrieved | None
    _waitreason: str

    def __init__(
        self,
        coro: Coroutine[Any, Any, T],
        sched: Sched,
        p: P | None,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> None:
        self._coro = coro
        # As a task: in a copy of its spawner's context, or in the one it is given.
        self._ctx = contextvars.copy_context() if context is None else context
        self._sched = sched
        self._p: P | None = p
        self._status = RUNNABLE
        self._home: P | None = None
        self._waiters: Any = None  # None, one waiter, or a list of them
        self._waitq: Any = None  # a WaitQueue
        self._pend: BaseException | _Marker | None = None
        self._futw: asyncio.Future[Any] | None = None
        self._qpos = NEVER_QUEUED
        if CORE is None:  # newgoid and sample_ready, inline: the pure driver's spawn path
            # (p, if not None, is the spawner's, on its thread: newproc)
            if p is not None and (goid := p.goidcache) != p.goidend:
                p.goidcache = goid + 1
                self._goid = goid
            else:
                self._goid = _newgoid(p)
            self._readyts = time.perf_counter_ns() if next(_ready_ctr) & METRICS_MASK == 0 else 0
        else:  # (the C driver's own spawns skip __init__: _core.c's new_g)
            self._goid = newgoid(p if p is not None and m.p is p else None)
            self._readyts = 0
            sample_ready(self)
        # Where it was created: the first frame outside the runtime's files, looked for
        # from above newproc and its caller (every spawn enters the runtime through a
        # caller of newproc): _getframe(SPAWN_DEPTH) skips them without making frame
        # objects for them, which cost more than the rest of a spawn's bookkeeping.
        try:
            f: types.FrameType | None = sys._getframe(SPAWN_DEPTH)
        except ValueError:  # a stack shallower than that: no Python frame spawned it
            f = None
        self._gocode, self._golasti = None, -1
        while f is not None:
            code = f.f_code  # (a frame's attributes are descriptors: each read costs)
            if code.co_filename not in _RUNTIME_FILES:
                self._gocode, self._golasti = code, f.f_lasti
                break
            f = f.f_back
        cur = p.curg if p is not None else None
        self._goparent = 0 if cur is None else cur._goid
        if name is not None:
            self._name = name

    # -- the handle -----------------------------------------------------------------

    @property
    def id(self) -> int:
        """The goroutine id (Go's goid): unique in the process, in spawn order on each P."""
        return self._goid

    @property
    def name(self) -> str:
        name = getattr(self, "_name", None)
        return name if name is not None else f"G{self.id}"

    @property
    def status(self) -> str:
        """ "runnable", "running", "parked", "waiting", "syscall" or "done"."""
        return STATUS_NAMES[self._status]

    @property
    def wait_reason(self) -> str | None:
        """Why it waits ("chan receive", "sleep", "syscall", ...), or None if it does not."""
        if self._status in (RUNNABLE, RUNNING, DONE):
            return None
        return getattr(self, "_waitreason", None)

    def done(self) -> bool:
        return self._status == DONE

    def cancelled(self) -> bool:
        return self._status == DONE and isinstance(self._exc, asyncio.CancelledError)

    if CORE is None:  # the C driver's is GBase's

        def __await__(self) -> Generator[Any, None, T]:
            if self._status != DONE:
                p = m.p
                if p is None or (g := p.curg) is None:
                    return (yield from self._await_foreign())
                if g is self:
                    raise RuntimeError(f"{self!r} cannot await itself")
                if self._p is p and self._status == RUNNABLE:
                    p.join(self)  # may run it to completion right here
                if self._status != DONE:
                    lock = LOCKS[hash(self) & LOCK_MASK]
                    lock.acquire()
                    if self._status != DONE:
                        self._push_waiter(g)
                        yield from gopark(g, lock, Join(self, g), WAIT_GOROUTINE)
                    else:
                        lock.release()
            if self._exc is None:
                return self._result  # type: ignore[no-any-return]  # (_outcome's first line)
            try:
                return self._outcome()
            except BaseException:
                del self  # (see _outcome)
                raise

    def _await_foreign(self) -> Generator[Any, None, T]:
        """Await from an asyncio task (a foreign loop, or a plain task on a P's loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                f"await {self!r} needs a goroutine or a running event loop; "
                "from plain threads use g.result(timeout)"
            ) from None
        fut = loop.create_future()
        if add_waiter(self, lambda _: complete_future(fut)):
            try:
                yield from fut
            except asyncio.CancelledError:
                # As asyncio.wrap_future: cancelling the waiter cancels the goroutine.
                self.cancel()
                raise
        try:
            return self._outcome()
        except BaseException:
            del self  # (see _outcome)
            raise

    def _outcome(self) -> T:
        exc = self._exc
        if exc is None:
            return self._result  # type: ignore[no-any-return]
        self._retrieved()
        # The frames it passes through join its traceback, and the G holds it: a frame
        # holding the G or the exception would make a cycle that only a collection
        # frees, keeping the goroutine's locals (its frame is in the traceback too). So
        # no frame of ours holds either once it has left (concurrent.futures does so).
        try:
            raise exc
        finally:
            del exc, self

    def result(self, timeout: float | None = None) -> T:
        """Wait (blocking this thread) until the goroutine finishes; return or raise its outcome.

        Not allowed on a P's thread, where it would stall every goroutine of that P:
        inside a goroutine, use ``await g``.
        """
        self._wait_blocking(timeout)
        try:
            return self._outcome()
        except BaseException:
            del self  # (see _outcome)
            raise

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait like ``result``; return the exception it raised, or None. Raises
        CancelledError if it was cancelled."""
        self._wait_blocking(timeout)
        if isinstance(self._exc, asyncio.CancelledError):
            raise self._exc
        self._retrieved()
        return self._exc

    def _retrieved(self) -> None:
        """Its exception was seen by the user: nothing to log when it is dropped."""
        u = getattr(self, "_unretrieved", None)  # a slot, unset unless it failed unseen
        if u is not None:
            u.exc = None
            self._unretrieved = None

    def _wait_blocking(self, timeout: float | None) -> None:
        if self._status == DONE:
            return
        p = m.p
        if p is not None:
            raise BlockingCallError(
                f"{self!r}.result() would block P{p.id} and every goroutine on it; "
                "inside a goroutine use 'await g'"
            )
        done = threading.Event()
        if add_waiter(self, lambda _: done.set()) and not done.wait(timeout):
            raise TimeoutError(f"{self!r} did not finish within {timeout} s")

    def cancel(self, msg: Any = None) -> bool:
        """Request cancellation: CancelledError is thrown in at the goroutine's current or
        next wait. Returns False if it has already finished. Safe from any thread."""
        with lock_of(self):
            if self._status == DONE:
                return False
            self._ncancel = getattr(self, "_ncancel", 0) + 1
            self._cancel_msg = msg
        # A G that is parking right now is handled by whichever of us sees the other's
        # write under the state lock: the driver (pend set before it parked) or this.
        with state_lock_of(self):
            status = self._status
            deliver = status in (PARKED, SYSCALL) and self._pend is not DELIVERED
            fut = self._futw if status == WAITING else None
            if deliver or self._pend is DELIVERED:
                self._pend = DELIVERED
            elif fut is None:
                # Running on another thread: it may be returning a value it has just
                # received. As a cancel that lands as its wait completes (gopark_op), it
                # is taken at the next wait, and a G that returns first keeps its result
                # (the cancel is ordered after the finish). From the G's own thread (the
                # G itself, or a Ctrl-C on its P's loop) it ends cancelled, as a Task.
                running_elsewhere = status == RUNNING and m.p is not self._p
                if not (running_elsewhere and self._pend is CANCEL):
                    self._pend = DEFERRED if running_elsewhere else CANCEL
            waitq = self._waitq
        if deliver:
            # A waker readies g without the state lock (the wait queue's own lock orders
            # it against cancel_wait): it may have cleared _waitq since we read PARKED.
            # Then g is runnable already, and the DELIVERED pend is thrown in as it
            # resumes (an operation that completed keeps its outcome: gopark_op).
            if waitq is not None:
                waitq.cancel_wait(self)
        elif fut is not None:
            # As Task.cancel: the awaited future carries the cancellation, and g sees its
            # real outcome (an awaited task may swallow it). Only if the future cannot be
            # cancelled (it is done) is the cancellation kept for g's next resumption.
            loop = fut.get_loop()
            if asyncio._get_running_loop() is loop:
                self._cancel_future(fut, msg)  # at once, as Task.cancel does
            else:
                call_on_loop(loop, self._cancel_future, fut, msg)
        return True

    def _cancel_future(self, fut: asyncio.Future[Any], msg: Any) -> None:
        """On the future's loop (g's P: g is pinned there while it waits)."""
        if fut.cancel(msg=msg):
            return
        # It completed first. If its wake-up is still to come, g takes the cancellation
        # as it resumes (Task: _must_cancel); if g is on to its next wait, it is
        # cancelled there (counted once: cancel() counts it again).
        with state_lock_of(self):
            if self._futw is fut:
                self._pend = CANCEL
                return
        with lock_of(self):
            self._ncancel -= 1
        self.cancel(msg)

    def __repr__(self) -> str:
        coro = self._coro
        what = getattr(coro, "__qualname__", type(coro).__name__)
        state = STATUS_NAMES[self._status]
        if (reason := self.wait_reason) is not None:
            since = getattr(self, "_waitsince", 0.0)
            took = f", {(time.monotonic() - since) * 1000:.0f} ms" if since else ""
            state = f"{state} ({reason}{took})"
        where = f" on P{self._p.id}" if self._p is not None and self._status != DONE else ""
        return f"<G{self.id} {self.name!r} {what} {state}{where}>"

    # -- completion -----------------------------------------------------------------

    def _push_waiter(self, w: Any) -> None:
        """Add a G or a callback to wake when this G finishes. Under lock_of(self), with
        this G not DONE."""
        ws = self._waiters
        if ws is None:
            self._waiters = w
        elif type(ws) is list:
            ws.append(w)
        else:
            self._waiters = [ws, w]

    # -- the part of the asyncio.Task protocol that asyncio and anyio use ------------------

    def _pin_if_running_here(self) -> None:
        p = m.p
        if p is not None and p.curg is self and self._home is None:
            p.pin(self)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The loop of the P that holds or runs it. A G in the global queue is on no P
        yet: it is counted on the runtime's first P (the host loop in attach mode)
        until a P takes it, so that ``asyncio.all_tasks()`` never misses it."""
        self._pin_if_running_here()
        p = self._p
        if p is None:
            allp = self._sched.allp
            if not allp:
                raise RuntimeError(f"{self!r}: its runtime has no P left")
            p = allp[0]
        return p.loop

    _loop = property(get_loop)  # anyio reads Task._loop

    def cancelling(self) -> int:
        self._pin_if_running_here()
        return getattr(self, "_ncancel", 0)

    def uncancel(self) -> int:
        self._pin_if_running_here()
        with lock_of(self):
            n = getattr(self, "_ncancel", 0)
            if n > 0:
                n = self._ncancel = n - 1
                if n == 0 and self._pend in CANCELLING:
                    self._pend = None  # as Python 3.13+: the last uncancel drops the request
            return n

    @property
    def _must_cancel(self) -> bool:
        return self._pend in CANCELLING

    @property
    def _fut_waiter(self) -> Any:
        """What it awaits, as anyio reads it: the asyncio future, or while it is parked
        (a channel, a timer, a join, a blocking call) a stand-in that is never done, so
        that ``anyio.wait_all_tasks_blocked()`` counts it as blocked; None if it runs or
        is runnable."""
        status = self._status
        if status == WAITING:
            return self._futw
        if status in (PARKED, SYSCALL):
            return _PARKED
        return None

    @property
    def _callbacks(self) -> list[tuple[Callable[[G[Any]], object], contextvars.Context]]:
        """Its users' done-callbacks as a Future lists them (anyio reads them)."""
        ws = self._waiters
        ws = [] if ws is None else ws if type(ws) is list else [ws]
        return [(w.fn, w.ctx) for w in ws if type(w) is _DoneCallback]

    def get_coro(self) -> Coroutine[Any, Any, T]:
        return self._coro

    def get_context(self) -> contextvars.Context:
        return self._ctx

    def get_name(self) -> str:
        return self.name

    def set_name(self, value: object) -> None:
        self._name = str(value)

    def get_stack(self, *, limit: int | None = None) -> list[Any]:
        return coro_frames(self._coro, limit)

    def format_stack(self) -> str:
        """Its coroutine chain, outermost frame first, as a traceback prints it, without
        mnsched's own frames (where it parks inside a channel or a sleep)."""
        return "".join(traceback.format_list(user_frames(self.get_stack()))).rstrip()

    def add_done_callback(
        self, fn: Callable[[G[Any]], object], *, context: contextvars.Context | None = None
    ) -> None:
        """As ``Future.add_done_callback``: ``fn(g)`` is called soon on the calling loop
        (registered outside any loop: on the loop the goroutine finishes on) once the
        goroutine finishes."""
        cb = _DoneCallback(fn, asyncio._get_running_loop(), context or contextvars.copy_context())
        if not add_waiter(self, cb):
            cb(self)

    def remove_done_callback(self, fn: Callable[[G[Any]], object]) -> int:
        with lock_of(self):
            ws: list[Any] = self._waiters
            ws = [] if ws is None else ws if type(ws) is list else [ws]
            keep = [w for w in ws if not (type(w) is _DoneCallback and w.fn == fn)]
            if self._waiters is not None:
                self._waiters = keep
            return len(ws) - len(keep)


# What asyncio and the libraries on it say when an object of one loop is used on another.
LOOP_MISMATCH = (
    "attached to a different loop",
    "is bound to a different event loop",
    "Timeout context manager should be used inside a task",
    "Non-thread-safe operation invoked on an event loop other than the current one",
)


def explain_loop_mismatch(exc: BaseException, g: G[Any], p: P) -> None:
    """If exc (or what caused it) is a loop-mismatch error, add a note that names g's P
    and the cure, so that the traceback the user sees explains itself."""
    cause: BaseException | None = exc
    for _ in range(8):  # the chain of causes, not the whole history
        if cause is None:
            return
        if isinstance(cause, (RuntimeError, ValueError)) and any(
            text in str(cause) for text in LOOP_MISMATCH
        ):
            break
        cause = cause.__cause__ or cause.__context__
    else:
        return
    note = (
        f"mnsched: goroutine {g.name!r} ran on P{p.id}, and this object belongs to another "
        "event loop: each P runs a loop of its own. Make one per P with "
        "mnsched.PerP(factory), or spawn the goroutine with go(..., pin=True) from the "
        "loop that made the object."
    )
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)


def note_loop_mismatch(exc: BaseException) -> None:
    """A loop-mismatch error raised in a goroutine: add the note where it is raised, so
    that it explains itself even when caught (a client library turns it into its own
    error, or a request handler logs it)."""
    p = m.p
    if p is not None and (g := p.curg) is not None:
        explain_loop_mismatch(exc, g, p)


install_loop_bound_hook(note_loop_mismatch)


def goexit(g: G[Any], result: Any, exc: BaseException | None, p: P) -> None:
    """g's last step ended on p's thread (Go: goexit): publish the outcome, wake its
    waiters. Waiters are mnsched's own (Gs, and callbacks that only hand on the news):
    user done-callbacks run later, on a loop (see _DoneCallback)."""
    failed = exc is not None and not isinstance(exc, asyncio.CancelledError)
    if failed:
        explain_loop_mismatch(exc, g, p)  # type: ignore[arg-type]
    unretrieved = None
    # Out of the counts before it is seen DONE: a waiter that finds it done without
    # parking (another P's thread) must not then count it live (num_goroutine, stats).
    p.nfinished += 1
    sched = g._sched
    sched.allg.discard(g)
    lock = LOCKS[hash(g) & LOCK_MASK]
    lock.acquire()
    casgstatus(g, RUNNING, DONE)
    g._result = result
    g._exc = exc
    waiters = g._waiters
    g._waiters = None
    if failed and waiters is None:
        # Nobody is waiting now: logged when the handle is dropped unless retrieved by
        # then (as asyncio does for a Task), so a user who awaits it later sees no log.
        g._unretrieved = unretrieved = Unretrieved(exc)  # type: ignore[arg-type]
    lock.release()
    if unretrieved is not None:
        unretrieved.desc = repr(g)
        g._sched.unretrieved.add(unretrieved)
    if (ins := sched.instr) is not None:
        ins.exited(g)
    if g._home is not None:
        g._home.npinned -= 1
    if sched.closing and not sched.allg:
        sched.all_done.set()  # shutdown waits for this
    if waiters is not None:
        for w in waiters if type(waiters) is list else (waiters,):
            if type(w) is G:
                goready(w, PARKED, p)
            else:
                w(g)


class Unretrieved:
    """Held by a failed G whose exception nobody has retrieved (await, result(),
    exception()): reports it when the G is dropped (only the G refers to it; a separate
    object, as asyncio's old TracebackLogger, so G itself has no __del__ to pay for), or
    when its runtime closes with it still unretrieved, whichever comes first. A failed
    G's traceback runs through the frames that stepped it, which hold it: on 3.12+ it is
    freed only by the cyclic GC, so the close is what makes the report timely."""

    __slots__ = ("__weakref__", "desc", "exc")

    def __init__(self, exc: BaseException) -> None:
        self.desc = "a goroutine"
        self.exc: BaseException | None = exc

    def report(self) -> None:
        exc, self.exc = self.exc, None
        if exc is None:
            return  # retrieved, or reported already
        logger.error(
            "%s raised %s and nobody retrieved it (await it, or call its "
            "result() or exception()):\n%s",
            self.desc,
            type(exc).__name__,
            "".join(traceback.format_exception(exc)).rstrip(),
        )

    __del__ = report


def add_waiter(g: G[Any], w: Callable[[G[Any]], None]) -> bool:
    """Register ``w(g)`` (mnsched's own: it must not block or raise) to run when g
    finishes, on the finishing P's thread; False (not registered) if g has finished."""
    with lock_of(g):
        if g._status == DONE:
            return False
        g._push_waiter(w)
        return True


def abandon(g: G[Any]) -> None:
    """Shutdown gave up waiting for g: its coroutine is closed at its next step
    (``finally`` blocks run, through GeneratorExit) instead of resumed."""
    g._abandoned = True
    g.cancel("abandoned at shutdown: it ignored cancellation")


class _Parked:
    """``G._fut_waiter`` of a parked G: a wait no asyncio future stands for."""

    __slots__ = ()

    def done(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "<parked in mnsched>"


_PARKED = _Parked()


class Join:
    """What a G awaiting another one (the join missed) waits in."""

    __slots__ = ("foreign", "g")

    def __init__(self, g: G[Any], waiter: G[Any]) -> None:
        self.g = g
        # A goroutine of another runtime: that one's goroutines may end it.
        self.foreign = g._sched is not waiter._sched

    def blocked_on(self) -> str | None:
        return None if self.foreign else repr(self.g)

    def cancel_wait(self, waiter: G[Any]) -> None:
        # As with asyncio tasks, cancelling the waiter cancels the awaited goroutine; the
        # waiter wakes (and raises CancelledError) when that one ends.
        self.g.cancel(getattr(waiter, "_cancel_msg", None))


class _DoneCallback:
    """A user's done-callback. It never runs inside the scheduler: it is posted to its
    loop (the one it was registered on, else the one running here), as asyncio does."""

    __slots__ = ("ctx", "fn", "loop")

    def __init__(
        self,
        fn: Callable[[G[Any]], object],
        loop: asyncio.AbstractEventLoop | None,
        ctx: contextvars.Context,
    ) -> None:
        self.fn, self.loop, self.ctx = fn, loop, ctx

    def __call__(self, g: G[Any]) -> None:
        loop = self.loop or asyncio._get_running_loop()
        if call_on_loop(loop, self.fn, g, context=self.ctx):
            return
        try:  # no loop to run it: run it here rather than lose it
            self.ctx.run(self.fn, g)
        except Exception:  # reported as a loop reports a failing callback
            logger.exception("exception in done-callback %r of %r", self.fn, g)
