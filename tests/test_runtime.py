"""The goroutine API and the runtime's lifecycle: run, go, handles, errors, shutdown."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import traceback

import pytest

import mnsched
from conftest import at_procs, wait_until
from mnsched import BlockingCallError, RuntimeClosedError


async def double(x):
    return 2 * x


def test_run_returns_main_result(run):
    async def main():
        return 42

    assert run(main()) == 42


def test_go_and_await_handles(run):
    async def main():
        gs = [mnsched.go(double(i)) for i in range(100)]
        return [await g for g in gs]

    assert run(main()) == [2 * i for i in range(100)]


def test_go_decorator_spawns_on_each_call(run):
    @mnsched.go
    async def worker(x):
        await mnsched.gosched()
        return x + 1

    async def main():
        gs = [worker(i) for i in range(10)]
        assert all(isinstance(g, mnsched.G) for g in gs)
        return sum([await g for g in gs])

    assert run(main()) == sum(range(1, 11))


def test_nested_spawns_and_sleep(run):
    async def tree(depth):
        if depth == 0:
            await mnsched.sleep(0.001)
            return 1
        gs = [mnsched.go(tree(depth - 1)) for _ in range(3)]
        return sum([await g for g in gs])

    assert run(tree(5)) == 3**5


def test_awaiting_a_goroutine_from_another_goroutine_on_any_p(run):
    async def main():
        start = asyncio.Event()  # pins main to P0: waiters below run elsewhere
        target = mnsched.go(mnsched.sleep(0.01, "ok"))

        async def waiter():
            return await target

        ws = [mnsched.go(waiter()) for _ in range(20)]
        start.set()
        return [await w for w in ws]

    assert run(main()) == ["ok"] * 20


def test_exception_reaches_awaiter_with_traceback(run):
    async def boom():
        await mnsched.gosched()
        raise KeyError("boom")

    async def main():
        g = mnsched.go(boom())
        with pytest.raises(KeyError) as info:
            await g
        return [f.name for f in info.traceback]

    names = run(main())
    assert "boom" in names


def test_exception_of_main_propagates_from_run(run):
    async def main():
        raise ValueError("from main")

    with pytest.raises(ValueError, match="from main"):
        run(main())


def test_unawaited_exception_is_logged_once_when_dropped(run, caplog):
    finished = threading.Event()

    async def fails():
        try:
            raise RuntimeError("nobody listens")
        finally:
            finished.set()

    async def main():
        mnsched.go(fails())  # not referenced
        while not finished.is_set():
            await mnsched.sleep(0.001)
        for _ in range(10):
            await mnsched.gosched()

    with caplog.at_level(logging.ERROR, logger="mnsched"):
        run(main())
    logged = [r for r in caplog.records if "nobody listens" in r.getMessage()]
    assert len(logged) == 1
    assert "nobody retrieved it" in logged[0].getMessage()


def test_an_exception_retrieved_after_the_goroutine_ended_is_not_logged(run, caplog):
    # The fan-out pattern: every goroutine fails before main gets to await it; main
    # handles each failure, so nothing may be logged as unhandled.
    async def fails(i):
        raise ValueError(f"failure {i}")

    async def main():
        gs = [mnsched.go(fails(i)) for i in range(20)]
        await mnsched.WaitGroup().wait()  # returns at once; let them all run first
        while not all(g.done() for g in gs):
            await mnsched.gosched()
        caught = []
        for g in gs[:10]:
            try:
                await g
            except ValueError as e:
                caught.append(str(e))
        caught += [str(g.exception()) for g in gs[10:]]
        tb = "".join(traceback.format_exception(gs[0].exception()))
        return caught, tb

    with caplog.at_level(logging.ERROR, logger="mnsched"):
        caught, tb = run(main())
    assert caught == [f"failure {i}" for i in range(20)]
    assert not [r for r in caplog.records if "failure" in r.getMessage()]
    assert "in fails" in tb and "mnsched/p.py" not in tb  # the user's frames only


def test_unreferenced_goroutine_runs_to_completion(run):
    done = threading.Event()

    async def work():
        for _ in range(100):
            await mnsched.gosched()
        done.set()

    async def main():
        mnsched.go(work())
        while not done.is_set():
            await mnsched.sleep(0.001)
        return True

    assert run(main())


def test_cancel_runs_finally_once_and_awaiter_sees_cancelled(run):
    events = []

    async def sleeper(started):
        try:
            started.set()
            await mnsched.sleep(60)
        finally:
            events.append("finally")

    async def main():
        started = threading.Event()
        g = mnsched.go(sleeper(started))
        while not started.is_set():
            await mnsched.gosched()
        assert g.cancel("stop")
        with pytest.raises(asyncio.CancelledError):
            await g
        assert g.cancelled() and g.done()
        assert not g.cancel()  # already done
        return events

    assert run(main()) == ["finally"]


def test_cancel_before_first_step_never_runs_body(run):
    ran = []

    async def body():
        ran.append(1)

    async def main():
        g = mnsched.go(body())
        g.cancel()
        with pytest.raises(asyncio.CancelledError):
            await g
        return ran

    assert run(main()) == []


def test_cancelling_the_awaiter_cancels_the_awaited_goroutine(run):
    # As with asyncio tasks: cancelling a G that awaits another G propagates into it.
    async def main():
        inner = mnsched.go(mnsched.sleep(60))
        outer = mnsched.go(_await(inner))
        await mnsched.sleep(0.01)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        with pytest.raises(asyncio.CancelledError):
            await inner

    run(main())


async def _await(g):
    return await g


def test_shutdown_cancels_every_goroutine_and_runs_finally_once(run):
    finals = []
    lock = threading.Lock()
    n = 50

    async def forever(i, started):
        try:
            started.release()
            await mnsched.sleep(3600)
        finally:
            with lock:
                finals.append(i)

    async def main():
        started = threading.Semaphore(0)
        for i in range(n):
            mnsched.go(forever(i, started))
        for _ in range(n):
            while not started.acquire(blocking=False):
                await mnsched.gosched()
        return "main done"

    assert run(main()) == "main done"
    assert sorted(finals) == list(range(n))


def test_num_goroutine_counts_the_live_ones_and_returns_to_one(run):
    async def main():
        gate = mnsched.Chan()
        gs = [mnsched.go(gate.recv_ok()) for _ in range(200)]  # each waits for the close
        alive = mnsched.num_goroutine()  # main and its 200 children
        gate.close()
        for g in gs:
            await g
        return alive, mnsched.num_goroutine()

    assert run(main()) == (201, 1)


def test_contextvars_copied_from_spawner(run):
    var = contextvars.ContextVar("var", default="unset")

    async def child():
        seen = var.get()
        var.set("child")  # must not leak back
        await mnsched.gosched()
        return seen

    async def main():
        var.set("parent")
        g = mnsched.go(child())
        var.set("after spawn")  # the child's copy was taken at spawn
        seen = await g
        return seen, var.get()

    assert run(main()) == ("parent", "after spawn")


def test_gomaxprocs_reports_and_changes_procs(procs):
    async def main():
        assert mnsched.gomaxprocs() == procs
        old = mnsched.gomaxprocs(procs + 1)
        assert old == procs and mnsched.gomaxprocs() == procs + 1
        gs = [mnsched.go(double(i)) for i in range(1000)]
        total = sum([await g for g in gs])
        mnsched.gomaxprocs(1)
        gs = [mnsched.go(double(i)) for i in range(1000)]
        total += sum([await g for g in gs])
        return total, mnsched.gomaxprocs()

    assert mnsched.run(main(), procs=procs) == (2 * 2 * sum(range(1000)), 1)


def test_gomaxprocs_below_one_only_asks_as_in_go(procs):
    async def main() -> tuple[int, int, int]:
        return mnsched.gomaxprocs(0), mnsched.gomaxprocs(-1), mnsched.gomaxprocs()

    assert mnsched.run(main(), procs=procs) == (procs, procs, procs)


def test_questions_start_no_default_runtime(monkeypatch):
    # Outside any runtime, num_goroutine() and gomaxprocs() answered by starting a hidden
    # default runtime with three threads.
    from mnsched.runtime import started_default_runtime

    monkeypatch.setenv("MNSCHED_PROCS", "3")
    assert started_default_runtime() is None
    threads = threading.active_count()
    assert (mnsched.num_goroutine(), mnsched.gomaxprocs(), mnsched.gomaxprocs(0)) == (0, 3, 3)
    assert started_default_runtime() is None and threading.active_count() == threads


def test_procs_from_environment(monkeypatch):
    monkeypatch.setenv("MNSCHED_PROCS", "3")

    async def main():
        return mnsched.gomaxprocs()

    assert mnsched.run(main()) == 3
    monkeypatch.setenv("MNSCHED_PROCS", "zero")
    with pytest.raises(ValueError, match="MNSCHED_PROCS"):
        mnsched.Runtime()


@pytest.mark.parametrize(
    "bad, exc",
    [(0, ValueError), (-2, ValueError), (1.5, TypeError), ("2", TypeError), (True, TypeError)],
)
def test_bad_procs_are_rejected(bad, exc):
    with pytest.raises(exc, match="procs"):
        mnsched.Runtime(procs=bad)
    coro = double(1)
    with pytest.raises(exc, match="procs"):
        mnsched.run(coro, procs=bad)


def test_bad_loop_kind_is_rejected():
    with pytest.raises(ValueError, match="loop must be one of"):
        mnsched.Runtime(loop="trio")


def test_go_rejects_non_coroutines(runtime):
    def plain():
        return 1

    async def coro_fn():
        return 1

    with pytest.raises(TypeError, match="needs a coroutine"):
        runtime.go(plain)
    with pytest.raises(TypeError, match="call it"):
        runtime.go(coro_fn)
    with pytest.raises(TypeError, match="needs a coroutine"):
        runtime.go(42)
    with pytest.raises(TypeError, match="needs a coroutine"):
        mnsched.go(None)


def test_spawning_on_a_closed_runtime_fails_clearly(rt_params):
    rt = mnsched.Runtime(procs=rt_params[0], loop=rt_params[1]).start()
    rt.close()
    with pytest.raises(RuntimeClosedError, match="cannot spawn"):
        rt.go(double(1))
    never_started = mnsched.Runtime(procs=1)
    with pytest.raises(RuntimeClosedError):
        never_started.go(double(1))


def test_blocking_result_inside_a_goroutine_is_refused(run):
    async def main():
        g = mnsched.go(double(2))
        with pytest.raises(BlockingCallError, match="use 'await g'"):
            g.result()
        return await g

    assert run(main()) == 4


def test_run_inside_a_running_loop_is_refused():
    async def host():
        with pytest.raises(RuntimeError, match="cannot be called from a running event loop"):
            mnsched.run(double(1))

    asyncio.run(host())


def test_runtime_as_sync_context_manager(rt_params):
    with mnsched.Runtime(procs=rt_params[0], loop=rt_params[1]) as rt:
        gs = [rt.go(double(i)) for i in range(100)]
        # mnsched.go outside any P resolves to the runtime of the with-block
        gs.append(mnsched.go(double(100)))
        assert [g.result(timeout=10) for g in gs] == [2 * i for i in range(101)]
    with pytest.raises(RuntimeClosedError):
        rt.go(double(1))


def test_result_timeout_from_a_plain_thread(runtime):
    g = runtime.go(mnsched.sleep(10))
    with pytest.raises(TimeoutError):
        g.result(timeout=0.05)
    g.cancel()
    with pytest.raises(asyncio.CancelledError):
        g.result(timeout=10)
    assert g.cancelled()
    with pytest.raises(asyncio.CancelledError):
        g.exception(timeout=0)


def test_exception_method(runtime):
    async def boom():
        raise OSError("x")

    g = runtime.go(boom())
    assert isinstance(g.exception(timeout=10), OSError)
    ok = runtime.go(double(1))
    assert ok.exception(timeout=10) is None


def test_await_from_a_foreign_asyncio_loop(runtime):
    async def host():
        g = runtime.go(mnsched.sleep(0.01, "slept"))
        return await g

    assert asyncio.run(host()) == "slept"


def test_cancelling_a_foreign_awaiter_cancels_the_goroutine(runtime):
    # As asyncio.wrap_future: the cancel crosses over.
    async def host():
        g = runtime.go(mnsched.sleep(60))
        waiter = asyncio.ensure_future(_await(g))
        await asyncio.sleep(0)  # the waiter runs up to its await first (FIFO)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        return g

    g = asyncio.run(host())
    with pytest.raises(asyncio.CancelledError):
        g.result(timeout=10)


def test_await_outside_any_loop_is_refused(runtime):
    g = runtime.go(double(1))
    g.result(timeout=10)
    with pytest.raises(StopIteration) as done:  # done: completes without a loop
        next(g.__await__())
    assert done.value.value == 2
    pending = runtime.go(mnsched.sleep(10))
    with pytest.raises(RuntimeError, match="needs a goroutine or a running event loop"):
        pending.__await__().send(None)
    pending.cancel()


def test_many_start_close_cycles_leak_no_threads():
    before = threading.active_count()
    for i in range(100):
        rt = mnsched.Runtime(procs=1 + i % 4, loop=("uvloop", "asyncio")[i % 2]).start()
        rt.go(double(i)).result(timeout=10)
        rt.close()
    assert threading.active_count() == before


def test_default_runtime_serves_go_outside_any_runtime():
    g = mnsched.go(double(21))
    assert g.result(timeout=10) == 42
    rt = mnsched.current_runtime()
    assert not rt.closed
    rt.close()  # normally closed at interpreter exit
    assert mnsched.go(double(1)).result(timeout=10) == 2  # a new one starts on demand
    mnsched.current_runtime().close()


def test_stats_add_up(run):
    async def main():
        gs = [mnsched.go(double(i)) for i in range(500)]
        for g in gs:
            await g
        return mnsched.current_runtime().stats()

    st = run(main())
    assert st["spawned"] == st["finished"] + st["goroutines"]
    assert st["goroutines"] == 1  # main, still running when it took the stats


def test_keyboard_interrupt_in_a_goroutine_ends_run(run):
    async def interrupt():
        raise KeyboardInterrupt

    async def main():
        mnsched.go(interrupt())
        await mnsched.sleep(60)

    with pytest.raises(KeyboardInterrupt):
        run(main())


def test_a_failure_inside_the_scheduler_ends_the_runtime_loudly(run, monkeypatch, caplog):
    # A bug in the scheduling loop (here: finding work raises once) must not leave the P
    # wedged "active" with nothing running: it is an InternalError that ends run().
    import mnsched.p as pmod

    real = pmod.P._findrunnable
    failed = threading.Event()

    def findrunnable_once_broken(self):
        if not failed.is_set():
            failed.set()
            raise ZeroDivisionError("a bug in the scheduler")
        return real(self)

    monkeypatch.setattr(pmod.P, "_findrunnable", findrunnable_once_broken)
    finals = []

    async def main():
        try:
            await mnsched.sleep(30)  # P0 looks for work, and fails
        finally:
            finals.append("main")

    with pytest.raises(mnsched.InternalError, match="scheduler failed") as e:
        run(main())
    assert isinstance(e.value.__cause__, ZeroDivisionError)
    assert finals == ["main"]  # cancelled, not lost
    assert [r.levelname for r in caplog.records if "internal error" in r.message] == ["CRITICAL"]


def test_a_raising_done_callback_does_not_break_the_scheduler(runtime, caplog):
    # A user's done-callback added from a plain thread runs on the goroutine's loop, not
    # inside the scheduler: its exception goes to the loop's handler, and work goes on.
    def bad_callback(g):
        raise ValueError("user bug")

    ch = mnsched.Chan()
    g = runtime.go(ch.recv())
    g.add_done_callback(bad_callback)  # before it finishes: it runs as g ends, on g's P
    ch.send_blocking(4, timeout=10)
    assert g.result(timeout=10) == 4
    wait_until(lambda: any("user bug" in str(r.exc_info) for r in caplog.records))
    g.add_done_callback(bad_callback)  # after: at once, here (no loop), reported
    assert any("done-callback" in r.message for r in caplog.records)
    assert [runtime.go(double(i)).result(timeout=10) for i in range(20)] == [
        2 * i for i in range(20)
    ]


def test_a_goroutine_in_a_blocking_call_is_in_syscall(runtime):
    release = threading.Event()
    g = runtime.go(mnsched.syscall(release.wait, 30))
    wait_until(lambda: g.status == "syscall")
    assert g.wait_reason == "syscall" and runtime.stats()["in_syscall"] == 1
    assert "syscall (syscall" in repr(g)
    release.set()
    assert g.result(timeout=10) is True
    assert g.status == "done" and g.wait_reason is None


def test_waiting_goroutines_say_why(runtime):
    ch, unread, silent, mu = mnsched.Chan(), mnsched.Chan(), mnsched.Chan(), mnsched.Mutex()
    mu.lock_blocking()
    loop_future: list[asyncio.Future[None]] = []

    async def on_future():
        loop_future.append(asyncio.get_running_loop().create_future())
        await loop_future[0]

    waiting = {
        "chan receive": runtime.go(ch.recv()),
        "chan send": runtime.go(unread.send(1)),
        "select": runtime.go(mnsched.select(mnsched.Recv(silent))),
        "sleep": runtime.go(mnsched.sleep(30)),
        "sync.Mutex.Lock": runtime.go(mu.lock()),
        "asyncio future": runtime.go(on_future()),
    }
    waiting["await goroutine"] = runtime.go(_await(waiting["sleep"]))
    for reason, g in waiting.items():
        wait_until(lambda g=g: g.wait_reason is not None)
        assert g.wait_reason == reason
        assert g.status == ("waiting" if reason == "asyncio future" else "parked")
        assert f"({reason}, " in repr(g)
    for g in waiting.values():
        g.cancel()
    for g in waiting.values():
        with pytest.raises(asyncio.CancelledError):
            g.result(timeout=10)
    mu.unlock()


def test_go_runs_in_the_context_it_is_given(run):
    # As asyncio.create_task(coro, context=ctx): that very context, not a copy.
    var = contextvars.ContextVar("var", default="unset")

    async def child():
        before = var.get()
        var.set("set by the child")
        return before

    async def main():
        ctx = contextvars.copy_context()
        ctx.run(var.set, "given")
        seen = await mnsched.go(child(), context=ctx)
        return seen, ctx[var], var.get()

    assert run(main()) == ("given", "set by the child", "unset")


@at_procs(2, 4)  # a free goroutine could move: pinning matters only with other Ps
def test_go_pin_keeps_a_goroutine_on_the_spawners_p(run):
    async def child():
        threads = set()
        for _ in range(50):
            threads.add(threading.get_ident())
            await mnsched.sleep(0.001)  # a park point: a free goroutine may resume anywhere
        return threads

    async def main():
        gs = [mnsched.go(child(), pin=True) for _ in range(8)]
        return [await g for g in gs], threading.get_ident()

    seen, main_thread = run(main())
    assert all(threads == {main_thread} for threads in seen)


def test_go_pin_from_outside_the_runtime_is_refused(runtime):
    with pytest.raises(ValueError, match="pins to the spawner's P"):
        runtime.go(double(1), pin=True)


def test_go_refuses_a_coroutine_that_has_already_started(run):
    # A coroutine suspended inside another goroutine: making a goroutine of it would
    # steal that one's next step (and the channel value it waits for).
    async def receive(ch):
        return await ch.recv()

    async def main():
        ch = mnsched.Chan()
        inner = receive(ch)
        outer = mnsched.go(inner)  # fresh: fine
        while not outer.wait_reason:
            await mnsched.gosched()
        with pytest.raises(RuntimeError, match=r"already started .*CORO_SUSPENDED"):
            mnsched.go(inner)
        await ch.send("value")
        finished = receive(ch)
        finished.close()
        with pytest.raises(RuntimeError, match=r"already started .*CORO_CLOSED"):
            mnsched.go(finished)
        return await outer  # nothing was lost

    assert run(main()) == "value"
