"""M: OS threads. Each P runs on one; blocking calls run on extra Ms.

The thread-local ``m`` is Go's ``getg().m.p``: it tells scheduler code which P, if any,
owns the current thread, so spawning and waking stay thread-local when they can.

``syscall(fn)`` (Go's entersyscall/exitsyscall, done the asyncio way): the goroutine
enters SYSCALL, ``fn`` runs on an M thread, and the P goes on with other goroutines at
once. Ms are reused when idle, started fresh when none is, capped, and retired after
sitting idle for a while (docs/design.md, "Blocking calls").
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .aio import complete_future
from .errors import resource_limit
from .instrument import notify_global
from .lockrank import RANK_LEAF, lock_factory

if TYPE_CHECKING:
    from .g import G
    from .p import P

# Go's default limit on OS threads (runtime/debug.SetMaxThreads) is 10000.
MAX_THREADS = 10_000
# An M with nothing to do for this long exits (Go keeps its Ms; Python threads cost
# more to keep around than to start again).
M_IDLE_TIMEOUT = 10.0


# -- sharing the GIL ---------------------------------------------------------------------
# A thread that wants the GIL waits one switch interval (5 ms by default) and then asks the
# holder to drop it; but every voluntary release wakes it early and restarts its wait. A
# busy P releases the GIL at each batch end (its loop polls for I/O, ~1 ms) and takes it
# straight back, so the waiter's interval never ran out: beside a goroutine spinning on
# gosched, blocking calls finished seconds late, a plain thread's send waited seconds,
# timers fired seconds late. So while a runtime runs, the interval is this,
# shorter than a batch: a waiter's wait runs out and it gets the GIL within ~0.5 ms. Only
# threads that actually wait pay for it (a lone busy thread is never asked to switch):
# ~1-3% on skynet at procs 1, but ~30% at procs 2, where two busy Ps now take turns
# every 0.5 ms (docs/design.md, "Sharing the GIL", for what was tried against that).
SHARED_SWITCH_INTERVAL = 0.0005

_share_lock = threading.Lock()
_sharers: set[object] = set()
_saved_switch = 0.0


def share_gil(who: object, on: bool) -> None:
    """``who`` (a runtime) starts or stops needing the GIL handed round promptly. The
    interval is lowered while anyone does, and put back as it was when none does (the
    process's setting: it is shared by every runtime in it, hence module state)."""
    global _saved_switch
    with _share_lock:
        if on and who not in _sharers:
            if not _sharers:
                _saved_switch = sys.getswitchinterval()
                sys.setswitchinterval(min(_saved_switch, SHARED_SWITCH_INTERVAL))
                notify_global("switch_interval", sys.getswitchinterval())
            _sharers.add(who)
        elif not on and who in _sharers:
            _sharers.discard(who)
            if not _sharers:
                sys.setswitchinterval(_saved_switch)
                notify_global("switch_interval", _saved_switch)


# -- a thread's CPU time and run state, for sysmon ------------------------------------------


def thread_cpu_clock() -> int | None:
    """The calling thread's CPU-time clock, which another thread may read (sysmon reads a
    P's with ``thread_cpu``), or None where there is none (then wall time stands in)."""
    try:
        return time.pthread_getcpuclockid(threading.get_ident())
    except (AttributeError, OSError):
        return None


def thread_cpu(clock: int | None) -> float:
    """Seconds of CPU a thread has used (its clock from thread_cpu_clock); 0.0 once the
    thread has exited (its clock is gone)."""
    if clock is None:
        return 0.0
    try:
        return time.clock_gettime(clock)
    except OSError:
        return 0.0


def thread_runnable(native_id: int) -> bool:
    """Whether the OS counts the thread as running or waiting for a CPU (Linux's state R),
    rather than sleeping in a call. Unknown (no /proc): False."""
    try:
        with open(f"/proc/self/task/{native_id}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"R"


class _M(threading.local):
    # The P this thread is running, or None on a plain thread or a foreign loop.
    p: P | None = None


m = _M()


def _after_fork_in_child() -> None:
    """A forked child runs no P (the fork may have come from a goroutine) and no runtime:
    the GIL's switch interval goes back to what it was before any runtime."""
    m.p = None
    _share_lock._at_fork_reinit()  # type: ignore[attr-defined]
    if _sharers:
        _sharers.clear()
        sys.setswitchinterval(_saved_switch)


os.register_at_fork(after_in_child=_after_fork_in_child)


_new_call_lock = lock_factory(RANK_LEAF, "a Call.lock", threading.Lock)


class Call:
    """One blocking call. What a goroutine yields to enter SYSCALL (holding ``lock`` until
    it is parked), and its wait queue (for cancel) while the call runs."""

    __slots__ = ("args", "ctx", "exc", "fn", "g", "kwargs", "lock", "loopfut", "result")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[Any, Any],
        ctx: contextvars.Context,
        g: G[Any] | None,
    ) -> None:
        self.fn, self.args, self.kwargs, self.ctx, self.g = fn, args, kwargs, ctx, g
        self.lock = _new_call_lock()
        self.result: Any = None
        self.exc: BaseException | None = None
        self.loopfut: asyncio.Future[Any] | None = None  # for callers that are not goroutines

    def run(self) -> None:
        g0 = self.g
        ins = g0._sched.instr if g0 is not None else None
        if ins is not None:
            ins.syscall_start(g0)
        try:
            result = self.ctx.run(self.fn, *self.args, **self.kwargs)
            exc = None
        except BaseException as e:  # delivered to the caller, never swallowed here
            result, exc = None, e
        if ins is not None:
            ins.syscall_end(g0)
        self.finish(result, exc)

    def finish(self, result: Any, exc: BaseException | None) -> None:
        """The call's outcome: to its goroutine (readied) or its loop's future."""
        with self.lock:
            self.result, self.exc = result, exc
            g, self.g = self.g, None
        if g is not None:
            g._sched.exitsyscall(g)
        elif self.loopfut is not None:
            complete_future(self.loopfut, result, exc)

    def cancel_wait(self, g: G[Any]) -> None:
        # The goroutine is cancelled while the call runs: like asyncio.to_thread, it
        # stops waiting at once; the thread finishes the call and its result is dropped.
        with self.lock:
            if self.g is not g:
                return  # finished meanwhile: exitsyscall readies it
            self.g = None
        g._sched.exitsyscall(g)


class MPool:
    """The syscall threads of one runtime. Idle Ms wait LIFO (the warmest first).

    Creating a thread costs ~125 us of kernel time here, and ``Thread.start`` waits for
    the new thread to run, which under GIL contention waits longer still. So neither the
    submitting P nor the Ms start threads: a starter thread does (as Go starts Ms from
    its template thread), one after another while calls wait, and meanwhile every M that
    finishes a call takes the next waiting one.
    """

    def __init__(self, max_threads: int = MAX_THREADS, idle_timeout: float = M_IDLE_TIMEOUT):
        self.max_threads = max_threads
        self.idle_timeout = idle_timeout
        self.lock = threading.Lock()
        self.idle: list[queue.SimpleQueue[Any]] = []  # each idle M waits on its own mailbox
        self.pending: deque[Call] = deque()  # calls no M has taken yet
        self.threads: set[threading.Thread] = set()
        self.nstarting = 0  # Ms started that have not taken a call yet
        self.closed = False
        self.nstarted = 0  # Ms ever started
        self.ncalls = 0
        self._ids = itertools.count(1)
        self._wake_starter = threading.Condition(self.lock)
        self._starter: threading.Thread | None = None
        self._cap = max_threads  # max_threads, or fewer while the OS refuses threads

    def submit(self, call: Call) -> None:
        with self.lock:
            if self.closed:
                raise RuntimeError("the runtime is closed")
            self.ncalls += 1
            if self.idle:
                self.idle.pop().put(call)
                return
            self.pending.append(call)
            if self._starter is None:
                starter = threading.Thread(
                    target=self._start_ms, daemon=True, name="mnsched-mstart"
                )
                try:
                    starter.start()
                except RuntimeError as e:  # the OS refused the thread: the caller gets it
                    self.pending.pop()
                    self.ncalls -= 1
                    raise resource_limit("mnsched's M-starting thread", e)  # noqa: B904
                self._starter = starter
            else:
                self._wake_starter.notify()

    def _start_ms(self) -> None:
        """The starter: start an M whenever a call waits and no M is on its way for it."""
        while True:
            with self.lock:
                while not self.closed and not (
                    len(self.pending) > self.nstarting and len(self.threads) < self._cap
                ):
                    self._wake_starter.wait()
                if self.closed:
                    return
                self.nstarting += 1
                t = threading.Thread(
                    target=self._main, daemon=True, name=f"mnsched-M{next(self._ids)}"
                )
                self.threads.add(t)
                self.nstarted += 1
            try:
                t.start()
            except RuntimeError as e:  # the OS refused the thread
                self._refused(t, e)

    def _refused(self, t: threading.Thread, err: RuntimeError) -> None:
        """The OS refused M thread t. The waiting calls wait on for the Ms that run (each
        takes the next call when its own ends), and no new M is tried until one of them
        ends; with no M at all, they fail with err (their goroutines get it: a call that
        cannot run must not hang)."""
        with self.lock:
            self.threads.discard(t)
            self.nstarting -= 1
            self.nstarted -= 1
            self._cap = max(1, len(self.threads))
            failed = [] if self.threads else list(self.pending)
            if failed:
                self.pending.clear()
        for call in failed:  # (an exception each: each is raised in its own goroutine)
            call.finish(None, resource_limit("an M thread for a blocking call", err))

    def _main(self) -> None:
        mailbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        me = threading.current_thread()
        with self.lock:
            self.nstarting -= 1
        while True:
            with self.lock:
                if self.pending:
                    call = self.pending.popleft()
                elif self.closed:
                    break
                else:
                    self.idle.append(mailbox)
                    call = None
            if call is None:
                try:
                    call = mailbox.get(timeout=self.idle_timeout)
                except queue.Empty:
                    with self.lock:
                        if mailbox in self.idle:
                            self.idle.remove(mailbox)  # nobody can hand us work any more
                            break
                    call = mailbox.get()  # handed work just as we timed out
                if call is None:
                    break  # closing
            call.run()
        with self.lock:
            self.threads.discard(me)
            self._cap = self.max_threads  # a thread ended: worth trying a new one again

    @property
    def counts(self) -> tuple[int, int]:
        """(threads, idle threads)."""
        with self.lock:
            return len(self.threads), len(self.idle)

    def thread_list(self) -> list[threading.Thread]:
        with self.lock:
            return list(self.threads)

    def close(self, timeout: float) -> list[threading.Thread]:
        """Stop idle Ms and join every M; returns those still running a call."""
        with self.lock:
            self.closed = True
            self._wake_starter.notify()
            idle, self.idle = self.idle, []
            threads = list(self.threads)
            starter = self._starter
        for mailbox in idle:
            mailbox.put(None)
        deadline = time.monotonic() + timeout
        if starter is not None:
            starter.join(max(0.0, deadline - time.monotonic()))
            with self.lock:  # it may have started a last M meanwhile
                threads = list(self.threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return [t for t in threads if t.is_alive()]
