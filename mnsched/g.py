"""G: a goroutine. A coroutine that mnsched steps itself, and the handle users hold.

A G is deliberately *not* an ``asyncio.Task``: creating and stepping a Task costs several
times more than the driver in ``p.py``. It does, however, speak the part of the Task
protocol that asyncio and anyio use on ``asyncio.current_task()`` (``cancel``,
``cancelling``, ``uncancel``, ``get_loop``, ``get_coro``, ``_must_cancel``,
``_fut_waiter``), because while a G runs it *is* the current task of its P's loop.

Parking (Go's ``gopark``): a G that must wait registers itself in a wait queue while
holding that queue's lock, then yields the lock. The driver marks the G PARKED and only
then releases the lock, so a waker, which needs the same lock to find the G, always
finds it fully parked. A wait queue implements ``_cancel_wait(g)`` so that ``cancel()``
can take a parked G out of it.

Where a G may run: at mnsched's own park points it holds nothing loop-bound, so it
resumes wherever it is readied. Once it touches asyncio machinery on its P (awaits an
asyncio future, creates a task, enters ``asyncio.timeout``/``TaskGroup``/an anyio cancel
scope) it is *pinned* to that P for the rest of its life, like Go's ``LockOSThread``:
asyncio objects are bound to one loop, and one loop to one thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import traceback
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import BlockingCallError
from .m import m

if TYPE_CHECKING:
    from .p import P
    from .sched import Sched

T = TypeVar("T")
logger = logging.getLogger("mnsched")

# G statuses (Go: _Grunnable, _Grunning, _Gwaiting, _Gsyscall, _Gdead).
RUNNABLE = 0  # in a run queue, or about to be
RUNNING = 1  # being stepped by a P
PARKED = 2  # waiting at an mnsched park point (a G, a timer, a channel): may resume anywhere
WAITING = 3  # waiting on an asyncio future or the loop: resumes on that loop
SYSCALL = 4  # a blocking call runs on an M thread on its behalf
DONE = 5
STATUS_NAMES = ("runnable", "running", "parked", "waiting", "syscall", "done")

# Striped locks (a per-G lock would cost an allocation per spawn); a power of two.
# Two separate sets, always taken in this order and never the other way round:
#  - lock_of(g): g's completion and its list of waiters; it is also the wait-queue lock
#    of a G that awaits g;
#  - state_lock_of(g): g's park state against cancel(); held only briefly, never while
#    taking another lock.
_NLOCKS = 64
_MASK = _NLOCKS - 1
_LOCKS = tuple(threading.Lock() for _ in range(_NLOCKS))
STATE_LOCKS = tuple(threading.Lock() for _ in range(_NLOCKS))
LockType = type(_LOCKS[0])


def lock_of(g: object) -> threading.Lock:
    return _LOCKS[hash(g) & _MASK]


def state_lock_of(g: object) -> threading.Lock:
    return STATE_LOCKS[hash(g) & _MASK]


_NEVER_QUEUED = -(1 << 62)


class _Pending:
    """Markers in ``G._pend``: throw CancelledError at the G's next resumption."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


CANCEL = _Pending("CANCEL")  # requested
DELIVERED = _Pending("DELIVERED")  # requested, and handed to the wait queue it was parked in
CANCELLING = (CANCEL, DELIVERED)


class G(Generic[T]):
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
        "_futw",  # the asyncio future it awaits
        "_home",  # the P it is pinned to, once it has used asyncio there
        "_p",  # the P that holds it (queued) or runs it; None in the global queue
        "_pend",  # an exception, CANCEL or DELIVERED, to throw in at the next resumption
        "_qpos",  # P.qseq when it was last pushed into a local queue (see P.join)
        "_sched",
        "_status",
        "_waiters",  # what to wake when it finishes: None, one G or callback, or a list
        "_waitq",  # what it is parked on, for cancel()
        # set when first needed:
        "_cancel_msg",
        "_exc",
        "_id",
        "_name",
        "_ncancel",
        "_result",
    )

    def __init__(self, coro: Coroutine[Any, Any, T], sched: Sched, p: P | None,
                 name: str | None = None) -> None:
        self._coro = coro
        self._ctx = contextvars.copy_context()  # a G runs in a copy of its spawner's context
        self._sched = sched
        self._p: P | None = p
        self._status = RUNNABLE
        self._home: P | None = None
        self._waiters: Any = None  # None, one waiter, or a list of them
        self._waitq: Any = None  # a wait queue: anything with _cancel_wait(g)
        self._pend: BaseException | _Pending | None = None
        self._futw: asyncio.Future[Any] | None = None
        self._qpos = _NEVER_QUEUED
        if name is not None:
            self._name = name

    # -- the handle -----------------------------------------------------------------

    @property
    def id(self) -> int:
        """The goroutine id, unique within its runtime (Go's goid); given out on first use."""
        try:
            return self._id  # type: ignore[has-type,no-any-return]
        except AttributeError:
            goid = self._sched.newgoid()
            with state_lock_of(self):
                if not hasattr(self, "_id"):
                    self._id = goid
            return self._id

    @property
    def name(self) -> str:
        name = getattr(self, "_name", None)
        return name if name is not None else f"G{self.id}"

    def done(self) -> bool:
        return self._status == DONE

    def cancelled(self) -> bool:
        return self._status == DONE and isinstance(self._exc, asyncio.CancelledError)

    def __await__(self) -> Generator[Any, None, T]:
        if self._status != DONE:
            p = m.p
            if p is None or (g := p.curg) is None:
                yield from self._await_foreign()
            else:
                if g is self:
                    raise RuntimeError(f"{self!r} cannot await itself")
                if self._p is p and self._status == RUNNABLE:
                    p.join(self)  # may run it to completion right here
                if self._status != DONE:
                    lock = _LOCKS[hash(self) & _MASK]
                    lock.acquire()
                    if self._status != DONE:
                        self._push_waiter(g)
                        g._waitq = self
                        yield lock  # gopark: the driver parks g, then releases the lock
                    else:
                        lock.release()
        if self._exc is not None:
            raise self._exc
        return self._result  # type: ignore[no-any-return]

    def _await_foreign(self) -> Generator[Any, None, None]:
        """Await from an asyncio task (a foreign loop, or a plain task on a P's loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                f"await {self!r} needs a goroutine or a running event loop; "
                "from plain threads use g.result(timeout)") from None
        fut = loop.create_future()

        def on_done(_: G[Any]) -> None:
            if asyncio._get_running_loop() is loop:
                loop.call_soon(_resolve, fut)  # same thread (attach mode): no self-pipe
                return
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:
                pass  # that loop is closed: nobody is left to tell

        if self._add_waiter(on_done):
            try:
                yield from fut
            except asyncio.CancelledError:
                # As asyncio.wrap_future: cancelling the waiter cancels the goroutine.
                self.cancel()
                raise

    def _outcome(self) -> T:
        if self._exc is not None:
            raise self._exc
        return self._result  # type: ignore[no-any-return]

    def result(self, timeout: float | None = None) -> T:
        """Wait (blocking this thread) until the goroutine finishes; return or raise its outcome.

        Not allowed on a P's thread, where it would stall every goroutine of that P:
        inside a goroutine, use ``await g``.
        """
        self._wait_blocking(timeout)
        return self._outcome()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait like ``result``; return the exception it raised, or None. Raises
        CancelledError if it was cancelled."""
        self._wait_blocking(timeout)
        if isinstance(self._exc, asyncio.CancelledError):
            raise self._exc
        return self._exc

    def _wait_blocking(self, timeout: float | None) -> None:
        if self._status == DONE:
            return
        p = m.p
        if p is not None:
            raise BlockingCallError(
                f"{self!r}.result() would block P{p.id} and every goroutine on it; "
                "inside a goroutine use 'await g'")
        done = threading.Event()
        if self._add_waiter(lambda _: done.set()) and not done.wait(timeout):
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
            deliver = self._status == PARKED and self._pend is not DELIVERED
            self._pend = DELIVERED if deliver or self._pend is DELIVERED else CANCEL
            waitq = self._waitq
            fut = self._futw
        if deliver:
            waitq._cancel_wait(self)
        elif fut is not None:
            _cancel_future(fut, msg)
        return True

    def __repr__(self) -> str:
        coro = self._coro
        what = getattr(coro, "__qualname__", type(coro).__name__)
        where = f" on P{self._p.id}" if self._p is not None and self._status != DONE else ""
        return f"<G{self.id} {self.name!r} {what} {STATUS_NAMES[self._status]}{where}>"

    # -- completion -----------------------------------------------------------------

    def _add_waiter(self, w: Callable[[G[Any]], None]) -> bool:
        """Register ``w(g)`` to run when this G finishes; False (not registered) if it has."""
        with lock_of(self):
            if self._status == DONE:
                return False
            self._push_waiter(w)
            return True

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

    def _blocked_on(self) -> str:
        return f"await {self!r}"

    def _cancel_wait(self, waiter: G[Any]) -> None:
        # Some G awaiting this one was cancelled. As with asyncio tasks, the cancel
        # propagates into the awaited goroutine; the waiter wakes when this one ends.
        self.cancel(getattr(waiter, "_cancel_msg", None))

    def _finish(self, result: Any, exc: BaseException | None, p: P | None) -> None:
        """The G ended on p's thread (None: on a thread that is no P, at shutdown):
        publish the outcome and wake its waiters."""
        lock = _LOCKS[hash(self) & _MASK]
        lock.acquire()
        self._status = DONE
        self._result = result
        self._exc = exc
        waiters = self._waiters
        self._waiters = None
        lock.release()
        sched = self._sched
        sched.allg.discard(self)
        if p is not None:
            p.nfinished += 1
        else:
            with sched.lock:
                sched.nfinished_outside += 1
        if self._home is not None:
            self._home.npinned -= 1
        if sched.closing and not sched.allg:
            sched.all_done.set()
        if waiters is not None:
            for w in (waiters if type(waiters) is list else (waiters,)):
                if type(w) is G:
                    w._waitq = None
                    if p is not None and w._sched is sched and (w._home is None or w._home is p):
                        p.ready_here(w)
                    else:
                        sched.ready_remote(w)
                else:
                    w(self)
        elif exc is not None and not isinstance(exc, asyncio.CancelledError):
            # Nobody is waiting now: say so at once, not at garbage collection. A
            # later 'await g' still raises it.
            logger.error("goroutine %r raised %s and nobody was awaiting it:\n%s",
                         self, type(exc).__name__,
                         "".join(traceback.format_exception(exc)).rstrip())

    # -- the part of the asyncio.Task protocol that asyncio and anyio use ------------------

    def _pin_if_running_here(self) -> None:
        p = m.p
        if p is not None and p.curg is self and self._home is None:
            p.pin(self)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        self._pin_if_running_here()
        p = self._p
        if p is None:
            raise RuntimeError(f"{self!r} has not run on any P yet")
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
    def _fut_waiter(self) -> asyncio.Future[Any] | None:
        return self._futw

    def get_coro(self) -> Coroutine[Any, Any, T]:
        return self._coro

    def get_context(self) -> contextvars.Context:
        return self._ctx

    def get_name(self) -> str:
        return self.name

    def set_name(self, value: object) -> None:
        self._name = str(value)

    def get_stack(self, *, limit: int | None = None) -> list[Any]:
        frames: list[Any] = []
        coro: Any = self._coro
        while coro is not None and (limit is None or len(frames) < limit):
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is None:
                break
            frames.append(frame)
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        return frames

    def add_done_callback(self, fn: Callable[[G[Any]], object], *,
                          context: contextvars.Context | None = None) -> None:
        """As ``Future.add_done_callback``: ``fn(g)`` is called soon on the calling loop
        (or directly, when registered outside any loop) once the goroutine finishes."""
        cb = _DoneCallback(fn, asyncio._get_running_loop(), context or contextvars.copy_context())
        if not self._add_waiter(cb):
            cb(self)

    def remove_done_callback(self, fn: Callable[[G[Any]], object]) -> int:
        with lock_of(self):
            ws: list[Any] = self._waiters
            ws = [] if ws is None else ws if type(ws) is list else [ws]
            keep = [w for w in ws if not (type(w) is _DoneCallback and w.fn == fn)]
            if self._waiters is not None:
                self._waiters = keep
            return len(ws) - len(keep)


class _DoneCallback:
    __slots__ = ("ctx", "fn", "loop")

    def __init__(self, fn: Callable[[G[Any]], object], loop: asyncio.AbstractEventLoop | None,
                 ctx: contextvars.Context) -> None:
        self.fn, self.loop, self.ctx = fn, loop, ctx

    def __call__(self, g: G[Any]) -> None:
        if self.loop is not None and asyncio._get_running_loop() is self.loop:
            self.loop.call_soon(self.fn, g, context=self.ctx)  # same thread: no self-pipe
            return
        if self.loop is not None and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.fn, g, context=self.ctx)
                return
            except RuntimeError:
                pass  # closed meanwhile: run it here rather than lose it
        self.ctx.run(self.fn, g)


def _resolve(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_result(None)


def _cancel_future(fut: asyncio.Future[Any], msg: Any) -> None:
    """Cancel an asyncio future from any thread: on its own loop's thread."""
    loop = fut.get_loop()
    if asyncio._get_running_loop() is loop:
        fut.cancel(msg)
    else:
        try:
            loop.call_soon_threadsafe(fut.cancel, msg)
        except RuntimeError:
            pass  # its loop is closed: the future can never complete anyway


def ready(g: G[Any]) -> None:
    """Go's goready: make a parked G runnable.

    On a P that may run it, it goes to that P's runnext (the waker's P, as in Go), so a
    wake-up within a P never crosses threads; otherwise to its home P or the global queue.
    """
    p = m.p
    if p is not None and p.sched is g._sched and (g._home is None or g._home is p):
        p.ready_here(g)
    else:
        g._sched.ready_remote(g)
