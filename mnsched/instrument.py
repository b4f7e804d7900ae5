"""Instruments: objects a runtime calls as the scheduler works (trio's ``Instrument``).

An instrument is any object with some of these methods (all optional)::

    spawned(g)                a goroutine was made (on the spawner's thread)
    before_step(g, p)         p is about to step g (p's thread)
    after_step(g, p)          the step is over (g is still RUNNING; what it did follows)
    parked(g, reason)         g waits: a park point, a blocking call, an asyncio future
    readied(g)                g is runnable again (on the waker's thread: a P, an M, sysmon)
    exited(g)                 g finished (its outcome is set)
    stolen(gs, thief, victim) thief took gs from victim's run queue
    syscall_start(g)          an M thread starts g's blocking call (the M's thread)
    syscall_end(g)            it returned
    handoff(p, n)             sysmon moved n goroutines off p, stuck in a long step
    procs_changed(p, started) p joined the running Ps (gomaxprocs, a spare for sysmon),
                              or left them (started False)

Install them with ``Runtime(instruments=[...])`` or ``rt.instrument(obj)``, for every
runtime with ``add_global`` (what ``mnsched.trace`` does). Hooks run inside the
scheduler, some with its locks held: record what you need and return. They must not
block, spawn, or touch channels. An instrument whose hook raises is removed and the
error logged (as trio does); the scheduler goes on.

Cost: with no instrument a hook point reads ``Sched.instr`` (None) in the Python driver,
and one flag on its P (``P._instrumented``, kept by ``Sched.reinstall``) in the C driver.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .g import G
    from .p import P

logger = logging.getLogger("mnsched")
T = TypeVar("T")

HOOKS = (
    "spawned",
    "before_step",
    "after_step",
    "parked",
    "readied",
    "exited",
    "stolen",
    "syscall_start",
    "syscall_end",
    "handoff",
    "procs_changed",
)

# Instruments every runtime gets, present and future (mnsched.trace's tracer).
_global: list[object] = []
_global_lock = threading.Lock()
# Called whenever the list changes: sched.py re-installs every live runtime's set.
_on_global_change: list[Callable[[], None]] = []


os.register_at_fork(after_in_child=_global_lock._at_fork_reinit)  # type: ignore[attr-defined]


def on_global_change(fn: Callable[[], None]) -> None:
    _on_global_change.append(fn)


def add_global(obj: object) -> None:
    """Install obj in every runtime, those running and those to come."""
    with _global_lock:
        if obj not in _global:
            _global.append(obj)
    for fn in _on_global_change:
        fn()


def remove_global(obj: object) -> None:
    with _global_lock:
        if obj in _global:
            _global.remove(obj)
    for fn in _on_global_change:
        fn()


def global_instruments() -> list[object]:
    with _global_lock:
        return list(_global)


def notify_global(name: str, *args: Any) -> None:
    """A process-wide event, for the global instruments that take it (the GIL switch
    interval, which every runtime shares: ``switch_interval(seconds)``)."""
    for obj in global_instruments():
        fn = getattr(obj, name, None)
        if callable(fn):
            try:
                fn(*args)
            except Exception:  # the rule for every hook: logged, and the instrument removed
                _log_failure(obj, name)
                remove_global(obj)


def _log_failure(obj: object, name: str) -> None:
    logger.exception("instrument %r raised in %s(); it is removed", obj, name)


# The instrument classes of mnsched's own whose hooks are all there and never raise (the
# tracer), which the driver may call directly. Exact types, registered by their module:
# no flag a user's object could answer (a proxy's __getattr__ answers anything) is
# trusted, nor a subclass (its overrides may raise).
_DIRECT: set[type] = set()


def direct(cls: type[T]) -> type[T]:
    """Class decorator: cls's hooks are complete and never raise (see _DIRECT)."""
    _DIRECT.add(cls)
    return cls


def build(objs: list[object], on_fail: Callable[[object], None]) -> Any:
    """What a runtime's driver calls (``Sched.instr``): None for no instrument; a lone
    instrument of a ``direct`` class (the tracer, whose driver events the C driver then
    records without a call) itself; else an Instruments fan-out."""
    if not objs:
        return None
    if len(objs) == 1 and type(objs[0]) in _DIRECT:
        return objs[0]
    return Instruments(objs, on_fail)


class Instruments:
    """``Sched.instr`` while a runtime has instruments: fans each hook out to those that
    define it. Immutable: installing or removing one builds a new object, swapped in with
    one store, so a hook running on another thread never sees a half-changed table."""

    __slots__ = ("_on_fail", "_table", "objs")

    def __init__(self, objs: list[object], on_fail: Callable[[object], None]) -> None:
        self.objs = tuple(objs)
        self._on_fail = on_fail  # removes a failing instrument (the runtime's)
        self._table: dict[str, tuple[tuple[object, Callable[..., object]], ...]] = {
            name: tuple((o, fn) for o in self.objs if callable(fn := getattr(o, name, None)))
            for name in HOOKS
        }

    def _fire(self, name: str, *args: Any) -> None:
        for obj, fn in self._table[name]:
            try:
                fn(*args)
            except Exception:
                _log_failure(obj, name)
                self._on_fail(obj)

    def spawned(self, g: G[Any]) -> None:
        self._fire("spawned", g)

    def before_step(self, g: G[Any], p: P) -> None:
        self._fire("before_step", g, p)

    def after_step(self, g: G[Any], p: P) -> None:
        self._fire("after_step", g, p)

    def parked(self, g: G[Any], reason: str) -> None:
        self._fire("parked", g, reason)

    def readied(self, g: G[Any]) -> None:
        self._fire("readied", g)

    def exited(self, g: G[Any]) -> None:
        self._fire("exited", g)

    def stolen(self, gs: list[G[Any]], thief: P, victim: P) -> None:
        self._fire("stolen", gs, thief, victim)

    def syscall_start(self, g: G[Any]) -> None:
        self._fire("syscall_start", g)

    def syscall_end(self, g: G[Any]) -> None:
        self._fire("syscall_end", g)

    def handoff(self, p: P, n: int) -> None:
        self._fire("handoff", p, n)

    def procs_changed(self, p: P, started: bool) -> None:
        self._fire("procs_changed", p, started)
