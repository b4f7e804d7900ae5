"""aio: the shims between mnsched and asyncio (see docs/design.md, "asyncio inside a G").

- who is asyncio's current task on a loop (a running G is), written cheaply;
- the loop getters that pin a G to its P when it asks for its loop;
- calling into a loop, or completing or cancelling a future, from any thread.

Nothing here knows about run queues: the pinning hook is installed by ``p.py``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Callable
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


def task_factory_calling(on_create: Callable[[], None], prev: Any) -> Any:
    """A loop task factory that calls ``on_create()``, then makes the task as ``prev``
    (the loop's factory before, or None for asyncio.Task) would."""

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        on_create()
        if prev is None:
            return asyncio.Task(coro, loop=loop, **kwargs)
        return prev(loop, coro, **kwargs)  # type: ignore[no-any-return]

    return factory


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
