"""api: what users call (Go's ``go`` statement and ``runtime`` package functions): go,
gosched, sleep, syscall, blocking, num_goroutine, gomaxprocs, stats.

Everything here resolves "the current runtime" the same way (``current_runtime``): the
P this thread runs, else the runtime made current by ``with Runtime()``, else the one
``run`` is running, else the lazily started default runtime.
"""

from __future__ import annotations

import asyncio
import contextvars
import dis
import functools
import inspect
import sys
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from .g import CORE, GOSCHED, WAIT_SLEEP, WAIT_SYSCALL, G, check_coroutine, gopark
from .m import Call, m
from .runtime import current_runtime, only_asks, resolve_procs, running_runtime
from .timers import check_seconds

T = TypeVar("T")
PS = ParamSpec("PS")


@overload
def go(
    coro: Coroutine[Any, Any, T],
    *,
    name: str | None = None,
    pin: bool = False,
    context: contextvars.Context | None = None,
) -> G[T]: ...
@overload
def go(
    coro: Callable[..., Coroutine[Any, Any, T]],
    *,
    name: str | None = None,
    pin: bool = False,
    context: contextvars.Context | None = None,
) -> Callable[..., G[T]]: ...


def go(
    coro: Any,
    *,
    name: str | None = None,
    pin: bool = False,
    context: contextvars.Context | None = None,
) -> Any:
    """Spawn a goroutine: ``go(f(x))`` returns its handle ``G``.

    ``name`` names it (repr, logs, dumps); ``pin=True`` pins it to the spawner's P, as
    if it held something of that P's loop; ``context`` is the contextvars.Context it runs
    in (default: a copy of the spawner's, as ``asyncio.create_task``). As a decorator on
    an ``async def``, ``@go`` makes every call spawn one.
    """
    if (
        CORE is not None
        and not pin
        and context is None
        and (g := CORE.go_here(coro, name)) is not None
    ):
        return g  # from a goroutine: newproc's fast path, in the C driver
    if type(coro) is not types.CoroutineType and inspect.iscoroutinefunction(coro):
        fn = coro
        _refuse_a_dropped_spawner(fn, sys._getframe(1))

        @functools.wraps(fn)
        def spawner(*args: Any, **kwargs: Any) -> G[Any]:
            return current_runtime().go(fn(*args, **kwargs), name=name, pin=pin, context=context)

        return spawner
    p = m.p
    if p is not None:
        if not pin and context is None:
            return p.sched.newproc(coro, name, here=p)  # its fast path, from a P's thread
        return p.sched.newproc(coro, name, pin=pin, context=context)
    check_coroutine(coro)  # before a default runtime is started for it
    return current_runtime().go(coro, name=name, pin=pin, context=context)


def _refuse_a_dropped_spawner(fn: Callable[..., Any], caller: types.FrameType) -> None:
    """``go(worker)`` is ``@go``'s call: it makes a spawner, to be kept (a decorator's
    result is stored). Dropped (``go(worker)`` as a statement) or awaited, it was meant as
    ``go(worker())``: nothing would run, silently, or fail with an unrelated TypeError."""
    after = next(
        (i.opname for i in dis.get_instructions(caller.f_code) if i.offset > caller.f_lasti),
        None,
    )
    if after in ("POP_TOP", "GET_AWAITABLE"):
        name = getattr(fn, "__qualname__", repr(fn))
        raise TypeError(
            f"go({name}) was given the async function, not a coroutine: nothing would run. "
            f"Write go({name}(...)) to spawn it (go as a decorator, @go above async def, "
            "makes every call of the function spawn one)"
        )


if not TYPE_CHECKING and CORE is not None:
    # go(coro) and go(coro, name=...) from a goroutine without this function's frame: the
    # C core's Go, which calls the function above for everything else.
    go = functools.update_wrapper(CORE.Go(go), go)


@types.coroutine
def _gosched() -> Generator[object, None, None]:
    yield GOSCHED


def gosched() -> Awaitable[None]:
    """Yield the processor: other goroutines run, then this one resumes (Go: Gosched).
    Outside a goroutine it is ``asyncio.sleep(0)``."""
    p = m.p
    if p is None or p.curg is None:
        return asyncio.sleep(0)
    return _gosched()


async def sleep(delay: float, result: T = None) -> T:  # type: ignore[assignment]
    """Sleep for ``delay`` seconds. A sleeping goroutine holds nothing: it may wake on any
    P. Outside a goroutine it is ``asyncio.sleep``."""
    check_seconds(delay, "sleep()")
    p = m.p
    if p is None or (g := p.curg) is None:
        return await asyncio.sleep(delay, result)
    if delay <= 0:
        await _gosched()
        return result
    timers = p.timers
    timers.lock.acquire()
    await gopark(g, timers.lock, timers.add_locked(time.monotonic() + delay, g), WAIT_SLEEP)
    return result


async def syscall(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run the blocking ``fn(*args, **kwargs)`` on an M thread and return its result.

    The goroutine is in SYSCALL while the call runs and its P goes on with other
    goroutines; when the call returns the goroutine is readied on its old P if it can
    be, else on any P. ``fn`` sees a copy of the goroutine's contextvars, as under
    ``asyncio.to_thread``. Cancelling the goroutine stops the wait at once; the call
    itself runs to its end and its result is dropped. From a plain asyncio task it runs
    on the same M threads.
    """
    if not callable(fn):
        raise TypeError(f"syscall() needs a callable, not {type(fn).__name__} {fn!r}")
    p = m.p
    if p is None or (g := p.curg) is None:
        sched = current_runtime().sched
        call = Call(fn, args, kwargs, contextvars.copy_context(), None)
        call.loopfut = asyncio.get_running_loop().create_future()
        sched.entersyscall(call)
        return await call.loopfut  # type: ignore[no-any-return]
    call = Call(fn, args, kwargs, g._ctx.copy(), g)
    call.lock.acquire()  # held until g is in SYSCALL, so the M cannot ready it any sooner
    try:
        p.sched.entersyscall(call)
    except BaseException:
        call.lock.release()
        raise
    await gopark(g, call.lock, call, WAIT_SYSCALL)  # the driver sees a Call: SYSCALL
    if call.exc is not None:
        raise call.exc
    return call.result  # type: ignore[no-any-return]


def blocking(fn: Callable[PS, T]) -> Callable[PS, Awaitable[T]]:
    """Decorate a blocking function: calling it returns ``syscall(fn, ...)`` to await.

    ::

        @mnsched.blocking
        def read_config(path): ...

        cfg = await read_config("app.toml")
    """
    if inspect.iscoroutinefunction(fn):
        raise TypeError(f"@blocking is for plain functions; {fn.__qualname__} is async")

    @functools.wraps(fn)
    def wrapper(*args: PS.args, **kwargs: PS.kwargs) -> Awaitable[T]:
        return syscall(fn, *args, **kwargs)

    return wrapper


def stats() -> dict[str, Any]:
    """Scheduler counters of the current runtime (see ``Runtime.stats``)."""
    return current_runtime().stats()


def num_goroutine() -> int:
    """The number of live goroutines in the current runtime (Go: runtime.NumGoroutine);
    0 if none runs (no default runtime is started to say so)."""
    rt = running_runtime()
    return 0 if rt is None else rt.num_goroutine()


def gomaxprocs(n: int | None = None) -> int:
    """The number of Ps of the current runtime; with n >= 1, set it and return the old
    value. As Go's GOMAXPROCS, n < 1 (or None) only asks; asked with no runtime running,
    it says how many Ps one would have (procs=, $MNSCHED_PROCS, the CPUs), starting none."""
    if only_asks(n):
        rt = running_runtime()
        return resolve_procs(None) if rt is None else rt.gomaxprocs()
    return current_runtime().gomaxprocs(n)
