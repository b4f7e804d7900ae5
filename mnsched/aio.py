"""aio: the shims between mnsched and asyncio (see docs/design.md, "asyncio inside a G").

- who is asyncio's current task on a loop (a running G is), written cheaply;
- the loop getters and the loop task factory that pin a G to its P when it asks for
  its loop or makes a task;
- ``asyncio.all_tasks()``, which must list goroutines too;
- calling into a loop, or completing or cancelling a future, from any thread; and a P's
  loop's ``call_soon`` made safe from other threads.

Nothing here knows about run queues: the pinning hook is installed by ``p.py``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import signal
import threading
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class _SwapCurrentTask:
    """Stands in for asyncio's current-task dict where there is none to write (3.14 keeps
    the current task in thread state): ``ct[loop] = task`` enters it in place of
    whichever task is current (as the dict's store replaces it), ``del ct[loop]`` and
    ``ct.pop(loop, None)`` leave whichever task is current."""

    __slots__ = ()

    def __setitem__(self, loop: asyncio.AbstractEventLoop, task: Any) -> None:
        self.pop(loop)
        _enter_task(loop, task)

    def __delitem__(self, loop: asyncio.AbstractEventLoop) -> None:
        _leave_task(loop, asyncio.current_task(loop))  # type: ignore[arg-type]

    def pop(self, loop: asyncio.AbstractEventLoop, default: Any = None) -> Any:
        task = asyncio.current_task(loop)
        if task is None:
            return default
        _leave_task(loop, task)
        return task


def _current_tasks() -> dict[Any, Any] | _SwapCurrentTask:
    """asyncio.current_task() reads a plain dict on CPython 3.11-3.13: writing it directly
    costs half as much as _enter_task/_leave_task (and asyncio's own swap raises KeyError
    on 3.12.1 when nobody is current and nobody is to be)."""
    d = getattr(asyncio.tasks, "_current_tasks", None)
    if isinstance(d, dict):
        key, probe = object(), object()
        d[key] = probe
        try:
            if asyncio.current_task(key) is probe:  # type: ignore[arg-type]
                return d
        except Exception:
            pass
        finally:
            del d[key]
    return _SwapCurrentTask()


# Who is each loop's current task: ``CURRENT_TASKS[loop] = g`` makes g current (in place
# of whoever is), ``del CURRENT_TASKS[loop]`` and ``CURRENT_TASKS.pop(loop, None)`` undo it.
CURRENT_TASKS = _current_tasks()


def install_loop_getter_hook(on_get: Callable[[asyncio.AbstractEventLoop], None]) -> None:
    """Wrap ``asyncio.get_running_loop``/``get_event_loop`` so that ``on_get(loop)`` sees
    every call. Libraries call them through the module at call time, so wrapping the
    module attributes catches them. Idempotent."""
    for name in ("get_running_loop", "get_event_loop"):
        fn = getattr(asyncio.events, name)
        if hasattr(fn, "__mnsched_wrapped__"):
            continue

        def make(get_loop: Callable[[], asyncio.AbstractEventLoop]) -> Any:
            @functools.wraps(get_loop)
            def getter() -> asyncio.AbstractEventLoop:
                loop = get_loop()
                on_get(loop)
                return loop

            getter.__mnsched_wrapped__ = get_loop  # type: ignore[attr-defined]
            return getter

        wrapped = make(fn)
        setattr(asyncio.events, name, wrapped)
        setattr(asyncio, name, wrapped)


def install_loop_bound_hook(on_mismatch: Callable[[BaseException], None]) -> None:
    """Let ``on_mismatch(exc)`` see the error asyncio's loop-bound objects (Lock, Event,
    Condition, Semaphore, Queue) raise when used from a loop other than theirs, where it
    is raised: a caller that catches it still holds the note added to it. Idempotent."""
    from asyncio import mixins

    get_loop = mixins._LoopBoundMixin._get_loop  # type: ignore[attr-defined]
    if hasattr(get_loop, "__mnsched_wrapped__"):
        return

    @functools.wraps(get_loop)
    def checked_get_loop(self: Any) -> asyncio.AbstractEventLoop:
        try:
            return get_loop(self)  # type: ignore[no-any-return]
        except RuntimeError as e:
            on_mismatch(e)
            raise

    checked_get_loop.__mnsched_wrapped__ = get_loop  # type: ignore[attr-defined]
    mixins._LoopBoundMixin._get_loop = checked_get_loop  # type: ignore[attr-defined]


class _TaskSetWithGoroutines:
    """Stands in for asyncio's set of scheduled tasks, which ``all_tasks()`` reads at
    call time: it iterates asyncio's own set, then ``more()`` (the live goroutines, which
    ``all_tasks`` then filters by loop and done-ness as it does tasks). Registering
    stays with asyncio's set (its C half holds it directly), so a spawn costs nothing
    here: the goroutines are already kept in their scheduler's set."""

    __slots__ = ("more", "tasks")

    def __init__(self, tasks: Any, more: Callable[[], Iterable[Any]]) -> None:
        self.tasks, self.more = tasks, more

    def __iter__(self) -> Iterator[Any]:
        yield from self.tasks
        yield from self.more()

    def __len__(self) -> int:
        return len(self.tasks)

    def __contains__(self, task: object) -> bool:
        return task in self.tasks

    def add(self, task: Any) -> None:
        self.tasks.add(task)

    def discard(self, task: Any) -> None:
        self.tasks.discard(task)


def install_all_tasks_hook(more: Callable[[], Iterable[Any]]) -> None:
    """Make ``asyncio.all_tasks()`` see the tasks ``more()`` yields as well. CPython
    3.11 keeps its tasks in ``_all_tasks``, 3.12-3.13 in ``_scheduled_tasks``; 3.14
    keeps them in C, where the module attribute is wrapped instead (as the loop
    getters: a library that imported ``all_tasks`` before mnsched misses them there).
    Idempotent."""
    t = asyncio.tasks
    for name in ("_scheduled_tasks", "_all_tasks"):
        tasks = getattr(t, name, None)
        if tasks is not None and hasattr(tasks, "add"):
            if not isinstance(tasks, _TaskSetWithGoroutines):
                setattr(t, name, _TaskSetWithGoroutines(tasks, more))
            return
    all_tasks = t.all_tasks
    if hasattr(all_tasks, "__mnsched_wrapped__"):
        return

    @functools.wraps(all_tasks)
    def all_tasks_and_goroutines(
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> set[asyncio.Task[Any]]:
        if loop is None:
            loop = asyncio.get_running_loop()
        found = all_tasks(loop)
        found.update(g for g in more() if g.get_loop() is loop and not g.done())
        return found

    all_tasks_and_goroutines.__mnsched_wrapped__ = all_tasks  # type: ignore[attr-defined]
    t.all_tasks = asyncio.all_tasks = all_tasks_and_goroutines


def hook_task_factory(loop: asyncio.AbstractEventLoop, on_create: Callable[[], None]) -> Any:
    """Call ``on_create()`` before every task the loop makes, whatever task factory is set
    on it, now or later. The loop's factory is wrapped, but ``get_task_factory()`` still
    answers the one set by its users (anyio recognises asyncio's eager factory by its
    code, to start tasks without it), and ``set_task_factory`` wraps the new one. Returns
    a function that gives the loop back as it was."""
    cls = type(loop)
    user = [loop.get_task_factory()]

    def wrap(factory: Any) -> Any:
        def calling(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
            on_create()
            if factory is None:
                return asyncio.Task(coro, loop=loop, **kwargs)
            return factory(loop, coro, **kwargs)

        return calling

    def set_task_factory(factory: Any) -> None:
        if factory is not None and not callable(factory):
            cls.set_task_factory(loop, factory)  # raises asyncio's own TypeError
        cls.set_task_factory(loop, wrap(factory))
        user[0] = factory

    def get_task_factory() -> Any:
        return user[0]

    def undo() -> None:
        del loop.set_task_factory
        del loop.get_task_factory
        cls.set_task_factory(loop, user[0])

    cls.set_task_factory(loop, wrap(user[0]))
    loop.set_task_factory = set_task_factory  # type: ignore[method-assign]
    loop.get_task_factory = get_task_factory  # type: ignore[method-assign]
    return undo


def guard_call_soon(loop: asyncio.AbstractEventLoop, owner: int) -> Callable[[], None]:
    """Make ``loop.call_soon`` from a thread other than ``owner`` (the loop's) what it must
    be there, ``call_soon_threadsafe``: a future of this loop completed from another
    thread (an ``asyncio.Event`` set, a lock released, by a goroutine on another P)
    schedules its callbacks with ``call_soon``, which off the loop's thread is unsafe and
    does not wake the loop, so its waiter slept for ever (a shared httpx client hung).
    Set on the instance, which asyncio's futures find first. Returns the undo."""
    call_soon = loop.call_soon
    threadsafe = loop.call_soon_threadsafe
    get_ident = threading.get_ident

    def guarded(callback: Callable[..., object], *args: Any, context: Any = None) -> Any:
        if get_ident() == owner:
            return call_soon(callback, *args, context=context)
        return threadsafe(callback, *args, context=context)

    loop.call_soon = guarded  # type: ignore[method-assign,assignment]

    def undo() -> None:
        if loop.__dict__.get("call_soon") is guarded:
            del loop.call_soon

    return undo


# uvloop spawns a process in the first step of subprocess_exec/_shell, and refuses
# ("Racing with another loop to spawn a process") while another loop's spawn is under
# way: a spawn runs Python fork hooks, where the GIL may pass to another P's thread.
# Their first steps take this lock, so that spawns from several Ps wait for each other.
_SPAWN_LOCK = threading.Lock()


class _FirstStepLocked:
    """Await a coroutine with its first step (up to its first suspension) under
    _SPAWN_LOCK, and the rest of it as usual."""

    __slots__ = ("coro",)

    def __init__(self, coro: Any) -> None:
        self.coro = coro

    def __await__(self) -> Any:
        coro = self.coro
        try:
            with _SPAWN_LOCK:
                y = coro.send(None)
        except StopIteration as e:
            return e.value
        while True:
            try:
                v = yield y
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as e:
                try:
                    y = coro.throw(e)
                except StopIteration as s:
                    return s.value
            else:
                try:
                    y = coro.send(v)
                except StopIteration as s:
                    return s.value


def serialise_spawns(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """On a uvloop loop, make process spawns wait for those of other loops (_SPAWN_LOCK).
    asyncio's own loops spawn through subprocess.Popen, which is safe from any thread.
    Returns the undo."""
    if not type(loop).__module__.startswith("uvloop"):
        return lambda: None
    names = ("subprocess_exec", "subprocess_shell")
    for name in names:
        method = getattr(loop, name)

        def make(method: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(method)
            async def spawn(*args: Any, **kwargs: Any) -> Any:
                return await _FirstStepLocked(method(*args, **kwargs))

            return spawn

        setattr(loop, name, make(method))

    def undo() -> None:
        for name in names:
            loop.__dict__.pop(name, None)

    return undo


def wake_on_signals(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Make a signal wake the loop's selector, as asyncio's ``add_signal_handler`` does: a
    Python signal handler that readies a goroutine (``ch.try_send`` in it) queues the P's
    schedule with ``call_soon``, which a selector blocked in select() would not see until
    its next event. Only on the main thread (where handlers run), only for a loop with
    asyncio's self-pipe (uvloop wakes itself), and only where no wakeup fd is set already.
    Returns a function that undoes it."""
    csock = getattr(loop, "_csock", None)
    if csock is None or threading.current_thread() is not threading.main_thread():
        return lambda: None
    fd = csock.fileno()
    old = signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
    if old not in (-1, fd):
        signal.set_wakeup_fd(old)  # someone else's: leave it
        return lambda: None
    _wakeup_fds.add(fd)

    def undo() -> None:
        _wakeup_fds.discard(fd)
        current = signal.set_wakeup_fd(-1)
        if current not in (-1, fd):
            signal.set_wakeup_fd(current)  # replaced meanwhile: not ours to clear

    return undo


# The self-pipes wake_on_signals made signal wakeup fds: a forked child shares them with
# the parent's loops, which its signals must not wake.
_wakeup_fds: set[int] = set()


def _after_fork_in_child() -> None:
    _SPAWN_LOCK._at_fork_reinit()  # type: ignore[attr-defined]
    if _wakeup_fds:
        current = signal.set_wakeup_fd(-1)
        if current not in _wakeup_fds:
            signal.set_wakeup_fd(current)
        _wakeup_fds.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def call_on_loop(
    loop: asyncio.AbstractEventLoop | None,
    fn: Callable[..., object],
    *args: Any,
    context: contextvars.Context | None = None,
) -> bool:
    """Run ``fn(*args)`` soon on ``loop``, from any thread: ``call_soon`` on the loop's own
    thread (no self-pipe write), ``call_soon_threadsafe`` elsewhere. False if the loop is
    closed (or None), so that nobody is left to run it: the caller decides what then."""
    if loop is None:
        return False
    try:
        if asyncio._get_running_loop() is loop:
            loop.call_soon(fn, *args, context=context)
        else:
            loop.call_soon_threadsafe(fn, *args, context=context)
    except RuntimeError:
        return False  # closed
    return True


def _complete(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def complete_future(
    fut: asyncio.Future[Any], result: Any = None, exc: BaseException | None = None
) -> None:
    """Resolve an asyncio future from any thread, on its loop. A closed loop has nobody
    left waiting: nothing to do then."""
    call_on_loop(fut.get_loop(), _complete, fut, result, exc)
