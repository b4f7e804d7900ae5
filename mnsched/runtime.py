"""The runtime: starting and stopping Ps, ``run``, the current and default runtimes, and
shutdown. The shutdown protocol, step by step with the races it handles, is in
docs/design.md ("Shutdown"); the numbers in the comments below refer to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import logging
import os
import queue
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable
from types import CoroutineType, FrameType
from typing import Any, TypeVar

from . import trace
from .aio import complete_future
from .console import ConsoleServer
from .errors import BlockingCallError, InternalError, RuntimeClosedError
from .g import DONE, DRIVER, RUNNING, G, abandon, add_waiter, check_coroutine, logger
from .goroutines import install_sigquit
from .lockrank import RANK_RUNTIME, lock_factory
from .log import debug_output
from .m import M_IDLE_TIMEOUT, MAX_THREADS, Call, MPool, m, share_gil
from .p import P, PTotals, histograms
from .sched import Sched
from .sigqueue import SignalGuard
from .sysmon import Debug, Sysmon, ignore_signal_handler

T = TypeVar("T")

NEW, RUNNING_RT, CLOSING, CLOSED = "new", "running", "closing", "closed"
FORKED = "closed (it runs in the parent process: this is a forked child)"
PROCS_ENV = "MNSCHED_PROCS"
PARALLEL_ENV = "MNSCHED_PARALLEL"
LOOP_KINDS = ("uvloop", "asyncio")
# After abandoning the goroutines that ignored cancellation, how long their coroutines
# get to close (their finally blocks run) before the Ps stop.
ABANDON_GRACE = 1.0
# After a Ctrl-C, a shutdown that takes longer than this says what it waits for (the
# rule: the user must never face a silent wait), listing at most this many Gs.
SHUTDOWN_REPORT_AFTER = 1.0
WAIT_REPORT_MAX = 10
INTERRUPT_M_GRACE = 0.5
# When a signal handler's SystemExit or KeyboardInterrupt ends the program (a service's
# SIGTERM handler), how long goroutines get to finish their finally blocks, and then
# abandoned ones to close: the program is on its way out (asyncio's Runner would wait
# for every task, but an asynchronous exception that cut the driver mid-operation can
# leave a goroutine nobody will ever run), and it must end within ~2 s of the signal.
EXIT_GRACE = 0.5

# The runtime `async with Runtime()` started on each host loop: what every task on that
# loop uses, whatever context it was created in (a lifespan's runtime must be the one its
# server's request tasks see). Guarded by _registry_lock.
_loop_rt: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Runtime] = (
    weakref.WeakKeyDictionary()
)
# The runtime that sync `with Runtime()` made current in this context (no loop to key on).
_current_rt: contextvars.ContextVar[Runtime | None] = contextvars.ContextVar(
    "mnsched_current_runtime", default=None
)
_main_rt: Runtime | None = None  # the runtime of the active mnsched.run()
_default_rt: Runtime | None = None
_registry_lock = threading.Lock()  # _loop_rt and _default_rt
# The CallerP0s running (run's), whose signal handlers a forked child must put back.
_callers: weakref.WeakSet[CallerP0] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child has no runtime: it may ``run()`` again, and ``go()`` starts a new
    default runtime. run's signal handlers would act on the parent's runtime (and its
    Ctrl-C handler write to the parent's loop): the program's own go back."""
    global _main_rt, _default_rt
    _registry_lock._at_fork_reinit()  # type: ignore[attr-defined]
    _loop_rt.clear()
    _current_rt.set(None)
    _main_rt = _default_rt = None
    for caller in list(_callers):
        caller.forget_signals()
    _callers.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


# The most Ps a runtime may have (Go's _MaxGomaxprocs until Go 1.10). Each P is a thread
# and an event loop (3 fds, ~0.4 MB): 500 took 1.9 s and 190 MB to start, and a million
# ran the process out of threads for minutes. Under serial steps one goroutine step runs
# at a time, so Ps beyond the CPUs only add threads waiting for the GIL anyway.
MAX_PROCS = 256


def _check_max(procs: int, what: str) -> int:
    if procs > MAX_PROCS:
        raise ValueError(
            f"{what} is more than mnsched's limit of {MAX_PROCS} Ps: each P is a "
            "thread with an event loop, and beyond the CPUs they only wait for each other "
            f"(this machine has {os.cpu_count()}); use at most {MAX_PROCS}"
        )
    return procs


def resolve_procs(procs: object) -> int:
    """procs= if given, else $MNSCHED_PROCS, else the CPUs this process may use."""
    if procs is None:
        env = os.environ.get(PROCS_ENV)
        if env is None:
            try:
                return len(os.sched_getaffinity(0)) or 1
            except (AttributeError, OSError):
                return os.cpu_count() or 1
        try:
            procs = int(env)
        except ValueError:
            raise ValueError(f"{PROCS_ENV} must be a positive integer, not {env!r}") from None
        if procs < 1:
            raise ValueError(f"{PROCS_ENV} must be a positive integer, not {env!r}")
        return _check_max(procs, f"{PROCS_ENV}={env}")
    if isinstance(procs, bool) or not isinstance(procs, int):
        raise TypeError(f"procs must be an int >= 1, not {type(procs).__name__} {procs!r}")
    if procs < 1:
        raise ValueError(f"procs must be >= 1, not {procs}")
    return _check_max(procs, f"procs={procs}")


def only_asks(n: object) -> bool:
    """gomaxprocs(n) only asks for None or, as Go's GOMAXPROCS, any n < 1."""
    return n is None or (isinstance(n, int) and not isinstance(n, bool) and n < 1)


def resolve_parallel(parallel: object) -> bool:
    """parallel= if given, else $MNSCHED_PARALLEL (1: parallel steps), else serial steps."""
    if parallel is None:
        env = os.environ.get(PARALLEL_ENV, "")
        if env not in ("", "0", "1"):
            raise ValueError(
                f"{PARALLEL_ENV}={env!r}: set it to 1 for parallel steps, 0 (or unset) for "
                "serial ones"
            )
        return env == "1"
    if not isinstance(parallel, bool):
        raise TypeError(f"parallel must be True or False, not {parallel!r}")
    return parallel


class _SelectorLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop, but one whose constructor runs out of fds (its self-pipe)
    closes its selector at once: asyncio's own leaves it to a __del__ that fails."""

    def _make_self_pipe(self) -> None:
        try:
            super()._make_self_pipe()  # type: ignore[misc]
        except BaseException:
            self._selector.close()  # type: ignore[attr-defined]
            self._closed = True  # (nothing else to close: its __del__ has nothing to do)
            raise


def loop_factory(kind: str, debug: bool = False) -> Callable[[], asyncio.AbstractEventLoop]:
    """The Ps' loops: uvloop's or asyncio's, in asyncio's debug mode if debug."""
    if kind == "uvloop":
        import uvloop

        make: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    elif kind == "asyncio":
        make = _SelectorLoop
    else:
        raise ValueError(f"loop must be one of {LOOP_KINDS}, not {kind!r}")
    if not debug:
        return make

    def make_debug() -> asyncio.AbstractEventLoop:
        loop = make()
        loop.set_debug(True)
        return loop

    return make_debug


_new_runtime_lock = lock_factory(RANK_RUNTIME, "Runtime._lock", threading.Lock)


class Runtime:
    """An mnsched runtime: ``procs`` Ps, each a loop on its own thread.

    Use ``mnsched.run(main())`` for programs. ``Runtime`` is for embedding: start and
    close it explicitly, or use it as a context manager (sync or async)::

        async with mnsched.Runtime(procs=4) as rt:
            g = rt.go(work())
            print(await g)

    Its goroutines take serial steps (one at a time, asyncio's promise) unless
    ``parallel=True`` (or ``MNSCHED_PARALLEL=1``) asks for Go's parallel ones
    (docs/design.md, section 19).
    """

    def __init__(
        self,
        procs: int | None = None,
        *,
        loop: str = "uvloop",
        attach: bool = False,
        shutdown_timeout: float = 10.0,
        debug: str | bool | None = None,
        sysmon: bool = True,
        max_threads: int = MAX_THREADS,
        m_idle_timeout: float = M_IDLE_TIMEOUT,
        instruments: Iterable[object] = (),
        parallel: bool | None = None,
        console: str | None = None,
    ) -> None:
        self._procs = resolve_procs(procs)
        self.parallel = resolve_parallel(parallel)
        trace.start_from_env()
        self.attach = attach
        self.shutdown_timeout = shutdown_timeout
        if isinstance(max_threads, bool) or not isinstance(max_threads, int) or max_threads < 1:
            raise ValueError(f"max_threads must be an int >= 1, not {max_threads!r}")
        self.debug = Debug.from_env() if debug is None else Debug.parse(debug)
        if console is not None and not isinstance(console, str | os.PathLike):
            raise TypeError(f"console must be a socket path, not {console!r}")
        self._console_path = os.fspath(console) if console is not None else self.debug.console
        self._console: ConsoleServer | None = None
        self.sched = Sched(
            self,
            loop_factory(loop, self.debug.loops),
            MPool(max_threads, m_idle_timeout),
            self.parallel,
        )
        self.sysmon = Sysmon(self.sched, self.debug) if sysmon else None
        for obj in instruments:
            self.instrument(obj)
        self._state = NEW
        self._lock = _new_runtime_lock()  # the state; taken before sched.resize_lock
        self._closed = threading.Event()
        self._tokens: list[contextvars.Token[Runtime | None]] = []
        self._unsigquit: Callable[[], None] = lambda: None  # set by MNSCHED_DEBUG=sigquit

    def __repr__(self) -> str:
        return f"<mnsched.Runtime procs={self.sched.nprocs or self._procs} {self._state}>"

    @property
    def closed(self) -> bool:
        return self._state in (CLOSING, CLOSED, FORKED)

    def forked_away(self) -> None:
        """In a forked child: this runtime's Ps and goroutines stayed in the parent."""
        self._state = FORKED
        self._closed.set()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Runtime:
        """Start the Ps, each on a thread of its own (in attach mode, P0 is the running
        loop of the calling thread: call it from a coroutine)."""
        if self.attach:
            self._start_attached()
            return self
        self._start(caller_is_p0=False)
        return self

    def _start(self, caller_is_p0: bool, borrow: asyncio.AbstractEventLoop | None = None) -> None:
        with self._lock:
            if self._state != NEW:
                raise RuntimeError(f"{self!r} was already started")
            if self._console_path is not None:  # (first: a taken path leaves nothing behind)
                self._console = ConsoleServer(self, self._console_path)
            try:
                self.sched.start_ps(self._procs, borrow, caller_is_p0, warm=self.sysmon is not None)
            except BaseException:
                if self._console is not None:
                    self._console.close()
                    self._console = None
                raise
            self._state = RUNNING_RT
            share_gil(self, True)
        if caller_is_p0:
            m.p = self.sched.allp[0]
        if self.sysmon is not None:
            self.sysmon.start()
        if self.debug.sigquit:
            self._unsigquit = install_sigquit()
        if self._console is not None:
            self._console.serve()

    def _start_attached(self) -> None:
        """Attach mode: the host's running loop is P0."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "Runtime(attach=True) starts inside a running event loop "
                "(async with, or start() from a coroutine)"
            ) from None
        p = m.p
        if p is not None:
            if not p.borrowed or p.loop is loop:
                raise RuntimeError(
                    f"this thread already runs P{p.id} of {p.sched.rt!r}: "
                    "one runtime per loop (use current_runtime() to reach it)"
                )
            # Its host loop was stopped under it (no aclose) and this thread now runs
            # another: as asyncio leaves a stopped loop's tasks, leave that runtime to
            # its loop (it carries on if the loop runs again) and free the thread.
            logger.warning(
                "%r: its host loop stopped without 'await rt.aclose()'; detached from "
                "this thread (close it on its own loop)",
                p.sched.rt,
            )
            m.p = None
        self._start(caller_is_p0=True, borrow=loop)

    def _begin_close(self) -> str:
        """Move to CLOSING if running; return the state found."""
        with self._lock:
            state = self._state
            if state == NEW:
                self._state = CLOSED
                self._closed.set()
            elif state == RUNNING_RT:
                self._state = CLOSING
        return state

    def _end_close(self) -> None:
        """10. Report the exceptions of failed goroutines that nobody retrieved. (Left
        behind by a broken runtime, one that never ran is closed: no code of it runs,
        and Python would warn that it was never awaited.)"""
        share_gil(self, False)
        for g in self.sched.allg.copy():
            coro = g._coro
            if (
                g._status != DONE
                and isinstance(coro, CoroutineType)
                and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED
            ):
                coro.close()
        for u in list(self.sched.unretrieved):
            u.report()
        self._state = CLOSED
        self._closed.set()

    def close(self, timeout: float | None = None) -> None:
        """Cancel every goroutine, wait for them, stop and join every thread. Idempotent."""
        p = m.p
        if p is not None and p.sched is self.sched:
            raise BlockingCallError(
                "Runtime.close() from inside the runtime would wait for itself; "
                + (
                    "in attach mode use 'await rt.aclose()'"
                    if self.attach
                    else "close it from outside, or return from main"
                )
            )
        state = self._begin_close()
        if state != RUNNING_RT:
            if state == CLOSING:
                self._closed.wait(timeout)
            return
        try:
            self._stop_goroutines(timeout, p0=None)
        finally:
            self._stop_threads(p0=None)
            self._end_close()
        self._raise_fatal()

    async def aclose(self, timeout: float | None = None) -> None:
        """Close from a coroutine without blocking its loop (required in attach mode)."""
        if not self.attach:
            await _in_thread(self.close, timeout)
            return
        p0 = self.sched.allp[0] if self.sched.allp else None
        state = self._begin_close()
        if state != RUNNING_RT:
            if state == CLOSING:
                await _in_thread(self._closed.wait, timeout)
            return
        sched = self.sched
        try:
            cancel_new = self._begin_stop()
            await _wait_event(sched.all_done, lambda: self._grace(timeout), cancel_new)
            if not sched.all_done.is_set():
                self._abandon_stubborn(self._grace(timeout))
                await _wait_event(sched.all_done, lambda: ABANDON_GRACE, lambda: None)
            if p0 is not None and p0.resources:  # 4b. P0's loop is the one running here
                await p0.close_resources()
            await _in_thread(self._close_resources, p0)
        finally:
            await _in_thread(self._stop_threads, p0)
            m.p = None
            if p0 is not None:
                p0.close_loop()  # 8. gives the host loop back as it was
            self._end_close()
        self._raise_fatal()

    def _raise_fatal(self) -> None:
        """9. Why the runtime had to end, if it had (a goroutine's KeyboardInterrupt or
        SystemExit, an internal error) goes on to whoever closed it, as run() raises it."""
        if self.sched.fatal is not None:
            raise self.sched.fatal

    def _broken(self) -> bool:
        """A scheduler failed (Sched.throw): its goroutines may never run again, so the
        shutdown gives them what a program on its way out gets (EXIT_GRACE)."""
        return isinstance(self.sched.fatal, InternalError)

    def _grace(self, timeout: float | None) -> float:
        if self._broken():
            return EXIT_GRACE
        return self.shutdown_timeout if timeout is None else timeout

    def _begin_stop(self) -> Callable[[], None]:
        """1-2. Refuse new goroutines and cancel every one; returns a function that
        cancels those spawned meanwhile (a spawn that passed the closing check just
        before it was set)."""
        sched = self.sched
        with sched.lock:  # against spawns by no goroutine (Sched._add_outside)
            sched.closing = True
            empty = not sched.allg
        cancelled: set[G[Any]] = set()

        def cancel_new() -> None:
            for g in sched.allg.copy():
                if g not in cancelled:
                    cancelled.add(g)
                    g.cancel()

        cancel_new()
        if empty:
            sched.all_done.set()
        return cancel_new

    def _stop_goroutines(
        self,
        timeout: float | None,
        p0: P | None,
        abandon_grace: float = ABANDON_GRACE,
        hurry: bool = False,
    ) -> None:
        """1-4. Cancel every G and wait until none is left. With p0 (``run`` mode) the
        caller is P0's thread, so the wait runs P0's loop instead of blocking it.
        ``hurry`` (after a Ctrl-C, or while the program exits): stop waiting once every
        G left is stuck in a step (a hog on a P: waiting cannot end it)."""
        sched = self.sched
        cancel_new = self._begin_stop()

        def wait(seconds: Callable[[], float], every: Callable[[], None]) -> None:
            def left() -> float:
                return 0.0 if hurry and self._only_hogs_left() else seconds()

            if p0 is None:
                start = time.monotonic()
                while not sched.all_done.wait(0.05) and time.monotonic() - start < left():
                    every()
            else:
                p0.loop.run_until_complete(_wait_event(sched.all_done, left, every))

        wait(lambda: self._grace(timeout), cancel_new)
        if not sched.all_done.is_set():
            self._abandon_stubborn(self._grace(timeout))
            wait(lambda: abandon_grace, lambda: None)
        if p0 is not None and p0.resources:  # 4b. P0's loop is this thread's
            p0.loop.run_until_complete(p0.close_resources())
        self._close_resources(p0)

    def _only_hogs_left(self) -> bool:
        """Every goroutine not done is stuck in a step (sysmon's judgement), or none is."""
        stuck = {p.stuck_g for p in self.sched.allp if p.stuck_since}
        return all(g.done() or g in stuck for g in self.sched.allg.copy())

    def _close_resources(self, p0: P | None) -> None:
        """4b. The PerP instances of every P but p0, each closed on its own P's loop while
        the loops still run (blocks: the caller is not on those loops)."""
        for p in self.sched.ps_with_resources():
            if p is p0:
                continue
            coro = p.close_resources()
            try:
                fut = asyncio.run_coroutine_threadsafe(coro, p.loop)
            except RuntimeError:  # a retired P closed its own and stopped meanwhile
                coro.close()
                continue
            try:
                fut.result(self.shutdown_timeout)
            except concurrent.futures.TimeoutError:
                logger.error("shutdown: P%d's PerP instances did not close in time", p.id)

    def _abandon_stubborn(self, grace: float) -> None:
        """4. Report the goroutines that ignored cancellation for grace seconds (the first
        WAIT_REPORT_MAX with their stacks: formatting tens of thousands of them would
        itself hold up the exit), and close their coroutines at their next step. One
        stuck in a step cannot be interrupted: reported only."""
        stubborn = [g for g in self.sched.allg.copy() if g._status != DONE]
        more = len(stubborn) - WAIT_REPORT_MAX
        logger.error(
            "shutdown: %d goroutine(s) ignored cancellation for %s s; closing them:\n%s%s",
            len(stubborn),
            grace,
            "\n".join(f"{g!r}\n{g.format_stack()}" for g in stubborn[:WAIT_REPORT_MAX]),
            f"\n... and {more} more" if more > 0 else "",
        )
        for g in stubborn:
            if g._status != RUNNING:
                abandon(g)

    def _stop_threads(self, p0: P | None, wait: bool = True, m_grace: float | None = None) -> None:
        """5-7. Stop sysmon, every P but p0, and the M threads; join them all (unless a
        second Ctrl-C said not to wait: then they are daemon threads, left to exit). An
        M in a blocking call, and a P's thread stuck in a step, get ``m_grace`` (default
        ``shutdown_timeout``; after an internal error, INTERRUPT_M_GRACE) to end it."""
        if self.sysmon is not None:
            self.sysmon.stop()
        self._unsigquit()
        if self._console is not None:
            self._console.close()
            self._console = None
        ps = [p for p in self.sched.every_p() if p is not p0]
        for p in ps:
            p.stop()
        if not wait:
            self.sched.mpool.close(0)
            return
        if m_grace is None:
            m_grace = INTERRUPT_M_GRACE if self._broken() else self.shutdown_timeout
        self._join(ps, m_grace)
        for t in self.sched.mpool.close(m_grace):
            logger.error("shutdown: M thread %s is still in a blocking call; leaving it", t.name)

    def waiting_for(self) -> list[str]:
        """What shutdown is waiting for, one line each: goroutines not yet finished, and
        M threads in a blocking call (where)."""
        gs = [g for g in self.sched.allg.copy() if not g.done()]
        lines = [repr(g) for g in gs[:WAIT_REPORT_MAX]]
        if len(gs) > WAIT_REPORT_MAX:
            lines.append(f"... and {len(gs) - WAIT_REPORT_MAX} more goroutine(s)")
        frames = sys._current_frames()
        for t in self.sched.mpool.thread_list():
            where = _user_frame(frames.get(t.ident or 0))
            if where is not None:
                lines.append(f"{t.name}: a blocking call, at {where}")
        return lines

    def _join(self, ps: list[P], grace: float) -> None:
        """Join the Ps' threads, each within grace; one still in a step is reported and
        left (a daemon thread: a thread cannot be killed)."""
        me = threading.current_thread()
        for p in ps:
            t = p.thread
            if t is None or t is me:
                continue
            t.join(grace)
            if t.is_alive():
                g = p.curg
                logger.error(
                    "shutdown: P%d's thread did not stop; it is stuck in %r; leaving it:\n%s",
                    p.id,
                    g,
                    g.format_stack() if g is not None else "",
                )

    # -- goroutines and Ps ----------------------------------------------------------------

    def go(
        self,
        coro: Coroutine[Any, Any, T],
        *,
        name: str | None = None,
        pin: bool = False,
        context: contextvars.Context | None = None,
    ) -> G[T]:
        """Spawn a goroutine on this runtime (see ``mnsched.go``)."""
        return self.sched.newproc(coro, name, pin=pin, context=context)

    def gomaxprocs(self, n: int | None = None) -> int:
        """Return the number of Ps; with n >= 1, change it (Ps are added or retired) and
        return the old number. As Go's GOMAXPROCS, n < 1 only asks."""
        if only_asks(n):
            return self._procs
        n = resolve_procs(n)
        with self._lock:
            if self._state != RUNNING_RT:
                raise RuntimeClosedError(f"{self!r} is not running")
            old = self._procs
            self.sched.procresize(n)  # (if it raises, the runtime keeps its old size)
            self._procs = n
            return old

    def instrument(self, obj: object) -> None:
        """Install an instrument (mnsched/instrument.py lists its optional hooks)."""
        self.sched.instrument(obj)

    def uninstrument(self, obj: object) -> None:
        self.sched.uninstrument(obj)

    def num_goroutine(self) -> int:
        return len(self.sched.allg)

    def stats(self) -> dict[str, Any]:
        """Scheduler counters, as in the schedtrace line, plus totals since start.

        ``spawned == finished + goroutines`` always holds (up to goroutines spawned or
        finishing while the counters are read)."""
        sched = self.sched
        ps = sched.allp
        # (The warm P may have been a spare: its counts count.)
        warm = [sched.warm] if sched.warm else []
        everp: tuple[P | PTotals, ...] = (*ps, *sched.retired, *warm, sched.gone)
        spawned = sched.nspawned_outside + sum(p.nspawned for p in everp)
        finished = sum(p.nfinished for p in everp)
        mthreads, midle = sched.mpool.counts
        sm = self.sysmon
        return {
            "procs": self._procs,
            "running_procs": len(ps),
            "idle_procs": len(sched.idle),
            "spinning": sched.nspinning,
            "goroutines": len(sched.allg),
            "spawned": spawned,
            "finished": finished,
            "global_queue": len(sched.runq),
            "local_queues": [len(p.runq) + len(p.runnext) for p in ps],
            "ticks": [p.tick for p in ps],
            "pinned": [p.npinned for p in ps],
            "steals": sum(p.nsteals for p in everp),
            "stolen": sum(p.nstolen for p in everp),
            # Awaiting a G runnable on one's own P runs it inline (P.join), unless the
            # join does not find it where it looks (a miss: the waiter parks instead).
            "joins_inline": sum(p.njoined for p in everp),
            "join_misses": sum(p.njoinmiss for p in everp),
            "driver": DRIVER,  # "c" (mnsched/_core.c) or "python" (MNSCHED_PURE=1)
            # Serial steps (False: one goroutine step at a time, the step token) or Go's
            # parallel ones; how often the token went to a waiting P, and was taken from
            # a hog by sysmon.
            "parallel": self.parallel,
            "token_handoffs": sched.token.nhandoffs if sched.token is not None else 0,
            "token_revokes": sched.token.nrevokes if sched.token is not None else 0,
            "in_syscall": sched.nsyscall,
            "syscalls": sched.mpool.ncalls,
            "m_threads": mthreads,
            "m_idle": midle,
            "m_started": sched.mpool.nstarted,
            "handoffs": sm.nhandoffs if sm else 0,
            "hogs": sm.nhogs if sm else 0,
            "spare_procs_started": sm.nspares if sm else 0,
            # Per P (running Ps, in allp's order): time in its batches and steps from
            # loop callbacks, goroutines parked there, successful steals.
            "busy": [p.busy for p in ps],
            "parks": [p.nparks for p in ps],
            "steals_per_p": [p.nsteals for p in ps],
            # Sampled histograms (every 64th readying, every 64th step), summed over every
            # P that ran: how long a runnable goroutine waited for a P, and how long a
            # step ran. Buckets: counts[i] up to bounds_us[i] (the last is unbounded).
            **histograms(everp),
        }

    # -- context managers -----------------------------------------------------------------

    def __enter__(self) -> Runtime:
        if self._state == NEW:
            self.start()
        self._tokens.append(_current_rt.set(self))
        return self

    def __exit__(self, *exc: object) -> None:
        _current_rt.reset(self._tokens.pop())
        self.close()

    async def __aenter__(self) -> Runtime:
        loop = asyncio.get_running_loop()
        # Inside a goroutine the loop is a P's, whose runtime current_runtime() answers.
        host = loop if m.p is None else None
        if host is not None:
            with _registry_lock:
                other = _loop_rt.get(host)
                if other is not None and not other.closed:
                    raise RuntimeError(
                        f"this event loop already has {other!r}: one runtime per loop "
                        "(use mnsched.current_runtime() to reach it, or close it first)"
                    )
                _loop_rt[host] = self  # claimed before the await: a racing one is refused
        try:
            if self._state == NEW:
                if self.attach:
                    self._start_attached()
                else:
                    await _in_thread(self.start)
        except BaseException:
            if host is not None:
                _unregister(host, self)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.aclose()
        finally:
            loop = asyncio.get_running_loop()
            _unregister(loop, self)


def _unregister(loop: asyncio.AbstractEventLoop, rt: Runtime) -> None:
    with _registry_lock:
        if _loop_rt.get(loop) is rt:
            del _loop_rt[loop]


def current_runtime() -> Runtime:
    """The runtime that ``go`` spawns on from here: this P's; the one ``async with
    Runtime()`` started on the running loop (from any task on it); the one made current
    with ``with Runtime()``; the one ``run`` is running; or else the default runtime
    (started now if it is not running)."""
    rt = running_runtime()
    return default_runtime() if rt is None else rt


def running_runtime() -> Runtime | None:
    """current_runtime() if that is not a default runtime yet to be started: for the
    questions that need no runtime to answer (num_goroutine, gomaxprocs)."""
    p = m.p
    if p is not None:
        return p.sched.rt
    loop = asyncio._get_running_loop()
    if loop is not None:
        with _registry_lock:
            rt = _loop_rt.get(loop)
        if rt is not None and not rt.closed:
            return rt
    rt = _current_rt.get()
    if rt is not None:
        return rt
    if _main_rt is not None:
        return _main_rt
    with _registry_lock:
        return None if _default_rt is None or _default_rt.closed else _default_rt


def default_runtime() -> Runtime:
    """The runtime ``go`` uses outside any other: started on first use, closed at exit."""
    global _default_rt
    with _registry_lock:
        if _default_rt is None or _default_rt.closed:
            _default_rt = Runtime().start()
            _register_atexit(_default_rt.close)
        return _default_rt


def started_default_runtime() -> Runtime | None:
    """The default runtime if it is running (without starting it)."""
    with _registry_lock:
        return _default_rt if _default_rt is not None and not _default_rt.closed else None


def _register_atexit(fn: Callable[[], None]) -> None:
    # threading's hook runs before the interpreter joins threads and tears down, where
    # plain atexit would run too late for a clean close (concurrent.futures uses it too).
    reg = getattr(threading, "_register_atexit", None)
    if reg is not None:
        reg(fn)
    else:  # pragma: no cover
        import atexit

        atexit.register(fn)


def run(
    main: Coroutine[Any, Any, T],
    *,
    procs: int | None = None,
    loop: str = "uvloop",
    debug: str | bool | None = None,
    sysmon: bool = True,
    max_threads: int = MAX_THREADS,
    parallel: bool | None = None,
) -> T:
    """Run ``main`` as the main goroutine of a new runtime and return its result.

    Like ``asyncio.run``: the calling thread becomes P0 (and runs main); ``procs - 1``
    more Ps start on threads of their own. When main returns, every other goroutine is
    cancelled and awaited, and all threads and loops are closed. ``debug``, ``sysmon``,
    ``max_threads`` and ``parallel`` are as for ``Runtime``.
    """
    global _main_rt
    check_coroutine(main)
    if asyncio._get_running_loop() is not None:
        main.close()
        raise RuntimeError(
            "mnsched.run() cannot be called from a running event loop; "
            "use 'async with mnsched.Runtime()' or go() there"
        )
    try:
        rt = Runtime(
            procs,
            loop=loop,
            debug=debug,
            sysmon=sysmon,
            max_threads=max_threads,
            parallel=parallel,
        )
        host = CallerP0(rt)
    except BaseException:
        main.close()
        raise
    prev_main, _main_rt = _main_rt, rt
    exiting = False
    try:
        g = host.run_pinned(main)
    except (KeyboardInterrupt, SystemExit):
        exiting = True  # a signal handler's, raised in P0's loop: the program ends
        raise
    finally:
        try:
            host.close(exiting)
        finally:
            _main_rt = prev_main
    return host.result(g)


class CallerP0:
    """A runtime whose P0 is the calling thread, running P0's loop only inside
    ``run_pinned``: ``mnsched.run`` runs its main goroutine there, the pytest plugin a
    test's async fixtures and body, one after another (loop-bound objects they make are
    all P0's). Ctrl-C cancels the goroutine running (a second one interrupts), as in
    ``asyncio.Runner``."""

    def __init__(self, rt: Runtime) -> None:
        rt._start(caller_is_p0=True)
        self.rt = rt
        self.p0 = rt.sched.allp[0]
        self.interrupted: list[str] = []
        self._restore_sigint = _install_sigint(rt.sched, self.p0.loop, self.interrupted)
        self._signals = SignalGuard(self.p0.loop, self._handler_raised)
        self._done: asyncio.Future[None] | None = None  # run_pinned's, while it runs
        self._raised: list[BaseException] = []  # by a signal handler, for run_pinned
        self._aborted = False  # run_pinned raised one: the program is on its way out
        self._fatal_raised = False  # outcome() raised sched.fatal: close() does not again
        rt.sched.on_throw = self._end_run_pinned
        if threading.current_thread() is threading.main_thread():
            self._signals.install()
        _callers.add(self)

    def forget_signals(self) -> None:
        """In a forked child: the program's signal handlers back, nothing delivered."""
        self._restore_sigint()
        self._signals.forget()

    def run_pinned(self, coro: Coroutine[Any, Any, T]) -> G[T]:
        """Run coro as a goroutine pinned to P0 (Go locks main to the main thread too)
        until it ends, and return it. While it runs it is the runtime's main goroutine,
        which the deadlock detector watches."""
        sched = self.rt.sched
        g: G[T] = sched.newproc(coro, pin=True)
        done = self._done = self.p0.loop.create_future()
        add_waiter(g, lambda _: complete_future(done))
        sched.main = g
        try:
            self.p0.loop.run_until_complete(done)
        finally:
            self._done = None
            self.p0.give_token()  # P0's loop stops running until the next call
        if not g.done() and isinstance(fatal := sched.fatal, InternalError):
            raise fatal  # the runtime broke (Sched.throw): g may never run again
        if self._raised:
            self._aborted = True
            exc = self._raised.pop()
            if g.done() and g._exc is exc:
                g.exception()  # it interrupted main itself: retrieved, by raising it here
            raise exc
        return g

    def _end_run_pinned(self) -> None:
        """The runtime broke (Sched.throw, any thread): run_pinned stops waiting at once;
        close raises the InternalError."""
        done = self._done
        if done is not None:
            complete_future(done)

    def _handler_raised(self, exc: BaseException, queued: bool) -> None:
        """A signal handler raised exc: it ends run_pinned, as it would have ended
        asyncio.run (the goroutines are left to close's cancellation), or else, if the
        handler was queued (sigqueue.py, 2.), the shutdown (close raises it). One that
        ran at once in the program's code outside run_pinned goes on from there."""
        if self._done is None and not queued:
            return
        self._raised.append(exc)
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def result(self, g: G[T]) -> T:
        """g's result, or KeyboardInterrupt if a Ctrl-C came while it ran (it was
        cancelled, or ended before the cancel reached it) or during the shutdown after
        it: the user asked the program to stop, and it must not look as if it simply
        finished. As asyncio.Runner: a main that caught the cancellation and returned
        gives its result; one that ended before the cancel reached it would have been
        cancelled by it there (a Task cancelled while running ends cancelled)."""
        if self.interrupted and (
            g.cancelled()
            or self.interrupted[0] == IN_SHUTDOWN
            or (g.cancelling() == 0 and g.exception() is None)
        ):
            raise KeyboardInterrupt
        return g.result()

    def outcome(self, g: G[T]) -> T:
        """result(g) for a caller that closes the runtime later (the pytest plugin): if
        the runtime had to end while g ran (a Deadlock, a goroutine's KeyboardInterrupt),
        that reason is raised here, not the cancellation it caused g, as run() raises it,
        and close() does not raise it again."""
        fatal = self.rt.sched.fatal
        if fatal is not None and g.done():
            self._fatal_raised = True
            raise fatal
        return self.result(g)

    def close(self, exiting: bool = False) -> None:
        """1-8, on this thread; then 9: raise why the runtime had to end, if it had.
        ``exiting``: KeyboardInterrupt or SystemExit is on its way out of the caller.

        After a Ctrl-C, a shutdown that takes more than SHUTDOWN_REPORT_AFTER says on
        stderr what it waits for; a second Ctrl-C (KeyboardInterrupt, raised by the
        handler wherever this thread waits) stops waiting: the Ps and Ms are told to stop
        and left to exit (daemon threads), P0's loop is closed, KeyboardInterrupt goes on."""
        rt, p0 = self.rt, self.p0
        report = threading.Timer(SHUTDOWN_REPORT_AFTER, self._report)
        report.name, report.daemon = "mnsched-shutdown-report", True
        report.start()
        forced = False  # a second Ctrl-C: stop waiting
        # The program is on its way out (a signal handler's, or a goroutine's, SystemExit
        # or KeyboardInterrupt): goroutines get EXIT_GRACE.
        exits = (
            exiting
            or self._aborted
            or isinstance(rt.sched.fatal, (KeyboardInterrupt, SystemExit, InternalError))
        )
        try:
            try:
                with rt._lock:
                    rt._state = CLOSING
                if exiting:
                    p0.requeue_interrupted()
                grace = EXIT_GRACE if exits else None
                rt._stop_goroutines(
                    grace,
                    p0,
                    abandon_grace=grace or ABANDON_GRACE,
                    hurry=exits or bool(self.interrupted),
                )
            except KeyboardInterrupt:
                forced = True
                raise
            finally:
                if not forced:
                    try:
                        # After a Ctrl-C, or while the program exits, nobody waits for a
                        # blocking call's result: one not ended within INTERRUPT_M_GRACE
                        # is left to its daemon thread (as Go exits without waiting).
                        m_grace = INTERRUPT_M_GRACE if self.interrupted or exits else None
                        rt._stop_threads(p0, m_grace=m_grace)
                    except KeyboardInterrupt:
                        forced = True
                        raise
        finally:
            if forced:
                rt._stop_threads(p0, wait=False)
            report.cancel()
            report.join()
            m.p = None
            try:
                p0.close_loop(force=forced)  # 8.
            finally:
                m.p = None  # (a schedule callback left on the loop ran in close_loop)
                self._restore_sigint()
                try:
                    rt._end_close()
                finally:
                    # A handler's exception queued meanwhile (SystemExit) goes on from here.
                    _callers.discard(self)
                    self._signals.restore()
        if self._raised:  # a signal handler's, delivered during the shutdown's waits
            raise self._raised.pop()
        if not self._fatal_raised:
            rt._raise_fatal()  # 9.

    def _report(self) -> None:
        """Shutdown has taken SHUTDOWN_REPORT_AFTER: after a Ctrl-C, say what it waits for."""
        if self.interrupted:
            _report_shutdown_waits(self.rt)


def _report_shutdown_waits(rt: Runtime) -> None:
    debug_output(
        logging.WARNING,
        "mnsched: Ctrl-C: shutting down, waiting for:\n  "
        + "\n  ".join(rt.waiting_for() or ["(threads to stop)"])
        + "\nPress Ctrl-C again to exit now.",
    )


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking ``fn(*args)`` on a thread of its own and await it. Not
    ``asyncio.to_thread``: a runtime must start and close even where the host loop's
    default executor is busy or already shut down (test teardowns shut it down first)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def main() -> None:
        try:
            result = fn(*args)
        except BaseException as e:
            complete_future(done, exc=e)
        else:
            complete_future(done, result)

    t = threading.Thread(target=main, name="mnsched-lifecycle", daemon=True)
    t.start()
    try:
        return await done
    finally:
        if done.done():
            t.join()  # it has only its return left: leave no thread behind


async def _wait_event(
    ev: threading.Event, seconds: Callable[[], float], every: Callable[[], None]
) -> None:
    """Wait for a threading.Event on a loop without blocking it (P0 during shutdown), at
    most seconds() (asked again as it waits: the runtime may break meanwhile)."""
    start = time.monotonic()
    while not ev.is_set() and time.monotonic() - start < seconds():
        await asyncio.sleep(0.005)
        every()


# When the first Ctrl-C came (CallerP0.interrupted).
WHILE_RUNNING = "while running"
IN_SHUTDOWN = "in shutdown"


def _install_sigint(
    sched: Sched, loop: asyncio.AbstractEventLoop, interrupted: list[str]
) -> Callable[[], None]:
    """As asyncio.Runner: the first Ctrl-C cancels main, a second one interrupts."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        return lambda: None

    @ignore_signal_handler
    def on_sigint(signum: int, frame: object) -> None:
        if interrupted:
            raise KeyboardInterrupt
        if sched.closing:  # main is over: the user is waiting for the shutdown
            interrupted.append(IN_SHUTDOWN)
            # Said from a thread: a handler must not take locks this thread may hold.
            threading.Thread(
                target=_report_shutdown_waits,
                args=(sched.rt,),
                name="mnsched-shutdown-report",
                daemon=True,
            ).start()
        else:
            interrupted.append(WHILE_RUNNING)
            p0 = sched.allp[0] if sched.allp else None
            if p0 is not None and p0.stuck_since and p0.curg is not None:
                # This thread is in a hog's step (sysmon judged it), which would hold
                # the cancel below up until it ends, maybe for ever: the interrupt goes
                # into the hog, here (the handler runs in its code: SignalGuard delivers
                # at once only there), as Go's exits at once. Its finally blocks run;
                # the KeyboardInterrupt ends the runtime (Sched.fatal_error).
                raise KeyboardInterrupt
            # Not cancelled here: the handler runs between two bytecodes of whatever
            # this thread was doing, maybe inside mnsched holding a lock cancel() takes
            # (a channel's, sched.lock): that hung the process. P0's loop cancels it
            # (woken through its self-pipe, lock-free); main ending before that is
            # still a Ctrl-C (CallerP0.result).
            main = sched.main
            if main is not None:
                try:
                    loop.call_soon_threadsafe(main.cancel)
                except RuntimeError:
                    pass
            return
        try:
            loop.call_soon_threadsafe(lambda: None)
        except RuntimeError:
            pass

    try:
        signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # pragma: no cover - not the main interpreter
        return lambda: None

    def restore() -> None:
        # Unless the program installed its own meanwhile (asyncio.Runner leaves it too);
        # ours may be wrapped by the SignalGuard (restored after this).
        now = signal.getsignal(signal.SIGINT)
        if now is on_sigint or getattr(now, "__wrapped__", None) is on_sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    return restore


def _user_frame(frame: FrameType | None) -> str | None:
    """Where a thread is, as file:line in function: its innermost frame outside
    mnsched and the standard library's threading and queue (None: nowhere else, idle)."""
    skip = (os.path.dirname(__file__), threading.__file__, queue.__file__)
    call = None
    while frame is not None:
        code = frame.f_code
        if not code.co_filename.startswith(skip):
            return f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"
        if code is Call.run.__code__:
            call = frame.f_locals.get("self")
        frame = frame.f_back
    if isinstance(call, Call):  # a call into C (time.sleep): name the function
        return f"{getattr(call.fn, '__qualname__', call.fn)!s}{call.args!r}"
    return None
