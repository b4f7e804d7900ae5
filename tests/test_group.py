"""mnsched.Group: the same outcomes as asyncio.TaskGroup on a table of cases run side by
side (TaskGroup under asyncio.run, Group in goroutines at procs 1, 2 and 4 on both loops),
errgroup's limit, and a Group in a plain asyncio task of an attached runtime."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import mnsched

# A case gets the group class and how to spawn into a group, and a log to write what
# happened in (sorted before comparing where goroutines may interleave differently).
Spawn = Callable[[Any, Any], Any]
Case = Callable[[Any, Spawn, list[str]], Awaitable[Any]]


async def fail(log: list[str], what: str, after: asyncio.Event | None = None) -> None:
    if after is not None:
        await after.wait()
    log.append(f"{what} raises")
    raise ValueError(what)


async def wait_forever(log: list[str], what: str, started: asyncio.Event) -> None:
    try:
        started.set()
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        log.append(f"{what} cancelled")
        raise
    finally:
        log.append(f"{what} finally")


async def value(v: int) -> int:
    await asyncio.sleep(0)
    return v


async def all_succeed(group: Any, spawn: Spawn, log: list[str]) -> Any:
    async with group() as grp:
        ts = [spawn(grp, value(i)) for i in range(5)]
    return [t.result() for t in ts]


async def a_child_fails(group: Any, spawn: Spawn, log: list[str]) -> Any:
    started = asyncio.Event()
    try:
        async with group() as grp:
            spawn(grp, wait_forever(log, "sibling", started))
            await started.wait()
            spawn(grp, fail(log, "child"))
            await asyncio.Event().wait()  # the body is cancelled by the failure
    finally:
        log.append("after")


async def the_body_fails(group: Any, spawn: Spawn, log: list[str]) -> Any:
    started = asyncio.Event()
    async with group() as grp:
        spawn(grp, wait_forever(log, "child", started))
        await started.wait()
        raise KeyError("body")


async def cancelled_from_outside(group: Any, spawn: Spawn, log: list[str]) -> Any:
    started = asyncio.Event()

    async def body() -> None:
        async with group() as grp:
            spawn(grp, wait_forever(log, "child", started))
            await asyncio.Event().wait()

    # The body as a task of its own kind: a goroutine for Group, a Task for TaskGroup.
    t = asyncio.ensure_future(body()) if group is asyncio.TaskGroup else mnsched.go(body())
    await started.wait()
    t.cancel()
    try:
        await t
    except asyncio.CancelledError:
        log.append("body cancelled")
    return t.cancelled()


async def the_failure_is_caught_and_the_body_goes_on(group: Any, spawn: Spawn,
                                                     log: list[str]) -> Any:  # fmt: skip
    try:
        async with group() as grp:
            spawn(grp, fail(log, "child"))
            await asyncio.Event().wait()
    except* ValueError as eg:
        log.append(f"caught {len(eg.exceptions)}")
    await asyncio.sleep(0)  # not cancelled any more: the group took its cancel back
    log.append("went on")
    current = asyncio.current_task()
    assert current is not None
    return current.cancelling()


async def nested_groups(group: Any, spawn: Spawn, log: list[str]) -> Any:
    started = asyncio.Event()

    async def inner() -> None:
        async with group() as grp:
            spawn(grp, fail(log, "inner child"))

    async with group() as outer:
        spawn(outer, wait_forever(log, "outer child", started))
        await started.wait()
        spawn(outer, inner())


async def a_child_spawns_into_the_group(group: Any, spawn: Spawn, log: list[str]) -> Any:
    results: list[int] = []

    async def parent(grp: Any) -> None:
        await asyncio.sleep(0)
        t = spawn(grp, value(7))
        results.append(await t)

    async with group() as grp:
        spawn(grp, parent(grp))
    return results


async def spawning_after_the_end(group: Any, spawn: Spawn, log: list[str]) -> Any:
    async with group() as grp:
        pass
    coro = value(1)
    try:
        spawn(grp, coro)
    finally:
        coro.close()


async def spawning_while_shutting_down(group: Any, spawn: Spawn, log: list[str]) -> Any:
    started = asyncio.Event()

    async def late(grp: Any) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            coro = value(1)
            try:
                spawn(grp, coro)
            except RuntimeError as e:
                log.append(f"refused: {str(e).split()[-2:]}")
            finally:
                coro.close()
            raise

    async with group() as grp:
        spawn(grp, late(grp))
        spawn(grp, wait_forever(log, "other", started))
        await started.wait()
        raise KeyError("body")


async def entered_twice(group: Any, spawn: Spawn, log: list[str]) -> Any:
    grp = group()
    async with grp, grp:
        pass


async def a_keyboard_interrupt_in_a_child(group: Any, spawn: Spawn, log: list[str]) -> Any:
    async def interrupt() -> None:
        await asyncio.sleep(0)
        raise KeyboardInterrupt

    started = asyncio.Event()
    async with group() as grp:
        spawn(grp, wait_forever(log, "sibling", started))
        await started.wait()
        spawn(grp, interrupt())


CASES: list[Case] = [
    all_succeed,
    a_child_fails,
    the_body_fails,
    cancelled_from_outside,
    the_failure_is_caught_and_the_body_goes_on,
    nested_groups,
    a_child_spawns_into_the_group,
    spawning_after_the_end,
    spawning_while_shutting_down,
    entered_twice,
    a_keyboard_interrupt_in_a_child,
]


def outcome(exc: BaseException | None, result: Any = None) -> Any:
    """What a case ended with: its result, or its exception's type and message, with an
    exception group's members (recursively, sorted)."""
    if exc is None:
        return ("returned", result)
    if isinstance(exc, BaseExceptionGroup):
        return ("group", sorted(repr(outcome(e)) for e in exc.exceptions))
    msg = str(exc)  # ("TaskGroup <TaskGroup ...> is finished": the words after the repr)
    return (type(exc).__name__, msg.split("> ")[-1] if "Group <" in msg else msg)


def run_case(case: Case, runner: Callable[[Any], Any], group: Any, spawn: Spawn) -> Any:
    log: list[str] = []

    async def main() -> Any:
        return await case(group, spawn, log)

    try:
        result = runner(main())
    except BaseException as e:  # (KeyboardInterrupt is a case's outcome too)
        return outcome(e), sorted(log)
    return outcome(None, result), sorted(log)


def task_group_spawn(grp: asyncio.TaskGroup, coro: Any) -> Any:
    return grp.create_task(coro)


def group_spawn(grp: mnsched.Group, coro: Any) -> Any:
    return grp.go(coro)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_a_group_ends_as_a_task_group_does(run, case):
    expected = run_case(case, asyncio.run, asyncio.TaskGroup, task_group_spawn)
    got = run_case(case, run, mnsched.Group, group_spawn)
    assert got == expected


def test_the_cases_mean_something():
    # The table's outcomes under TaskGroup, so that a case that stopped testing anything
    # (every one returning None) fails here.
    got = {c.__name__: run_case(c, asyncio.run, asyncio.TaskGroup, task_group_spawn)[0]
           for c in CASES}  # fmt: skip
    assert got["all_succeed"] == ("returned", [0, 1, 2, 3, 4])
    assert got["a_child_fails"] == ("group", [repr(("ValueError", "child"))])
    assert got["the_body_fails"] == ("group", [repr(("KeyError", "'body'"))])
    assert got["cancelled_from_outside"] == ("returned", True)
    assert got["the_failure_is_caught_and_the_body_goes_on"] == ("returned", 0)
    assert got["nested_groups"][0] == "group"
    assert got["a_child_spawns_into_the_group"] == ("returned", [7])
    assert got["spawning_after_the_end"] == ("RuntimeError", "is finished")
    assert got["entered_twice"] == ("group", [repr(("RuntimeError", "has already been entered"))])
    assert got["a_keyboard_interrupt_in_a_child"] == ("KeyboardInterrupt", "")


def test_a_limit_runs_at_most_that_many_at_once(run):
    async def main() -> tuple[int, list[int]]:
        running = peak = 0
        lock = threading.Lock()

        async def work(i: int) -> int:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            await mnsched.sleep(0.001)
            with lock:
                running -= 1
            return i

        async with mnsched.Group(limit=3) as grp:
            gs = [grp.go(work(i)) for i in range(20)]
        return peak, [g.result() for g in gs]

    peak, results = run(main())
    assert results == list(range(20))
    assert 1 <= peak <= 3


def test_a_limited_groups_waiting_coroutines_are_closed_when_it_aborts(run):
    async def main() -> tuple[list[int], list[int]]:
        started: list[int] = []
        finished: list[int] = []

        async def step(i: int) -> None:
            started.append(i)
            try:
                await mnsched.sleep(0.001)
                raise ValueError(i)
            finally:
                finished.append(i)

        with pytest.raises(ExceptionGroup):
            async with mnsched.Group(limit=2) as grp:
                for i in range(50):
                    grp.go(step(i))
        return started, finished

    started, finished = run(main())
    # The first failure stopped the group: those that started ran their finally once,
    # the others never started (closed unstarted, each in its goroutine).
    assert sorted(started) == sorted(finished)
    assert 1 <= len(started) < 50


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_a_bad_limit_is_refused(bad):
    with pytest.raises((ValueError, TypeError), match="limit must be"):
        mnsched.Group(limit=bad)


def test_a_group_in_a_plain_task_of_an_attached_runtime(rt_params):
    nprocs, loop = rt_params

    async def main() -> list[int]:
        async with mnsched.Runtime(procs=nprocs, loop=loop, attach=True):
            async with mnsched.Group() as grp:
                gs = [grp.go(value(i)) for i in range(10)]
            with pytest.raises(ExceptionGroup) as ei:
                async with mnsched.Group() as grp:
                    grp.go(fail([], "child"))
                    await asyncio.Event().wait()
            assert [str(e) for e in ei.value.exceptions] == ["child"]
            return [g.result() for g in gs]

    assert asyncio.run(main()) == list(range(10))


def test_a_plain_task_body_is_cancelled_on_its_own_loop(rt_params):
    # Spawned into from a plain thread, a failing goroutine's callback runs on the loop
    # it finished on, perhaps another P's: the task body (the host loop's) is cancelled,
    # and the group's state kept, on the host loop.
    nprocs, loop = rt_params

    async def main() -> tuple[list[str], bool]:
        host = asyncio.get_running_loop()
        seen: list[bool] = []

        async def failing() -> None:
            await mnsched.sleep(0.001)
            raise ValueError("from a thread's goroutine")

        async with mnsched.Runtime(procs=nprocs, loop=loop, attach=True):
            with pytest.raises(ExceptionGroup) as ei:
                async with mnsched.Group() as grp:
                    await asyncio.to_thread(grp.go, failing())
                    try:
                        await asyncio.Event().wait()
                    except asyncio.CancelledError:
                        seen.append(asyncio.get_running_loop() is host)
                        raise
        return [str(e) for e in ei.value.exceptions], seen == [True]

    assert asyncio.run(main()) == (["from a thread's goroutine"], True)


def test_go_outside_the_group_is_refused():
    grp = mnsched.Group()
    coro = value(1)
    with pytest.raises(RuntimeError, match="has not been entered"):
        grp.go(coro)
