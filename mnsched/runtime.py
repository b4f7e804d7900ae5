"""The runtime: starting and stopping Ps, ``run``, the default runtime, shutdown.

Shutdown (``run`` returning, ``Runtime.close``): no new goroutines are accepted, every
live G is cancelled once and the runtime waits for all of them to finish, so each
``finally`` block runs exactly once. A G that ignores cancellation past
``shutdown_timeout`` is reported with its stack and its coroutine is closed on its own
P's thread (``finally`` still runs, via GeneratorExit). Then every loop is finished as
``asyncio.run`` finishes its loop, and every thread is joined.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from inspect import CO_ITERABLE_COROUTINE
from types import CoroutineType, GeneratorType
from typing import Any, TypeVar

from .errors import BlockingCallError, RuntimeClosedError
from .g import DONE, RUNNING, G, logger
from .m import M_IDLE_TIMEOUT, MAX_THREADS, MPool, m
from .p import P
from .sched import Sched, StealOrder
from .sysmon import Debug, Sysmon

T = TypeVar("T")

NEW, RUNNING_RT, CLOSING, CLOSED = "new", "running", "closing", "closed"
PROCS_ENV = "MNSCHED_PROCS"
LOOP_KINDS = ("uvloop", "asyncio")

# The runtime that `with Runtime()` / `async with Runtime()` made current in this context.
_current_rt: contextvars.ContextVar[Runtime | None] = contextvars.ContextVar(
    "mnsched_current_runtime", default=None)
_main_rt: Runtime | None = None  # the runtime of the active mnsched.run()
_default_rt: Runtime | None = None
_default_lock = threading.Lock()


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
        return procs
    if isinstance(procs, bool) or not isinstance(procs, int):
        raise TypeError(f"procs must be an int >= 1, not {type(procs).__name__} {procs!r}")
    if procs < 1:
        raise ValueError(f"procs must be >= 1, not {procs}")
    return procs


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    if kind == "asyncio":
        return asyncio.SelectorEventLoop
    raise ValueError(f"loop must be one of {LOOP_KINDS}, not {kind!r}")


def check_coroutine(coro: object) -> None:
    if type(coro) is CoroutineType or asyncio.iscoroutine(coro):
        return
    if isinstance(coro, GeneratorType) and coro.gi_code.co_flags & CO_ITERABLE_COROUTINE:
        return  # a @types.coroutine generator (asyncio stopped accepting them in 3.12)
    if callable(coro):
        hint = " (call it: go(f(...)), or decorate an async def with @go)"
    elif hasattr(coro, "__await__"):
        hint = " (an awaitable that is not a coroutine: wrap it in an async def)"
    else:
        hint = ""
    raise TypeError(f"a goroutine needs a coroutine, not {type(coro).__name__} {coro!r}{hint}")


class Runtime:
    """An mnsched runtime: ``procs`` Ps, each a loop on its own thread.

    Use ``mnsched.run(main())`` for programs. ``Runtime`` is for embedding: start and
    close it explicitly, or use it as a context manager (sync or async)::

        async with mnsched.Runtime(procs=4) as rt:
            g = rt.go(work())
            print(await g)
    """

    def __init__(self, procs: int | None = None, *, loop: str = "uvloop",
                 attach: bool = False, shutdown_timeout: float = 10.0,
                 debug: str | None = None, sysmon: bool = True,
                 max_threads: int = MAX_THREADS, m_idle_timeout: float = M_IDLE_TIMEOUT
                 ) -> None:
        self._procs = resolve_procs(procs)
        self.attach = attach
        self._make_loop = loop_factory(loop)
        self.loop_kind = loop
        self.shutdown_timeout = shutdown_timeout
        if isinstance(max_threads, bool) or not isinstance(max_threads, int) or max_threads < 1:
            raise ValueError(f"max_threads must be an int >= 1, not {max_threads!r}")
        self.debug = Debug.from_env() if debug is None else Debug.parse(debug)
        self.sched = Sched()
        self.sched.rt = self
        self.sched.mpool = MPool(max_threads, m_idle_timeout)
        self.sysmon = Sysmon(self, self.debug) if sysmon else None
        self._state = NEW
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._retired: list[P] = []  # Ps removed by gomaxprocs, joined at close
        self._spares: list[P] = []  # Ps sysmon started because every P was stuck
        self._warm: P | None = None  # a parked P kept ready for sysmon, outside allp
        self._main: G[Any] | None = None  # run()'s main goroutine
        self._tokens: list[contextvars.Token[Runtime | None]] = []

    def __repr__(self) -> str:
        return f"<mnsched.Runtime procs={self.sched.nprocs or self._procs} {self._state}>"

    @property
    def closed(self) -> bool:
        return self._state in (CLOSING, CLOSED)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Runtime:
        """Start the Ps, each on a thread of its own (in attach mode, P0 is the running
        loop of the calling thread: call it from a coroutine)."""
        if self.attach:
            self._start_attached()
            return self
        with self._lock:
            if self._state != NEW:
                raise RuntimeError(f"{self!r} was already started")
            self._start_ps(caller_is_p0=False)
            self._state = RUNNING_RT
        if self.sysmon is not None:
            self.sysmon.start()
        return self

    def _start_ps(self, caller_is_p0: bool, borrow: asyncio.AbstractEventLoop | None = None
                  ) -> None:
        """Start the Ps: P0 on the calling thread when caller_is_p0 (on a new loop, or on
        the running loop it borrows), the others on threads of their own."""
        ps = [P(self.sched, i, self._make_loop) for i in range(self._procs)]
        try:
            for p in ps:
                if caller_is_p0 and p.id == 0:
                    p.create_loop(borrow)
                else:
                    p.start_thread()
        except BaseException:
            for p in ps:
                p.stop()
            self._join(ps)
            raise
        sched = self.sched
        with sched.lock:
            sched.idle = list(reversed(ps))
            sched.order = StealOrder(len(ps))
            sched.allp = tuple(ps)

    def close(self, timeout: float | None = None) -> None:
        """Cancel every goroutine, wait for them, stop and join every thread. Idempotent."""
        p = m.p
        if p is not None and p.sched is self.sched:
            raise BlockingCallError(
                "Runtime.close() from inside the runtime would wait for itself; "
                + ("in attach mode use 'await rt.aclose()'" if self.attach else
                   "close it from outside, or return from main"))
        with self._lock:
            state = self._state
            if state == NEW:
                self._state = CLOSED
                self._closed.set()
                return
            if state == RUNNING_RT:
                self._state = CLOSING
        if state != RUNNING_RT:
            self._closed.wait(timeout)
            return
        try:
            self._stop_goroutines(timeout, p0=None)
        finally:
            self._stop_threads(p0=None)
            self._state = CLOSED
            self._closed.set()

    def _stop_threads(self, p0: P | None) -> None:
        """Stop sysmon, every P but p0, and the M threads; join them all."""
        if self.sysmon is not None:
            self.sysmon.stop()
        ps = [p for p in (*self.sched.allp, *self._retired) if p is not p0]
        with self._lock:
            if self._warm is not None:
                ps.append(self._warm)
                self._warm = None
        for p in ps:
            p.stop()
        self._join(ps)
        for t in self.sched.mpool.close(self.shutdown_timeout):
            logger.error("shutdown: M thread %s is still in a blocking call; leaving it", t.name)

    def _begin_stop(self) -> Callable[[], None]:
        """Refuse new goroutines and cancel every one; returns a function that cancels
        those spawned meanwhile (by a spawn racing with the start of the shutdown)."""
        sched = self.sched
        sched.closing = True
        cancelled: set[G[Any]] = set()

        def cancel_new() -> None:
            for g in sched.allg.copy():
                if g not in cancelled:
                    cancelled.add(g)
                    g.cancel()

        cancel_new()
        if not sched.allg:
            sched.all_done.set()
        return cancel_new

    def _stop_goroutines(self, timeout: float | None, p0: P | None) -> None:
        """Cancel every G and wait until none is left. With p0 (``run`` mode) the caller
        is P0's thread, so the wait runs P0's loop instead of blocking it."""
        sched = self.sched
        cancel_new = self._begin_stop()
        grace = self.shutdown_timeout if timeout is None else timeout
        if p0 is None:
            deadline = _deadline(grace)
            while not sched.all_done.wait(0.05) and _remaining(deadline) > 0:
                cancel_new()
        else:
            p0.loop.run_until_complete(_wait_event(sched.all_done, grace, cancel_new))
        if not sched.all_done.is_set():
            self._abandon_stubborn(p0)

    # -- attach mode: the host's running loop is P0 -----------------------------------------

    def _start_attached(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("Runtime(attach=True) starts inside a running event loop "
                               "(async with, or start() from a coroutine)") from None
        if m.p is not None:
            raise RuntimeError("this thread already runs a P; it cannot attach another")
        with self._lock:
            if self._state != NEW:
                raise RuntimeError(f"{self!r} was already started")
            self._start_ps(caller_is_p0=True, borrow=loop)
            self._state = RUNNING_RT
        m.p = self.sched.allp[0]
        if self.sysmon is not None:
            self.sysmon.start()

    async def aclose(self, timeout: float | None = None) -> None:
        """Close from a coroutine without blocking its loop (required in attach mode)."""
        if not self.attach:
            await asyncio.to_thread(self.close, timeout)
            return
        p0 = self.sched.allp[0] if self.sched.allp else None
        with self._lock:
            state = self._state
            if state == RUNNING_RT:
                self._state = CLOSING
        if state != RUNNING_RT:
            if state == CLOSING:
                await asyncio.to_thread(self._closed.wait, timeout)
            return
        sched = self.sched
        try:
            cancel_new = self._begin_stop()
            grace = self.shutdown_timeout if timeout is None else timeout
            await _wait_event(sched.all_done, grace, cancel_new)
            if not sched.all_done.is_set():
                self._abandon_stubborn(p0)
        finally:
            await asyncio.to_thread(self._stop_threads, p0)
            m.p = None
            if p0 is not None:
                p0.close_loop()  # gives the host loop back as it was
            self._state = CLOSED
            self._closed.set()

    def _abandon_stubborn(self, p0: P | None) -> None:
        stubborn = [g for g in self.sched.allg.copy() if g._status != DONE]
        logger.error(
            "shutdown: %d goroutine(s) ignored cancellation for %s s; closing them:\n%s",
            len(stubborn), self.shutdown_timeout,
            "\n".join(f"{g!r}\n{_format_stack(g)}" for g in stubborn))
        for g in stubborn:
            p = g._p
            if g._status == RUNNING:
                continue  # stuck in a step: nothing can interrupt it (reported above)
            if p is None or p is p0 or p.loop is None or p.loop.is_closed():
                _abandon(g)
            else:
                try:
                    p.loop.call_soon_threadsafe(_abandon, g)
                except RuntimeError:
                    _abandon(g)

    def _join(self, ps: list[P]) -> None:
        me = threading.current_thread()
        for p in ps:
            t = p.thread
            if t is None or t is me:
                continue
            t.join(self.shutdown_timeout)
            if t.is_alive():
                g = p.curg
                logger.error("shutdown: P%d's thread did not stop; it is stuck in %r:\n%s",
                             p.id, g, _format_stack(g) if g is not None else "")

    def _run_main(self, coro: Coroutine[Any, Any, T]) -> T:
        """``mnsched.run``: P0 is the calling thread, and main is pinned to it (Go locks the
        main goroutine to the main thread too)."""
        global _main_rt
        with self._lock:
            self._start_ps(caller_is_p0=True)
            self._state = RUNNING_RT
        sched = self.sched
        p0 = sched.allp[0]
        loop = p0.loop
        main = self._main = G(coro, sched, p0)
        assert main.id == 1  # like Go's main goroutine
        sched.nspawned_outside += 1
        p0.pin(main)
        sched.allg.add(main)
        done = loop.create_future()
        main._add_waiter(lambda _: _call_soon_threadsafe(loop, _set_done, done))
        with sched.lock:
            sched.unidle_locked(p0)
            p0.active = True
        p0.runnext.append(main)
        loop.call_soon(p0.schedule)
        if self.sysmon is not None:
            self.sysmon.start()
        interrupted: list[bool] = []
        restore_sigint = _install_sigint(main, loop, interrupted)
        m.p = p0
        prev_main, _main_rt = _main_rt, self
        try:
            try:
                loop.run_until_complete(done)
            finally:
                with self._lock:
                    self._state = CLOSING
                try:
                    self._stop_goroutines(None, p0)
                finally:
                    self._stop_threads(p0)
        finally:
            m.p = None
            _main_rt = prev_main
            try:
                p0.close_loop()
            finally:
                restore_sigint()
                self._state = CLOSED
                self._closed.set()
        if sched.fatal is not None:
            raise sched.fatal
        if interrupted and main.cancelled():
            raise KeyboardInterrupt
        return main._outcome()  # type: ignore[no-any-return]

    def fatal_error(self, exc: BaseException) -> None:
        """A G raised KeyboardInterrupt or SystemExit: the program must end, as it would
        under asyncio. Shut down; ``run`` (or ``close``) re-raises it."""
        sched = self.sched
        if sched.fatal is None:
            sched.fatal = exc
        for g in sched.allg.copy():
            g.cancel()

    # -- goroutines -----------------------------------------------------------------------

    def go(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> G[T]:
        """Spawn a goroutine on this runtime."""
        return spawn(self, coro, name)

    def gomaxprocs(self, n: int | None = None) -> int:
        """Return the number of Ps; with n, change it (Ps are added or retired)."""
        if n is None:
            return self._procs
        n = resolve_procs(n)
        with self._lock:
            if self._state != RUNNING_RT:
                raise RuntimeClosedError(f"{self!r} is not running")
            old = self._procs
            regular = [p for p in self.sched.allp if p not in self._spares]
            if n > len(regular):
                self._add_ps(n - len(regular))
            elif n < len(regular):
                self._remove_ps(regular[n:])
            self._procs = n
            return old

    def _new_ps(self, k: int) -> list[P]:
        """Start k Ps' threads and loops, with ids not in use (under self._lock)."""
        sched = self.sched
        taken = {p.id for p in (*sched.allp, *self._retired) if not p.stopped}
        if self._warm is not None:
            taken.add(self._warm.id)
        ids = [i for i in range(len(taken) + k) if i not in taken][:k]
        new = [P(sched, i, self._make_loop) for i in ids]
        for p in new:
            p.start_thread()
        return new

    def _add_ps(self, k: int, new: list[P] | None = None) -> list[P]:
        """Start k more Ps, or add the given started ones (under self._lock)."""
        sched = self.sched
        new = new or self._new_ps(k)
        with sched.lock:
            sched.order = StealOrder(len(sched.allp) + k)
            sched.allp = sched.allp + tuple(new)
            sched.idle.extend(new)
        sched.wakep_locked()
        return new

    def _remove_ps(self, gone: list[P]) -> None:
        """Retire these Ps (under self._lock): their free goroutines move to others."""
        sched = self.sched
        with sched.lock:
            keep = tuple(p for p in sched.allp if p not in gone)
            sched.order = StealOrder(len(keep))
            sched.allp = keep
        self._retired.extend(gone)
        for p in gone:
            p.loop.call_soon_threadsafe(p.retire)

    def _add_spare(self) -> P:
        """sysmon: every P is stuck; add one more to run their goroutines. The warm spare
        is used when there is one: starting a thread and a loop while a hog holds the
        GIL takes several GIL hand-offs, and the point is to be quick."""
        with self._lock:
            warm, self._warm = self._warm, None
            p = self._add_ps(1, [warm] if warm is not None else None)[0]
            self._spares.append(p)
            return p

    def _ensure_warm(self) -> None:
        """sysmon, when it has time: keep one parked P ready for the next stuck spell."""
        with self._lock:
            if self._warm is None and self._state == RUNNING_RT:
                self._warm = self._new_ps(1)[0]

    def _retire_spares(self, spares: list[P]) -> None:
        with self._lock:
            if self._state != RUNNING_RT:
                return  # shutting down: close() stops every P anyway
            self._remove_ps(spares)
            self._spares = [p for p in self._spares if p not in spares]

    def num_goroutine(self) -> int:
        return len(self.sched.allg)

    def stats(self) -> dict[str, Any]:
        """Scheduler counters, as in the schedtrace line, plus totals since start.

        ``spawned == finished + goroutines`` always holds (up to goroutines spawned or
        finishing while the counters are read)."""
        sched = self.sched
        ps = sched.allp
        everp = (*ps, *self._retired)
        spawned = sched.nspawned_outside + sum(p.nspawned for p in everp)
        finished = sched.nfinished_outside + sum(p.nfinished for p in everp)
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
            "in_syscall": sched.nsyscall,
            "syscalls": sched.mpool.ncalls,
            "m_threads": mthreads,
            "m_idle": midle,
            "m_started": sched.mpool.nstarted,
            "handoffs": sm.nhandoffs if sm else 0,
            "hogs": sm.nhogs if sm else 0,
            "spare_procs_started": sm.nspares if sm else 0,
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
        if self._state == NEW:
            if self.attach:
                self._start_attached()
            else:
                await asyncio.to_thread(self.start)
        self._tokens.append(_current_rt.set(self))
        return self

    async def __aexit__(self, *exc: object) -> None:
        _current_rt.reset(self._tokens.pop())
        await self.aclose()


def current_runtime() -> Runtime:
    """The runtime that ``go`` spawns on from here: this P's, the one made current with
    ``with Runtime()``, the one ``run`` is running, or else the default runtime."""
    p = m.p
    if p is not None:
        return p.sched.rt
    rt = _current_rt.get()
    if rt is not None:
        return rt
    if _main_rt is not None:
        return _main_rt
    return default_runtime()


def default_runtime() -> Runtime:
    """The runtime ``go`` uses outside any other: started on first use, closed at exit."""
    global _default_rt
    with _default_lock:
        if _default_rt is None or _default_rt.closed:
            _default_rt = Runtime().start()
            _register_atexit(_default_rt.close)
        return _default_rt


def _register_atexit(fn: Callable[[], None]) -> None:
    # threading's hook runs before the interpreter joins threads and tears down, where
    # plain atexit would run too late for a clean close (concurrent.futures uses it too).
    reg = getattr(threading, "_register_atexit", None)
    if reg is not None:
        reg(fn)
    else:  # pragma: no cover
        import atexit

        atexit.register(fn)


def spawn(rt: Runtime, coro: Coroutine[Any, Any, T], name: str | None) -> G[T]:
    """newproc: make a G. From one of rt's Ps it goes to that P's runnext; from anywhere
    else, to the global queue."""
    if type(coro) is not CoroutineType:
        check_coroutine(coro)
    sched = rt.sched
    if sched.closing or rt._state != RUNNING_RT:
        coro.close()  # it will never run; close it so Python does not warn "never awaited"
        raise RuntimeClosedError(f"cannot spawn a goroutine: {rt!r}")
    p = m.p
    if p is not None and p.sched is sched:
        g = G(coro, sched, p, name)
        sched.allg.add(g)
        p.nspawned += 1
        p.ready_here(g)
    else:
        g = G(coro, sched, None, name)
        sched.allg.add(g)
        with sched.lock:
            sched.nspawned_outside += 1
        sched.globrunqputbatch([g])
    return g


def run(main: Coroutine[Any, Any, T], *, procs: int | None = None, loop: str = "uvloop") -> T:
    """Run ``main`` as the main goroutine of a new runtime and return its result.

    Like ``asyncio.run``: the calling thread becomes P0 (and runs main); ``procs - 1``
    more Ps start on threads of their own. When main returns, every other goroutine is
    cancelled and awaited, and all threads and loops are closed.
    """
    if asyncio._get_running_loop() is not None:
        check_coroutine(main)
        main.close()
        raise RuntimeError("mnsched.run() cannot be called from a running event loop; "
                           "use 'async with mnsched.Runtime()' or go() there")
    check_coroutine(main)
    try:
        rt = Runtime(procs, loop=loop)
    except BaseException:
        main.close()
        raise
    return rt._run_main(main)


# -- helpers ------------------------------------------------------------------------------


def _call_soon_threadsafe(loop: asyncio.AbstractEventLoop, fn: Callable[..., object],
                          *args: object) -> None:
    loop.call_soon_threadsafe(fn, *args)


def _set_done(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_result(None)


def _deadline(seconds: float | None) -> float | None:
    return None if seconds is None else time.monotonic() + seconds


def _remaining(deadline: float | None) -> float:
    return float("inf") if deadline is None else deadline - time.monotonic()


async def _wait_event(ev: threading.Event, seconds: float | None,
                      every: Callable[[], None]) -> None:
    """Wait for a threading.Event on a loop without blocking it (P0 during shutdown)."""
    deadline = _deadline(seconds)
    while not ev.is_set() and _remaining(deadline) > 0:
        await asyncio.sleep(0.005)
        every()


def _abandon(g: G[Any]) -> None:
    """Close the coroutine of a G that would not stop (runs on its P's thread)."""
    if g._status == DONE:
        return
    try:
        g._ctx.run(g._coro.close)
    except BaseException:
        logger.exception("shutdown: closing %r raised", g)
    p = m.p if m.p is g._p else None
    g._finish(None, asyncio.CancelledError("abandoned at shutdown: it ignored cancellation"), p)


def _format_stack(g: G[Any]) -> str:
    frames = g.get_stack()
    return "".join(traceback.format_list(
        [traceback.FrameSummary(f.f_code.co_filename, f.f_lineno, f.f_code.co_name)
         for f in frames])).rstrip()


def _install_sigint(main: G[Any], loop: asyncio.AbstractEventLoop,
                    interrupted: list[bool]) -> Callable[[], None]:
    """As asyncio.Runner: the first Ctrl-C cancels main, a second one interrupts."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        return lambda: None

    def on_sigint(signum: int, frame: object) -> None:
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(True)
        main.cancel()
        try:
            loop.call_soon_threadsafe(lambda: None)
        except RuntimeError:
            pass

    try:
        signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # pragma: no cover - not the main interpreter
        return lambda: None
    def restore() -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    return restore

