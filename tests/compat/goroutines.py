"""Run the async bodies of other projects' test suites as goroutines.

Imported before the suite (by ``cpython.py``, or as a pytest plugin for anyio's), it
patches the places where a suite hands a coroutine to a loop: ``loop.run_until_complete``,
``asyncio.Runner.run`` (IsolatedAsyncioTestCase, ``asyncio.run``) and anyio's test
runner. Each such coroutine runs as a goroutine of a ``Runtime(attach=True)`` on that
loop, the one runtime of that loop, closed just before the loop is. Configured by the
environment, so that a plain run of the same suite differs in nothing else:

- ``MNSCHED_COMPAT_MODE``: ``plain`` (patch nothing), ``p0`` (bodies start on P0, the
  test's loop), ``other`` (bodies start on the last P, another thread and loop: stealing
  and cross-P wake-ups are exercised);
- ``MNSCHED_COMPAT_PROCS``: the runtime's P count.

A body runs in a copy of its caller's context, and what it sets there is copied back
when it ends, as if it had run in the caller's own (asyncio runs setUp, the test and
tearDown in one context; anyio runs fixtures and tests in one task).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import Coroutine
from typing import Any

import mnsched
from mnsched.aio import call_on_loop, complete_future
from mnsched.m import m

MODE = os.environ.get("MNSCHED_COMPAT_MODE", "plain")
PROCS = int(os.environ.get("MNSCHED_COMPAT_PROCS", "1"))
if MODE not in ("plain", "p0", "other"):
    raise SystemExit(f"MNSCHED_COMPAT_MODE={MODE!r}: use plain, p0 or other")
if MODE == "other" and PROCS < 2:
    raise SystemExit("MNSCHED_COMPAT_MODE=other needs MNSCHED_COMPAT_PROCS >= 2")

_RUNTIMES: dict[asyncio.AbstractEventLoop, mnsched.Runtime] = {}
_MISSING = object()
_spawning: set[asyncio.Task[Any]] = set()


def _runtime(loop: asyncio.AbstractEventLoop) -> mnsched.Runtime:
    rt = _RUNTIMES.get(loop)
    if rt is None or rt.closed:
        kind = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
        rt = _RUNTIMES[loop] = mnsched.Runtime(procs=PROCS, loop=kind, attach=True).start()
        # What fails in a callback on any P's loop reaches the test's handler.
        handler = loop.get_exception_handler()
        for p in rt.sched.allp[1:]:
            p.loop.set_exception_handler(handler)
    return rt


async def _spawn(rt: mnsched.Runtime, coro: Coroutine[Any, Any, Any], ctx: Any) -> Any:
    if MODE == "p0":
        return rt.go(coro, context=ctx)
    # From the last P's own thread, the goroutine starts in that P's runnext.
    loop = asyncio.get_running_loop()
    spawned: asyncio.Future[Any] = loop.create_future()

    def spawn() -> None:
        try:
            complete_future(spawned, rt.go(coro, context=ctx))
        except BaseException as e:
            complete_future(spawned, exc=e)

    if not call_on_loop(rt.sched.allp[-1].loop, spawn):
        raise RuntimeError("the last P's loop is closed")
    return await spawned


def spawn_soon(coro: Coroutine[Any, Any, Any]) -> None:
    """Start coro as a goroutine of the running loop's runtime, where the mode says,
    without waiting for it (its outcome is reported as any goroutine's)."""
    loop = asyncio.get_running_loop()
    task = loop.create_task(_spawn(_runtime(loop), coro, contextvars.copy_context()))
    _spawning.add(task)  # a task nobody holds may be collected before it runs
    task.add_done_callback(_spawning.discard)


async def in_goroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run coro as a goroutine of the running loop's runtime; return its outcome."""
    rt = _runtime(asyncio.get_running_loop())
    ctx = contextvars.copy_context()
    try:
        g = await _spawn(rt, coro, ctx)
        return await g
    finally:
        for var, value in ctx.items():
            if var.get(_MISSING) is not value:
                var.set(value)


_OWN_CODE = (os.path.dirname(asyncio.__file__), os.path.dirname(mnsched.__file__))


def _wrap(coro: Any) -> Any:
    code = getattr(coro, "cr_code", None)
    if code is None or code.co_filename.startswith(_OWN_CODE):
        return coro  # not a coroutine, or asyncio's own (a runner's teardown)
    p = m.p
    if p is not None and not p.borrowed:
        return coro  # the runtime's own loops (a P closing its loop), not the suite's
    return in_goroutine(coro)


def _close_runtime(loop: asyncio.AbstractEventLoop) -> None:
    rt = _RUNTIMES.pop(loop, None)
    if rt is not None and not rt.closed and not loop.is_closed() and not loop.is_running():
        loop.run_until_complete(loop.create_task(rt.aclose()))  # a task: not wrapped


def install() -> None:
    """For CPython's suite: every coroutine a test hands to a loop is a body."""
    if MODE == "plain":
        return
    for cls in _loop_classes():
        run_until_complete = cls.run_until_complete

        def run_until_complete_in_goroutine(
            self: Any, future: Any, _ruc: Any = run_until_complete
        ) -> Any:
            return _ruc(self, _wrap(future))

        cls.run_until_complete = run_until_complete_in_goroutine
    runner_run = asyncio.Runner.run

    def runner_run_in_goroutine(self: Any, coro: Any, *, context: Any = None) -> Any:
        return runner_run(self, _wrap(coro), context=context)

    asyncio.Runner.run = runner_run_in_goroutine  # type: ignore[method-assign]
    install_runtime_per_loop()


def _loop_classes() -> list[type]:
    """The loop classes whose methods a test can reach (uvloop's is a Python subclass of
    its C loop, so it can be patched too)."""
    classes: list[type] = [asyncio.BaseEventLoop]
    try:
        import uvloop

        classes.append(uvloop.Loop)
    except ImportError:
        pass
    return classes


def install_runtime_per_loop() -> None:
    """Close each loop's runtime on that loop, before its runner or the loop closes."""
    if MODE == "plain":
        return
    runner_close = asyncio.Runner.close

    def runner_close_runtime_first(self: Any) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None:
            _close_runtime(loop)
        runner_close(self)

    asyncio.Runner.close = runner_close_runtime_first  # type: ignore[method-assign]
    probe = asyncio.new_event_loop()
    probe.close()
    # asyncio's own loop closes its self-pipe before it reaches BaseEventLoop.close.
    for cls in {*_loop_classes(), type(probe)}:
        close = cls.close

        def close_with_runtime(self: Any, _close: Any = close) -> None:
            _close_runtime(self)
            _close(self)

        cls.close = close_with_runtime  # type: ignore[method-assign]
