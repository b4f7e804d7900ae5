"""sysmon: nobody waits behind a hog or an unmarked blocking call; reports; schedtrace."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time

import pytest

import mnsched
from conftest import at_procs, burn, burn_until, ticker, wait_until
from mnsched.m import SHARED_SWITCH_INTERVAL

TICKS = 20  # ticks a hog waits for: it ends only if the ticker kept ticking beside it


@pytest.mark.parametrize("hog", ["cpu", "unmarked-sleep"])
@at_procs(1, 2)  # every P stuck, and one of two
def test_a_hog_does_not_stop_a_ticker(run, procs, hog):
    async def main():
        ticks: list[float] = []
        stop = threading.Event()

        async def hogger():
            # Never yields, and returns once the ticker has ticked TICKS times meanwhile
            # (or fails after 20 s): however slow the machine, no timing window to miss.
            start = len(ticks)
            if hog == "cpu":
                burn_until(lambda: len(ticks) >= start + TICKS)
            else:
                deadline = time.monotonic() + 20
                while len(ticks) < start + TICKS and time.monotonic() < deadline:
                    time.sleep(0.005)  # blocking, not through mnsched.syscall
            return len(ticks) - start

        tk = mnsched.go(ticker(0.005, ticks, stop))
        await mnsched.sleep(0.03)
        n = await mnsched.go(hogger())
        stop.set()
        await tk
        return n, mnsched.stats()

    n, st = run(main())
    assert n >= TICKS  # the ticker kept ticking while the hog held its P
    assert st["hogs"] >= 1
    # With one P only sysmon can have moved the ticker. With two it may have been on the
    # other P already, or stolen from the stuck P's queue by the idle one: either is fine.
    if procs == 1:
        assert st["handoffs"] >= 1


@at_procs(1)  # one P: every P is stuck
def test_spare_p_starts_when_every_p_is_stuck_and_retires_after(rt_params):
    _, loop = rt_params
    with mnsched.Runtime(procs=1, loop=loop) as rt:
        slept = threading.Event()

        async def hogger():
            burn_until(slept.is_set)  # the sleeper can run only on a spare P
            return threading.get_ident()

        async def sleeper():
            await mnsched.sleep(0.03)
            slept.set()
            return threading.get_ident()

        h = rt.go(hogger())
        s = rt.go(sleeper())
        assert s.result(timeout=15) != h.result(timeout=15)
        assert slept.is_set()
        st = rt.stats()
        assert st["spare_procs_started"] >= 1
        wait_until(lambda: rt.stats()["running_procs"] == 1)  # the spare retired
        assert rt.gomaxprocs() == 1


@at_procs(1)  # one report is enough
def test_hog_report_names_the_goroutine_and_its_stack(caplog, rt_params):
    _, loop = rt_params

    async def main():
        async def the_hog():
            burn(0.08)

        await mnsched.go(the_hog(), name="cruncher")

    # Logging is set up (pytest's handler): the reports are mnsched's log records.
    with caplog.at_level(logging.WARNING, logger="mnsched"):
        mnsched.run(main(), procs=1, loop=loop, debug="hogs")
    err = "\n".join(r.getMessage() for r in caplog.records if r.name == "mnsched")
    assert re.search(r"P0 stuck for \d+ ms in goroutine <G\d+ 'cruncher'", err), err
    assert "in burn" in err  # where it is stuck
    assert re.search(r"P0 unstuck: goroutine .*'cruncher'.* ran \d+ ms", err), err
    assert err.count("stuck for") == 1  # reported once, not every round


def test_schedtrace_lines_parse(caplog):
    async def main():
        gs = [mnsched.go(mnsched.sleep(0.002 * (i % 10))) for i in range(200)]
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.25:
            await mnsched.sleep(0.01)
        for g in gs:
            await g

    with caplog.at_level(logging.INFO, logger="mnsched"):
        mnsched.run(main(), procs=2, debug="schedtrace=50")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("SCHED")]
    assert len(lines) >= 2
    pat = re.compile(
        r"SCHED (\d+)ms: procs=(\d+) idleprocs=(\d+) threads=(\d+) "
        r"syscalls=(\d+) spinning=(\d+) runqueue=(\d+) \[((?:\d+ ?)*)\]$"
    )
    for ln in lines:
        m = pat.match(ln)
        assert m, ln
        assert int(m.group(2)) >= 2 and len(m.group(8).split()) == int(m.group(2))


@pytest.mark.parametrize(
    "spec, err",
    [
        ("bogus", "unknown debug option"),
        ("schedtrace", "needs a period"),
        ("schedtrace=x", "needs a period"),
    ],
)
def test_bad_debug_options(spec, err):
    with pytest.raises(ValueError, match=err):
        mnsched.Runtime(procs=1, debug=spec)


def test_debug_from_environment(monkeypatch):
    monkeypatch.setenv("MNSCHED_DEBUG", "hogs,schedtrace=1000")
    rt = mnsched.Runtime(procs=1)
    assert rt.debug.hogs and rt.debug.schedtrace_ms == 1000


def test_stats_add_up_with_syscalls(run):
    async def main():
        gs = [mnsched.go(mnsched.syscall(time.sleep, 0.001)) for _ in range(50)]
        gs += [mnsched.go(mnsched.sleep(0.001)) for _ in range(50)]
        for g in gs:
            await g
        return mnsched.stats()

    st = run(main())
    assert st["spawned"] == st["finished"] + st["goroutines"]
    assert st["syscalls"] == 50 and st["in_syscall"] == 0


def test_the_switch_interval_is_short_while_a_runtime_runs_and_put_back_after():
    # Beside a busy P a thread waiting for the GIL must get it: the interval
    # is lowered while any runtime runs, and restored when the last one closes.
    saved = sys.getswitchinterval()
    assert saved > SHARED_SWITCH_INTERVAL

    async def interval():
        return sys.getswitchinterval()

    assert mnsched.run(interval(), procs=2) == SHARED_SWITCH_INTERVAL
    assert sys.getswitchinterval() == saved
    first = mnsched.Runtime(procs=1).start()
    second = mnsched.Runtime(procs=1).start()
    first.close()
    assert sys.getswitchinterval() == SHARED_SWITCH_INTERVAL  # the second still runs
    second.close()
    assert sys.getswitchinterval() == saved


@at_procs(1, 2)
def test_at_most_one_spare_per_p(rt_params):
    # Every goroutine hogs (150 ms of CPU each, twice as many as Ps): each stuck P gets
    # one spare, and a stuck spare none (before, one more spare at every sysmon round
    # while all were stuck: 14 at procs 1 on a busy host).
    procs, loop = rt_params
    with mnsched.Runtime(procs=procs, loop=loop) as rt:
        most = [0]
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                most[0] = max(most[0], rt.stats()["running_procs"])
                time.sleep(0.002)

        async def hog() -> None:
            end = time.thread_time() + 0.15
            while time.thread_time() < end:
                pass

        t = threading.Thread(target=watch)
        t.start()
        try:
            gs = [rt.go(hog()) for _ in range(2 * procs + 2)]
            for g in gs:
                g.result(timeout=60)
        finally:
            stop.set()
            t.join()
        assert rt.stats()["spare_procs_started"] >= 1  # the point: spares were needed
    assert most[0] <= 2 * procs
