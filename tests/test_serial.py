"""Serial steps (the default): goroutine code keeps asyncio's promise that nothing else
runs between two awaits, at every P count; parallel steps (``parallel=True``) do not;
a hog, measured in CPU time, is the one exception, and is reported; a thread the OS
merely deschedules is no hog; a loop's objects reached from another P's thread wake
their loop, or fail at once with mnsched's note; fork and subprocesses work."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import mnsched
from conftest import at_procs, burn_until, ticker
from mnsched.sysmon import HOG_THRESHOLD

# The lost-update program, as the bug was first shown: WORKERS goroutines each add 1 to
# a shared count ROUNDS times by read, a plain helper, write; a yield every YIELD_EVERY
# rounds (a step of ~0.1 ms, ~2 ms under the sanitizer's malloc: well under the hog
# threshold, so no step is preempted).
WORKERS, ROUNDS, YIELD_EVERY = 8, 100_000, 1_000


def _inc(v: int) -> int:
    return v + 1


async def _count_up(counts: dict[str, int]) -> None:
    for i in range(ROUNDS):
        v = counts["n"]
        v = _inc(v)
        counts["n"] = v
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            await mnsched.gosched()


async def _lost_updates() -> tuple[int, dict[str, Any]]:
    counts = {"n": 0}
    gs = [mnsched.go(_count_up(counts)) for _ in range(WORKERS)]
    for g in gs:
        await g
    return WORKERS * ROUNDS - counts["n"], mnsched.stats()


def test_serial_steps_lose_no_update(run):
    # The promise holds where no step is preempted. A loaded machine can stretch a step
    # past the hog threshold (CI's sanitizer step did once), and a hog rightly runs
    # beside the others: such a run shows nothing either way, so it is run again.
    for _ in range(3):
        lost, st = run(_lost_updates())
        assert st["parallel"] is False
        if st["hogs"] == 0:
            break
    assert st["hogs"] == 0, f"a step was preempted as a hog in every run ({st['hogs']} now)"
    assert lost == 0  # no step was long enough to be preempted: the promise held


@at_procs(2, 4)  # parallel steps need a second P
def test_parallel_steps_lose_updates(run):
    # Two Ps run goroutines' Python at once, interleaved at bytecodes by the GIL: the
    # read-modify-write loses increments (the mode matters). Interleaving is up to the
    # OS and the GIL: a few tries.
    for _ in range(5):
        lost, st = run(_lost_updates(), parallel=True)
        assert st["parallel"] is True
        if lost:
            break
    assert lost > 0


def _on_each_p(make: Callable[[], Coroutine[Any, Any, Any]], per_p: int) -> list[Any]:
    """From a goroutine's runtime: spawn per_p goroutines pinned to each P, from that P's
    own loop (so that every P runs some for sure), and return their handles."""
    rt = mnsched.current_runtime()
    futs = []
    for p in rt.sched.allp:
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

        def spawn(fut: asyncio.Future[list[Any]] = fut) -> None:
            gs = [rt.go(make(), pin=True) for _ in range(per_p)]
            fut.get_loop().call_soon_threadsafe(fut.set_result, gs)

        p.loop.call_soon_threadsafe(spawn)
        futs.append(fut)
    return futs


async def _overlap(steps: int = 40) -> tuple[int, int]:
    """Goroutines on every P, each step a ~0.3 ms stretch of Python: how many ran at
    once at most (entering and leaving the stretch under a lock), and on how many
    threads."""
    lock = threading.Lock()
    inside = [0, 0]  # now, most
    threads: set[int] = set()

    async def stepper() -> None:
        for _ in range(steps):
            with lock:
                inside[0] += 1
                inside[1] = max(inside)
                threads.add(threading.get_ident())
            end = time.perf_counter() + 0.0003
            while time.perf_counter() < end:
                pass
            with lock:
                inside[0] -= 1
            await mnsched.gosched()

    gs = [g for fut in _on_each_p(stepper, 2) for g in await fut]
    for g in gs:
        await g
    return inside[1], len(threads)


def test_no_two_goroutine_steps_run_at_once(run, procs):
    most, nthreads = run(_overlap())
    assert nthreads == procs  # every P ran steps (each has goroutines pinned to it)
    assert most == 1


@at_procs(2, 4)
def test_parallel_steps_run_at_once(run):
    most = 1
    for _ in range(5):  # two threads inside at once is up to the OS: a few tries
        most, _ = run(_overlap(), parallel=True)
        if most > 1:
            break
    assert most > 1


# -- hogs, by CPU time -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cpu", "blocked"])
def test_a_hog_is_reported_and_the_others_run_beside_it(run, caplog, kind):
    async def main() -> tuple[int, dict[str, Any]]:
        ticks: list[float] = []
        stop = threading.Event()

        async def hog() -> int:
            # Never yields, and ends only once the ticker has ticked 3 times beside it
            # (20 s at most): the others ran while it held its step.
            start = len(ticks)
            if kind == "cpu":
                burn_until(lambda: len(ticks) >= start + 3)
            else:
                deadline = time.monotonic() + 20
                while len(ticks) < start + 3 and time.monotonic() < deadline:
                    time.sleep(0.005)  # blocking, not through mnsched.syscall
            return len(ticks) - start

        tk = mnsched.go(ticker(0.005, ticks, stop))
        await mnsched.sleep(0.02)
        n = await mnsched.go(hog(), name="hog")
        stop.set()
        await tk
        return n, mnsched.stats()

    with caplog.at_level(logging.WARNING, logger="mnsched"):
        n, st = run(main(), debug="hogs")
    assert n >= 3
    assert st["hogs"] >= 1
    assert st["token_revokes"] >= 1  # its step token went to the others
    reports = [r.getMessage() for r in caplog.records if "stuck for" in r.getMessage()]
    what = "of CPU without an await (a CPU hog)" if kind == "cpu" else "blocked in a call"
    assert any("'hog'" in r and what in r and "run beside it" in r for r in reports), reports


@contextlib.contextmanager
def _one_cpu_shared_with_burners(n: int) -> Iterator[None]:
    """This process and n CPU burner processes on one CPU: the OS deschedules this
    process's threads for several milliseconds at a time."""
    cpu = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    burners = [
        subprocess.Popen(
            [sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile 1: pass"]
        )
        for _ in range(n)
    ]
    os.sched_setaffinity(0, {cpu})  # every thread of this process (new ones inherit it)
    try:
        yield
    finally:
        for pid in [t.native_id for t in threading.enumerate()] + [0]:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid or 0, before)
        for b in burners:
            b.kill()
            b.wait()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity")
def test_a_step_the_os_deschedules_is_no_hog(run):
    # Steps of 4 ms of CPU each, on a CPU shared with 2 burners: their wall time is ~12
    # ms, past the hog threshold, but they are not hogs (wall time would have said so).
    walls: list[float] = []

    def burn_cpu(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    async def worker() -> None:
        for _ in range(15):
            t = time.monotonic()
            burn_cpu(0.004)
            walls.append(time.monotonic() - t)
            await mnsched.gosched()

    async def main() -> dict[str, Any]:
        gs = [mnsched.go(worker()) for _ in range(4)]
        for g in gs:
            await g
        return mnsched.stats()

    with _one_cpu_shared_with_burners(2):
        st = run(main())
    assert max(walls) > HOG_THRESHOLD  # the OS did keep steps waiting past the threshold
    assert st["hogs"] == 0 and st["token_revokes"] == 0 and st["spare_procs_started"] == 0


@at_procs(2)
def test_a_p_blocked_outside_steps_with_the_token_does_not_hold_up_the_others(run):
    # P0 keeps the step token for the rest of the loop turn in which it resumed a
    # goroutine; in that turn a plain callback blocks, waiting for a goroutine on P1 to
    # do something. sysmon must hand the token on (no step is running on P0), or the
    # two wait for each other until the callback gives up.
    async def main() -> bool:
        rt = mnsched.current_runtime()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        started, done = threading.Event(), threading.Event()
        result: list[bool] = []

        async def resumed() -> None:
            await fut  # resumed from a loop callback: P0 takes the token for the turn

        def blocker() -> None:  # a plain callback on P0, not a goroutine
            started.set()
            result.append(done.wait(10))

        async def on_p1() -> None:
            await mnsched.syscall(started.wait, 10)
            done.set()  # needs the token: P0 holds it, blocked outside any step

        g = mnsched.go(resumed(), pin=True)
        await mnsched.sleep(0.01)  # g waits on fut now
        rt.sched.allp[1].loop.call_soon_threadsafe(lambda: rt.go(on_p1(), pin=True))

        def resume_then_block() -> None:
            fut.set_result(None)  # queues g's resumption: the next turn, first
            loop.call_soon(blocker)  # the same turn, after it

        loop.call_soon(resume_then_block)
        await g
        await mnsched.syscall(started.wait, 10)
        while not result:
            await mnsched.sleep(0.01)
        return result[0]

    assert run(main())


# -- loop-bound objects across Ps -------------------------------------------------------


def _until_waiting(g: mnsched.G[Any]) -> None:
    """From a plain thread: until g waits on its loop, and a little more, so that its P's
    loop is asleep in its poll by then (if not, the tests below pass without showing
    anything, never the other way round)."""
    deadline = time.monotonic() + 10
    while g.wait_reason != "asyncio future" and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.05)


@contextlib.contextmanager
def _watchdog(loop: asyncio.AbstractEventLoop, seconds: float = 5.0) -> Iterator[list[bool]]:
    """Nothing else wakes the loop of the tests below: a lost wake-up stalls it for good.
    A thread waits up to ``seconds`` for the block to end; if it has not, it records the
    stall and wakes the loop itself, so that the test fails instead of hanging."""
    done = threading.Event()
    stalled: list[bool] = []

    def watch() -> None:
        if not done.wait(seconds):
            stalled.append(True)
            loop.call_soon_threadsafe(lambda: None)

    t = threading.Thread(target=watch)
    t.start()
    try:
        yield stalled
    finally:
        done.set()
        t.join()


@at_procs(2, 4)
def test_a_future_completed_from_another_p_wakes_its_loop(run):
    # An asyncio.Event waited on by a goroutine pinned to P0, set by one on the last P:
    # the waiter's future is completed from another loop's thread, which must wake P0's
    # loop (call_soon there is routed as call_soon_threadsafe). It hung before.
    async def main() -> tuple[bool, list[bool]]:
        event = asyncio.Event()  # bound to P0's loop at its first wait

        async def waiter() -> bool:
            await event.wait()
            return True

        async def setter() -> None:
            await mnsched.syscall(_until_waiting, g)
            event.set()

        g = mnsched.go(waiter(), pin=True)
        rt = mnsched.current_runtime()
        with _watchdog(asyncio.get_running_loop()) as stalled:
            rt.sched.allp[-1].loop.call_soon_threadsafe(lambda: rt.go(setter(), pin=True))
            ok = await g  # parked: P0's loop sleeps until someone wakes it
        return ok, stalled

    assert run(main()) == (True, [])


def test_a_future_completed_from_a_plain_thread_wakes_its_loop(run):
    async def main() -> tuple[int, list[bool]]:
        fut = asyncio.get_running_loop().create_future()

        async def waiter() -> int:
            return await fut  # type: ignore[no-any-return]

        g = mnsched.go(waiter(), pin=True)

        def setter() -> None:
            _until_waiting(g)
            fut.set_result(7)  # not thread-safe, and done once: on the waiter's loop

        with _watchdog(asyncio.get_running_loop()) as stalled:
            threading.Thread(target=setter).start()
            n = await g
        return n, stalled

    assert run(main()) == (7, [])


@at_procs(2)
def test_an_asyncio_event_of_another_loop_fails_with_the_note_even_when_caught(run):
    async def main() -> BaseException | None:
        event = asyncio.Event()
        waiter = asyncio.ensure_future(event.wait())  # binds it to P0's loop
        await asyncio.sleep(0)
        rt = mnsched.current_runtime()
        got: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

        async def other() -> None:
            try:
                await event.wait()  # on P1
            except RuntimeError as e:  # caught: the note must be on it already
                got.get_loop().call_soon_threadsafe(got.set_result, e)

        rt.sched.allp[1].loop.call_soon_threadsafe(lambda: rt.go(other(), pin=True))
        async with asyncio.timeout(10):
            err = await got
        event.set()
        await waiter
        return err

    err = run(main())
    assert isinstance(err, RuntimeError) and "different event loop" in str(err)
    assert any("mnsched.PerP" in n for n in getattr(err, "__notes__", ())), err


# -- fork and subprocesses ---------------------------------------------------------------

FORKS = 20


async def _child_work() -> int:
    ch: mnsched.Chan[int] = mnsched.Chan()
    gs = [mnsched.go(ch.send(i)) for i in range(10)]
    total = sum([await ch.recv() for _ in range(10)])
    for g in gs:
        await g
    return total


def _in_child(parent: mnsched.Runtime) -> int:
    """What a forked child checks: the parent's runtime is gone (and says so), go()
    starts a default runtime, and run() works. 0 if all holds."""
    try:
        with contextlib.suppress(mnsched.RuntimeClosedError):
            parent.go(_child_work())
            return 5  # the parent's runtime accepted a goroutine nobody will run
        if "forked child" not in repr(parent):
            return 6
        if mnsched.go(_child_work()).result(timeout=10) != 45:
            return 3
        return 0 if mnsched.run(_child_work(), procs=2) == 45 else 4
    except BaseException as e:
        print("child failed:", repr(e), file=sys.stderr)
        return 2


@pytest.mark.parametrize("how", ["os.fork", "multiprocessing"])
def test_fork_from_a_goroutine_while_ps_run(run, how):
    # Every other P busy with channel ping-pong (locks taken and dropped all the time)
    # while a goroutine forks: every child must find no runtime, start its own, and exit.
    import multiprocessing

    async def pingpong(a: mnsched.Chan[int], b: mnsched.Chan[int]) -> None:
        while True:
            await b.send(await a.recv())

    def wait_child(pid: int) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.005)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        return -999  # hung

    async def forker() -> list[int]:
        rt = mnsched.current_runtime()
        codes = []
        for _ in range(FORKS):
            if how == "os.fork":
                pid = os.fork()
                if pid == 0:
                    os._exit(_in_child(rt))
                codes.append(await mnsched.syscall(wait_child, pid))
            else:
                ctx = multiprocessing.get_context("fork")
                proc = ctx.Process(target=lambda: os._exit(_in_child(rt)))
                proc.start()
                codes.append(await mnsched.syscall(wait_child, proc.pid))
            await mnsched.gosched()
        return codes

    async def main() -> list[int]:
        chans = [(mnsched.Chan[int](), mnsched.Chan[int]()) for _ in range(4)]
        gs = [mnsched.go(pingpong(a, b)) for a, b in chans]
        gs += [mnsched.go(pingpong(b, a)) for a, b in chans]
        for a, _ in chans:
            await a.send(1)
        codes = await mnsched.go(forker())
        for g in gs:
            g.cancel()
        return codes

    assert run(main()) == [0] * FORKS


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_concurrent_subprocesses_from_goroutines(run, parallel):
    # uvloop refused spawns racing on two loops ("Racing with another loop to spawn a
    # process"): 29-41 of 50 failed.
    async def one(i: int) -> int:
        proc = await asyncio.create_subprocess_exec("echo", str(i), stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return int(out)

    async def main() -> list[int]:
        gs = [mnsched.go(one(i)) for i in range(50)]
        return [await g for g in gs]

    assert run(main(), parallel=parallel) == list(range(50))
