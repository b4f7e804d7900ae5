"""chan: Go's channels and select, for goroutines on any P, plain threads and foreign loops.

A channel has a lock, a buffer, and two wait queues of *sudogs* (Go's name): one sudog
per waiting party. A party is a goroutine (it parks, and the channel's lock is its park
lock, so a waker always finds it parked), a plain thread (it blocks on a lock used as a
semaphore), or a task of a foreign asyncio loop (it awaits a future, resolved from
whichever thread completes the operation).

As in Go, a value goes straight from a sender to a waiting receiver, and the goroutine
woken by an operation goes to the waker's P (runnext) when it may run there.

Cancellation never loses or duplicates a value: a cancelled waiter still queued is
taken out of the queue; one whose operation a partner has already completed returns
normally, and its cancellation is delivered at its next wait instead.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import types
from collections import deque
from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import BlockingCallError, MnschedError
from .g import CANCEL, G, ready
from .m import m
from .proc import go, sleep

if TYPE_CHECKING:
    from .p import P

T = TypeVar("T")


class ChannelClosed(MnschedError):
    """Send on a closed channel, close of a closed channel, or receive from a channel that
    is closed and drained."""


class WouldBlock(MnschedError):
    """``try_send``/``try_recv`` could not complete at once."""


@types.coroutine
def _park(lock: object) -> Generator[object, None, None]:
    yield lock  # gopark: the driver parks the goroutine, then releases the lock


def current_g() -> G[Any] | None:
    """The goroutine running on this thread, if any."""
    p = m.p
    return p.curg if p is not None else None


class Sudog:
    """One party waiting on a channel (or a sync object): what it sends or received, and
    how to wake it."""

    __slots__ = ("case", "ch", "done", "elem", "fut", "g", "ok", "op", "sel", "sem")

    def __init__(self, ch: Any, op: str, elem: Any = None) -> None:
        self.ch = ch
        self.op = op  # "send to", "receive from", "wait on": for deadlock reports
        self.elem = elem
        self.ok = False  # a receive got a value (False: the channel was closed)
        self.done = False  # a partner completed the operation (under the channel lock)
        self.g: G[Any] | None = None
        self.sel: Select | None = None
        self.case = -1
        self.fut: asyncio.Future[Any] | None = None  # a foreign task's
        self.sem: Any = None  # a plain thread's: a lock it blocks on

    def wake(self, p: P | None = None) -> None:
        """The operation is done (decided under the channel lock): let the party go on.
        p is the caller's P, when it knows it: a goroutine that may run there goes to
        its runnext without another thread-local lookup."""
        g = self.g
        if g is not None:
            g._waitq = None
            if p is not None and g._sched is p.sched and (g._home is None or g._home is p):
                p.ready_here(g)
            else:
                ready(g)
        elif self.fut is not None:
            _resolve_threadsafe(self.fut)
        elif self.sem is not None:
            self.sem.release()

    def _blocked_on(self) -> str | None:
        """What the goroutine waits for, if only another goroutine can end the wait."""
        return None if self.ch._foreign else f"{self.op} {self.ch!r}"

    def _cancel_wait(self, g: G[Any]) -> None:
        """g, parked on one channel here, was cancelled: take it out unless a partner has
        already completed its operation (then it resumes with that, as usual)."""
        with self.ch._lock:
            if self.done:
                return
            self.ch._unqueue(self)
        g._waitq = None
        ready(g)


def _resolve_threadsafe(fut: asyncio.Future[Any]) -> None:
    def resolve() -> None:
        if not fut.done():
            fut.set_result(None)

    try:
        fut.get_loop().call_soon_threadsafe(resolve)
    except RuntimeError:
        pass  # that loop is closed: nobody is waiting any more


def _rearm_cancel(g: G[Any]) -> None:
    """g's operation completed, and CancelledError was thrown in as it resumed: it keeps
    the completed operation and takes the cancellation at its next wait instead."""
    g._pend = CANCEL


class Chan(Generic[T]):
    """A Go channel: ``Chan()`` is unbuffered (a send waits for a receiver to take the
    value), ``Chan(n)`` buffers n values.

    - ``await ch.send(v)``, ``await ch.recv()``; ``v, ok = await ch.recv_ok()`` (ok is
      False once the channel is closed and drained, as Go's ``v, ok := <-ch``);
    - ``ch.try_send(v)`` / ``ch.try_recv()`` never block: they raise ``WouldBlock``;
    - ``ch.close()``; ``async for v in ch`` receives until closed and drained;
    - ``len(ch)`` values buffered, ``ch.cap`` the capacity;
    - from plain threads: ``ch.send_blocking(v, timeout=None)``,
      ``ch.recv_blocking(timeout=None)``;
    - from any asyncio loop, ``await ch.send(v)`` and ``await ch.recv()`` work too.

    Send on a closed channel, closing twice, and receiving from a closed and drained
    channel raise ``ChannelClosed``; senders blocked when it closes raise it too.
    """

    __slots__ = ("__weakref__", "_buf", "_cap", "_closed", "_foreign", "_lock", "_recvq",
                 "_sendq")

    def __init__(self, capacity: int = 0) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"channel capacity must be an int >= 0, not {capacity!r}")
        self._cap = capacity
        self._buf: deque[T] = deque()
        self._lock = threading.Lock()
        self._recvq: deque[Sudog] = deque()
        self._sendq: deque[Sudog] = deque()
        self._closed = False
        self._foreign = False  # used from outside any runtime: deadlock checks skip it

    @property
    def cap(self) -> int:
        return self._cap

    def __len__(self) -> int:
        return len(self._buf)

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return (f"<Chan cap={self._cap} len={len(self._buf)} recvq={len(self._recvq)} "
                f"sendq={len(self._sendq)}{state}>")

    # -- the core, under self._lock: try to complete at once --------------------------------

    def _dequeue(self, q: deque[Sudog]) -> Sudog | None:
        """The first waiter of q that can still take part (a select may have fired on
        another channel already)."""
        while q:
            sg = q.popleft()
            sel = sg.sel
            if sel is None or sel.claim(sg):
                return sg
        return None

    def _unqueue(self, sg: Sudog) -> None:
        q = self._recvq if sg in self._recvq else self._sendq
        try:
            q.remove(sg)
        except ValueError:
            pass

    def _send_now(self, v: T) -> Sudog | bool:
        """Under the lock. Returns False if it would block; True if sent into the buffer;
        or the receiver sudog that took v (to wake once unlocked)."""
        if self._closed:
            raise ChannelClosed("send on closed channel")
        sg = self._dequeue(self._recvq)
        if sg is not None:
            sg.elem, sg.ok, sg.done = v, True, True
            return sg
        if len(self._buf) < self._cap:
            self._buf.append(v)
            return True
        return False

    def _recv_now(self) -> tuple[bool, Any, bool, Sudog | None]:
        """Under the lock. Returns (completed, value, ok, sender sudog to wake)."""
        buf = self._buf
        if buf:
            v = buf.popleft()
            sg = self._dequeue(self._sendq)
            if sg is not None:  # a blocked sender's value takes the freed slot
                buf.append(sg.elem)
                sg.done = True
            return True, v, True, sg
        sg = self._dequeue(self._sendq)
        if sg is not None:  # unbuffered: straight from the sender
            sg.done = True
            return True, sg.elem, True, sg
        if self._closed:
            return True, None, False, None
        return False, None, False, None

    # -- send --------------------------------------------------------------------------

    async def send(self, v: T) -> None:
        """Send v, waiting for room (or, unbuffered, for a receiver to take it)."""
        p = m.p
        lock = self._lock
        lock.acquire()
        q = self._recvq
        if q and not self._closed and (sg := q[0]).sel is None:
            # the common case, inline: straight to the first waiting receiver
            q.popleft()
            sg.elem, sg.ok, sg.done = v, True, True
            lock.release()
            sg.wake(p)
            return
        try:
            r = self._send_now(v)
        except BaseException:
            lock.release()
            raise
        if r is not False:
            lock.release()
            if r is not True:
                r.wake(p)
            return
        sg = Sudog(self, "send to", v)
        await self._wait(sg, self._sendq, p)  # releases the lock
        if not sg.done:
            raise ChannelClosed("send on closed channel")

    @types.coroutine
    def _wait(self, sg: Sudog, q: deque[Sudog], p: P | None) -> Generator[Any, None, None]:
        """Queue sg and wait until a partner completes it or the channel closes (lock
        held on entry)."""
        g = p.curg if p is not None else None
        if g is None:
            yield from wait_foreign(self, sg, q).__await__()
            return
        sg.g = g
        q.append(sg)
        g._waitq = sg
        try:
            yield self._lock  # gopark: the driver parks g, then releases the lock
        except asyncio.CancelledError:
            if not sg.done:
                raise
            _rearm_cancel(g)  # completed as it was cancelled: keep it, cancel later

    def try_send(self, v: T) -> None:
        """Send v if that can be done at once; else raise WouldBlock."""
        with self._lock:
            r = self._send_now(v)
        if r is False:
            raise WouldBlock("channel full" if self._cap else "no receiver waiting")
        if r is not True:
            r.wake()

    def send_blocking(self, v: T, timeout: float | None = None) -> None:
        """Send from a plain thread, blocking it (not from a goroutine or P thread)."""
        _refuse_on_p("send_blocking", "await ch.send(v)")
        self._foreign = True
        with self._lock:
            r = self._send_now(v)
            if r is False:
                sg = Sudog(self, "send to", v)
                sg.sem = _new_sem()
                self._sendq.append(sg)
        if r is False:
            self._block(sg, timeout)
            if not sg.done:
                raise ChannelClosed("send on closed channel")
        elif r is not True:
            r.wake()

    # -- receive -----------------------------------------------------------------------

    async def recv(self) -> T:
        """Receive a value, waiting for one. Raises ChannelClosed once the channel is
        closed and drained."""
        p = m.p
        lock = self._lock
        lock.acquire()
        buf = self._buf
        if buf and not self._sendq:  # the common buffered case, inline
            v = buf.popleft()
            lock.release()
            return v
        q = self._sendq
        if q and not buf and (sg := q[0]).sel is None:  # unbuffered: from the sender
            q.popleft()
            sg.done = True
            lock.release()
            sg.wake(p)
            return sg.elem  # type: ignore[no-any-return]
        done, v, ok, wake = self._recv_now()
        if done:
            lock.release()
            if wake is not None:
                wake.wake(p)
        else:
            sg = Sudog(self, "receive from")
            await self._wait(sg, self._recvq, p)  # releases the lock
            v, ok = sg.elem, sg.ok
        if not ok:
            raise ChannelClosed("receive from closed channel")
        return v

    async def recv_ok(self) -> tuple[T | None, bool]:
        """Receive as Go's ``v, ok := <-ch``: (None, False) once closed and drained."""
        p = m.p
        lock = self._lock
        lock.acquire()
        done, v, ok, sg = self._recv_now()
        if done:
            lock.release()
            if sg is not None:
                sg.wake(p)
            return v, ok
        sg = Sudog(self, "receive from")
        await self._wait(sg, self._recvq, p)  # releases the lock
        return sg.elem, sg.ok

    def try_recv(self) -> T:
        """Receive a value if one is there at once; else raise WouldBlock. Raises
        ChannelClosed once closed and drained."""
        with self._lock:
            done, v, ok, sg = self._recv_now()
        if sg is not None:
            sg.wake()
        if not done:
            raise WouldBlock("channel empty")
        if not ok:
            raise ChannelClosed("receive from closed channel")
        return v  # type: ignore[no-any-return]

    def recv_blocking(self, timeout: float | None = None) -> T:
        """Receive from a plain thread, blocking it (not from a goroutine or P thread)."""
        _refuse_on_p("recv_blocking", "await ch.recv()")
        self._foreign = True
        with self._lock:
            done, v, ok, wake = self._recv_now()
            if not done:
                sg = Sudog(self, "receive from")
                sg.sem = _new_sem()
                self._recvq.append(sg)
        if done:
            if wake is not None:
                wake.wake()
        else:
            self._block(sg, timeout)
            v, ok = sg.elem, sg.ok
        if not ok:
            raise ChannelClosed("receive from closed channel")
        return v  # type: ignore[no-any-return]

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            v, ok = await self.recv_ok()
            if not ok:
                return
            yield v  # type: ignore[misc]  # ok: v is a T

    # -- close -------------------------------------------------------------------------

    def close(self) -> None:
        """Close: receivers drain the buffer, then get 'closed'; blocked senders raise."""
        with self._lock:
            if self._closed:
                raise ChannelClosed("close of closed channel")
            self._closed = True
            woken = []
            for q in (self._recvq, self._sendq):
                while (sg := self._dequeue(q)) is not None:
                    sg.elem, sg.ok = None, False  # done stays False: the op failed
                    woken.append(sg)
        if m.p is None:
            self._foreign = True
        for sg in woken:
            if sg.sel is not None:
                sg.sel.fired_closed = True
            sg.wake()

    # -- waiting outside goroutines --------------------------------------------------------

    def _block(self, sg: Sudog, timeout: float | None) -> None:
        if not sg.sem.acquire(timeout=-1 if timeout is None else timeout):
            with self._lock:
                if sg.done or self._closed:
                    return  # completed (or failed by close) just as the time ran out
                self._unqueue(sg)
            raise TimeoutError(f"channel operation did not complete within {timeout} s")


async def wait_foreign(owner: Any, sg: Sudog, q: deque[Sudog]) -> None:
    """A task of an asyncio loop that is not a goroutine queues sg in q and waits for a
    partner to complete it. owner (a channel or sync object: ``_lock``, ``_unqueue``) is
    locked on entry and unlocked here."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        owner._lock.release()
        raise
    owner._foreign = True
    sg.fut = loop.create_future()
    q.append(sg)
    owner._lock.release()
    try:
        await sg.fut
    except asyncio.CancelledError:
        with owner._lock:
            if not sg.done:
                owner._unqueue(sg)
                raise
        # Completed just as it was cancelled: keep the result, and cancel again so the
        # task still sees its cancellation at its next await.
        task = asyncio.current_task()
        if task is not None:
            task.cancel()


def _new_sem() -> Any:
    sem = threading.Lock()
    sem.acquire()
    return sem


def _refuse_on_p(what: str, instead: str) -> None:
    if m.p is not None:
        raise BlockingCallError(f"ch.{what}() would block this P and its goroutines; "
                                f"inside a goroutine use '{instead}'")


# -- select -----------------------------------------------------------------------------


class Recv:
    """A receive case for ``select``: after it fires, ``.value`` holds what was received
    and ``.ok`` is False if the channel was closed (then ``.value`` is None)."""

    __slots__ = ("ch", "ok", "value")

    def __init__(self, ch: Chan[Any]) -> None:
        if not isinstance(ch, Chan):
            raise TypeError(f"Recv needs a Chan, not {ch!r}")
        self.ch, self.value, self.ok = ch, None, False

    def __repr__(self) -> str:
        return f"Recv({self.ch!r})"


class Send:
    """A send case for ``select``: it fires once ``ch`` has taken ``value``."""

    __slots__ = ("ch", "value")

    def __init__(self, ch: Chan[Any], value: Any) -> None:
        if not isinstance(ch, Chan):
            raise TypeError(f"Send needs a Chan, not {ch!r}")
        self.ch, self.value = ch, value

    def __repr__(self) -> str:
        return f"Send({self.ch!r}, {self.value!r})"


_NO_DEFAULT = object()


class Select:
    """One blocked select: its sudogs sit on several channels; the first channel to fire
    claims it (under this lock, taken after the channel's)."""

    __slots__ = ("done", "fired", "fired_closed", "lock", "sudogs")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = False
        self.fired: Sudog | None = None
        self.fired_closed = False
        self.sudogs: list[Sudog] = []

    def _blocked_on(self) -> str | None:
        if any(sg.ch._foreign for sg in self.sudogs):
            return None
        return "select: " + ", ".join(f"{sg.op} {sg.ch!r}" for sg in self.sudogs)

    def claim(self, sg: Sudog) -> bool:
        with self.lock:
            if self.done:
                return False
            self.done = True
            self.fired = sg
            return True

    def _cancel_wait(self, g: G[Any]) -> None:
        with self.lock:
            if self.done:
                return  # a case fired: the select completes with it
            self.done = True
        g._waitq = None
        ready(g)

    def remove_from_queues(self) -> None:
        for sg in self.sudogs:
            with sg.ch._lock:
                sg.ch._unqueue(sg)


async def select(*cases: Recv | Send, default: Any = _NO_DEFAULT) -> Any:
    """Wait until one of the cases can proceed, do it, and return that case object.

    Exactly one case fires. Among cases ready at once, the choice is uniformly random
    (Go's fairness). With ``default=...`` it never blocks: if no case is ready, it returns
    ``default``. Timeouts are receive cases too: ``Recv(mnsched.after(1.0))``.

    ::

        jobs_in, result_out, timeout = Recv(jobs), Send(results, r), Recv(after(1.0))
        fired = await select(jobs_in, result_out, timeout)
        if fired is jobs_in:
            if not jobs_in.ok: ...          # jobs was closed
            work(jobs_in.value)
        elif fired is result_out: ...      # results took r
        else: ...                          # a second went by
    """
    if not cases:
        if default is not _NO_DEFAULT:
            return default
        raise ValueError("select() needs at least one case (or a default)")
    for c in cases:
        if not isinstance(c, (Recv, Send)):
            raise TypeError(f"select() takes Recv and Send cases, not {c!r}")
    chans = sorted({id(c.ch): c.ch for c in cases}.values(), key=id)  # lock order
    for ch in chans:
        ch._lock.acquire()
    order = list(range(len(cases)))
    random.shuffle(order)  # Go: pollorder
    try:
        for i in order:
            c = cases[i]
            if isinstance(c, Recv):
                done, v, ok, wake = c.ch._recv_now()
                if done:
                    c.value, c.ok = v, ok
                    _unlock_all(chans)
                    if wake is not None:
                        wake.wake()
                    return c
            else:
                r = c.ch._send_now(c.value)
                if r is not False:
                    _unlock_all(chans)
                    if r is not True:
                        r.wake()
                    return c
    except BaseException:
        _unlock_all(chans)
        raise
    if default is not _NO_DEFAULT:
        _unlock_all(chans)
        return default
    return await _select_wait(cases, chans)


def _unlock_all(chans: list[Chan[Any]]) -> None:
    for ch in reversed(chans):
        ch._lock.release()


async def _select_wait(cases: tuple[Recv | Send, ...], chans: list[Chan[Any]]) -> Any:
    """No case is ready: queue a sudog on every channel and park (channel locks held)."""
    g = current_g()
    sel = Select()
    for i, c in enumerate(cases):
        sg = Sudog(c.ch, "send to" if isinstance(c, Send) else "receive from",
                   c.value if isinstance(c, Send) else None)
        sg.sel, sg.case = sel, i
        sel.sudogs.append(sg)
        (c.ch._recvq if isinstance(c, Recv) else c.ch._sendq).append(sg)
    if g is None:
        await _select_wait_foreign(sel, chans)
    else:
        for sg in sel.sudogs:
            sg.g = g
        g._waitq = sel
        sel.lock.acquire()  # the park lock: held until g is parked
        _unlock_all(chans)
        try:
            await _park(sel.lock)
        except asyncio.CancelledError:
            if sel.fired is None:
                sel.remove_from_queues()
                raise
            _rearm_cancel(g)
    sel.remove_from_queues()
    fired = sel.fired
    assert fired is not None  # woken only by a claim, which records the case
    c = cases[fired.case]
    if isinstance(c, Recv):
        c.value, c.ok = fired.elem, fired.ok
    elif sel.fired_closed:
        raise ChannelClosed("send on closed channel")
    return c


async def _select_wait_foreign(sel: Select, chans: list[Chan[Any]]) -> None:
    fut = asyncio.get_running_loop().create_future()
    for sg in sel.sudogs:
        sg.fut = fut
        sg.ch._foreign = True
    _unlock_all(chans)
    try:
        await fut
    except asyncio.CancelledError:
        if not sel.claim(sel.sudogs[0]):  # a case fired meanwhile: keep it, cancel later
            task = asyncio.current_task()
            if task is not None:
                task.cancel()
            return
        sel.fired = None
        sel.remove_from_queues()
        raise


# -- timers as channels ---------------------------------------------------------------------


def after(seconds: float) -> Chan[float]:
    """A channel that receives the time (``time.monotonic()``) once, after ``seconds``
    (Go's ``time.After``). Use it as a timeout case: ``Recv(after(0.5))``."""
    ch: Chan[float] = Chan(1)

    async def fire() -> None:
        await sleep(seconds)
        ch.try_send(time.monotonic())

    go(fire(), name="after")
    return ch


class Ticker:
    """Receives the time every ``period`` seconds on ``.c`` (Go's ``time.Ticker``): slow
    receivers miss ticks rather than pile them up. ``stop()`` ends it."""

    def __init__(self, period: float) -> None:
        if not period > 0:
            raise ValueError(f"ticker period must be > 0, not {period!r}")
        self.period = period
        self.c: Chan[float] = Chan(1)
        self._g = go(self._run(), name="ticker")

    async def _run(self) -> None:
        next_t = time.monotonic() + self.period
        while True:
            await sleep(max(0.0, next_t - time.monotonic()))
            try:
                self.c.try_send(time.monotonic())
            except WouldBlock:
                pass  # the last tick is still unread: drop this one
            next_t += self.period

    def stop(self) -> None:
        self._g.cancel()


def tick(period: float) -> Chan[float]:
    """A channel receiving the time every ``period`` seconds (Go's ``time.Tick``)."""
    return Ticker(period).c

