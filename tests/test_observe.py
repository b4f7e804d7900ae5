"""Seeing inside: goroutine ids, the goroutine dump, SIGQUIT, instruments, the execution
trace, metrics, and debug output through logging."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

import mnsched
from conftest import at_procs, burn
from mnsched import Chan, trace
from mnsched.goroutines import format_dump
from mnsched.m import m as mthread

ROOT = Path(__file__).resolve().parent.parent
HERE = __file__


def _line_of(marker: str) -> int:
    """The line of this file that holds marker (the spawn sites the dump must name)."""
    for i, text in enumerate(Path(HERE).read_text().splitlines(), 1):
        if marker in text and "_line_of" not in text:
            return i
    raise AssertionError(marker)


# -- goroutine ids --------------------------------------------------------------------------


def test_goroutine_ids_follow_spawn_order(run):
    async def leaf() -> None:
        await mnsched.sleep(0)

    async def main() -> list[int]:
        gs = [mnsched.go(leaf()) for _ in range(50)]  # the C fast path, in the C driver
        gs += [mnsched.go(leaf(), name=f"n{i}") for i in range(5)]
        gs += [mnsched.go(leaf(), pin=True) for _ in range(5)]  # newproc in Python
        for g in gs:
            await g
        return [g.id for g in gs]

    ids = run(main())
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_goroutine_ids_are_unique_across_threads(runtime):
    async def leaf() -> int:
        return 0

    ids: list[int] = []
    lock = threading.Lock()

    def spawn_many() -> None:
        gs = [runtime.go(leaf()) for _ in range(200)]
        for g in gs:
            g.result(timeout=10)
        with lock:
            ids.extend(g.id for g in gs)

    threads = [threading.Thread(target=spawn_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(ids) == 800 and len(set(ids)) == 800


# -- the goroutine dump -----------------------------------------------------------------


async def _recv_forever(ch: Chan[int]) -> None:
    await ch.recv()


async def _sleep_long() -> None:
    await mnsched.sleep(60)


async def _block(ev: threading.Event) -> None:
    await mnsched.syscall(ev.wait, 30)


async def _aio_sleep() -> None:
    await asyncio.sleep(60)


async def _spin(started: threading.Event, stop: threading.Event) -> None:
    started.set()
    while not stop.wait(0.001):  # a step that does not return: "running" elsewhere
        pass


def test_dump_lists_every_goroutine_with_reason_and_site(runtime, procs):
    # main is spawned from this thread, so it is not pinned: when the spinning goroutine
    # holds main's P, sysmon hands main to another P and main carries on there.
    async def main() -> tuple[list[mnsched.GoroutineInfo], str]:
        ch: Chan[int] = Chan()
        ev, started, stop = threading.Event(), threading.Event(), threading.Event()
        rx = mnsched.go(_recv_forever(ch), name="rx")  # SITE:rx
        sl = mnsched.go(_sleep_long(), name="sleeper")  # SITE:sleeper
        bl = mnsched.go(_block(ev), name="blocker")
        ai = mnsched.go(_aio_sleep(), name="aio")
        spin = mnsched.go(_spin(started, stop), name="spin") if procs > 1 else None
        queued = None
        try:
            # Everyone reaches its wait: rx, sleeper, aio at their first step, the
            # blocker as its call is handed to an M thread.
            for g, status in ((rx, "parked"), (sl, "parked"), (ai, "waiting"), (bl, "syscall")):
                while g.status != status:
                    await mnsched.syscall(time.sleep, 0.001)
            if spin is not None:
                await mnsched.syscall(started.wait, 10)
            # A runnable one: spawned, and not run before the dump (no wait in between).
            queued = mnsched.go(_sleep_long(), name="queued")
            infos = mnsched.stacks()
            text = format_dump(infos)
        finally:
            stop.set()
            ev.set()
            for g in (rx, sl, bl, ai, queued, spin):
                if g is not None:
                    g.cancel()
        return infos, text

    p0 = runtime.sched.allp[0]
    made: list[asyncio.Task[None]] = []
    ready = threading.Event()

    def make_task() -> None:  # a plain task on P0's loop
        made.append(p0.loop.create_task(_plain_sleep(), name="plain"))
        ready.set()

    p0.loop.call_soon_threadsafe(make_task)
    assert ready.wait(10)
    try:
        infos, text = runtime.go(main(), name="main").result(timeout=60)
    finally:
        p0.loop.call_soon_threadsafe(made[0].cancel)
    by = {i.name: i for i in infos}
    me = by["main"]
    assert me.state == "running" and "main" in [f.name for f in me.stack]
    assert (by["rx"].state, by["rx"].wait_reason) == ("parked", "chan receive")
    assert (by["sleeper"].state, by["sleeper"].wait_reason) == ("parked", "sleep")
    assert (by["blocker"].state, by["blocker"].wait_reason) == ("syscall", "syscall")
    assert by["blocker"].p is None  # a blocking call holds no P
    assert (by["aio"].state, by["aio"].wait_reason) == ("waiting", "asyncio future")
    assert by["aio"].pinned and by["aio"].p is not None
    assert by["queued"].state == "runnable" and by["queued"].wait_reason is None
    if procs > 1:
        assert by["spin"].state == "running" and by["spin"].p != me.p
        assert "_spin" in [f.name for f in by["spin"].stack]
    for name in ("rx", "sleeper", "blocker", "aio"):
        assert by[name].since is not None and 0 <= by[name].since < 30
        assert by[name].created_by == me.id
    assert by["rx"].created_at == (HERE, _line_of("SITE:rx"))
    assert by["sleeper"].created_at == (HERE, _line_of("SITE:sleeper"))
    assert [f.name for f in by["rx"].stack] == ["_recv_forever"]  # mnsched's frames left out
    tasks = [i for i in infos if i.task]
    assert [i.name for i in tasks] == ["plain"] and tasks[0].p == 0
    assert tasks[0].stack[0].name == "_plain_sleep"
    ids = [i.id for i in infos if not i.task]
    assert ids == sorted(ids)  # spawn order
    assert f"goroutine {by['rx'].id} 'rx' [chan receive, " in text
    assert f"created in goroutine {me.id} at {HERE}:{_line_of('SITE:rx')}" in text
    assert "task 'plain' [asyncio task on P0]" in text


async def _plain_sleep() -> None:
    await asyncio.sleep(60)


def test_dump_writes_to_the_file_given(run):
    import io

    async def main() -> str:
        g = mnsched.go(_sleep_long(), name="napper")
        while g.status != "parked":
            await mnsched.gosched()
        out = io.StringIO()
        mnsched.dump(out)
        g.cancel()
        return out.getvalue()

    text = run(main())
    assert text.startswith("mnsched: ") and "'napper' [sleep, " in text


def _default_sigquit() -> None:
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def test_sigquit_prints_the_dump_and_the_program_carries_on(tmp_path):
    script = tmp_path / "quit.py"
    script.write_text(
        "import os, signal, mnsched\n"
        "async def napper():\n"
        "    await mnsched.sleep(60)\n"
        "async def main():\n"
        "    g = mnsched.go(napper(), name='napper')\n"
        "    while g.status != 'parked':\n"
        "        await mnsched.gosched()\n"
        "    os.kill(os.getpid(), signal.SIGQUIT)\n"
        "    await mnsched.syscall(lambda: None)\n"  # a turn for the handler to run
        "    g.cancel()\n"
        "    print('carried on')\n"
        "mnsched.run(main(), procs=2)\n"
    )
    env = {**os.environ, "MNSCHED_DEBUG": "sigquit"}
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "carried on" in r.stdout
    assert "'napper' [sleep, " in r.stderr and "goroutine 1 " in r.stderr
    # Without the option, SIGQUIT keeps its default meaning (the process ends).
    # (A shell starts background jobs with SIGQUIT ignored, and children inherit that.)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path, env={k: v for k, v in os.environ.items()
                                                      if k != "MNSCHED_DEBUG"},
                       preexec_fn=_default_sigquit)  # fmt: skip
    assert r.returncode == -signal.SIGQUIT


def test_sigquit_handler_is_restored_at_close():
    before = signal.getsignal(signal.SIGQUIT)
    with mnsched.Runtime(procs=1, debug="sigquit"):
        assert signal.getsignal(signal.SIGQUIT) is not before
    assert signal.getsignal(signal.SIGQUIT) is before


# -- instruments ----------------------------------------------------------------------------


class Recorder:
    """Counts every hook, per goroutine, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[tuple[str, int]] = Counter()
        self.stolen = 0
        self.steps_open: Counter[int] = Counter()

    def _count(self, hook: str, g: Any) -> None:
        with self.lock:
            self.calls[(hook, g.id)] += 1

    def spawned(self, g: Any) -> None:
        self._count("spawned", g)

    def exited(self, g: Any) -> None:
        assert g.done()
        self._count("exited", g)

    def before_step(self, g: Any, p: Any) -> None:
        assert p.curg is g
        with self.lock:
            self.steps_open[g.id] += 1

    def after_step(self, g: Any, p: Any) -> None:
        with self.lock:
            self.steps_open[g.id] -= 1

    def parked(self, g: Any, reason: str) -> None:
        assert isinstance(reason, str)
        self._count("parked", g)

    def readied(self, g: Any) -> None:
        self._count("readied", g)

    def stolen(self, gs: list[Any], thief: Any, victim: Any) -> None:
        assert thief is not victim
        with self.lock:
            self.stolen += len(gs)

    def of(self, hook: str) -> Counter[int]:
        return Counter({gid: n for (h, gid), n in self.calls.items() if h == hook})


async def _fan_out(n: int) -> list[int]:
    """n goroutines that pass tokens through channels (parks and wake-ups across Ps)."""
    ch: Chan[int] = Chan()
    done: Chan[int] = Chan(n)

    async def relay(i: int) -> None:
        v = await ch.recv()
        await mnsched.sleep(0)
        await done.send(v + i)

    gs = [mnsched.go(relay(i)) for i in range(n)]
    for i in range(n):
        await ch.send(i)
    total = [await done.recv() for _ in range(n)]
    for g in gs:
        await g
    return [g.id for g in gs] + [sum(total)]


def test_instruments_see_every_spawn_and_exit_once(rt_params):
    nprocs, loop = rt_params
    rec = Recorder()
    with mnsched.Runtime(procs=nprocs, loop=loop, instruments=[rec]) as rt:
        ids = rt.go(_fan_out(300)).result(timeout=60)[:-1]
    spawned, exited = rec.of("spawned"), rec.of("exited")
    assert set(ids) <= set(spawned)
    assert all(n == 1 for n in spawned.values()) and spawned == exited
    assert all(n == 0 for n in rec.steps_open.values())  # before/after pair up
    parked, readied = rec.of("parked"), rec.of("readied")
    assert sum(parked.values()) >= 300  # every relay parked in recv at least
    assert parked == readied  # each wait ended exactly once


def test_a_failing_instrument_is_removed_and_logged(caplog):
    class Broken:
        def spawned(self, g: Any) -> None:
            raise ValueError("instrument bug")

    async def main() -> int:
        a = mnsched.go(asyncio.sleep(0, 1))
        b = mnsched.go(asyncio.sleep(0, 2))
        return await a + await b

    rt = mnsched.Runtime(procs=1)
    broken = Broken()
    rt.instrument(broken)
    with caplog.at_level(logging.ERROR, logger="mnsched"), rt:
        assert rt.go(main()).result(timeout=10) == 3
    assert rt.sched.instr is None
    assert sum("instrument bug" in r.exc_text for r in caplog.records if r.exc_text) == 1


def test_no_instrument_means_no_hook_object(runtime):
    assert runtime.sched.instr is None
    rec = Recorder()
    runtime.instrument(rec)
    assert runtime.sched.instr is not None
    runtime.uninstrument(rec)
    assert runtime.sched.instr is None


# -- the execution trace --------------------------------------------------------------------


def _check_schema(events: list[dict[str, Any]]) -> None:
    depth: Counter[tuple[int, int]] = Counter()
    for e in events:
        assert e["ph"] in {"B", "E", "i", "s", "f", "M", "C"}, e
        assert isinstance(e["pid"], int)
        if e["ph"] != "C":
            assert isinstance(e["tid"], int)
        if e["ph"] != "M":
            assert isinstance(e["ts"], float) and e["ts"] >= 0
        if e["ph"] == "B":
            depth[(e["pid"], e["tid"])] += 1
        elif e["ph"] == "E":
            depth[(e["pid"], e["tid"])] -= 1
            assert depth[(e["pid"], e["tid"])] >= 0, "an end without a beginning"
    assert all(n == 0 for n in depth.values())
    flows = Counter((e["ph"], e["id"]) for e in events if e["ph"] in "sf")
    starts = {i for (ph, i) in flows if ph == "s"}
    ends = {i for (ph, i) in flows if ph == "f"}
    assert ends <= starts


def _count(events: list[dict[str, Any]], cat: str, ph: str = "i") -> int:
    return sum(1 for e in events if e.get("cat") == cat and e["ph"] == ph)


def test_trace_of_a_known_program_has_exactly_its_events(rt_params, tmp_path):
    nprocs, loop = rt_params

    async def child(ch: Chan[int]) -> int:
        return await ch.recv()

    async def main() -> int:
        trace.start(tmp_path / "t.json")
        ch: Chan[int] = Chan()
        g = mnsched.go(child(ch), name="child", pin=True)  # pinned: it runs on this P
        await ch.send(7)
        v = await g
        trace.stop()
        return v

    assert mnsched.run(main(), procs=nprocs, loop=loop) == 7
    events = json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    _check_schema(events)
    # One spawn (child); main parks once in its send (no receiver yet) and is readied
    # once by the child's receive; the child never waits (the sender is there); it
    # exits; nothing is stolen (it is pinned).
    assert _count(events, "spawn") == 1 and _count(events, "spawn", "s") == 1
    assert _count(events, "spawn", "f") == 1  # the arrow lands on the child's first step
    parks = [e for e in events if e.get("cat") == "park"]
    assert [e["args"]["reason"] for e in parks] == ["chan send"]
    assert _count(events, "wake") == 1
    assert _count(events, "exit") == 1 and _count(events, "steal") == 0
    steps = [e for e in events if e["ph"] == "B" and e.get("cat") == "step"]
    assert [e["name"] for e in steps] == ["child", "G" + str(steps[1]["args"]["goid"])]
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert "P0" in names or any(n.startswith("P") for n in names)


@at_procs(2)
def test_trace_shows_steals_from_a_busy_p(rt_params, tmp_path):
    nprocs, loop = rt_params
    n = 10
    ran_on: list[int] = []
    lock = threading.Lock()
    all_but_one = threading.Event()

    async def leaf() -> None:
        with lock:
            ran_on.append(mthread.p.id)  # type: ignore[union-attr]
            if len(ran_on) == n - 1:
                all_but_one.set()

    async def main() -> dict[str, Any]:
        trace.start(tmp_path / "s.json")
        before = mnsched.stats()["steals"]
        gs = [mnsched.go(leaf()) for _ in range(n)]
        # Hold this P without yielding: the others can only run where P1 steals them
        # (the last one sits in runnext, which thieves leave alone). P1 steps them while
        # this step runs: parallel steps (serial ones wait until sysmon takes the step
        # token from a step this long, and sysmon is off, so that it moves nothing).
        assert all_but_one.wait(20)
        for g in gs:
            await g
        st = mnsched.stats()
        trace.stop()
        return {"steals": st["steals"] - before}

    got = mnsched.run(main(), procs=nprocs, loop=loop, sysmon=False, parallel=True)
    events = json.loads((tmp_path / "s.json").read_text())["traceEvents"]
    _check_schema(events)
    steals = [e for e in events if e.get("cat") == "steal" and e["ph"] == "i"]
    assert len(steals) == got["steals"] >= 1
    assert sum(e["args"]["n"] for e in steals) == n - 1
    assert all(e["args"]["victim"] != e["tid"] for e in steals)
    assert _count(events, "steal", "s") == _count(events, "steal", "f") == len(steals)
    assert _count(events, "spawn") == n and _count(events, "exit") == n


def test_trace_records_blocking_calls_on_m_tracks(run, tmp_path):
    async def main() -> None:
        trace.start(tmp_path / "m.json")
        gs = [mnsched.go(mnsched.syscall(time.sleep, 0.001)) for _ in range(3)]
        for g in gs:
            await g
        trace.stop()

    run(main())
    events = json.loads((tmp_path / "m.json").read_text())["traceEvents"]
    _check_schema(events)
    sys_slices = [e for e in events if e["ph"] == "B" and e.get("cat") == "syscall"]
    assert len(sys_slices) == 3 and all(e["tid"] >= trace.M_TID_BASE for e in sys_slices)
    m_names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert any(name.startswith("M") for name in m_names)
    assert _count(events, "wake") >= 3  # each call's return readies its goroutine


def test_trace_start_twice_and_stop_without_start_say_so():
    trace.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            trace.start()
    finally:
        trace.stop()
    with pytest.raises(RuntimeError, match="no trace is running"):
        trace.stop()


def _trace_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mnsched", "trace", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_trace_cli_runs_a_script(tmp_path):
    out = tmp_path / "wp.json"
    r = _trace_cli("-o", str(out), str(ROOT / "samples" / "worker_pool.py"),
                   "--jobs", "20", "--workers", "4", "--procs", "2")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "20 results" in r.stdout
    events = json.loads(out.read_text())["traceEvents"]
    _check_schema(events)
    assert _count(events, "spawn") >= 6  # 4 workers, the feeder, the closer
    assert sum(1 for e in events if e["ph"] == "B" and e.get("cat") == "syscall") == 20


def test_trace_plot_draws_a_picture(tmp_path):
    png = tmp_path / "wp.png"
    r = _trace_cli("--plot", str(png), "--from", str(ROOT / "docs" / "trace_worker_pool.json"))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = _trace_cli("--from", "x.json")
    assert r.returncode == 2 and "give --plot" in r.stderr


def test_mnsched_trace_env_writes_the_trace_at_exit(tmp_path):
    out = tmp_path / "env.json"
    script = tmp_path / "s.py"
    script.write_text(
        "import mnsched\n"
        "async def leaf(): return 1\n"
        "async def main(): return sum([await mnsched.go(leaf()) for _ in range(5)])\n"
        "print(mnsched.run(main(), procs=1))\n"
    )
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "MNSCHED_TRACE": str(out)})  # fmt: skip
    assert r.returncode == 0 and r.stdout.strip() == "5", r.stderr
    events = json.loads(out.read_text())["traceEvents"]
    _check_schema(events)
    assert _count(events, "spawn") == 6  # main and five leaves


# -- metrics --------------------------------------------------------------------------------


def test_stats_have_per_p_counters_and_histograms(run, procs):
    async def main() -> dict[str, Any]:
        await _fan_out(2000)
        return mnsched.stats()

    # No sysmon: no spare P may take a share of the work (the lists cover running Ps).
    st = run(main(), sysmon=False)
    assert len(st["busy"]) == len(st["parks"]) == len(st["steals_per_p"]) == procs
    # Of each unbuffered send and receive, whoever comes first parks.
    assert sum(st["parks"]) >= 2000 and sum(st["busy"]) > 0
    for key in ("sched_latency", "step_time"):
        h = st[key]
        assert len(h["bounds_us"]) == len(h["counts"]) and h["bounds_us"][-1] == float("inf")
        assert h["bounds_us"] == sorted(h["bounds_us"])
    # Sampled: every 64th readying and every 64th step (over 4,000 of each here).
    assert sum(st["step_time"]["counts"]) >= 4000 // 64 - 4 * procs
    assert sum(st["sched_latency"]["counts"]) >= 4000 // 64 - 4 * procs


def test_prometheus_collector_scrapes_over_http():
    prometheus_client = pytest.importorskip("prometheus_client")
    import mnsched.metrics

    registry = prometheus_client.CollectorRegistry()

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    async def main() -> str:
        mnsched.metrics.register(registry, rt=mnsched.current_runtime())
        await _fan_out(100)
        server = make_server("127.0.0.1", 0, prometheus_client.make_wsgi_app(registry),
                             handler_class=Quiet)  # fmt: skip
        t = threading.Thread(target=server.handle_request)
        t.start()
        try:
            url = f"http://127.0.0.1:{server.server_port}/metrics"
            return await mnsched.syscall(
                lambda: urllib.request.urlopen(url, timeout=10).read().decode()
            )
        finally:
            await mnsched.syscall(t.join, 10)
            server.server_close()

    text = mnsched.run(main(), procs=2)
    samples = {
        line.split(" ")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['mnsched_goroutines_spawned_total{runtime="0"}'] >= 101
    assert samples['mnsched_procs{runtime="0"}'] == 2
    assert 'mnsched_steps_total{p="1",runtime="0"}' in samples
    assert samples['mnsched_sched_latency_seconds_count{runtime="0"}'] > 0
    assert samples['mnsched_step_seconds_bucket{le="+Inf",runtime="0"}'] > 0


# -- debug output through logging -----------------------------------------------------------


def test_schedtrace_goes_to_the_mnsched_logger_when_logging_is_set_up(caplog):
    async def main() -> None:
        await mnsched.sleep(0.3)

    with caplog.at_level(logging.INFO, logger="mnsched"):
        mnsched.run(main(), procs=2, debug="schedtrace=50")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("SCHED ")]
    assert lines and all(r.name == "mnsched" for r in caplog.records)


def test_debug_output_prints_to_stderr_without_logging(tmp_path):
    script = tmp_path / "d.py"
    script.write_text(
        "import mnsched\n"
        "async def main(): await mnsched.sleep(0.3)\n"
        "mnsched.run(main(), procs=1, debug='schedtrace=50')\n"
    )
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0 and "SCHED " in r.stderr


def test_trace_marks_ps_started_and_retired(tmp_path):
    async def main() -> None:
        trace.start(tmp_path / "p.json")
        mnsched.gomaxprocs(3)
        mnsched.gomaxprocs(1)
        trace.stop()

    # Without sysmon: its warm P (kept ready for a stuck spell) would take id 1 first, or
    # not, by timing.
    mnsched.run(main(), procs=1, sysmon=False)
    events = json.loads((tmp_path / "p.json").read_text())["traceEvents"]
    _check_schema(events)
    marks = [(e["tid"], e["args"]["started"]) for e in events if e.get("cat") == "procs"]
    assert sorted(marks) == [(1, False), (1, True), (2, False), (2, True)]


def test_trace_shows_sysmon_handing_off_a_stuck_ps_work(tmp_path):
    async def quick() -> None:
        pass

    async def main() -> int:
        trace.start(tmp_path / "h.json")
        gs = [mnsched.go(quick()) for _ in range(5)]
        burn(0.1)  # a hog: sysmon moves what waits behind it to the other P
        for g in gs:
            await g
        trace.stop()
        return mthread.p.id  # type: ignore[union-attr,no-any-return]

    home = mnsched.run(main(), procs=2)
    events = json.loads((tmp_path / "h.json").read_text())["traceEvents"]
    _check_schema(events)
    handoffs = [e for e in events if e.get("cat") == "handoff"]
    assert handoffs and all(e["tid"] == home and e["args"]["n"] >= 1 for e in handoffs)


def test_a_service_serves_its_goroutine_dump(procs):
    """docs/observability.md's endpoint, under serve_aiohttp."""
    import io

    from aiohttp import web

    from mnsched.serve import serve_aiohttp

    async def goroutines(request: web.Request) -> web.Response:
        out = io.StringIO()
        mnsched.dump(out)
        return web.Response(text=out.getvalue())

    def make_app() -> web.Application:
        app = web.Application()
        app.router.add_get("/debug/goroutines", goroutines)
        return app

    async def main() -> str:
        srv = await serve_aiohttp(make_app)
        napper = mnsched.go(_sleep_long(), name="napper")
        url = f"http://127.0.0.1:{srv.port}/debug/goroutines"
        try:
            body = await mnsched.syscall(lambda: urllib.request.urlopen(url, timeout=10).read())
        finally:
            napper.cancel()
            await srv.close()
            await srv.wait_closed()
        return body.decode()  # type: ignore[no-any-return]

    text = mnsched.run(main(), procs=procs)
    assert "'napper' [sleep, " in text
    assert "in goroutines" in text and "running on P" in text  # the handler itself
