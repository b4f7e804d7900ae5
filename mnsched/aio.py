"""aio: the shims between mnsched and asyncio (see docs/design.md, "asyncio inside a G").

- who is asyncio's current task on a loop (a running G is), written cheaply;
- the loop getters and the loop task factory that pin a G to its P when it asks for
  its loop or makes a task;
- ``asyncio.all_tasks()``, which must list goroutines too;
- calling into a loop, or completing or cancelling a future, from any thread.

Nothing here knows about run queues: the pinning hook is installed by ``p.py``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import signal
import threading
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class _SwapCurrentTask:
    """Stands in for asyncio's current-task dict where there is none to write (3.14 keeps
    the current task in thread state): ``ct[loop] = task`` enters it, ``del ct[loop]``
    and ``ct.pop(loop, None)`` leave whichever task is current."""

    __slots__ = ()

    def __setitem__(self, loop: asyncio.AbstractEventLoop, task: Any) -> None:
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


# Who is each loop's current task: ``CURRENT_TASKS[loop] = g`` makes g current (nobody
# must be), ``del CURRENT_TASKS[loop]`` and ``CURRENT_TASKS.pop(loop, None)`` undo it.
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

    def undo() -> None:
        current = signal.set_wakeup_fd(-1)
        if current not in (-1, fd):
            signal.set_wakeup_fd(current)  # replaced meanwhile: not ours to clear

    return undo


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
