"""sysmon: the monitor thread (Go's ``sysmon`` in proc.go).

It never runs goroutines. It wakes up every so often (often while Ps are busy, rarely
when all are idle, never in a busy loop) and looks at each P's tick counter. A P whose
current step has not returned to the scheduler for ``HOG_THRESHOLD`` is *stuck*: a
goroutine is hogging the CPU, or blocked in a call that was not made through
``syscall``. Python cannot preempt it, but sysmon makes sure nobody else waits for it
(Go's ``retake``/``handoffp``):

- the stuck P's runnable goroutines (runnext, local queue, inbox) go to the global
  queue, where the other Ps find them, and sysmon runs its due timers (sleepers wake
  elsewhere, timer channels send);
- if every P is stuck, a *spare* P is started to run them; once no P is stuck the spares
  retire, and the number of running Ps is back to ``procs``.

Goroutines pinned to the stuck P (they use asyncio objects of its loop) must wait for it:
they cannot run on another loop. sysmon talks only to the scheduler (sched.py), through
its public methods; docs/design.md, "sysmon", has the rules.

Debug output (``MNSCHED_DEBUG`` or ``Runtime(debug=...)``), on stderr as Go prints it:

- ``hogs``: a stuck step is reported once while it is still stuck, with its goroutine and
  the stack it is stuck in, and again when it ends, with how long it took;
- ``schedtrace=MS``: every MS milliseconds a line like Go's
  ``SCHED 1001ms: procs=4 idleprocs=1 threads=7 syscalls=0 spinning=0 runqueue=3 [5 0 2 1]``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import Deadlock, ResourceLimitError
from .g import PARKED
from .log import debug_output
from .m import thread_cpu, thread_runnable

if TYPE_CHECKING:
    from .p import P
    from .sched import Sched

# Go (proc.go): forcePreemptNS = 10 ms. A step that runs longer is a hog: one that has
# used this much of its thread's CPU time, or one blocked this long in a call (its
# thread asleep, its CPU time still). Wall time alone would count a thread the OS has
# descheduled on a busy host (100k timers beside a CPU burner: 16 false hogs, spare Ps
# and 16k handoffs, 1.8x asyncio's CPU).
HOG_THRESHOLD = 0.010
# A step is blocked in a call, not computing, if it has used at most this share of its
# wall time as CPU, its thread's CPU time has not moved for BLOCKED_AFTER (three rounds
# while it is watched), and the OS says the thread sleeps (Linux: not state R). A call
# uses no CPU; a thread the OS keeps from running is in state R; one waiting for the
# GIL sleeps, but gets it within a round or two (the switch interval is 0.5 ms).
BLOCKED_SHARE = 0.25
BLOCKED_AFTER = 0.003
# A step is suspect at once if the P's clock (read at every batch start and every
# CLOCK_EVERY steps, so at most a batch of short steps old) is this stale. Without it,
# suspicion needed two sysmon rounds, each waiting up to a default 5 ms switch interval
# for the GIL, and a ticker behind a hog was handed off ~5 ms later.
SUSPECT_AFTER = 0.002
# Go's sysmon sleeps 20 us, doubling up to 10 ms once idle. A Python thread's wake-up
# costs a GIL hand-off, and each hand-off hides a thread waiting for the GIL from the
# interpreter's starvation check (it asks the holder to drop the GIL only if no switch
# happened during its whole switch interval): sysmon waking every 1 ms beside a busy P
# kept a loop thread with a due timer waiting seconds. So mnsched polls every
# 1 ms only while a step looks suspect or stuck; while Ps are busy and healthy it backs off
# to 10 ms (the hog threshold: a hog is still seen within a round of its start, and the
# suspect rule below shortens the rounds from there), and to 50 ms when all are idle.
SYSMON_MIN_DELAY = 0.001
SYSMON_BUSY_DELAY = 0.010
SYSMON_MAX_DELAY = 0.050
DEBUG_ENV = "MNSCHED_DEBUG"
# Spare Ps sysmon may run at once, per regular P. Go keeps GOMAXPROCS Ps running: when an
# M is stuck in a syscall, handoffp gives its P to another M, so each stuck P has one
# replacement. A spare here is that replacement; a stuck spare gets none (its own hog
# holds it, and another spare would only add a thread wanting the GIL).
SPARES_PER_P = 1


@dataclass(frozen=True)
class Debug:
    hogs: bool = False
    schedtrace_ms: int = 0
    sigquit: bool = False  # SIGQUIT prints the goroutine dump (mnsched/goroutines.py)
    loops: bool = False  # asyncio's debug mode on every P's loop (debug=True)
    console: str | None = None  # the live console's socket path (mnsched/console.py)

    @classmethod
    def parse(cls, spec: str | bool | None) -> Debug:
        """``"hogs,schedtrace=1000,sigquit,console=PATH"``; the empty string, None or
        False means no debug output. True is asyncio.run's ``debug=True``: asyncio's
        debug mode on the Ps' loops (slow callbacks, unawaited coroutines' origins), and
        hog reports, the goroutine counterpart of its slow-callback warnings."""
        if isinstance(spec, bool):
            return cls(hogs=spec, loops=spec)
        if not isinstance(spec, str) and spec is not None:
            raise TypeError(
                f"debug must be a string of options (as 'hogs,sigquit'), True, False or "
                f"None, not {type(spec).__name__} {spec!r}"
            )
        hogs, trace, sigquit, console = False, 0, False, None
        for item in filter(None, (s.strip() for s in (spec or "").split(","))):
            key, _, value = item.partition("=")
            if key == "hogs" and not value:
                hogs = True
            elif key == "sigquit" and not value:
                sigquit = True
            elif key == "console":
                if not value:
                    raise ValueError(
                        f"console needs a socket path, as console=/tmp/app.sock: {item!r}"
                    )
                console = value
            elif key == "schedtrace":
                try:
                    trace = int(value)
                except ValueError:
                    trace = -1
                if trace <= 0:
                    raise ValueError(
                        f"schedtrace needs a period in ms, as schedtrace=1000: {item!r}"
                    )
            else:
                raise ValueError(
                    f"unknown debug option {item!r}; known: hogs, schedtrace=MS, sigquit, "
                    "console=PATH"
                )
        return cls(hogs, trace, sigquit, console=console)

    @classmethod
    def from_env(cls) -> Debug:
        return cls.parse(os.environ.get(DEBUG_ENV))


class Sysmon:
    def __init__(self, sched: Sched, debug: Debug) -> None:
        self.sched = sched
        self.debug = debug
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.nhandoffs = 0  # goroutines moved off stuck Ps
        self.nspares = 0  # spare Ps started
        self._p_refused = False  # the OS refused the last spare or warm P (said once)
        self.nhogs = 0  # stuck steps seen
        self.urgent = False  # a step looked suspect or stuck at the last round
        self._holder: tuple[P, int] | None = None  # the step token's idle holder, and tick
        self._dl_ticks: int | None = None  # ticks when all looked deadlocked, to confirm
        self._dl_seen: int | None = None  # ticks when a scan last found someone awake
        self._start = time.monotonic()
        self._next_trace = self._start + debug.schedtrace_ms / 1000

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="mnsched-sysmon", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        now = time.monotonic()
        for p in self.sched.allp:
            if p.stuck_since:
                self._unstuck(p, now)  # it ended: the runtime only stops once all Gs have

    def _main(self) -> None:
        delay = SYSMON_MIN_DELAY
        while not self._stop.wait(delay):
            busy = self.check(time.monotonic())
            if self.urgent:
                delay = SYSMON_MIN_DELAY
            else:
                delay = min(delay * 2, SYSMON_BUSY_DELAY if busy else SYSMON_MAX_DELAY)
            if self.debug.schedtrace_ms:
                now = time.monotonic()
                if now >= self._next_trace:
                    self._next_trace = now + self.debug.schedtrace_ms / 1000
                    debug_output(logging.INFO, self.schedtrace_line(now))
                delay = min(delay, max(SYSMON_MIN_DELAY, self._next_trace - now))

    def check(self, now: float) -> bool:
        """One round: find stuck Ps and hand their work off. True if any P is busy."""
        sched = self.sched
        ps = sched.allp
        busy = sched.nsyscall > 0
        nstuck = nsuspect = 0
        for p in ps:
            t = p.tick
            busy |= p.active or t != p.sm_tick
            cpu = thread_cpu(p.cpuclk)
            before, p.sm_cpu = p.sm_cpu, cpu
            if cpu != before:
                p.sm_ran = now  # its thread ran since the last round
            if t != p.sm_tick or p.curg is None:
                if p.stuck_since:
                    self._unstuck(p, now)
                # A new step (or none) since the last round. What it used before this
                # round is known if the P read its clock and CPU time just before it
                # (a batch's start, or after each step while steps are long); else it
                # counts from now, as Go's sysmon counts from the tick it first sees.
                exact = p._clock_tick == t - 1 and p._last_cpu >= 0
                p.sm_pre = max(0.0, cpu - p._last_cpu) if exact else 0.0
                p.sm_tick, p.sm_when = t, now
                p.sm_cpu0 = cpu
                if p.curg is not None and now - p.last_clock >= SUSPECT_AFTER:
                    # The clock is read at least every few short steps, so a step may be
                    # long already: watch it every 1 ms from now, not a round later.
                    nsuspect += 1
                continue
            nsuspect += 1
            why = self._hogs(p, now, cpu)
            if why:
                if not p.stuck_since:
                    self._stuck(p, now, why)
                self.retake(p, now)
                nstuck += 1
        self._check_token_holder()
        if sched.idle and not sched.nspinning and self._work_waits(ps, now):
            sched.wakep()
        if nstuck and nstuck == len(ps):
            # Every P is stuck: a spare takes the work, as Go's handoffp gives a stuck M's
            # P to a new M. At most one per regular P (SPARES_PER_P).
            if (
                sched.runq
                and len(sched.spares) < SPARES_PER_P * sched.rt.gomaxprocs()
                and self._start_p(sched.add_spare)
            ):
                self.nspares += 1
        elif sched.spares:
            sched.retire_spares(keep=nstuck)  # spares idle beyond the stuck Ps go
        self.urgent = bool(nsuspect or nstuck or sched.spares)
        if not nstuck:
            self._start_p(sched.ensure_warm)
        if not busy:
            self._check_deadlock(ps)
        return busy

    def _start_p(self, start: Callable[[], object]) -> bool:
        """Start a spare or warm P; if the OS refuses its thread or fds, the work waits
        for the stuck Ps instead: said once (until one starts again), not fatal."""
        try:
            start()
        except ResourceLimitError as e:
            if not self._p_refused:
                self._p_refused = True
                debug_output(
                    logging.WARNING, f"mnsched: sysmon: {e}; the stuck Ps' goroutines wait"
                )
            return False
        self._p_refused = False
        return True

    def _work_waits(self, ps: tuple[P, ...], now: float) -> bool:
        """Whether runnable goroutines wait that no P is about to run, so that an idle P
        must be woken. In the global queue: a wake-up was missed (wakep's unlocked check
        may miss a P parking at that instant). Under serial steps Ps do not wake each
        other to share work (Sched.maybe_wakep): work waits for a P that runs its
        goroutines (it polls the global queue every 61 ticks), but not for one whose
        loop is busy elsewhere (a plain callback), from which the woken P steals."""
        sched = self.sched
        if sched.token is None:
            return bool(sched.runq)
        stepping = [p for p in ps if p.stepping(now)]
        if sched.runq and not stepping:
            return True
        return any(p.active and p.runq and p not in stepping for p in ps)

    def _check_token_holder(self) -> None:
        """A P keeps the step token between the steps of one loop turn (P.take_token).
        If it holds it without stepping at two rounds in a row while others wait, its
        loop is busy elsewhere (a plain task's long callback, or one blocked waiting for
        something a goroutine must do: a deadlock, with the token held): it goes to them
        (``reclaim``, which refuses if the P has begun to step meanwhile). No step runs,
        so the promise holds; the holder takes it again for its next step."""
        tok = self.sched.token
        p = tok.owner if tok is not None and tok.waiting and not tok.stepping else None
        if p is None:
            self._holder = None
            return
        if self._holder == (p, p.tick):
            tok.reclaim(p)
            self._holder = None
        else:
            self._holder = (p, p.tick)

    def _hogs(self, p: P, now: float, cpu: float) -> str:
        """Whether p's step, the same as at the last round, hogs: "cpu" (it has used
        HOG_THRESHOLD of CPU time), "blocked" (in a call, HOG_THRESHOLD long), or ""."""
        wall = now - max(p.last_clock, p.sm_when - HOG_THRESHOLD)
        if p.cpuclk is None:  # no CPU clock here: wall time decides, as it must
            return "cpu" if wall >= HOG_THRESHOLD else ""
        used = p.sm_pre + cpu - p.sm_cpu0
        if used >= HOG_THRESHOLD:
            return "cpu"
        if (
            wall >= HOG_THRESHOLD
            and used <= BLOCKED_SHARE * wall
            and now - p.sm_ran >= BLOCKED_AFTER
            and not thread_runnable(p.native_id)
        ):
            return "blocked"
        return ""

    def _check_deadlock(self, ps: tuple[P, ...]) -> None:
        """In ``run``: if every goroutine is blocked on channels, sync objects or other
        goroutines, and nothing else is going on that could wake one, end the program
        with Deadlock instead of hanging (Go: "all goroutines are asleep")."""
        sched = self.sched
        main = sched.main
        if (
            main is None
            or main.done()
            or sched.runq
            or sched.nsyscall
            or any(p.active or p.inbox or len(p.timers) for p in ps)
        ):
            self._dl_ticks = None
            return
        ticks = sum(p.tick for p in ps)
        if ticks == self._dl_seen:
            return  # nothing ran since it was found innocent
        ours = {p.thread_ident for p in ps}
        if (
            any(
                t.ident not in ours and not t.name.startswith("mnsched-")
                for t in threading.enumerate()
            )
            or any(p.has_tasks() for p in ps)
            or network_may_wake()
            or signals_may_wake()
        ):
            self._dl_ticks = None
            return  # another thread, an asyncio task, the network or a signal may wake one
        blocked = []
        for g in sched.allg.copy():
            # Parked where only another goroutine can wake it (what it waits on says).
            what = getattr(g._waitq, "blocked_on", None) if g._status == PARKED else None
            if what is None or (what := what()) is None:
                self._dl_seen, self._dl_ticks = ticks, None
                return
            stack = g.format_stack().replace("\n", "\n  ")  # where, as Go's dump says
            blocked.append(f"  {g!r}: {what}\n  {stack}")
        if self._dl_ticks != ticks:
            self._dl_ticks = ticks  # confirm on the next round
            return
        listed = "\n".join(blocked[:20]) + (
            f"\n  ... and {len(blocked) - 20} more" if len(blocked) > 20 else ""
        )
        sched.fatal_error(
            Deadlock(
                f"all goroutines are asleep - deadlock! {len(blocked)} goroutine(s) blocked:\n"
                f"{listed}"
            )
        )

    def _stuck(self, p: P, now: float, why: str) -> None:
        """p's step hogs (why: "cpu" or "blocked"): its goroutine is reported, and under
        serial steps the step token is taken from it, so that the other goroutines run on
        while it does (beside it: the one exception to serial steps, as Go preempts)."""
        p.stuck_since = max(p.last_clock, p.sm_when - HOG_THRESHOLD)
        p.stuck_g = p.curg
        self.nhogs += 1
        tok = self.sched.token
        revoked = tok is not None and tok.revoke(p, p.sm_tick)
        if self.debug.hogs:
            frame = sys._current_frames().get(p.thread_ident)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
            what = (
                f"{(p.sm_pre + p.sm_cpu - p.sm_cpu0) * 1000:.0f} ms of CPU without an await "
                "(a CPU hog)"
                if why == "cpu"
                else "blocked in a call not made through mnsched.syscall"
            )
            debug_output(
                logging.WARNING,
                f"mnsched: P{p.id} stuck for {(now - p.stuck_since) * 1000:.0f} ms in goroutine "
                f"{p.stuck_g!r}: {what}; its other goroutines move to other Ps"
                + (", and run beside it until it yields" if revoked else "")
                + f". Stuck at:\n{stack}".rstrip(),
            )

    def _unstuck(self, p: P, now: float) -> None:
        if self.debug.hogs:
            debug_output(
                logging.WARNING,
                f"mnsched: P{p.id} unstuck: goroutine {p.stuck_g!r} ran "
                f"{(now - p.stuck_since) * 1000:.0f} ms without yielding",
            )
        p.stuck_since = 0.0
        p.stuck_g = None

    def retake(self, p: P, now: float) -> None:
        """Move a stuck P's runnable goroutines to the global queue (P.handoff), and run
        its due timers here."""
        sched = self.sched
        free = p.handoff()
        n = p.timers.run_due(now) + len(free)
        self.nhandoffs += n
        if n and (ins := sched.instr) is not None:
            ins.handoff(p, n)
        if free:
            sched.globrunqputbatch(free)

    def schedtrace_line(self, now: float) -> str:
        sched = self.sched
        ps = sched.allp
        mthreads, _ = sched.mpool.counts
        threads = len(ps) + mthreads + 1  # Ps, Ms, and sysmon itself
        queues = " ".join(str(len(p.runq) + len(p.runnext)) for p in ps)
        return (
            f"SCHED {(now - self._start) * 1000:.0f}ms: procs={len(ps)} "
            f"idleprocs={len(sched.idle)} threads={threads} syscalls={sched.nsyscall} "
            f"spinning={sched.nspinning} runqueue={len(sched.runq)} [{queues}]"
        )


_INET_TABLES = ("tcp", "tcp6", "udp", "udp6")


def network_may_wake() -> bool:
    """Whether this process has a socket through which the outside world can wake a
    goroutine: an inet socket (a listening server, a connection, UDP) or a named unix
    one. Unnamed unix socket pairs are the loops' self-pipes, which only we write to.
    (Go's checkdead leaves goroutines waiting on the netpoller out the same way.)
    Without /proc (not Linux) any socket might: answer yes, and never report."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return True
    inodes = set()
    for fd in fds:
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (or the listing's own fd)
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    if not inodes:
        return False
    for table in _INET_TABLES:  # columns: sl local remote st ... uid timeout inode
        with open(f"/proc/self/net/{table}") as f:
            f.readline()  # the header
            if any(line.split()[9] in inodes for line in f):
                return True
    with open("/proc/self/net/unix") as f:  # columns: Num ... St Inode [Path]
        f.readline()
        return any(len(cols) > 7 and cols[6] in inodes for cols in map(str.split, f))


# Signal handlers known to wake no goroutine waiting for another: run's Ctrl-C handler
# (it cancels main), a test runner's timeout alarm.
_IGNORED_HANDLERS: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()


def ignore_signal_handler(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a signal handler as one that feeds no goroutine (signals_may_wake leaves it
    out); returns it, so it can decorate."""
    _IGNORED_HANDLERS.add(fn)
    return fn


def signals_may_wake() -> bool:
    """Whether the program has a signal handler installed (``signal.signal``, or a loop's
    ``add_signal_handler``, which installs one): a signal may yet feed a channel."""
    for sig in signal.valid_signals():
        try:
            handler = signal.getsignal(sig)
        except (OSError, ValueError):
            continue
        handler = getattr(handler, "__wrapped__", handler)  # sigqueue's guard
        if (
            callable(handler)
            and handler is not signal.default_int_handler
            and handler not in _IGNORED_HANDLERS
        ):
            return True
    return False
