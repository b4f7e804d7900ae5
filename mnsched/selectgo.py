"""select: wait on several channel operations, do exactly one (Go's ``select.go``; the
module is not called ``select`` so as not to shadow the standard library's).

Cases are ready-checked under every channel's lock (taken in a fixed order), in random
order (Go's pollorder). If none is ready, one sudog per case is queued, all sharing one
``Select``; the first partner to *claim* the Select completes that case, and every
other sudog is then dead and skipped, and taken out of its queue in O(1) (WaitQ) when
the select's goroutine resumes (docs/design.md, "Channels").

As in Go, a case on a nil channel (``Recv(None)``, ``Send(None, v)``) never fires, and
a select with no case that can fire (``await select()``) waits for ever: only a
cancellation ends it, and the deadlock detector counts it as blocked.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, NoReturn

from .chan import OP_RECV, OP_SEND, Chan, ChannelClosed
from .errors import InternalError
from .g import WAIT_SELECT, WAIT_SELECT_NO_CASES, G, gopark_op, goready, new_lock
from .lockrank import RANK_SELECT, lock_factory
from .m import m
from .sudog import Sudog


class Recv:
    """A receive case for ``select``: after it fires, ``.value`` holds what was received
    and ``.ok`` is False if the channel was closed (then ``.value`` is None).
    ``Recv(None)`` never fires (Go's nil channel: the way to switch a case off)."""

    __slots__ = ("ch", "ok", "value")

    def __init__(self, ch: Chan[Any] | None) -> None:
        if ch is not None and not isinstance(ch, Chan):
            raise TypeError(f"Recv needs a Chan (or None, a case that never fires), not {ch!r}")
        self.ch, self.value, self.ok = ch, None, False

    def __repr__(self) -> str:
        return f"Recv({self.ch!r})"


class Send:
    """A send case for ``select``: it fires once ``ch`` has taken ``value``.
    ``Send(None, v)`` never fires (Go's nil channel)."""

    __slots__ = ("ch", "value")

    def __init__(self, ch: Chan[Any] | None, value: Any) -> None:
        if ch is not None and not isinstance(ch, Chan):
            raise TypeError(f"Send needs a Chan (or None, a case that never fires), not {ch!r}")
        self.ch, self.value = ch, value

    def __repr__(self) -> str:
        return f"Send({self.ch!r}, {self.value!r})"


_NO_DEFAULT = object()
_new_lock = lock_factory(RANK_SELECT, "Select.lock", new_lock)


class Select:
    """One blocked select: its sudogs sit on several channels; the first channel to fire
    claims it (under ``lock``, taken after the channel's). A cancel claims it too."""

    __slots__ = ("claimed", "fired", "fired_closed", "lock", "sudogs")

    def __init__(self) -> None:
        self.lock = _new_lock()
        self.claimed = False
        self.fired: Sudog | None = None
        self.fired_closed = False
        self.sudogs: list[Sudog] = []

    @property
    def done(self) -> bool:
        """A case fired (its operation is complete)."""
        return self.fired is not None

    def blocked_on(self) -> str | None:
        if not self.sudogs:
            return WAIT_SELECT_NO_CASES
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

    def finish(self) -> Sudog | None:
        """The select's goroutine has resumed: take its cases out of their queues (O(1)
        each), and break its reference cycles (each sudog points back at it), so that it
        is freed at once rather than left to the cyclic GC: a select's garbage in cycles
        made full collections, which walk every live goroutine, as frequent as selects,
        and a program's cost grew with the square of its goroutines (chanlinear). Returns
        the case that fired (None: cancelled)."""
        for sg in self.sudogs:
            with sg.owner._lock:
                sg.unqueue()
            sg.sel = None  # no partner can take it now: it is out of every queue
        self.sudogs.clear()
        fired, self.fired = self.fired, None
        return fired


async def select(*cases: Recv | Send, default: Any = _NO_DEFAULT) -> Any:
    """Wait until one of the cases can proceed, do it, and return that case object.

    Exactly one case fires. Among cases ready at once, the choice is uniformly random
    (Go's fairness). With ``default=...`` it never blocks: if no case is ready, it returns
    ``default``. Timeouts are receive cases too: ``Recv(mnsched.after(1.0))``. Cases on
    None never fire; with no other case (``await select()``, Go's ``select {}``) it
    waits until cancelled.

    ::

        jobs_in, result_out, timeout = Recv(jobs), Send(results, r), Recv(after(1.0))
        fired = await select(jobs_in, result_out, timeout)
        if fired is jobs_in:
            if not jobs_in.ok: ...          # jobs was closed
            work(jobs_in.value)
        elif fired is result_out: ...      # results took r
        else: ...                          # a second went by
    """
    for c in cases:
        if not isinstance(c, (Recv, Send)):
            raise TypeError(f"select() takes Recv and Send cases, not {c!r}")
    live = [(c, ch) for c in cases if (ch := c.ch) is not None]  # nil cases never fire
    if not live:
        if default is not _NO_DEFAULT:
            return default
        await _park_for_ever()
    chans = sorted({id(ch): ch for _, ch in live}.values(), key=id)  # lock order
    for ch in chans:
        ch._lock.acquire()
    order = list(range(len(live)))
    random.shuffle(order)  # Go: pollorder
    try:
        for i in order:
            c, ch = live[i]
            if isinstance(c, Recv):
                done, v, ok, wake = ch.recv_now()
                if done:
                    c.value, c.ok = v, ok
                    _unlock_all(chans)
                    if wake is not None:
                        wake.wake()
                    return c
            else:
                r = ch.send_now(c.value)
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
    return await _select_wait(live, chans)


async def _park_for_ever() -> NoReturn:
    """Go's ``select {}``: wait until cancelled."""
    p = m.p
    g = p.curg if p is not None else None
    if g is None:  # a foreign task: a future no one completes
        await asyncio.get_running_loop().create_future()
    else:
        sel = Select()
        sel.lock.acquire()
        await gopark_op(g, sel.lock, sel, WAIT_SELECT_NO_CASES)
    raise InternalError("a select with no cases woke without being cancelled")


def _unlock_all(chans: list[Chan[Any]]) -> None:
    for ch in reversed(chans):
        ch._lock.release()


async def _select_wait(cases: list[tuple[Recv | Send, Chan[Any]]], chans: list[Chan[Any]]) -> Any:
    """No case is ready: queue a sudog on every channel and wait (channel locks held)."""
    p = m.p
    g = p.curg if p is not None else None
    sel = Select()
    for i, (c, ch) in enumerate(cases):
        send = isinstance(c, Send)
        sg = Sudog(ch, OP_SEND, c.value) if send else Sudog(ch, OP_RECV)
        ch._waitq(send).push(sg)
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
        fired = sel.finish()
    if fired is None:
        raise InternalError("a select woke with no case fired and no cancellation")
    c = cases[fired.case][0]
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
