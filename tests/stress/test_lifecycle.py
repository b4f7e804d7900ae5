"""The runtime's life under load: spawning and feeding goroutines while it closes (an
exact ledger of every goroutine), and the P count churning under load (a thread census
after)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import threading
import time

import mnsched


def test_spawning_from_threads_while_the_runtime_closes_loses_nothing(rt_params):
    # Threads spawn goroutines and feed them while close() runs: every spawn either
    # raises RuntimeClosedError or gives a goroutine that finishes; every body that
    # started ran its finally exactly once; nothing is left.
    procs, kind = rt_params
    lock = threading.Lock()
    started: set[int] = set()
    finals: dict[int, int] = {}

    async def body(i, ch):
        with lock:
            started.add(i)
        try:
            if i % 2:  # half end at once: allg is often empty as close() begins
                await ch.recv()
        finally:
            with lock:
                finals[i] = finals.get(i, 0) + 1

    rt = mnsched.Runtime(procs=procs, loop=kind).start()
    ch = mnsched.Chan(8)
    handles: list[mnsched.G[None]] = []
    refusals: list[BaseException] = []
    ready = threading.Barrier(4)

    def spawner(base):
        for i in itertools.count(base):
            if i == base + 100:
                ready.wait(10)  # close() starts once each has spawned 100
            try:
                handles.append(rt.go(body(i, ch)))
            except BaseException as e:
                refusals.append(e)
                return
            with contextlib.suppress(mnsched.WouldBlock):
                ch.try_send(i)

    threads = [threading.Thread(target=spawner, args=(k * 10**6,)) for k in range(3)]
    for t in threads:
        t.start()
    ready.wait(10)
    rt.close(timeout=10)
    for t in threads:
        t.join(10)
    assert len(refusals) == 3 and all(type(e) is mnsched.RuntimeClosedError for e in refusals)
    assert all(g.done() for g in handles) and rt.num_goroutine() == 0
    assert all(finals.get(i) == 1 for i in started), "a started goroutine skipped its finally"
    assert set(finals) == started


def test_gomaxprocs_churn_under_load_leaves_no_p_running_that_should_not(rt_params):
    # 20 changes of the P count while pinned, sleeping, syscalling and spawning
    # goroutines run; once they are done, every retired P has stopped (its last G may
    # end in a loop callback, its last sleeper in a timer), so the P threads are procs'.
    procs, kind = rt_params
    rnd = random.Random(7)

    async def pinned(stop):
        await asyncio.sleep(0.001)  # waits on its P's loop: pinned there from now on
        while not stop.is_set():
            await asyncio.sleep(0.001)

    async def sleeper(stop):
        while not stop.is_set():
            await mnsched.sleep(0.001)

    async def syscaller(stop):
        while not stop.is_set():
            await mnsched.syscall(time.sleep, 0.001)

    async def spawner(stop):
        while not stop.is_set():
            await mnsched.go(mnsched.sleep(0))

    async def main():
        stop = threading.Event()
        kinds = (pinned, sleeper, syscaller, spawner)
        gs = [mnsched.go(f(stop)) for f in kinds for _ in range(4)]
        for _ in range(20):
            mnsched.gomaxprocs(rnd.randint(1, 6))
            await mnsched.sleep(0.005)
        mnsched.gomaxprocs(procs)
        stop.set()
        for g in gs:
            await g
        sched = mnsched.current_runtime().sched
        retired = [p.thread for p in sched.retired if p.thread is not None]
        for t in retired:
            await mnsched.syscall(t.join, 10)
        running = {p.thread for p in sched.allp if p.thread is not None}
        return [t for t in retired if t.is_alive() and t not in running]

    assert mnsched.run(main(), procs=procs, loop=kind) == []
