"""The two G drivers: the C core (mnsched/_core.c) and the pure-Python reference
(MNSCHED_PURE=1). The whole suite runs on both in CI; this file checks what is about the
drivers themselves: they behave identically on the same programs, the join counters,
and that finished goroutines leave nothing behind."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import random
import subprocess
import sys

import pytest

import mnsched
import mnsched.g as gmod
import mnsched.p as pmod
from conftest import at_procs
from mnsched.serve import spawn_here

HERE = os.path.dirname(os.path.abspath(__file__))


def test_stats_name_the_driver(run):
    async def main():
        return mnsched.stats()["driver"]

    built = importlib.util.find_spec("mnsched._core") is not None
    want = "c" if built and os.environ.get("MNSCHED_PURE") != "1" else "python"
    assert run(main()) == want == gmod.DRIVER


def test_bad_mnsched_pure_is_refused():
    out = subprocess.run(
        [sys.executable, "-c", "import mnsched"],
        env={**os.environ, "MNSCHED_PURE": "yes"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "MNSCHED_PURE='yes': set it to 1 for the pure-Python driver" in out.stderr


@at_procs(1)
def test_spawn_then_await_in_order_joins_inline(run, monkeypatch):
    # The join-miss bug: taking the head of the queue made every later G look
    # recent, and their joins missed (the waiter parked). Every join here must run its
    # child inline: children are spawned, then awaited in spawn order (the queue's head).
    # More than a local queue holds (256) overflow to the global queue and come back in
    # batches: those must be found too, or awaited after they ran, never missed.
    monkeypatch.setattr(pmod, "BATCH_TIME", 1e9)  # a join past the batch's end hands over

    async def child(i):
        return i

    async def spawn_and_await(n):
        before = mnsched.stats()
        gs = [mnsched.go(child(i)) for i in range(n)]
        total = 0
        for g in gs:
            total += await g
        assert total == n * (n - 1) // 2
        after = mnsched.stats()
        return (
            after["joins_inline"] - before["joins_inline"],
            after["join_misses"] - before["join_misses"],
        )

    async def main():
        return await spawn_and_await(200), await spawn_and_await(2_000)

    few, many = run(main(), sysmon=False)  # sysmon may hand a slow spawner's queue away
    assert few == (200, 0)
    assert many[1] == 0 and many[0] > 1_000, many


@at_procs(1)
@pytest.mark.parametrize("order", ["spawn order", "reverse", "shuffled"])
def test_fork_join_behind_other_work_joins_inline(run, monkeypatch, order):
    # A fork-join parent awaits its newest children while older Gs wait at the head of
    # the queue: each child is taken from the queue's tail window, in any order, and the
    # rest keep their order (the C ring moves the shorter side over the gap).
    monkeypatch.setattr(pmod, "BATCH_TIME", 1e9)
    ran: list[int] = []

    async def filler(i):
        ran.append(i)

    async def child(i):
        return i

    async def main():
        fillers = [mnsched.go(filler(i)) for i in range(20)]  # queued ahead, not awaited yet
        before = mnsched.stats()
        gs = [mnsched.go(child(i)) for i in range(12)]
        idx = list(range(12))
        if order == "reverse":
            idx.reverse()
        elif order == "shuffled":
            random.Random(7).shuffle(idx)
        got = [await gs[i] for i in idx]
        after = mnsched.stats()
        assert ran == []  # the joins ran inline, inside this step
        for f in fillers:
            await f
        return got, idx, [after[k] - before[k] for k in ("joins_inline", "join_misses")]

    got, idx, joins = run(main(), sysmon=False)
    assert got == idx
    assert ran == list(range(20))  # the queue kept its order around the taken children
    assert joins == [12, 0]


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads Linux's /proc")
def test_finished_goroutines_leave_nothing(run):
    # Spawn and finish goroutines in rounds: once warm, neither the number of objects the
    # collector tracks nor the resident memory grows with the goroutines (a reference
    # the driver leaked, or a cycle it left per G, would add a G, its coroutine and its
    # context per goroutine: 20,000 objects and megabytes a round).
    rounds, per_round = 6, 20_000

    async def leaf(i):
        return i

    async def main():
        counts = []
        for _ in range(rounds):
            gs = [mnsched.go(leaf(i)) for i in range(per_round)]
            for g in gs:
                await g
            del gs
            gc.collect()
            counts.append((len(gc.get_objects()), _rss_kib()))
        return counts

    counts = run(main())
    objects, rss = zip(*counts[2:], strict=True)
    assert max(objects) - objects[0] < per_round // 20, counts
    if "libasan" not in os.environ.get("LD_PRELOAD", ""):  # ASan holds freed memory back
        assert max(rss) - rss[0] < 16 * 1024, counts


# -- differential: the same seeded programs print the same on both drivers ---------------


class _EventLog:
    """An instrument: every scheduling event, in order, by goroutine name."""

    def __init__(self, out: list[str]) -> None:
        self.out = out

    def spawned(self, g: mnsched.G[object]) -> None:
        self.out.append(f"spawned {g.name}")

    def before_step(self, g: mnsched.G[object], p: object) -> None:
        self.out.append(f"step {g.name}")

    def after_step(self, g: mnsched.G[object], p: object) -> None:
        self.out.append(f"stepped {g.name}")

    def parked(self, g: mnsched.G[object], reason: str) -> None:
        self.out.append(f"parked {g.name} {reason}")

    def readied(self, g: mnsched.G[object]) -> None:
        self.out.append(f"readied {g.name}")

    def exited(self, g: mnsched.G[object]) -> None:
        self.out.append(f"exited {g.name}")


def program(seed: int, events: bool = False) -> list[str]:
    """A seeded random program (spawns, inline and parked joins, unbuffered and buffered
    channels, select, gosched, asyncio futures resolved by the loop, goroutines started
    from a loop callback with spawn_here, cancellations, failures) at procs=1 without
    sysmon, whose batches never end, so that its interleaving depends only on the
    scheduler's rules: what it prints is what the driver did. With events, it prints
    every scheduling event too (an instrument's calls), in order."""
    pmod.BATCH_TIME = pmod.TIME_SLICE = 1e9
    rnd = random.Random(seed)
    out: list[str] = []

    async def worker(k: int, ch: mnsched.Chan[int], plan: list[str]) -> int:
        acc = 0
        try:
            for op in plan:
                if op == "send":
                    await ch.send(k)
                elif op == "recv":
                    v, ok = await ch.recv_ok()
                    out.append(f"w{k} recv {v} {ok}")
                    acc += v if ok else 0
                elif op == "yield":
                    await mnsched.gosched()
                elif op == "loop":
                    await asyncio.sleep(0)  # a bare yield: resumed from a loop callback
                elif op == "fail":
                    raise ValueError(f"w{k}")
                elif op == "select":
                    case = mnsched.Recv(ch)
                    fired = await mnsched.select(case, default=None)
                    out.append(f"w{k} select {fired is case} {case.value} {case.ok}")
                elif op == "future":  # an asyncio future the loop resolves: pins it here
                    loop = asyncio.get_running_loop()
                    fut = loop.create_future()
                    loop.call_soon(lambda f=fut, v=k: f.done() or f.set_result(v))
                    out.append(f"w{k} future {await fut}")
                elif op == "here":  # a goroutine a loop callback starts on this P
                    done = asyncio.get_running_loop().create_future()
                    asyncio.get_running_loop().call_soon(
                        lambda d=done, v=k: (
                            d.done() or d.set_result(spawn_here(helper(v), name=f"h{v}"))
                        )
                    )
                    out.append(f"w{k} here {await (await done)}")
            return acc + k
        finally:
            out.append(f"w{k} exits")

    async def helper(k: int) -> int:
        out.append(f"h{k} runs")
        await mnsched.gosched()
        return -k

    async def main() -> None:
        chans = [mnsched.Chan(rnd.choice((0, 0, 1, 4))) for _ in range(3)]
        gs = []
        for k in range(rnd.randint(5, 40)):
            plan = [
                rnd.choice(("send", "recv", "yield", "loop", "select", "fail", "future", "here"))
                for _ in range(rnd.randint(0, 4))
            ]
            gs.append(mnsched.go(worker(k, rnd.choice(chans), plan), name=f"w{k}"))
            if rnd.random() < 0.3:
                await mnsched.gosched()
        for _ in range(len(gs) // 4):
            g = rnd.choice(gs)
            out.append(f"cancel {g.name} {g.cancel()}")
        for ch in chans:
            ch.close()
        for g in rnd.sample(gs, len(gs)):
            try:
                out.append(f"{g.name} = {await g}")
            except BaseException as e:  # CancelledError too: it is what is compared
                out.append(f"{g.name} raised {type(e).__name__}")

    instruments = [_EventLog(out)] if events else []
    rt = mnsched.Runtime(procs=1, sysmon=False, instruments=instruments)
    with rt:
        rt.go(main(), name="main").result(timeout=60)
    return out


def timed_program(seed: int) -> list[str]:
    """A seeded random program of blocking calls (syscall) and sleeps, beside channel
    operations: when each finishes depends on the clock, so what is compared is each
    goroutine's own record (its operations touch only its own channel) and its result,
    goroutine by goroutine, at procs 2 with sysmon."""
    rnd = random.Random(seed)
    logs: dict[int, list[str]] = {}

    async def worker(k: int, plan: list[tuple[str, float]]) -> int:
        log = logs[k] = []
        ch: mnsched.Chan[int] = mnsched.Chan(2)
        for op, t in plan:
            if op == "syscall":
                log.append(f"syscall {await mnsched.syscall(pow, k, 2)}")
            elif op == "sleep":
                log.append(f"slept {await mnsched.sleep(t, k)}")
            elif op == "send":
                try:
                    ch.try_send(k)
                    log.append("sent")
                except mnsched.WouldBlock:
                    log.append("full")
            else:
                got = await mnsched.select(mnsched.Recv(ch), default=None)
                log.append(f"poll {got is not None}")
        return k * k

    async def main() -> list[str]:
        plans = [
            [
                (rnd.choice(("syscall", "sleep", "send", "poll")), rnd.random() / 500)
                for _ in range(5)
            ]
            for _ in range(rnd.randint(5, 30))
        ]
        gs = [mnsched.go(worker(k, plan)) for k, plan in enumerate(plans)]
        results = [await g for g in gs]
        return [f"w{k}: {' '.join(logs[k])} -> {r}" for k, r in enumerate(results)]

    return mnsched.run(main(), procs=2)


def _both_drivers(kind: str, seed: int) -> dict[str, str]:
    outs = {}
    for pure in ("0", "1"):
        res = subprocess.run(
            [sys.executable, __file__, kind, str(seed)],
            env={**os.environ, "MNSCHED_PURE": pure},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        outs[pure] = res.stdout
    assert len(outs["0"].splitlines()) > 5  # the program did something
    return outs


_NEEDS_CORE = pytest.mark.skipif(
    importlib.util.find_spec("mnsched._core") is None, reason="the C core is not built here"
)


@_NEEDS_CORE
@pytest.mark.parametrize("seed", range(12))
def test_drivers_print_the_same(seed):
    outs = _both_drivers("program", seed)
    assert outs["0"] == outs["1"]


@_NEEDS_CORE
@pytest.mark.parametrize("seed", range(6))
def test_drivers_fire_the_same_instrument_events_in_the_same_order(seed):
    outs = _both_drivers("events", seed)
    assert outs["0"] == outs["1"]
    assert "parked" in outs["0"] and "readied" in outs["0"]


@_NEEDS_CORE
@pytest.mark.parametrize("seed", range(6))
def test_drivers_agree_on_blocking_calls_and_sleeps(seed):
    outs = _both_drivers("timed", seed)
    assert outs["0"] == outs["1"]


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    kind, seed = sys.argv[1], int(sys.argv[2])
    if kind == "timed":
        print("\n".join(timed_program(seed)))
    else:
        print("\n".join(program(seed, events=kind == "events")))


# -- the driver's lock (g.new_lock: the C core's Lock, or threading.Lock): threading's
# semantics either way --------------------------------------------------------------


def test_the_drivers_lock_behaves_as_threading_lock():
    import threading

    from mnsched.lockrank import RankedLock

    lock = gmod.new_lock()
    assert gmod.LockType in (type(lock), RankedLock)  # park locks: these, or checked ones
    assert not lock.locked() and "unlocked" in repr(lock)
    assert lock.acquire() is True and lock.locked() and "locked" in repr(lock)
    assert lock.acquire(False) is False
    assert lock.acquire(blocking=False) is False
    assert lock.acquire(timeout=0.01) is False
    with pytest.raises(ValueError):
        lock.acquire(False, 1)
    with pytest.raises(ValueError):
        lock.acquire(timeout=-2)
    released = threading.Event()

    def release_elsewhere() -> None:  # any thread may release it
        lock.release()
        released.set()

    t = threading.Thread(target=release_elsewhere)
    t.start()
    t.join()
    assert released.is_set() and not lock.locked()
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        lock.release()
    with lock:
        assert lock.locked()
    assert not lock.locked()
    import weakref

    assert weakref.ref(lock)() is lock


def test_a_blocked_acquire_lets_a_signal_handler_run():
    # As threading.Lock's: the main thread waiting for a lock still runs a signal handler
    # (and its exception ends the wait), so Ctrl-C reaches a program stuck on one.
    import signal
    import threading

    lock = gmod.new_lock()
    lock.acquire()
    waiting, interrupted = threading.Event(), threading.Event()

    def handler(signum: int, frame: object) -> None:
        if waiting.is_set():  # once
            waiting.clear()
            raise ZeroDivisionError

    def poke(main: int) -> None:  # until the wait has been interrupted: no timing bet
        while not interrupted.wait(0.01):
            signal.pthread_kill(main, signal.SIGUSR1)

    old = signal.signal(signal.SIGUSR1, handler)
    t = threading.Thread(target=poke, args=(threading.get_ident(),))
    t.start()
    try:
        with pytest.raises(ZeroDivisionError):
            waiting.set()
            lock.acquire(timeout=30)
    finally:
        interrupted.set()
        t.join()
        signal.signal(signal.SIGUSR1, old)
        lock.release()


def test_go_is_the_same_function_to_its_callers():
    # The C driver's go() (a Go over api.go) keeps its name, doc and signature.
    import inspect

    params = list(inspect.signature(mnsched.go).parameters)
    assert params == ["coro", "name", "pin", "context"]
    assert mnsched.go.__name__ == "go" and "Spawn a goroutine" in (mnsched.go.__doc__ or "")


def test_go_takes_every_form_from_a_goroutine(run):
    async def double(x: int) -> int:
        return 2 * x

    spawn = mnsched.go(double)  # as a decorator

    async def main():
        gs = [
            mnsched.go(double(1)),
            mnsched.go(double(2), name="two"),
            mnsched.go(double(3), name=None),
            mnsched.go(double(4), pin=True),
            mnsched.go(coro=double(5)),
            spawn(6),
        ]
        assert gs[1].name == "two"
        with pytest.raises(TypeError, match="a goroutine needs a coroutine"):
            mnsched.go(42)
        return [await g for g in gs]

    assert run(main()) == [2, 4, 6, 8, 10, 12]


def test_the_built_core_is_not_older_than_its_source():
    # An editable install keeps the built module beside _core.c, and the extension is
    # optional: a build that failed leaves the old module in place, silently.
    spec = importlib.util.find_spec("mnsched._core")
    package = os.path.dirname(gmod.__file__)
    source = os.path.join(package, "_core.c")
    if not os.path.exists(os.path.join(package, os.pardir, "setup.py")):
        pytest.skip("an installed copy, not a source tree: pip built what it installed")
    if spec is None or spec.origin is None:
        pytest.skip("no C core built here (the pure driver runs)")
    assert os.path.getmtime(spec.origin) >= os.path.getmtime(source), (
        f"{spec.origin} is older than {source}: the last build failed or was not run; "
        "rebuild with 'pip install -e .' and read its compiler errors"
    )
