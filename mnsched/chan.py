"""chan: Go's channels, for goroutines on any P, plain threads and foreign loops.

A channel has a lock, a buffer, and two wait queues of sudogs (sudog.py). As in Go, a
value goes straight from a sender to a waiting receiver, and the goroutine woken by an
operation goes to the waker's P (runnext) when it may run there. Cancellation never
loses or duplicates a value: docs/design.md, "Channels".

The buffer and the wait queues are made the first time they are needed (a channel is
about 170 bytes until then: Go's hchan is 96), because programs keep many idle channels
(one per goroutine is a common fan-in shape).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import MnschedError
from .g import CORE, PARKED, WAIT_CHAN_RECEIVE, WAIT_CHAN_SEND, goready, new_lock
from .lockrank import RANK_CHAN, lock_factory
from .m import m
from .sudog import Sudog, WaitQ, count, wait, wait_blocking

T = TypeVar("T")


class ChannelClosed(MnschedError):
    """Send on a closed channel, close of a closed channel, or receive from a channel that
    is closed and drained."""


class WouldBlock(MnschedError):
    """``try_send``/``try_recv`` could not complete at once."""


# What a waiting party does, in deadlock reports ("send to <Chan ...>").
OP_SEND, OP_RECV = "send to", "receive from"


_new_lock = lock_factory(RANK_CHAN, "a channel's _lock", new_lock)


class _PureChanBase:
    __slots__ = ()


if TYPE_CHECKING:
    _ChanBase = _PureChanBase
else:
    # The C driver's Chan base does send and recv (ChanBase, in C): their common cases
    # in C, the rest by Chan._send/_recv.
    _ChanBase = _PureChanBase if CORE is None else CORE.ChanBase


class Chan(_ChanBase, Generic[T]):
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

    __slots__ = ("__weakref__", "_buf", "_cap", "_closed", "_foreign", "_lock", "_recvq", "_sendq")

    def __init__(self, capacity: int = 0) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"channel capacity must be an int >= 0, not {capacity!r}")
        self._cap = capacity
        self._buf: deque[T] | None = None  # made by the first buffered send
        self._lock = _new_lock()
        self._recvq: WaitQ | None = None  # made by the first party to wait
        self._sendq: WaitQ | None = None
        self._closed = False
        self._foreign = False  # used from outside any runtime: deadlock checks skip it

    @property
    def cap(self) -> int:
        return self._cap

    def __len__(self) -> int:
        buf = self._buf
        return 0 if buf is None else len(buf)

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return (
            f"<Chan cap={self._cap} len={len(self)} recvq={count(self._recvq)} "
            f"sendq={count(self._sendq)}{state}>"
        )

    # -- the core, under self._lock: try to complete at once --------------------------------

    @staticmethod
    def _dequeue(q: WaitQ | None) -> Sudog | None:
        """The first waiter of q that can still take part (a select may have fired on
        another channel already)."""
        if q is None:
            return None
        while (sg := q.pop()) is not None:
            sel = sg.sel
            if sel is None or sel.claim(sg):
                return sg
        return None

    def _waitq(self, send: bool) -> WaitQ:
        """The queue for a party about to wait (made now if it is the first)."""
        if send:
            q = self._sendq
            if q is None:
                q = self._sendq = WaitQ()
        else:
            q = self._recvq
            if q is None:
                q = self._recvq = WaitQ()
        return q

    def send_now(self, v: T) -> Sudog | bool:
        """Under the lock. Returns False if it would block; True if sent into the buffer;
        or the receiver sudog that took v (to wake once unlocked)."""
        if self._closed:
            raise ChannelClosed("send on closed channel")
        sg = self._dequeue(self._recvq)
        if sg is not None:
            sg.elem, sg.ok, sg.done = v, True, True
            return sg
        buf = self._buf
        if buf is None:
            if self._cap:
                self._buf = deque((v,))
                return True
        elif len(buf) < self._cap:
            buf.append(v)
            return True
        return False

    def recv_now(self) -> tuple[bool, Any, bool, Sudog | None]:
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

    async def _send(self, v: T) -> None:
        """Send v, waiting for room (or, unbuffered, for a receiver to take it)."""
        p = m.p
        lock = self._lock
        lock.acquire()
        q = self._recvq
        if q is not None and (sg := q.first) is not None and sg.sel is None and not self._closed:
            q.pop()  # the common case, inline: straight to the first waiting receiver
            sg.elem, sg.ok, sg.done = v, True, True
            lock.release()
            if (g := sg.g) is not None:
                goready(g, PARKED, p)  # sg.wake(p), a call less for a goroutine
            else:
                sg.wake(p)
            return
        if (
            (q is not None and q.first is not None)
            or self._closed
            or (0 if (buf := self._buf) is None else len(buf)) < self._cap
        ):
            # it may complete at once
            try:
                r = self.send_now(v)
            except BaseException:
                lock.release()
                raise
            if r is not False:
                lock.release()
                if r is not True:
                    r.wake(p)
                return
        sg = Sudog(self, OP_SEND, v)
        # (the queue, made if it is the first wait; releases the lock)
        await wait(self, sg, self._sendq or self._waitq(True), WAIT_CHAN_SEND, p)
        if not sg.done:
            raise ChannelClosed("send on closed channel")

    def try_send(self, v: T) -> None:
        """Send v if that can be done at once; else raise WouldBlock."""
        with self._lock:
            r = self.send_now(v)
        if r is False:
            raise WouldBlock("channel full" if self._cap else "no receiver waiting")
        if r is not True:
            r.wake()

    def send_blocking(self, v: T, timeout: float | None = None) -> None:
        """Send from a plain thread, blocking it (not from a goroutine or P thread)."""
        self._lock.acquire()
        try:
            r = self.send_now(v)
        except BaseException:
            self._lock.release()
            raise
        if r is False:
            sg = Sudog(self, OP_SEND, v)
            if not wait_blocking(
                self, sg, self._waitq(True), timeout, "ch.send_blocking", "await ch.send(v)"
            ):
                raise TimeoutError(f"channel send did not complete within {timeout} s")
            if not sg.done:
                raise ChannelClosed("send on closed channel")
            return
        self._lock.release()
        if r is not True:
            r.wake()

    # -- receive -----------------------------------------------------------------------

    async def _recv(self) -> T:
        """Receive a value, waiting for one. Raises ChannelClosed once the channel is
        closed and drained."""
        p = m.p
        lock = self._lock
        lock.acquire()
        buf = self._buf
        q = self._sendq
        if buf and (q is None or q.first is None):  # the common buffered case, inline
            v = buf.popleft()
            lock.release()
            return v
        if q is not None and (sg := q.first) is not None and sg.sel is None and not buf:
            q.pop()  # unbuffered: straight from the sender
            sg.done = True
            lock.release()
            if (g := sg.g) is not None:
                goready(g, PARKED, p)  # sg.wake(p), a call less for a goroutine
            else:
                sg.wake(p)
            return sg.elem  # type: ignore[no-any-return]
        # Nothing buffered, no sender, open: wait, without trying recv_now first.
        done = False
        if buf or (q is not None and q.first is not None) or self._closed:
            done, v, ok, sender = self.recv_now()
        if done:
            lock.release()
            if sender is not None:
                sender.wake(p)
        else:
            me = Sudog(self, OP_RECV)
            # (the queue, made if it is the first wait; releases the lock)
            await wait(self, me, self._recvq or self._waitq(False), WAIT_CHAN_RECEIVE, p)
            v, ok = me.elem, me.ok
        if not ok:
            raise ChannelClosed("receive from closed channel")
        return v

    if TYPE_CHECKING or CORE is None:
        send = _send
        recv = _recv

    async def recv_ok(self) -> tuple[T | None, bool]:
        """Receive as Go's ``v, ok := <-ch``: (None, False) once closed and drained."""
        try:
            return await self.recv(), True
        except ChannelClosed:
            return None, False

    def try_recv(self) -> T:
        """Receive a value if one is there at once; else raise WouldBlock. Raises
        ChannelClosed once closed and drained."""
        with self._lock:
            done, v, ok, sg = self.recv_now()
        if sg is not None:
            sg.wake()
        if not done:
            raise WouldBlock("channel empty")
        if not ok:
            raise ChannelClosed("receive from closed channel")
        return v  # type: ignore[no-any-return]

    def recv_blocking(self, timeout: float | None = None) -> T:
        """Receive from a plain thread, blocking it (not from a goroutine or P thread)."""
        self._lock.acquire()
        done, v, ok, sg = self.recv_now()
        if done:
            self._lock.release()
            if sg is not None:
                sg.wake()
        else:
            sg = Sudog(self, OP_RECV)
            if not wait_blocking(
                self, sg, self._waitq(False), timeout, "ch.recv_blocking", "await ch.recv()"
            ):
                raise TimeoutError(f"channel receive did not complete within {timeout} s")
            v, ok = sg.elem, sg.ok
        if not ok:
            raise ChannelClosed("receive from closed channel")
        return v  # type: ignore[no-any-return]

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            try:
                v = await self.recv()
            except ChannelClosed:
                return
            yield v

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


if CORE is not None:
    CORE.bind_chan(
        Chan=Chan, Sudog=Sudog, WaitQ=WaitQ, ChannelClosed=ChannelClosed, OP_SEND=OP_SEND,
        OP_RECV=OP_RECV, WAIT_CHAN_SEND=WAIT_CHAN_SEND, WAIT_CHAN_RECEIVE=WAIT_CHAN_RECEIVE,
    )  # fmt: skip
    # A ChanOp is a coroutine to asyncio (go(ch.recv()), create_task, wait_for).
    Coroutine.register(CORE.ChanOp)
