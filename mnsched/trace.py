"""The execution trace (Go's ``runtime/trace`` and ``go tool trace``), as Chrome
trace-event JSON, which ui.perfetto.dev and chrome://tracing open.

``start(path)`` installs a ``Tracer`` in every runtime (those running and those to
come: an instrument, mnsched/instrument.py); ``stop()`` removes it and writes the file.
``MNSCHED_TRACE=path`` traces a whole program (written at exit), and
``mnsched trace -o out.json [--plot out.png] script.py [args]`` runs a script under it.

What the file holds (one process per runtime, ``pid``; one track per thread, ``tid``):

- a track per P (``tid`` = the P's id): a slice per step of a goroutine, named after it
  (an inline join's step nests inside its joiner's);
- a track per M thread (``tid`` 1000 + n, named as the thread: M1, M2...): a slice per
  blocking call;
- other threads (sysmon, the caller of ``run``) get tracks from 2000 on when something
  happens there (a handoff, a wake-up from a plain thread, a collection);
- flows (arrows): ``spawn`` from the spawner's step to the child's first step, ``wake``
  from whoever readied a goroutine to its next step (across Ps, from an M's blocking
  call, from a timer), ``steal`` from the victim's track to the thief's;
- instants: ``park`` (with the wait reason), ``exit``, ``steal`` (how many),
  ``handoff`` (sysmon moved work off a stuck P), a P started (``gomaxprocs``, or a spare
  sysmon starts when every P is stuck) or retired; GC collections as slices on the thread
  that ran them, and the GIL switch interval as a counter.

Events are kept in memory as tuples while tracing (a hook costs an append) and turned
into JSON at ``stop``.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import instrument
from .g import CORE
from .m import m

if TYPE_CHECKING:
    from .g import G
    from .p import P

TRACE_ENV = "MNSCHED_TRACE"
M_TID_BASE = 1000  # M threads' tracks
OTHER_TID_BASE = 2000  # any other thread's

# Event kinds: the driver's (as mnsched/_core.c numbers them: TRACE_KINDS), then the
# Python side's. A buffered event is (kind, ts_ns, id(sched), where, a, b, obj): where is
# a P's id, or (thread ident,) for an event on no P.
_BEGIN, _END, _SPAWN, _PARK, _READY, _EXIT = range(6)
_STEAL, _HANDOFF, _SYS_B, _SYS_E, _GC_B, _GC_E, _GIL, _PROCS = range(6, 14)
if CORE is not None and tuple(CORE.TRACE_KINDS) != (_BEGIN, _END, _SPAWN, _PARK, _READY, _EXIT):
    raise ImportError("mnsched._core.TRACE_KINDS does not match trace.py: rebuild the core")

Where = int | tuple[int]


class _PureTraceBuf:
    """The driver's events, recorded in Python (the pure driver's; the C driver's
    TraceBuf records them in C, and the driver calls it without a Python call)."""

    def __init__(self) -> None:
        self.buf: list[tuple[Any, ...]] = []

    def _add(self, kind: int, g: G[Any], where: Where, b: int = 0, obj: object = None) -> None:
        self.buf.append((kind, time.perf_counter_ns(), id(g._sched), where, g._goid, b, obj))

    def spawned(self, g: G[Any]) -> None:
        self._add(_SPAWN, g, _here(), g._goparent, getattr(g, "_name", None))

    def before_step(self, g: G[Any], p: P) -> None:
        self._add(_BEGIN, g, p.id)

    def after_step(self, g: G[Any], p: P) -> None:
        self._add(_END, g, p.id)

    def parked(self, g: G[Any], reason: str) -> None:
        self._add(_PARK, g, _here(), 0, reason)

    def readied(self, g: G[Any]) -> None:
        self._add(_READY, g, _here())

    def exited(self, g: G[Any]) -> None:
        self._add(_EXIT, g, _here())

    def _drain(self) -> list[tuple[Any, ...]]:
        return []  # all in buf already


def _here() -> Where:
    p = m.p
    return (threading.get_ident(),) if p is None else p.id


if TYPE_CHECKING:
    _TraceBase = _PureTraceBuf
else:
    _TraceBase = _PureTraceBuf if CORE is None else CORE.TraceBuf


@instrument.direct
class Tracer(_TraceBase):
    """An instrument that records the schedule. The driver's events go to its base (in C
    under the C driver); the rest (steals, blocking calls, handoffs, collections, the
    switch interval) to ``buf``. ``events()`` turns them into trace-event dicts;
    ``write(path)`` saves them as JSON. Every hook is here and none raises (``direct``):
    the runtime calls it without the Instruments fan-out (and the C driver records its
    events in C) when it is the only instrument."""

    def __init__(self) -> None:
        super().__init__()
        self.buf: list[tuple[Any, ...]] = []
        self.t0 = time.perf_counter_ns()
        self._names: dict[int, str] = {}  # thread ident -> name, as threads show up

    def _where(self) -> Where:
        """This thread: its P's id, or its ident (named in the trace as the thread was)."""
        p = m.p
        if p is not None:
            return p.id
        ident = threading.get_ident()
        if ident not in self._names:
            self._names[ident] = threading.current_thread().name
        return (ident,)

    def _put(self, kind: int, sched: object, where: Where, a: Any, b: Any = 0) -> None:
        self.buf.append((kind, time.perf_counter_ns(), id(sched), where, a, b, None))

    # -- the hooks the driver does not record itself ----------------------------------

    def stolen(self, gs: list[G[Any]], thief: P, victim: P) -> None:
        self._put(_STEAL, thief.sched, thief.id, victim.id, len(gs))

    def syscall_start(self, g: G[Any]) -> None:
        self._put(_SYS_B, g._sched, self._where(), g._goid)

    def syscall_end(self, g: G[Any]) -> None:
        self._put(_SYS_E, g._sched, self._where(), g._goid)

    def handoff(self, p: P, n: int) -> None:
        self._where()  # names sysmon's thread
        self._put(_HANDOFF, p.sched, p.id, n)

    def procs_changed(self, p: P, started: bool) -> None:
        self._put(_PROCS, p.sched, p.id, started)

    def switch_interval(self, seconds: float) -> None:
        self._put(_GIL, None, 0, seconds)

    def gc_callback(self, phase: str, info: dict[str, int]) -> None:
        p = m.p
        kind = _GC_B if phase == "start" else _GC_E
        self._put(kind, None if p is None else p.sched, self._where(), info.get("generation"))

    # -- output -------------------------------------------------------------------------

    def events(self) -> list[dict[str, Any]]:
        """The recorded events in Chrome's trace-event format (timestamps in µs), in
        time order."""
        self.buf.extend(self._drain())
        recs = sorted(self.buf, key=lambda r: r[1])
        self.buf = recs
        pids: dict[int, int] = {}
        tids: dict[int, int] = {}  # thread ident -> track
        tnames: dict[int, str] = {}  # track -> name
        gnames: dict[int, str] = {}
        pending: dict[tuple[str, int], int] = {}  # (flow, goid) -> flow id
        flow = itertools.count(1)
        tracks: set[tuple[int, int]] = set()
        # Open slices per track: a step under way when the trace started has an end and
        # no beginning (dropped), one under way when it stopped a beginning and no end
        # (closed at the last timestamp), so that every track nests.
        depth: dict[tuple[int, int], int] = {}
        last = 0.0
        out: list[dict[str, Any]] = []
        t0 = self.t0

        def track(where: Where) -> int:
            if isinstance(where, int):
                return where
            ident = where[0]
            tid = tids.get(ident)
            if tid is None:
                name = self._names.get(ident, f"thread {ident}")
                base = M_TID_BASE if name.startswith("mnsched-M") else OTHER_TID_BASE
                tid = base + sum(1 for t in tids.values() if base <= t < base + 1000)
                tids[ident] = tid
                tnames[tid] = name.replace("mnsched-", "")
            return tid

        def gname(goid: int) -> str:
            return gnames.get(goid, f"G{goid}")

        def ev(ph: str, t: float, pid: int, tid: int, **kw: Any) -> None:
            out.append({"ph": ph, "ts": t, "pid": pid, "tid": tid, **kw})

        for kind, ts, sid, where, a, b, obj in recs:
            t = (ts - t0) / 1000
            pid = pids.setdefault(sid, len(pids) + 1) if sid != id(None) else 0
            tid = track(where)
            if kind != _GIL:
                tracks.add((pid, tid))
            last = t
            if kind in (_BEGIN, _SYS_B, _GC_B):
                depth[(pid, tid)] = depth.get((pid, tid), 0) + 1
            elif kind in (_END, _SYS_E, _GC_E):
                if not depth.get((pid, tid)):
                    continue
                depth[(pid, tid)] -= 1
            if kind == _BEGIN:
                ev("B", t, pid, tid, name=gname(a), cat="step", args={"goid": a})
                for cat in ("spawn", "wake"):
                    fid = pending.pop((cat, a), None)
                    if fid is not None:
                        ev("f", t, pid, tid, bp="e", name=cat, cat=cat, id=fid)
            elif kind in (_END, _SYS_E, _GC_E):
                ev("E", t, pid, tid)
            elif kind in (_SPAWN, _READY):
                cat = "spawn" if kind == _SPAWN else "wake"
                if kind == _SPAWN and obj is not None:
                    gnames[a] = str(obj)
                fid = pending[(cat, a)] = next(flow)
                args = {"goid": a, "parent": b} if kind == _SPAWN else {"goid": a}
                ev("i", t, pid, tid, s="t", name=f"{cat} {gname(a)}", cat=cat, args=args)
                ev("s", t, pid, tid, name=cat, cat=cat, id=fid)
            elif kind == _PARK:
                ev("i", t, pid, tid, s="t", name=f"park: {obj}", cat="park",
                   args={"goid": a, "reason": obj})  # fmt: skip
            elif kind == _EXIT:
                ev("i", t, pid, tid, s="t", name=f"exit {gname(a)}", cat="exit",
                   args={"goid": a})  # fmt: skip
            elif kind == _STEAL:
                fid = next(flow)
                tracks.add((pid, a))
                ev("s", t, pid, a, name="steal", cat="steal", id=fid)
                ev("i", t, pid, tid, s="t", name=f"steal {b} from P{a}", cat="steal",
                   args={"victim": a, "n": b})  # fmt: skip
                ev("f", t, pid, tid, bp="e", name="steal", cat="steal", id=fid)
            elif kind == _HANDOFF:
                ev("i", t, pid, tid, s="t", name=f"handoff {a}", cat="handoff", args={"n": a})
            elif kind == _PROCS:
                what = "P started" if a else "P retired"
                ev("i", t, pid, tid, s="t", name=what, cat="procs", args={"started": a})
            elif kind == _SYS_B:
                ev("B", t, pid, tid, name=f"syscall {gname(a)}", cat="syscall", args={"goid": a})
            elif kind == _GC_B:
                ev("B", t, pid, tid, name=f"GC gen{a}", cat="gc", args={"gen": a})
            elif kind == _GIL:
                out.append({"ph": "C", "name": "switch interval (ms)", "ts": t, "pid": pid,
                            "args": {"ms": a * 1000}})  # fmt: skip
        for (pid, tid), n in depth.items():
            out.extend({"ph": "E", "ts": last, "pid": pid, "tid": tid} for _ in range(n))
        return self._metadata(tracks, tnames) + out

    def _metadata(
        self, tracks: set[tuple[int, int]], names: dict[int, str]
    ) -> list[dict[str, Any]]:
        meta: list[dict[str, Any]] = []
        for pid in sorted({pid for pid, _ in tracks}):
            pname = "mnsched" if pid == 0 else f"mnsched runtime {pid}"
            meta.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                         "args": {"name": pname}})  # fmt: skip
        for pid, tid in sorted(tracks):
            label = f"P{tid}" if tid < M_TID_BASE else names.get(tid, f"thread {tid}")
            meta.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                         "args": {"name": label}})  # fmt: skip
            meta.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid,
                         "args": {"sort_index": tid}})  # fmt: skip
        return meta

    def write(self, path: str | os.PathLike[str]) -> None:
        """Save the trace to path (atomically, mode 0600: see TraceFile)."""
        TraceFile(path).commit(self)

    def to_json(self) -> str:
        doc = {"traceEvents": self.events(), "displayTimeUnit": "ms",
               "otherData": {"producer": "mnsched", "python": sys.version.split()[0]}}  # fmt: skip
        return json.dumps(doc, separators=(",", ":"))


class TraceFile:
    """Where a trace goes, reserved when tracing starts: a temporary file (mode 0600: a
    trace shows the program's names and timings) in the target's directory, so that a
    path that cannot be written fails at once, not at exit with the trace lost. At the
    end it is renamed over the target: a reader never sees half a file, and a symlink
    there is replaced, not written through."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        target = Path(self.path)
        if target.is_dir():
            raise IsADirectoryError(f"mnsched.trace: {self.path!r} is a directory, not a file")
        try:
            self._fd, self._tmp = tempfile.mkstemp(
                prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
            )
        except OSError as e:
            raise OSError(e.errno, f"mnsched.trace: cannot write a trace to {self.path!r}: "
                          f"{e.strerror}") from e  # fmt: skip

    def commit(self, tracer: Tracer) -> None:
        try:
            with os.fdopen(self._fd, "w") as f:
                f.write(tracer.to_json())
            os.replace(self._tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            raise

    def forget(self) -> None:
        """In a forked child: the file is the parent's to finish."""
        os.close(self._fd)


# -- the process's trace --------------------------------------------------------------------

_lock = threading.Lock()
_active: tuple[Tracer, TraceFile | None] | None = None


def start(path: str | os.PathLike[str] | None = None) -> Tracer:
    """Start tracing every runtime; ``stop()`` writes the trace to ``path`` (if given)
    and returns the tracer. One trace at a time."""
    global _active
    with _lock:
        if _active is not None:
            raise RuntimeError("mnsched.trace: a trace is already running; stop() it first")
        out = None if path is None else TraceFile(path)
        tracer = Tracer()
        _active = (tracer, out)
    gc.callbacks.append(tracer.gc_callback)
    tracer.switch_interval(sys.getswitchinterval())
    instrument.add_global(tracer)
    return tracer


def stop() -> Tracer:
    """Stop tracing; write the file ``start`` was given. Returns the tracer (its
    ``events()`` are the trace)."""
    global _active
    with _lock:
        if _active is None:
            raise RuntimeError("mnsched.trace: no trace is running (start() one)")
        tracer, out = _active
        _active = None
    instrument.remove_global(tracer)
    gc.callbacks.remove(tracer.gc_callback)
    if out is not None:
        out.commit(tracer)
    return tracer


def tracing() -> bool:
    return _active is not None


def start_from_env() -> None:
    """``MNSCHED_TRACE=path``: trace from the first runtime on; written at exit. A path
    that cannot be written fails here, naming the variable."""
    path = os.environ.get(TRACE_ENV)
    if not path or tracing():
        return
    try:
        start(path)
    except OSError as e:
        raise ValueError(f"{TRACE_ENV}={path!r}: {e.strerror or e}") from e
    atexit.register(_stop_at_exit)


# The exit status of a program whose trace could not be written at exit (the path was
# writable when tracing started): the trace was what was asked for, and it is lost.
TRACE_LOST_STATUS = 1


def _stop_at_exit() -> None:
    if not tracing():
        return
    try:
        stop()
    except Exception as e:
        print(f"mnsched: {TRACE_ENV}: the trace was not written: {e}", file=sys.stderr)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        # An atexit handler cannot change the exit status otherwise: exit handlers
        # registered before the first runtime started do not run.
        os._exit(TRACE_LOST_STATUS)


def _after_fork_in_child() -> None:
    """A forked child traces nothing: the trace (and its file) is the parent's."""
    global _active
    _lock._at_fork_reinit()  # type: ignore[attr-defined]
    if _active is not None:
        tracer, out = _active
        _active = None
        if out is not None:
            out.forget()
        instrument.remove_global(tracer)
        gc.callbacks.remove(tracer.gc_callback)


os.register_at_fork(after_in_child=_after_fork_in_child)
