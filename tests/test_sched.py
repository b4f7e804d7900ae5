"""Scheduling behaviour (Go's proc_test.go intent): parallelism, progress, fairness,
stealing, spawn storms."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import sys
import threading
import time

import pytest

import mnsched
import mnsched.p as pmod
from conftest import at_procs, burn_until, ticker, wait_until


def test_goroutine_parallelism(run, procs):
    # Go's TestGoroutineParallelism: P goroutines take turns on a counter, each spinning
    # (never yielding) until its turn comes. They finish only if all run at once, one on
    # each P, so the others must have been stolen away from the spawning P.
    turns = 3

    async def main():
        for _ in range(10):  # several tries, as Go's test does
            x = [0]

            async def taker(p, x=x):
                for i in range(turns):
                    expected = procs * i + p
                    burn_until(lambda e=expected: x[0] == e)
                    x[0] = expected + 1

            gs = [mnsched.go(taker(p)) for p in range(procs)]
            for g in gs:
                await g
            assert x[0] == procs * turns
        return True

    assert run(main())


def test_blocking_barrier_needs_every_p(run, procs):
    # The same through a thread barrier: P goroutines block their threads until all P
    # have arrived.
    async def main():
        barrier = threading.Barrier(procs)

        async def arrive():
            barrier.wait(timeout=20)
            return threading.get_ident()

        gs = [mnsched.go(arrive()) for _ in range(procs)]
        return {await g for g in gs}

    assert len(run(main())) == procs


def test_yield_progress(run):
    # Go's TestYieldProgress: a goroutine looping on Gosched does not stop a timer
    # and a wake-up from completing.
    async def main():
        stop = threading.Event()

        async def looper():
            n = 0
            while not stop.is_set():
                await mnsched.gosched()
                n += 1
            return n

        g = mnsched.go(looper())
        await mnsched.sleep(0.005)
        stop.set()
        return await g

    assert run(main()) > 0


@at_procs(1)  # a single P makes the starvation deterministic
def test_global_queue_is_not_starved_by_a_runnext_chain(rt_params):
    # An endless chain of goroutines handing off to each other through runnext on one
    # P must still let a goroutine from the global queue (spawned by a foreign thread)
    # run: the 61st-tick check and the time slice guarantee it.
    _, loop = rt_params
    with mnsched.Runtime(procs=1, loop=loop) as rt:
        stop = threading.Event()

        async def link(n):
            if stop.is_set():
                return n
            return await mnsched.go(link(n + 1))

        chain = rt.go(link(0))

        async def stopper():
            stop.set()

        threading.Thread(target=lambda: rt.go(stopper())).start()
        assert chain.result(timeout=30) > 0


@at_procs(1)  # the order is only defined on a single P
def test_spawn_order_on_one_p_is_runnext_then_fifo(rt_params):
    _, loop = rt_params
    order = []

    async def rec(i):
        order.append(i)

    async def main():
        gs = [mnsched.go(rec(i)) for i in range(5)]
        await mnsched.sleep(0.01)  # not a join: no handoff
        for g in gs:
            await g
        return order

    # the last spawned sits in runnext and runs first, the rest in FIFO order
    assert mnsched.run(main(), procs=1, loop=loop) == [4, 0, 1, 2, 3]


@at_procs(1)  # the memory bound is only exact on a single P
def test_join_keeps_fork_join_depth_first(rt_params, monkeypatch):
    _, loop = rt_params
    # Pure join order: no time slice or batch ends (past either, a join is not inline and
    # the tree widens a little), no sysmon (a stall of the machine would hand work off).
    monkeypatch.setattr(pmod, "TIME_SLICE", 1e9)
    monkeypatch.setattr(pmod, "BATCH_TIME", 60.0)
    peak = [0]

    async def tree(num, size):
        if size == 1:
            return num
        size //= 10
        gs = [mnsched.go(tree(num + i * size, size)) for i in range(10)]
        peak[0] = max(peak[0], mnsched.num_goroutine())
        return sum([await g for g in gs])

    assert mnsched.run(tree(0, 100_000), procs=1, loop=loop, sysmon=False) == sum(range(100_000))
    assert peak[0] < 100  # depth x fan-out, not a breadth-first 100,000


@at_procs(1)  # step counts are only exact on a single P
def test_join_runs_a_queued_child_inline_as_itself(rt_params, monkeypatch):
    # ForkJoin's join: the awaited child runs inside the waiter's step, which then goes
    # on without parking. The child is still itself: its own current task and context.
    _, loop = rt_params
    monkeypatch.setattr(pmod, "BATCH_TIME", 60.0)  # no batch ends in the middle
    var = contextvars.ContextVar("v", default="parent")

    async def child(i):
        var.set(f"child{i}")
        return asyncio.current_task(), threading.get_ident()

    async def main():
        before = mnsched.stats()["ticks"][0]
        gs = [mnsched.go(child(i)) for i in range(10)]
        seen = [await g for g in gs]
        steps = mnsched.stats()["ticks"][0] - before
        return gs, seen, steps, asyncio.current_task(), var.get()

    # Without sysmon: a stall of the test machine must not hand the children off.
    with mnsched.Runtime(procs=1, loop=loop, sysmon=False) as rt:
        gs, seen, steps, me, value = rt.go(main()).result(timeout=30)
    assert [task for task, _ in seen] == gs  # each child was its own current task
    assert len({tid for _, tid in seen}) == 1
    assert steps == 10  # one step per child, and none for main: it never parked
    assert isinstance(me, mnsched.G) and me not in gs
    assert value == "parent"  # the children's context changes stayed theirs


def test_a_deep_chain_of_joins_does_not_overflow_the_stack(run):
    # Each link awaits the next: inline joins nest only INLINE_JOIN_DEPTH deep, then park.
    depth = 3 * sys.getrecursionlimit()

    async def link(n):
        return 0 if n == 0 else 1 + await mnsched.go(link(n - 1))

    assert run(link(depth)) == depth


@at_procs(1)  # the ticker and the tree share the one P
def test_a_fork_join_tree_does_not_starve_a_ticker_on_its_p(rt_params):
    # Inline joins run within the P's batch time: the loop still gets its turn.
    _, loop = rt_params

    async def tree(num, size):
        if size == 1:
            return num
        size //= 10
        gs = [mnsched.go(tree(num + i * size, size)) for i in range(10)]
        return sum([await g for g in gs])

    async def main():
        ticks: list[float] = []
        done = threading.Event()
        tk = mnsched.go(ticker(0.002, ticks, done))
        await mnsched.sleep(0.01)
        t0 = time.monotonic()
        total = await mnsched.go(tree(0, 100_000))
        t1 = time.monotonic()
        done.set()
        await tk
        return total, sum(1 for t in ticks if t0 <= t <= t1)

    total, n = mnsched.run(main(), procs=1, loop=loop)
    assert total == sum(range(100_000))
    assert n >= 10  # the tree takes a few hundred ms; a 2 ms ticker kept going


@at_procs(2, 4)  # one P has nobody to steal
def test_work_is_stolen_by_idle_ps(run):
    # Parallel steps, Go's rule: an idle P is woken for queued work and steals it from a
    # busy P, here one whose goroutine blocks (sysmon off: nothing else moves work).
    async def main():
        barrier = threading.Barrier(2)

        async def blocker():
            barrier.wait(timeout=20)  # only passes if a second P takes the other one

        gs = [mnsched.go(blocker()) for _ in range(2)]
        for g in gs:
            await g
        return mnsched.current_runtime().stats()

    # main is pinned to P0 and parks; the second blocker can only run beside the first
    # if another P steals it from P0's local queue.
    st = run(main(), parallel=True, sysmon=False)
    assert st["stolen"] >= 1 and st["steals"] >= 1


@at_procs(2, 4)
def test_serial_steps_steal_from_a_p_whose_loop_is_busy_elsewhere(run):
    # Serial steps: a P running its goroutines is left alone (another could only wait
    # for the step token), but one whose loop is busy outside any step (a plain
    # callback blocking, which sysmon does not count as a hog) is robbed by a P that
    # sysmon wakes.
    async def main():
        loop = asyncio.get_running_loop()
        ran = threading.Event()

        async def queued():
            ran.set()

        def blocker():  # a plain callback on P0, after two goroutines are queued there
            mnsched.go(queued())  # (moved from runnext to the stealable local queue...)
            mnsched.go(queued())  # (...by this one)
            ran.wait(20)

        loop.call_soon(blocker)
        await mnsched.syscall(ran.wait, 20)
        return ran.is_set(), mnsched.current_runtime().stats()

    ok, st = run(main())
    assert ok and st["stolen"] >= 1 and st["steals"] >= 1 and st["hogs"] == 0


def test_sleep_wakes_in_deadline_order(run):
    async def main():
        order = []

        async def sleeper(d):
            await mnsched.sleep(d)
            order.append(d)

        ds = [0.05, 0.01, 0.03, 0.02, 0.04]
        gs = [mnsched.go(sleeper(d)) for d in ds]
        t0 = time.monotonic()
        for g in gs:
            await g
        return order, time.monotonic() - t0

    order, elapsed = run(main())
    assert sorted(order) == sorted([0.05, 0.01, 0.03, 0.02, 0.04])
    assert elapsed >= 0.049


def test_cancel_a_sleeping_goroutine_removes_its_timer(run):
    async def main():
        gs = [mnsched.go(mnsched.sleep(3600)) for _ in range(200)]
        await mnsched.sleep(0.01)
        for g in gs:
            g.cancel()
        for g in gs:
            with pytest.raises(asyncio.CancelledError):
                await g
        return sum(len(p.timers) for p in mnsched.current_runtime().sched.allp)

    assert run(main()) == 0


# A fifth of Go's storm size (a million took 8-12 s a run, a sixth of the suite's time):
# still hundreds of times a local queue, so every queue overflows to the global one and
# is stolen from. Skynet (mnsched bench) runs a million goroutines.
STORM = 200_000


@contextlib.contextmanager
def gc_paused():
    """A million live coroutines make Python's full collections the bulk of a storm's
    time; the storms test the scheduler, so the collector waits until they are over."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Storm:
    """n goroutines, each writing its own number once; ``wg`` counts them done."""

    def __init__(self) -> None:
        self.n = STORM
        self.out = [0] * self.n
        self.wg = mnsched.WaitGroup()
        self.wg.add(self.n)

    async def put(self, i: int) -> None:
        self.out[i] = i
        self.wg.done()

    def total_is_exact(self) -> bool:
        return sum(self.out) == self.n * (self.n - 1) // 2


@pytest.mark.timeout(300)
def test_spawn_storm_inside_the_runtime(run):
    storm = Storm()

    async def main():
        for i in range(storm.n):
            mnsched.go(storm.put(i))
        await storm.wg.wait()

    with gc_paused():
        run(main())
    assert storm.total_is_exact()


@pytest.mark.timeout(300)
def test_spawn_storm_from_two_foreign_threads(runtime):
    storm = Storm()
    n = storm.n

    def spawner(lo, hi):
        for i in range(lo, hi):
            runtime.go(storm.put(i))

    threads = [
        threading.Thread(target=spawner, args=(k * n // 2, (k + 1) * n // 2)) for k in range(2)
    ]
    with gc_paused():
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        storm.wg.wait_blocking(timeout=240)
    assert storm.total_is_exact()
    wait_until(lambda: runtime.num_goroutine() == 0)  # some are between wg.done() and their end
    st = runtime.stats()
    assert st["goroutines"] == 0 and st["spawned"] == st["finished"] == n
