"""The goroutine dump: what every goroutine is doing, and since when (Go's
``runtime.Stack(all=True)`` and its SIGQUIT dump).

``stacks()`` returns one ``GoroutineInfo`` per live goroutine of every runtime (or of
one), and one per plain asyncio task alive on the runtimes' loops; ``dump()`` prints them
as Go does::

    goroutine 7 "worker-3" [chan receive, 12 ms, P1]:
      File "app.py", line 10, in worker
        item = await jobs.recv()
    created by goroutine 1 at app.py:20

It reads the scheduler's state without stopping it: a goroutine may move on while it is
listed, as in Go's dump of a running program. ``install_sigquit`` makes SIGQUIT (Ctrl-\\)
print the dump to stderr and carry on (``MNSCHED_DEBUG=sigquit``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from .g import DONE, RUNNABLE, RUNNING, STATUS_NAMES, G, coro_frames, spawn_site, user_frames
from .sched import Sched, live_scheds

if TYPE_CHECKING:
    from .runtime import Runtime


@dataclass
class GoroutineInfo:
    """One goroutine (or plain asyncio task) as ``stacks()`` found it."""

    id: int | None  # the goroutine id; None for a plain asyncio task
    name: str
    state: str  # "running", "runnable", "parked", "waiting", "syscall"; "task" for a task
    wait_reason: str | None  # "chan receive", "sleep", "asyncio future", ...; None if not waiting
    since: float | None  # seconds in that wait (or in the running step), if known
    p: int | None  # the P that holds or runs it; None in the global queue or a blocking call
    pinned: bool  # pinned to that P (it uses objects of its loop)
    created_at: tuple[str, int] | None  # file and line of the go() call
    created_by: int | None  # the spawning goroutine's id
    stack: list[traceback.FrameSummary] = field(default_factory=list)  # outermost first

    @property
    def task(self) -> bool:
        return self.id is None

    def format(self) -> str:
        if self.task:
            head = f"task {self.name!r} [asyncio task on P{self.p}]:"
        else:
            what = self.wait_reason or self.state
            if self.state == "running":
                what = f"running on P{self.p}"
            parts = [what]
            if self.since is not None:
                parts.append(_ago(self.since))
            if self.state != "running" and self.p is not None:
                parts.append(f"P{self.p}" + (" pinned" if self.pinned else ""))
            head = f"goroutine {self.id} {self.name!r} [{', '.join(parts)}]:"
        lines = [head]
        body = "".join(traceback.format_list(self.stack)).rstrip()
        lines.append(body if body else "  (no Python frames: not started, or in mnsched)")
        if self.created_at is not None:
            by = "" if self.created_by is None else f" in goroutine {self.created_by}"
            lines.append(f"created{by} at {self.created_at[0]}:{self.created_at[1]}")
        return "\n".join(lines)


def _ago(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.0f} minutes"


def _running_frames(g: G[Any], thread_frames: dict[int, FrameType], ident: int) -> list[FrameType]:
    """The frames of a goroutine running on thread ident: that thread's stack from g's
    outermost coroutine frame in (a running coroutine has no cr_await chain to follow)."""
    top = getattr(g._coro, "cr_frame", None)
    f: FrameType | None = thread_frames.get(ident)
    frames: list[FrameType] = []
    while f is not None:
        frames.append(f)
        if f is top:
            break
        f = f.f_back
    else:
        return coro_frames(g._coro)  # it finished its step meanwhile
    frames.reverse()
    return frames


def _goroutine(g: G[Any], now: float, thread_frames: dict[int, FrameType]) -> GoroutineInfo | None:
    status = g._status
    if status == DONE:
        return None
    p = g._p
    home = g._home
    since = None
    reason = None
    if status == RUNNING and p is not None and p.curg is g:
        frames = _running_frames(g, thread_frames, p.thread_ident)
        since = max(0.0, now - p.last_clock) if p.last_clock else None
    else:
        frames = coro_frames(g._coro)
        if status != RUNNABLE:
            reason = g.wait_reason
            ws = getattr(g, "_waitsince", 0.0)  # (unset until it first waits: pure driver)
            since = max(0.0, now - ws) if ws else None
    # A P holds a G that runs or is queued there, or one pinned to it; a parked G that
    # is free may resume on any P.
    holder = home if home is not None else p if status in (RUNNING, RUNNABLE) else None
    parent = g._goparent
    return GoroutineInfo(
        id=g._goid,
        name=g.name,
        state=STATUS_NAMES[status],
        wait_reason=reason,
        since=since,
        p=None if holder is None else holder.id,
        pinned=home is not None,
        created_at=spawn_site(g),
        created_by=parent or None,
        stack=user_frames(frames),
    )


def _scheds(rt: Runtime | None) -> list[Sched]:
    if rt is not None:
        return [rt.sched]
    return sorted(live_scheds(), key=id)


def stacks(rt: Runtime | None = None) -> list[GoroutineInfo]:
    """Every live goroutine of ``rt`` (of every runtime if None), in spawn order, then
    the plain asyncio tasks alive on their Ps' loops. Safe from any thread."""
    now = time.monotonic()
    thread_frames = sys._current_frames()
    out: list[GoroutineInfo] = []
    tasks: list[GoroutineInfo] = []
    for sched in _scheds(rt):
        gs = sorted(sched.allg.copy(), key=lambda g: g._goid)
        out += filter(None, (_goroutine(g, now, thread_frames) for g in gs))
        for p in (*sched.allp, *sched.retired):
            if getattr(p, "loop", None) is None or p.loop.is_closed():
                continue
            try:
                plain = p.tasks()
            except RuntimeError:  # the task set changed while we looked: skip this P
                continue
            for t in plain:
                tasks.append(_task(t, p.id))
    return out + tasks


def _task(t: asyncio.Task[Any], pid: int) -> GoroutineInfo:
    return GoroutineInfo(
        id=None,
        name=t.get_name(),
        state="task",
        wait_reason=None,
        since=None,
        p=pid,
        pinned=True,
        created_at=None,
        created_by=None,
        stack=user_frames(coro_frames(t.get_coro())),
    )


def format_dump(infos: list[GoroutineInfo]) -> str:
    n = sum(1 for i in infos if not i.task)
    head = f"mnsched: {n} goroutine(s), {len(infos) - n} asyncio task(s)"
    return "\n\n".join([head, *(i.format() for i in infos)]) + "\n"


def dump(file: IO[str] | None = None, rt: Runtime | None = None) -> None:
    """Print ``stacks(rt)`` as Go's goroutine dump, to ``file`` (stderr by default)."""
    out = sys.stderr if file is None else file
    out.write(format_dump(stacks(rt)))
    out.flush()


# -- SIGQUIT -------------------------------------------------------------------------------

_sigquit_lock = threading.Lock()
_sigquit_users = 0
_sigquit_prev: Any = None


def _on_sigquit(signum: int, frame: object) -> None:
    if _sigquit_users:
        dump()
        return
    # Every runtime that wanted it is closed, the last one off the main thread (where no
    # handler can be changed): the program's handler goes back now (handlers run on the
    # main thread), and gets this signal.
    _put_back_sigquit()
    if callable(_sigquit_prev):
        _sigquit_prev(signum, frame)
    elif _sigquit_prev == signal.SIG_DFL:
        os.kill(os.getpid(), signum)


def _put_back_sigquit() -> None:
    """The handler before ours, unless the program has installed another meanwhile."""
    if signal.getsignal(signal.SIGQUIT) is _on_sigquit:
        signal.signal(signal.SIGQUIT, _sigquit_prev)


def _after_fork_in_child() -> None:
    """A forked child has no runtime to dump: SIGQUIT's handler goes back."""
    global _sigquit_users
    _sigquit_lock._at_fork_reinit()  # type: ignore[attr-defined]
    if _sigquit_users:
        _sigquit_users = 0
        _put_back_sigquit()


os.register_at_fork(after_in_child=_after_fork_in_child)


def install_sigquit() -> Callable[[], None]:
    """Make SIGQUIT print the goroutine dump and carry on (Go's dumps and exits; a
    service is better left running). From the main thread only, where Python's signal
    handlers run; returns what restores the previous handler (counted: several runtimes
    share it), unless the program installed another one meanwhile; off the main thread,
    our handler puts it back when SIGQUIT next comes. A no-op where there is no SIGQUIT
    or off the main thread."""
    global _sigquit_users, _sigquit_prev
    sigquit = getattr(signal, "SIGQUIT", None)
    if sigquit is None or threading.current_thread() is not threading.main_thread():
        return lambda: None
    with _sigquit_lock:
        if _sigquit_users == 0:
            prev = signal.signal(sigquit, _on_sigquit)
            if prev is not _on_sigquit:  # (else: left installed by a close off the main thread)
                _sigquit_prev = prev
        _sigquit_users += 1
    done = False

    def restore() -> None:
        global _sigquit_users
        nonlocal done
        with _sigquit_lock:
            if done:
                return
            done = True
            _sigquit_users -= 1
            if _sigquit_users == 0 and threading.current_thread() is threading.main_thread():
                _put_back_sigquit()

    return restore
