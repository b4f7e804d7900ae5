"""The goroutine API: go, gosched, sleep, num_goroutine, gomaxprocs (Go's proc.go entry
points). Everything here resolves "the current runtime" the same way: the P this
thread runs, else the runtime made current by ``with Runtime()``, else the one
``run`` is running, else the lazily started default runtime."""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, TypeVar, overload

from .g import G
from .m import m
from .p import GOSCHED
from .runtime import check_coroutine, current_runtime, spawn

T = TypeVar("T")


@overload
def go(coro: Coroutine[Any, Any, T], *, name: str | None = None) -> G[T]: ...
@overload
def go(coro: Callable[..., Coroutine[Any, Any, T]], *,
       name: str | None = None) -> Callable[..., G[T]]: ...


def go(coro: Any, *, name: str | None = None) -> Any:
    """Spawn a goroutine: ``go(f(x))`` returns its handle ``G``.

    As a decorator on an ``async def``, ``@go`` makes every call spawn one.
    """
    if type(coro) is not types.CoroutineType and inspect.iscoroutinefunction(coro):
        fn = coro

        @functools.wraps(fn)
        def spawner(*args: Any, **kwargs: Any) -> G:
            return spawn(current_runtime(), fn(*args, **kwargs), name)

        return spawner
    p = m.p
    if p is not None and type(coro) is types.CoroutineType:
        # newproc's fast path, from a goroutine or callback on a P.
        sched = p.sched
        if not sched.closing:
            g = G(coro, sched, p, name)
            sched.allg.add(g)
            p.nspawned += 1
            p.ready_here(g)  # runnext, as Go's newproc
            return g
    check_coroutine(coro)  # before a default runtime is started for it
    return spawn(p.sched.rt if p is not None else current_runtime(), coro, name)


@types.coroutine
def _trap(what: object) -> Generator[object, None, None]:
    yield what


def gosched() -> Awaitable[None]:
    """Yield the processor: other goroutines run, then this one resumes (Go: Gosched).
    Outside a goroutine it is ``asyncio.sleep(0)``."""
    p = m.p
    if p is None or p.curg is None:
        return asyncio.sleep(0)
    return _trap(GOSCHED)


async def sleep(delay: float, result: T = None) -> T:
    """Sleep for ``delay`` seconds. A sleeping goroutine holds nothing: it may wake on any
    P. Outside a goroutine it is ``asyncio.sleep``."""
    if not isinstance(delay, (int, float)) or math.isnan(delay):
        raise TypeError(f"sleep() needs a number of seconds, not {delay!r}")
    p = m.p
    g = p.curg if p is not None else None
    if g is None:
        return await asyncio.sleep(delay, result)
    if delay <= 0:
        await _trap(GOSCHED)
        return result
    timers = p.timers
    timers.lock.acquire()
    g._waitq = timers.add_locked(time.monotonic() + delay, g)
    await _trap(timers.lock)  # gopark: the driver releases the lock once g is parked
    return result


def num_goroutine() -> int:
    """The number of live goroutines in the current runtime (Go: runtime.NumGoroutine)."""
    return current_runtime().num_goroutine()


def gomaxprocs(n: int | None = None) -> int:
    """The number of Ps of the current runtime; with n, set it and return the old value."""
    return current_runtime().gomaxprocs(n)
