"""What must never escape: a goroutine's KeyboardInterrupt in an embedded
runtime, a signal handler's exception while every goroutine is parked, running out of fds
and threads, memory kept after goroutines end, a Ctrl-C behind a CPU hog, an internal
failure. Each probe at procs 1, 2 and 4 on both loops."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest
from churn import churn_round

import mnsched
from conftest import at_procs, burn_until, default_sigint, wait_until
from mnsched import trace
from mnsched.errors import InternalError
from mnsched.g import DRIVER
from mnsched.p import P
from mnsched.runtime import ABANDON_GRACE


def _fatal_program(exc_type: type[BaseException]):
    """waiter(ch) parks on ch for ever (its finally must run once); raiser() raises
    exc_type once waiter is about to park."""
    finals: list[str] = []
    parking: mnsched.Chan[None] = mnsched.Chan(1)

    async def waiter(ch: mnsched.Chan[int]) -> None:
        try:
            await parking.send(None)
            await ch.recv()
        finally:
            finals.append("waiter")

    async def raiser() -> None:
        await parking.recv()
        raise exc_type()

    return waiter, raiser, finals


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_a_goroutines_interrupt_ends_a_started_runtime(rt_params, exc_type):
    # As run(): every goroutine is cancelled (its finally runs once), go() refuses with
    # the reason, and close() raises the interrupt to the host.
    procs, kind = rt_params
    waiter, raiser, finals = _fatal_program(exc_type)
    rt = mnsched.Runtime(procs=procs, loop=kind).start()
    try:
        ch: mnsched.Chan[int] = mnsched.Chan()
        w = rt.go(waiter(ch))
        rt.go(raiser())
        assert rt.sched.all_done.wait(10)
        assert w.cancelled() and finals == ["waiter"]

        async def late() -> None:
            pass

        coro = late()
        with pytest.raises(mnsched.RuntimeClosedError, match=exc_type.__name__) as refused:
            rt.go(coro)
        assert isinstance(refused.value.__cause__, exc_type)
    finally:
        with pytest.raises(exc_type):
            rt.close()
    rt.close()  # closed: idempotent, says nothing more
    assert finals == ["waiter"]


@pytest.mark.parametrize("attach", [False, True])
def test_a_goroutines_interrupt_reaches_async_with(rt_params, attach):
    procs, kind = rt_params
    waiter, raiser, finals = _fatal_program(KeyboardInterrupt)
    reached: list[str] = []

    async def host() -> None:
        async with mnsched.Runtime(procs=procs, loop=kind, attach=attach) as rt:
            ch: mnsched.Chan[int] = mnsched.Chan()
            w = rt.go(waiter(ch))
            rt.go(raiser())
            with pytest.raises(asyncio.CancelledError):
                await w
            reached.append("cancelled")
        reached.append("after aclose")  # never: aclose raises

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(host())
    assert reached == ["cancelled"] and finals == ["waiter"]


HUNG_TESTS = """
import threading
import pytest
import mnsched

@pytest.mark.mnsched(procs={procs}, loop="{kind}")
async def test_hangs_parked():
    threading.Thread(target=threading.Event().wait, args=(30,), daemon=True).start()
    await mnsched.Chan().recv()  # a plain thread might send: no deadlock to report

@pytest.mark.mnsched(procs={procs}, loop="{kind}")
async def test_hangs_in_a_blocking_call():
    await mnsched.syscall(threading.Event().wait, 30)

@pytest.mark.mnsched(procs={procs}, loop="{kind}")
async def test_after_them_runs():
    assert await mnsched.go(mnsched.sleep(0, "fine")) == "fine"
"""


def test_pytest_timeout_fails_a_hung_test_under_the_plugin(pytester, rt_params):
    # pytest-timeout's alarm handler raises Failed while the test's goroutine is parked:
    # the test fails with it, promptly, and the next test runs.
    procs, kind = rt_params
    pytester.makepyfile(test_hung=HUNG_TESTS.format(procs=procs, kind=kind))
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--timeout=1", "--timeout-method=signal", timeout=60
    )
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(["*Timeout*"])
    assert result.duration < 8, result.duration  # each hung test ends ~1 s after its alarm


class _Proxy:
    """A permissive proxy (every attribute is a hook) whose hooks all raise."""

    def __getattr__(self, name: str):
        def hook(*args: object) -> None:
            raise RuntimeError(f"proxy hook {name}")

        return hook


def test_a_proxy_instrument_is_not_trusted(rt_params, caplog):
    # Its flag-like attributes answer anything: it gets the guarded fan-out, which logs
    # its failure and removes it; the program is unaffected.
    procs, kind = rt_params

    async def leaf() -> int:
        return 1

    async def main() -> int:
        return sum([await mnsched.go(leaf()) for _ in range(100)])

    with mnsched.Runtime(procs=procs, loop=kind, instruments=[_Proxy()]) as rt:
        assert rt.go(main()).result(timeout=10) == 100
    assert "proxy hook" in caplog.text


def _break_every_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: P) -> None:
        raise RuntimeError("the scheduler is broken")

    monkeypatch.setattr(P, "_schedule", broken)


def test_a_broken_scheduler_ends_run_at_once(rt_params, monkeypatch):
    # Every P's scheduler fails from now on (main's too): run() ends with the
    # InternalError within EXIT_GRACE-ish, not after waiting for goroutines nobody runs.
    procs, kind = rt_params

    async def main() -> None:
        _break_every_scheduler(monkeypatch)
        await mnsched.sleep(0.01)  # main's wake-up needs its P's scheduler

    start = time.monotonic()
    with pytest.raises(InternalError, match="scheduler failed"):
        mnsched.run(main(), procs=procs, loop=kind)
    assert time.monotonic() - start < 2 * ABANDON_GRACE + 2


def test_a_broken_scheduler_ends_close_at_once(rt_params, monkeypatch, caplog):
    procs, kind = rt_params
    rt = mnsched.Runtime(procs=procs, loop=kind).start()
    parked: mnsched.Chan[None] = mnsched.Chan(1)

    async def waiter() -> None:
        await parked.send(None)
        await mnsched.Chan().recv()

    g = rt.go(waiter())
    parked.recv_blocking(timeout=10)
    _break_every_scheduler(monkeypatch)
    rt.go(mnsched.sleep(0))  # a P wakes to run it, and its scheduler fails
    start = time.monotonic()
    with pytest.raises(InternalError, match="scheduler failed"):
        rt.close()
    assert time.monotonic() - start < 2 * ABANDON_GRACE + 2
    # Cancelled, or (its P broken) reported as left behind, with where it waits.
    assert g.cancelled() or f"{g!r}" in caplog.text
    with pytest.raises(mnsched.RuntimeClosedError):
        rt.go(mnsched.sleep(0))


# -- signals and files the runtime touches --------------------------------------------------


def test_run_leaves_a_sigint_handler_the_program_installed(run):
    def mine(signum: int, frame: object) -> None:
        pass

    async def main() -> None:
        signal.signal(signal.SIGINT, mine)

    try:
        run(main())
        assert signal.getsignal(signal.SIGINT) is mine  # as asyncio.run leaves it
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    run(_noop())  # and a run that leaves it alone puts the default back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


async def _noop() -> None:
    pass


def test_sigquit_left_to_the_program(rt_params):
    procs, kind = rt_params
    got: list[int] = []

    def mine(signum: int, frame: object) -> None:
        got.append(signum)

    before = signal.signal(signal.SIGQUIT, mine)
    try:
        # A handler installed meanwhile is left in place at close.
        with mnsched.Runtime(procs=procs, loop=kind, debug="sigquit"):

            def theirs(signum: int, frame: object) -> None:
                pass

            signal.signal(signal.SIGQUIT, theirs)
        assert signal.getsignal(signal.SIGQUIT) is theirs
        signal.signal(signal.SIGQUIT, mine)
        # Closed off the main thread (where no handler can change): the dump handler
        # stays until SIGQUIT next comes, then hands it to the program's and goes.
        rt = mnsched.Runtime(procs=procs, loop=kind, debug="sigquit").start()
        closer = threading.Thread(target=rt.close)
        closer.start()
        closer.join(30)
        signal.raise_signal(signal.SIGQUIT)
        assert got == [signal.SIGQUIT]
        assert signal.getsignal(signal.SIGQUIT) is mine
    finally:
        signal.signal(signal.SIGQUIT, before)


def test_a_trace_is_written_atomically_private_and_not_through_a_symlink(tmp_path):
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not a trace")
    out = tmp_path / "t.json"
    out.symlink_to(elsewhere)
    trace.start(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".t.json.")]  # reserved
    mnsched.run(_noop(), procs=1)
    trace.stop()
    assert elsewhere.read_text() == "not a trace"
    assert not out.is_symlink() and json.loads(out.read_text())["traceEvents"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.txt", "t.json"]


def test_a_trace_path_that_cannot_be_written_fails_when_tracing_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("MNSCHED_TRACE", str(tmp_path / "missing" / "t.json"))
    with pytest.raises(ValueError, match=r"MNSCHED_TRACE=.*No such file or directory"):
        mnsched.Runtime(procs=1)
    assert not trace.tracing()


def test_a_trace_lost_at_exit_fails_the_program(tmp_path):
    where = tmp_path / "gone"
    where.mkdir()
    script = tmp_path / "s.py"
    script.write_text(
        "import shutil, sys, mnsched\n"
        "async def main(): return 1\n"
        "print(mnsched.run(main(), procs=1))\n"
        "shutil.rmtree(sys.argv[1])\n"  # the trace's directory goes before the exit
    )
    r = subprocess.run([sys.executable, str(script), str(where)], capture_output=True,
                       text=True, timeout=60,
                       env={**os.environ, "MNSCHED_TRACE": str(where / "t.json")})  # fmt: skip
    assert r.stdout.strip() == "1"
    assert r.returncode == 1 and "the trace was not written" in r.stderr, r.stderr


# -- running out of fds and threads -----------------------------------------------------------

LIMITS = """
import os, resource, sys, threading, time
import mnsched
from mnsched.errors import ResourceLimitError

procs, kind = int(sys.argv[1]), sys.argv[2]

def nfds():
    return len(os.listdir("/proc/self/fd"))

def refused(what, fn, *args):
    try:
        fn(*args)
    except ResourceLimitError as e:
        print(what, "refused:", e, flush=True)
    else:
        print(what, "NOT refused", flush=True)

def vm_size():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

def limit_threads():
    # Thread stacks are reserved address space: with each new one 1 GiB and 256 MiB of
    # room, the OS refuses threads while small allocations still succeed.
    threading.stack_size(1 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (vm_size() + (256 << 20), resource.RLIM_INFINITY))

def unlimit_threads():
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    threading.stack_size(0)

async def leaf(i):
    await mnsched.gosched()
    return i

async def works():
    assert sum([await mnsched.go(leaf(i)) for i in range(100)]) == 4950
    assert await mnsched.syscall(lambda: 7) == 7

async def main():
    await works()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nfds() + 6, hard))  # room for a P or so
    refused("fds", mnsched.gomaxprocs, procs + 8)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    print("procs after fds", mnsched.gomaxprocs(), mnsched.stats()["running_procs"])
    await works()
    limit_threads()
    try:
        refused("threads", mnsched.gomaxprocs, procs + 2)
        # The M that ran works()'s call is idle: the calls wait for it, none fails.
        results = [mnsched.go(mnsched.syscall(time.sleep, 0.01)) for _ in range(3)]
        print("calls", [await g for g in results])
    finally:
        unlimit_threads()
    print("procs after threads", mnsched.gomaxprocs(), mnsched.stats()["running_procs"])
    await works()
    mnsched.gomaxprocs(procs + 1)  # and it grows again once the OS allows
    await works()

mnsched.run(works(), procs=procs, loop=kind)  # (uvloop keeps a pipe per process)
threads0, fds0 = threading.active_count(), nfds()
mnsched.run(main(), procs=procs, loop=kind)
print("left", threading.active_count() - threads0, nfds() - fds0)
# A fresh runtime whose first blocking call cannot get a thread at all: the call fails.
async def first_call():
    limit_threads()
    try:
        await mnsched.syscall(time.sleep, 0)
    except ResourceLimitError as e:
        print("first call refused:", e)
    finally:
        unlimit_threads()
mnsched.run(first_call(), procs=procs, loop=kind)
print("left", threading.active_count() - threads0, nfds() - fds0)
"""


def test_running_out_of_fds_and_threads(rt_params, tmp_path):
    procs, kind = rt_params
    script = tmp_path / "limits.py"
    script.write_text(LIMITS)
    r = subprocess.run([sys.executable, str(script), str(procs), kind], capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    out = r.stdout
    assert r.returncode == 0, (out, r.stderr)
    assert "fds refused: cannot start P" in out and "RLIMIT_NOFILE" in out, out
    assert "threads refused: cannot start P" in out and "refused a new thread" in out, out
    assert f"procs after fds {procs} {procs}" in out, out
    assert f"procs after threads {procs} {procs}" in out, out
    assert "calls [None, None, None]" in out, out
    assert "first call refused: cannot start mnsched's M-starting thread" in out, out
    assert out.count("left 0 0") == 2, out
    assert "Traceback" not in r.stderr, r.stderr


# -- memory returns -----------------------------------------------------------------------------


class _Big:
    def __init__(self) -> None:
        self.payload = bytearray(8 << 20)


def test_a_goroutine_frees_what_it_held_when_it_ends(run):
    # Its frame, its result's path and the handle's outcome must not keep it: once the
    # goroutine has ended (normally, failed, cancelled), nothing of mnsched's holds it.
    async def holds(ref_out: list[weakref.ref[_Big]], how: str) -> None:
        big = _Big()
        ref_out.append(weakref.ref(big))
        if how == "fails":
            raise ValueError("done with it")
        if how == "cancelled":
            await mnsched.Chan().recv()

    async def main() -> None:
        for how in ("returns", "fails", "cancelled"):
            refs: list[weakref.ref[_Big]] = []
            g = mnsched.go(holds(refs, how))
            while not refs:
                await mnsched.gosched()
            if how == "cancelled":
                g.cancel()
            with contextlib.suppress(ValueError, asyncio.CancelledError):
                await g
            del g
            assert refs[0]() is None, how  # freed by refcount: no collection needed

    run(main())


# -- Ctrl-C beats a CPU hog ---------------------------------------------------------------------

HOGS = """
import os, signal, sys, threading, time
import mnsched
from mnsched.m import m

procs, kind, where = int(sys.argv[1]), sys.argv[2], sys.argv[3]

def hog():
    # 12 s without an await; "ready" once sysmon has judged it a hog
    p = m.p
    end = time.perf_counter() + 12
    told = False
    while time.perf_counter() < end:
        if not told and p.stuck_since:
            told = True
            print("ready", flush=True)

async def worker(i, ch, started):
    try:
        await started.send(i)
        await ch.recv()
    finally:
        print("final", i, flush=True)

async def hog_g():
    hog()

async def main():
    ch, started = mnsched.Chan(), mnsched.Chan()
    for i in range(20):
        mnsched.go(worker(i, ch, started))
    for _ in range(20):
        await started.recv()  # each is in its try
    if where == "main":
        hog()
    elif where == "p0":
        await mnsched.go(hog_g(), pin=True)
    else:  # on the last P, pinned there
        rt = mnsched.current_runtime()
        p = rt.sched.allp[-1]
        p.loop.call_soon_threadsafe(lambda: mnsched.go(hog_g(), pin=True))
        await mnsched.sleep(60)

try:
    mnsched.run(main(), procs=procs, loop=kind)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
    sys.exit(130)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["main", "p0", "another p"])
def test_ctrl_c_beats_a_cpu_hog(rt_params, tmp_path, where):
    # Exit within 2 s of the first Ctrl-C: the hog is interrupted on the main thread, or
    # abandoned on a P's (reported), and every other goroutine's finally runs once.
    procs, kind = rt_params
    if where == "another p" and procs == 1:
        pytest.skip("needs a second P")
    script = tmp_path / "hogs.py"
    script.write_text(HOGS)
    proc = subprocess.Popen([sys.executable, str(script), str(procs), kind, where],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", line
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    took = time.monotonic() - sent
    assert proc.returncode == 130 and "KeyboardInterrupt" in out, (proc.returncode, out, err)
    assert took < 2.0, f"{took:.2f} s after SIGINT:\n{err}"
    finals = sorted(int(x.split()[1]) for x in out.splitlines() if x.startswith("final"))
    assert finals == list(range(20)), out
    if where == "another p":
        assert "stuck in" in err and "leaving it" in err, err


def test_churn_leaves_no_ps_or_objects_behind(run):
    # Rounds of goroutines spawned in one long step (a hog spell: sysmon adds a spare P
    # each time), parked, then cancelled: the retired spares are not kept, and Python's
    # objects are as many after the last round as after the second.
    async def main() -> tuple[list[int], list[int]]:
        sched = mnsched.current_runtime().sched
        counts, retired = [], []
        ledger: list[tuple[int, int, int]] = []
        for _ in range(6):
            await churn_round(20_000)
            counts.append(len(gc.get_objects()))
            retired.append(len(sched.retired))
            st = mnsched.stats()
            ledger.append((st["spawned"], st["finished"], st["goroutines"]))
        # The counts of Ps gone, warm or retired still add up (main is the one left).
        assert all(s == f + n and n == 1 for s, f, n in ledger), ledger
        return counts, retired

    counts, retired = run(main())
    assert max(retired) <= 1, retired  # (one may still be draining)
    assert max(counts[1:]) - min(counts[1:]) < 200, counts


@at_procs(1)  # one P: every P is stuck, and a spare P comes and goes
def test_a_hog_spell_puts_back_the_same_objects(rt_params):
    # RSS grew about a MiB for every spawn storm: a long-lived object made or replaced
    # during the storm (the P tuple, the steal order, a retiring P's timer heap, a P's
    # clock as a float) sits in a pymalloc arena full of the storm's goroutines and keeps
    # that arena after they are gone. A spell's changes are undone with the same objects.
    _, loop = rt_params
    with mnsched.Runtime(procs=1, loop=loop) as rt:
        sched = rt.sched
        allp, order, heap = sched.allp, sched.order, sched.allp[0].timers.heap
        slept = threading.Event()

        async def hogger() -> None:
            burn_until(slept.is_set)  # the sleeper can run only on a spare P

        async def sleeper() -> P:
            await mnsched.sleep(0.01)
            slept.set()
            return mnsched.m.m.p

        h = rt.go(hogger())
        spare = rt.go(sleeper()).result(timeout=15)
        h.result(timeout=15)
        spare_heap = spare.timers.heap
        assert rt.stats()["spare_procs_started"] >= 1
        wait_until(lambda: rt.stats()["running_procs"] == 1 and not sched.retired)
        assert sched.allp is allp and sched.order is order
        assert sched.allp[0].timers.heap is heap and spare.timers.heap is spare_heap


CHURN = """
import ctypes, os, sys
import mnsched
from churn import churn_round

TRIM = ctypes.CDLL(None).malloc_trim
STATM = os.open("/proc/self/statm", os.O_RDONLY)
rounds, n = int(sys.argv[2]), int(sys.argv[3])
rss = [0] * rounds


async def main():
    for r in range(rounds):
        await churn_round(n)
        TRIM(0)  # glibc's heap back to the OS: what is left is what pymalloc keeps
        rss[r] = int(os.pread(STATM, 64, 0).split()[1])  # (no new object lives on)


mnsched.run(main(), procs=1, loop=sys.argv[1])
print(" ".join(str(x * os.sysconf("SC_PAGE_SIZE") >> 10) for x in rss))
"""


@pytest.mark.skipif(
    DRIVER != "c",
    reason="the pure driver's clocks and counters are Python "
    "numbers, each a long-lived object replaced all the time (design.md)",
)
@pytest.mark.timeout(240)
@at_procs(1)  # one P: spawning 100,000 goroutines in one step is a hog spell every round
def test_rss_after_20_churn_rounds_stays_near_the_first(rt_params, tmp_path):
    # 20 rounds of 100,000 goroutines spawned in one step, parked, cancelled: RSS grew
    # 47 -> 66 MiB before the spells stopped leaving objects behind (each kept a pymalloc
    # arena of the storm's goroutines), and stays within 2-8% now. The baseline is the
    # larger of the first two rounds (the first spells start the spare P's thread and its
    # allocator arena once); the end, the median of the last three. In a child: RSS is
    # the process's.
    _, loop = rt_params
    script = tmp_path / "child.py"  # (not churn.py: that is the module it imports)
    script.write_text(CHURN)
    path = [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")]  # churn.py
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    r = subprocess.run([sys.executable, str(script), loop, "20", "100000"], capture_output=True,
                       text=True, timeout=200, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rss = [int(x) for x in r.stdout.split()]
    # RSS moves 2-3 MiB from round to round beside a busy CPU (on uvloop its own Handle
    # free list drifts up slowly too: plain uvloop grows an arena a round here), so the
    # bound is 15%: the growth this guards against was 40%.
    assert sorted(rss[-3:])[1] <= max(rss[:2]) * 1.15, f"RSS (KiB) by round: {rss}"


# -- starvation ---------------------------------------------------------------------------------


def test_a_threads_sends_reach_a_goroutine_beside_a_spinner(run):
    # A goroutine spinning on gosched() must not starve a wake-up from a plain thread:
    # it reached its goroutine with p99 414 ms at procs 2 on the asyncio loop. Not a
    # speed test (the bench's starve-wake measures it): a bound 25x the ~2 ms seen.
    from mnsched.bench.workloads import starve_wake_mnsched

    ok, p99_ms = run(starve_wake_mnsched(300))
    assert ok
    assert p99_ms < 50, f"p99 {p99_ms:.1f} ms"
