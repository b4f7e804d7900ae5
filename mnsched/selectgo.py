"""select: wait on several channel operations, do exactly one (Go's ``select.go``; the
module is not called ``select`` so as not to shadow the standard library's).

Cases are ready-checked under every channel's lock (taken in a fixed order), in random
order (Go's pollorder). If none is ready, one sudog per case is queued, all sharing one
``Select``; the first partner to *claim* the Select completes that case, and every
other sudog is then dead and skipped (docs/design.md, "Channels").
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from .chan import OP_RECV, OP_SEND, Chan, ChannelClosed
from .errors import InternalError
from .g import WAIT_SELECT, G, gopark_op, goready, new_lock
from .m import m
from .sudog import Sudog


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
    claims it (under ``lock``, taken after the channel's). A cancel claims it too."""

    __slots__ = ("claimed", "fired", "fired_closed", "lock", "sudogs")

    def __init__(self) -> None:
        self.lock = new_lock()
        self.claimed = False
        self.fired: Sudog | None = None
        self.fired_closed = False
        self.sudogs: list[Sudog] = []

    @property
    def done(self) -> bool:
        """A case fired (its operation is complete)."""
        return self.fired is not None

    def blocked_on(self) -> str | None:
        if any(sg.owner._foreign for sg in self.sudogs):
            return None
        return ", ".join(f"{sg.op} {sg.owner!r}" for sg in self.sudogs)

    def claim(self, sg: Sudog | None) -> bool:
        """Take the select for sg's case (None: for a cancel). False if already taken."""
        with self.lock:
            if self.claimed:
                return False
            self.claimed = True
            self.fired = sg
            return True

    def cancel_wait(self, g: G[Any]) -> None:
        if self.claim(None):
            goready(g)  # else a case fired: the select completes with it

    def remove_from_queues(self) -> None:
        for sg in self.sudogs:
            with sg.owner._lock:
                sg.unqueue()


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
                done, v, ok, wake = c.ch.recv_now()
                if done:
                    c.value, c.ok = v, ok
                    _unlock_all(chans)
                    if wake is not None:
                        wake.wake()
                    return c
            else:
                r = c.ch.send_now(c.value)
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
    """No case is ready: queue a sudog on every channel and wait (channel locks held)."""
    p = m.p
    g = p.curg if p is not None else None
    sel = Select()
    for i, c in enumerate(cases):
        if isinstance(c, Send):
            sg = Sudog(c.ch, OP_SEND, c.value)
            sg.enqueue(c.ch._sendq)
        else:
            sg = Sudog(c.ch, OP_RECV)
            sg.enqueue(c.ch._recvq)
        sg.sel, sg.case, sg.g = sel, i, g
        sel.sudogs.append(sg)
    try:
        if g is None:
            await _select_wait_foreign(sel, chans)
        else:
            sel.lock.acquire()  # the park lock: held until g is parked
            _unlock_all(chans)
            await gopark_op(g, sel.lock, sel, WAIT_SELECT)
    finally:
        sel.remove_from_queues()
    fired = sel.fired
    if fired is None:
        raise InternalError("a select woke with no case fired and no cancellation")
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
        sg.owner._foreign = True
    _unlock_all(chans)
    try:
        await fut
    except asyncio.CancelledError:
        if sel.claim(None):
            raise
        # A case fired meanwhile: keep it, and take the cancellation at the next await.
        task = asyncio.current_task()
        if task is not None:
            task.cancel()
