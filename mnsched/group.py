"""Goroutine groups: structured concurrency, asyncio.TaskGroup's rules with errgroup's limit.

``async with Group() as grp: grp.go(coro)`` waits for every goroutine of the group. The
first failure cancels the others and the body, and the group raises what failed as an
``ExceptionGroup``, exactly as ``asyncio.TaskGroup`` does (a KeyboardInterrupt or
SystemExit, from a goroutine or the body, is raised as itself); a cancellation of the
body from outside cancels the goroutines and is raised once they are done. ``limit=n``
runs at most n of the group's coroutines at once (Go's ``errgroup.SetLimit``; ``go()``
never blocks: the others wait in their goroutines for a slot).

The goroutines run on any P, and the body may be a goroutine or a plain asyncio task of
a runtime's loop (attach mode). So the group's state is touched by several threads: a
goroutine's done callback runs on the loop that spawned it (``G.add_done_callback``),
possibly while the body runs on another P. It is guarded by a lock, never held across an
await, and the body waits with a WaitGroup, which parks a goroutine and awaits a future
in a plain task. A body that is a goroutine may be cancelled from any thread; one that
is a plain task only on its loop, so for it the callback moves there first.

This follows CPython's ``asyncio/taskgroups.py`` line for line where it can (the same
flags, in the same order), with its rules for un-cancelling the body before 3.13 and after;
tests/test_group.py runs a table of cases under both and compares the outcomes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from .aio import call_on_loop
from .chan import Chan
from .g import G, check_coroutine, new_lock
from .lockrank import RANK_CHAN, lock_factory
from .runtime import Runtime, current_runtime
from .sync import WaitGroup

T = TypeVar("T")

# CPython 3.13 un-cancels the body once the goroutines are done, not before waiting, and
# re-cancels a body cancelled from outside when it raises the failures.
_UNCANCEL_LAST = sys.version_info >= (3, 13)


_new_lock = lock_factory(RANK_CHAN, "a Group's _lock", new_lock)


class Group:
    """A group of goroutines the body of ``async with`` waits for (asyncio.TaskGroup,
    Go's errgroup). ``limit``: at most that many of its coroutines run at once."""

    def __init__(self, *, limit: int | None = None) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise TypeError(f"limit must be an int >= 1 or None, not {limit!r}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 (or None for no limit), not {limit}")
        self._limit = limit
        self._slots: Chan[None] | None = None if limit is None else Chan(limit)
        self._lock = _new_lock()
        self._wg = WaitGroup()
        self._entered = False
        self._exiting = False
        self._aborting = False
        self._parent: Any = None  # the body's task: a G, or an asyncio.Task
        self._rt: Runtime | None = None  # the body's runtime: the goroutines' too
        self._parent_cancel_requested = False
        self._gs: set[G[Any]] = set()
        self._errors: list[BaseException] = []
        self._base_error: BaseException | None = None

    def __repr__(self) -> str:
        info = [f"goroutines={len(self._gs)}"]
        if self._limit is not None:
            info.append(f"limit={self._limit}")
        if self._errors:
            info.append(f"errors={len(self._errors)}")
        if self._aborting:
            info.append("cancelling")
        elif self._entered:
            info.append("entered")
        return f"<Group {' '.join(info)}>"

    async def __aenter__(self) -> Group:
        if self._entered:
            raise RuntimeError(f"Group {self!r} has already been entered")
        self._parent = asyncio.current_task()  # the G, inside a goroutine (its step sets it)
        self._rt = current_runtime()  # (go() from a plain thread has none of its own)
        if self._parent is None:
            raise RuntimeError(f"Group {self!r} cannot determine the parent task")
        self._entered = True
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> None:  # fmt: skip
        self._exiting = True
        if exc is not None and _is_base_error(exc) and self._base_error is None:
            self._base_error = exc
        propagate = exc if et is not None and issubclass(et, asyncio.CancelledError) else None
        if not _UNCANCEL_LAST:
            propagate = self._take_back_cancel(propagate)
        if et is not None and not self._aborting:
            # The body is being cancelled, or raised: the goroutines go too.
            self._abort()
        while self._gs:
            try:
                await self._wg.wait()
            except asyncio.CancelledError as ex:
                if not self._aborting:
                    # The body was cancelled from outside while the goroutines ran.
                    propagate = ex
                    self._abort()
        if self._base_error is not None:
            raise self._base_error
        if _UNCANCEL_LAST:
            propagate = self._take_back_cancel(propagate)
        # A cancellation propagates unless something failed: failures come first.
        if propagate is not None and not self._errors:
            raise propagate
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            self._errors.append(exc)
        if self._errors:
            if _UNCANCEL_LAST and self._parent.cancelling():
                # Cancelled from outside too: keep its count as it was.
                self._parent.uncancel()
                self._parent.cancel()
            try:  # (exceptions hold frames: keep no list of them once raised)
                raise BaseExceptionGroup("unhandled errors in a Group", self._errors) from None
            finally:
                self._errors = []

    def _take_back_cancel(self, propagate: BaseException | None) -> BaseException | None:
        """Undo the body's cancellation the group asked for; what to propagate then."""
        if self._parent_cancel_requested and self._parent.uncancel() == 0:
            return None  # no cancellation left but the group's own
        return propagate

    def go(
        self, coro: Coroutine[Any, Any, T], *, name: str | None = None, pin: bool = False
    ) -> G[T]:
        """Spawn ``coro`` as a goroutine of this group and return its handle. ``name`` and
        ``pin`` as for ``mnsched.go``."""
        check_coroutine(coro)
        refusal = (
            None
            if self._entered and not (self._exiting and not self._gs) and not self._aborting
            else "has not been entered"
            if not self._entered
            else "is finished"
            if self._exiting and not self._gs
            else "is shutting down"
        )
        rt = self._rt  # (set once entered)
        if refusal is not None or rt is None:
            coro.close()  # (never awaited, and never will be: no warning for it)
            raise RuntimeError(f"Group {self!r} {refusal or 'has not been entered'}")
        self._wg.add(1)
        try:
            slots = self._slots
            g = rt.go(coro if slots is None else _in_slot(slots, coro), name=name, pin=pin)
        except BaseException:
            self._wg.done()
            raise
        with self._lock:
            self._gs.add(g)
        g.add_done_callback(self._on_done)
        return g

    def _abort(self) -> None:
        self._aborting = True
        with self._lock:
            gs = list(self._gs)
        for g in gs:
            if not g.done():
                g.cancel()

    def _on_done(self, g: G[Any]) -> None:
        """A goroutine of the group finished (on the loop that spawned it)."""
        parent = self._parent
        if (
            not isinstance(parent, G)
            and asyncio._get_running_loop() is not parent.get_loop()
            and call_on_loop(parent.get_loop(), self._on_done, g)
        ):
            # The body is a plain task (attach mode) and g was spawned into the group from
            # another thread: the task, and what reports on it, are its loop's, which
            # takes it from here as TaskGroup's callbacks run there.
            return
        try:
            with self._lock:
                self._gs.discard(g)
            if g.cancelled():
                return
            exc = g.exception()
            if exc is None:
                return
            with self._lock:
                self._errors.append(exc)
                if _is_base_error(exc) and self._base_error is None:
                    self._base_error = exc
            if self._parent.done():
                # The body's task ended without leaving the group (it cannot, from
                # async with; asyncio reports the same).
                self._parent.get_loop().call_exception_handler(
                    {
                        "message": f"Task {g!r} has errored out but its parent task "
                        f"{self._parent} is already completed",
                        "exception": exc,
                        "task": g,
                    }
                )
                return
            with self._lock:  # (two may fail at once, on two loops: one cancels)
                cancel_body = not self._aborting and not self._parent_cancel_requested
                self._parent_cancel_requested |= cancel_body
            if cancel_body:
                # Cancel what the body awaits; __aexit__ takes the cancellation back.
                self._abort()
                self._parent.cancel()
        finally:
            self._wg.done()


async def _in_slot(slots: Chan[None], coro: Coroutine[Any, Any, T]) -> T:
    """Run coro once one of a limit's slots (a buffered channel's) is free."""
    try:
        await slots.send(None)
    except BaseException:
        coro.close()  # cancelled before it started
        raise
    try:
        return await coro
    finally:
        slots.try_recv()  # (ours: never blocks)


def _is_base_error(exc: BaseException) -> bool:
    return isinstance(exc, (SystemExit, KeyboardInterrupt))
