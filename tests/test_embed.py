"""Embedding mnsched in asyncio services: host loops, attach mode, serving on every P,
contextvars, logging, the pytest plugin, typing."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time

import aiohttp
import pytest
import uvloop
from aiohttp import web

import mnsched
from conftest import at_procs
from mnsched.log import GoroutineFilter
from mnsched.serve import serve_aiohttp, spawn_here, start_server

HOST_RUNNERS = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.fixture(params=["asyncio", "uvloop"])
def host_run(request):
    return HOST_RUNNERS[request.param]


# -- embedding in a host loop ---------------------------------------------------------------


@pytest.mark.parametrize("attach", [False, True], ids=["threads", "attach"])
def test_embed_in_a_host_loop(host_run, procs, attach):
    async def work(i):
        # Where it starts: after its waits it may have been stolen. In attach mode the
        # last one spawned is in the host P's runnext, which no other P takes.
        started = threading.current_thread().name
        await mnsched.sleep(0.001)
        await asyncio.sleep(0)
        return i * i, started

    async def host():
        loop = asyncio.get_running_loop()
        factory = loop.get_task_factory()
        async with mnsched.Runtime(procs=procs, attach=attach) as rt:
            gs = [rt.go(work(i)) for i in range(20)] + [mnsched.go(work(20))]
            out = [await g for g in gs]
            if attach:
                pending = mnsched.go(mnsched.sleep(60))
                with pytest.raises(mnsched.BlockingCallError):
                    pending.result()  # the host thread is P0 now: it would stall it
                pending.cancel()
        assert loop.get_task_factory() is factory  # given back as it was
        return [v for v, _ in out], {name for _, name in out}

    values, threads = host_run(host())
    assert values == [i * i for i in range(21)]
    if attach:
        assert "MainThread" in threads  # goroutines run on the host loop itself
    else:
        assert "MainThread" not in threads


def test_cancellation_both_ways(host_run, procs):
    async def host():
        async with mnsched.Runtime(procs=procs) as rt:
            # the host task awaiting is cancelled: the goroutine is cancelled too
            g = rt.go(mnsched.sleep(60))
            waiter = asyncio.ensure_future(_await(g))
            await asyncio.sleep(0)  # the waiter runs up to its await first (FIFO)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            with pytest.raises(asyncio.CancelledError):
                await g
            # the goroutine is cancelled: the host task awaiting it sees CancelledError
            g2 = rt.go(mnsched.sleep(60))
            waiter2 = asyncio.ensure_future(_await(g2))
            await asyncio.sleep(0)  # the waiter runs up to its await first (FIFO)
            g2.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter2
            return waiter2.cancelled()

    assert host_run(host())


async def _await(g):
    return await g


@at_procs(2, 4)  # with one P there is nothing to spill to
def test_attach_mode_spills_to_other_ps(procs):

    async def host():
        async with mnsched.Runtime(procs=procs, attach=True):
            barrier = threading.Barrier(2)

            async def blocker():
                barrier.wait(timeout=20)  # needs a second P to take the other one
                return threading.current_thread().name

            gs = [mnsched.go(blocker()) for _ in range(2)]
            return {await g for g in gs}

    assert len(asyncio.run(host())) == 2


def test_attach_requires_a_running_loop():
    with pytest.raises(RuntimeError, match="running event loop"):
        mnsched.Runtime(procs=1, attach=True).start()


@pytest.mark.parametrize("attach", [False, True], ids=["threads", "attach"])
def test_start_and_close_without_the_default_executor(procs, attach):
    # Test teardowns shut the loop's default executor down before closing the loop: a
    # runtime must still start and close then.
    async def host():
        await asyncio.get_running_loop().shutdown_default_executor()
        async with mnsched.Runtime(procs=procs, attach=attach) as rt:
            answer = await rt.go(mnsched.sleep(0, 42))
        return answer, rt.closed

    assert asyncio.run(host()) == (42, True)


def test_one_runtime_per_host_loop():
    async def host():
        async with mnsched.Runtime(procs=1, attach=True):
            with pytest.raises(RuntimeError, match="one runtime per loop"):
                mnsched.Runtime(procs=1, attach=True).start()

    asyncio.run(host())


@pytest.mark.parametrize("attach", [False, True], ids=["threads", "attach"])
def test_the_runtime_started_on_a_loop_is_current_for_every_task_on_it(host_run, attach):
    # A lifespan starts the runtime; the server's request tasks were created before it, in
    # contexts of their own (uvicorn's, Starlette's TestClient's). They must all see it.
    async def request(started, go_on):
        started.set()
        await go_on.wait()
        rt = mnsched.current_runtime()
        g = mnsched.go(mnsched.sleep(0, "ok"))
        return rt, g._sched.rt, await g, mnsched.stats()["procs"]

    async def host():
        started, go_on = asyncio.Event(), asyncio.Event()
        early = asyncio.get_running_loop().create_task(
            request(started, go_on), context=contextvars.Context()
        )
        await started.wait()
        async with mnsched.Runtime(procs=3, attach=attach) as rt:
            go_on.set()
            seen, spawned_on, value, procs = await early
            late = await asyncio.create_task(request(asyncio.Event(), go_on))
            assert late[:2] == (rt, rt)
        assert (seen, spawned_on, value, procs) == (rt, rt, "ok", 3)
        return mnsched.current_runtime(), rt  # closed: no longer the loop's

    after, rt = host_run(host())
    assert after is not rt and not after.closed  # the default runtime
    after.close()


def test_two_runtimes_on_one_loop_are_refused(host_run):
    async def host():
        async with mnsched.Runtime(procs=1) as rt:
            for attach in (False, True):
                with pytest.raises(RuntimeError, match=r"already has .* one runtime per loop"):
                    async with mnsched.Runtime(procs=1, attach=attach):
                        pass
            assert mnsched.current_runtime() is rt
        async with mnsched.Runtime(procs=1) as rt2:  # once closed, another may start
            assert mnsched.current_runtime() is rt2

    host_run(host())


def test_a_stopped_host_loop_detaches_its_runtime(rt_params, caplog):
    # The host loop stops under an attached runtime (loop.stop(), no aclose): the thread
    # is free for another loop and runtime; the first carries on when its loop runs again.
    procs, kind = rt_params
    new_loop = asyncio.new_event_loop if kind == "asyncio" else uvloop.new_event_loop
    gate = mnsched.Chan()

    async def answer():
        await gate.recv()
        return 42

    async def attach_then_stop(held):
        rt = mnsched.Runtime(procs=procs, loop=kind, attach=True).start()
        held.append(rt)
        held.append(rt.go(answer()))
        asyncio.get_running_loop().stop()

    loop1 = new_loop()
    held: list = []
    loop1.create_task(attach_then_stop(held))
    loop1.run_forever()
    rt1, g1 = held

    async def second():
        async with mnsched.Runtime(procs=procs, loop=kind, attach=True) as rt2:
            return await rt2.go(_await(mnsched.go(mnsched.sleep(0, 7))))

    second_loop = new_loop()
    try:
        assert second_loop.run_until_complete(second()) == 7
    finally:
        second_loop.close()
    assert "host loop stopped without 'await rt.aclose()'" in caplog.text

    async def finish():
        await gate.send(None)
        result = await g1
        await rt1.aclose()
        return result

    try:
        assert loop1.run_until_complete(finish()) == 42
    finally:
        loop1.close()
    assert rt1.closed


# -- serving on every P -----------------------------------------------------------------------


def _storm_in_thread(port: int, n: int, concurrency: int) -> list[str]:
    """A client in another thread (its own loop): n connections, each one echo."""

    async def one(i, sem):
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(f"{i}\n".encode())
            await w.drain()
            line = (await r.readline()).decode().strip()
            w.close()
            await w.wait_closed()
            return line

    async def storm():
        sem = asyncio.Semaphore(concurrency)
        return await asyncio.gather(*(one(i, sem) for i in range(n)))

    out: list[str] = []
    t = threading.Thread(target=lambda: out.extend(asyncio.run(storm())))
    t.start()
    t.join(60)
    assert not t.is_alive()
    return out


@pytest.mark.timeout(120)
def test_start_server_on_every_p_with_reuseport(procs):
    async def handle(reader, writer):
        i = int((await reader.readline()).decode())
        writer.write(f"{i * 2} {threading.current_thread().name}\n".encode())
        await writer.drain()
        writer.close()

    async def main():
        srv = await start_server(handle)
        assert len(srv.addresses) == procs
        assert len({a[1] for a in srv.addresses}) == 1  # one port, every P
        out = await mnsched.syscall(_storm_in_thread, srv.port, 400, 50)
        await srv.close()
        await srv.wait_closed()
        return out, srv.nhandled

    out, handled = mnsched.run(main(), procs=procs)
    assert [int(line.split()[0]) for line in out] == [2 * i for i in range(400)]
    assert handled == 400
    if procs > 1:
        assert len({line.split()[1] for line in out}) > 1  # connections spread over Ps


def test_serve_forever_until_closed_and_cancelling_it_closes(rt_params):
    procs, kind = rt_params

    async def handle(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    async def echo(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hi\n")
        line = await reader.readline()
        writer.close()
        return line

    async def main():
        srv = await start_server(handle)
        serving = mnsched.go(srv.serve_forever())
        waiting = mnsched.go(srv.wait_closed())  # waits until closed, as asyncio's
        assert await echo(srv.port) == b"hi\n"
        assert srv.is_serving() and not serving.done() and not waiting.done()
        await srv.close()
        await serving, await waiting
        assert not srv.is_serving()
        with pytest.raises(OSError):
            await echo(srv.port)

        srv2 = await start_server(handle)
        serving = mnsched.go(srv2.serve_forever())
        assert await echo(srv2.port) == b"hi\n"
        serving.cancel()  # Ctrl-C cancelling main does this
        with pytest.raises(asyncio.CancelledError):
            await serving
        assert not srv2.is_serving()
        with pytest.raises(OSError):
            await echo(srv2.port)
        return True

    assert mnsched.run(main(), procs=procs, loop=kind)


def _make_app() -> web.Application:
    app = web.Application()

    async def light(request):
        return web.json_response({"n": int(request.query["n"]) + 1})

    async def blocking(request):
        await mnsched.syscall(time.sleep, float(request.query.get("s", "0.05")))
        return web.Response(text="slept")

    async def unmarked(request):
        time.sleep(float(request.query.get("s", "0.05")))  # not through syscall
        return web.Response(text="slept unmarked")

    app.router.add_get("/light", light)
    app.router.add_get("/blocking", blocking)
    app.router.add_get("/unmarked", unmarked)
    return app


async def _fetch_all(port: int, paths: list[str], limit: int = 50) -> list[tuple[float, str]]:
    connector = aiohttp.TCPConnector(limit=limit, force_close=True)
    t0 = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as s:

        async def get(path):
            async with s.get(f"http://127.0.0.1:{port}{path}") as r:
                assert r.status == 200
                return time.monotonic() - t0, await r.text()

        return await asyncio.gather(*(get(p) for p in paths))


@pytest.mark.timeout(120)
def test_aiohttp_on_every_p_request_storm(procs):
    async def main():
        srv = await serve_aiohttp(_make_app)
        paths = [f"/light?n={i}" for i in range(500)] + ["/blocking?s=0.05"] * 25
        out = await mnsched.syscall(lambda: asyncio.run(_fetch_all(srv.port, paths)))
        await srv.close()
        await srv.wait_closed()
        return out, srv.nhandled

    out, handled = mnsched.run(main(), procs=procs)
    light = [text for _, text in out[:500]]
    assert light == [f'{{"n": {i + 1}}}' for i in range(500)]
    assert [text for _, text in out[500:]] == ["slept"] * 25
    assert handled == 525


@pytest.mark.timeout(120)
def test_unmarked_blocking_handler_stalls_only_its_own_p():
    async def main():
        srv = await serve_aiohttp(_make_app)

        async def client():
            return await _fetch_all(srv.port, ["/unmarked?s=1.0"] + ["/light?n=1"] * 30)

        out = await mnsched.syscall(lambda: asyncio.run(client()))
        await srv.close()
        await srv.wait_closed()
        return out

    out = mnsched.run(main(), procs=2)
    blocked_done = out[0][0]
    light_times = [t for t, _ in out[1:]]
    # light requests on the other P's connections finish while the handler blocks
    assert min(light_times) < blocked_done - 0.5


def _on_this_p(fn):
    """Run fn() in a plain task on the calling goroutine's P (where spawn_here runs)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    async def task():
        try:
            fut.set_result(await fn())
        except BaseException as e:  # to the goroutine, which re-raises it
            fut.set_exception(e)

    loop.call_soon(lambda: loop.create_task(task()))
    return fut


def test_spawn_here_steps_a_pinned_goroutine_at_once(run):
    ch = mnsched.Chan()

    async def quick(x):
        return x * 2, asyncio.current_task()

    async def waits():
        return await ch.recv()

    async def fails():
        raise KeyError("handler")

    def pinned():
        return sum(mnsched.stats()["pinned"])

    async def in_task():
        before = pinned()  # main, pinned by the future it awaits on this loop
        g = spawn_here(quick(21), name="quick")
        assert g.done() and g.name == "quick"  # stepped inside the call: no loop trip
        value, task = await g
        assert value == 42 and task is g
        slow = spawn_here(waits())
        bad = spawn_here(fails())
        assert not slow.done() and bad.done()  # a failure stays in its goroutine
        return slow, bad, before, pinned()

    async def main():
        slow, bad, before, during = await _on_this_p(in_task)
        assert during == before + 1  # slow, pinned where it was spawned, until it ends
        await ch.send("late")
        assert await slow == "late"
        with pytest.raises(KeyError):
            await bad
        return pinned() - before

    assert run(main()) == 0


def test_spawn_here_refuses_what_it_cannot_run(run):
    async def body():
        return 1

    async def in_task():
        finished = body()
        with pytest.raises(StopIteration):
            finished.send(None)
        with pytest.raises(RuntimeError, match="already"):
            spawn_here(finished)  # not a fresh coroutine
        with pytest.raises(TypeError, match="call it"):
            spawn_here(body)  # the function, not a coroutine
        return await spawn_here(body())

    def refused(coro):
        try:
            spawn_here(coro)
        except RuntimeError as e:
            return str(e)
        finally:
            coro.close()

    async def main():
        assert "outside goroutines" in refused(body())  # from a goroutine: go() is the way
        assert "P's thread" in await mnsched.syscall(refused, body())  # from an M thread
        return await _on_this_p(in_task)

    assert run(main()) == 1


@pytest.mark.timeout(120)
def test_aiohttp_requests_run_as_goroutines_through_the_middlewares(procs):
    # The goroutine runs the application's whole handling: the user's middlewares see
    # the goroutine as the current task, as the handler does.
    seen = []

    @web.middleware
    async def record(request, handler):
        seen.append(("middleware", type(asyncio.current_task()).__name__))
        return await handler(request)

    def app():
        a = _make_app()
        a.middlewares.append(record)
        return a

    async def main():
        srv = await serve_aiohttp(app)
        out = await mnsched.syscall(lambda: asyncio.run(_fetch_all(srv.port, ["/light?n=1"] * 20)))
        await srv.close()
        await srv.wait_closed()
        return out, srv.nhandled

    out, handled = mnsched.run(main(), procs=procs)
    assert [text for _, text in out] == ['{"n": 2}'] * 20 and handled == 20
    assert seen == [("middleware", "G")] * 20


# -- contextvars and logging ----------------------------------------------------------------------


def test_contextvars_do_not_travel_through_channels(run):
    var = contextvars.ContextVar("var", default="unset")

    async def receiver(ch, out):
        var.set("receiver")
        await ch.recv()
        await out.send(var.get())

    async def main():
        ch, out = mnsched.Chan(), mnsched.Chan()
        mnsched.go(receiver(ch, out))
        var.set("sender")
        await ch.send("value")  # a value, not a context: as between asyncio tasks
        return await out.recv(), var.get()

    assert run(main()) == ("receiver", "sender")


def test_logging_filter(run, caplog):
    log = logging.getLogger("svc")

    async def main():
        log.info("from main")
        await mnsched.go(_log(log))

    caplog.handler.addFilter(GoroutineFilter())
    with caplog.at_level(logging.INFO, logger="svc"):
        run(main())
    log.info("outside")
    recs = {r.getMessage(): r for r in caplog.records}
    assert isinstance(recs["from main"].goid, int) and recs["from main"].procid == 0
    assert recs["from child"].goname == "child" and recs["from child"].procid != "-"
    assert recs["from child"].goid > recs["from main"].goid  # ids in spawn order
    outside = logging.LogRecord("svc", logging.INFO, "", 0, "outside", None, None)
    GoroutineFilter().filter(outside)
    assert outside.goid == "-" and outside.procid == "-"


async def _log(log):
    mnsched.current_runtime()
    g = asyncio.current_task()
    g.set_name("child")
    log.info("from child")


# -- the pytest plugin ---------------------------------------------------------------

PLUGIN_TESTS = """
import asyncio
import pytest
import mnsched

@pytest.mark.mnsched(procs=2)
async def test_runs_as_a_goroutine():
    assert isinstance(asyncio.current_task(), mnsched.G)
    assert mnsched.gomaxprocs() == 2
    assert await mnsched.go(mnsched.sleep(0, "ok")) == "ok"

@pytest.mark.mnsched(loop="asyncio")
@pytest.mark.parametrize("x", [1, 2])
async def test_parametrized(x):
    assert await mnsched.go(asyncio.sleep(0, x)) == x

@pytest.mark.asyncio
async def test_pytest_asyncio_still_runs_its_own():
    assert not isinstance(asyncio.current_task(), mnsched.G)

def test_fixture(mnsched_runtime):
    assert mnsched_runtime.go(mnsched.sleep(0, 5)).result(timeout=10) == 5

@pytest.mark.mnsched(procs=1)
def test_fixture_takes_procs_from_the_marker(mnsched_runtime):
    assert mnsched_runtime.gomaxprocs() == 1

EVENTS = []

@pytest.fixture
async def queue():
    # made inside the test's runtime, on P0: bound to the loop the test body runs on
    assert isinstance(asyncio.current_task(), mnsched.G)
    q = asyncio.Queue()
    await q.put("from the fixture")
    return q

@pytest.fixture
async def session(queue):
    rt = mnsched.current_runtime()
    EVENTS.append("setup")
    yield rt, queue
    assert isinstance(asyncio.current_task(), mnsched.G)
    assert mnsched.current_runtime() is rt  # teardown in the same runtime, still running
    EVENTS.append("teardown")

@pytest.mark.mnsched(procs=2)
class TestInAClass:
    async def test_method(self, session, mnsched_runtime):
        rt, queue = session
        assert rt is mnsched_runtime is mnsched.current_runtime()  # one runtime
        assert mnsched_runtime.gomaxprocs() == 2
        assert await queue.get() == "from the fixture"
        assert await mnsched.go(mnsched.sleep(0, 7)) == 7

    @pytest.mark.parametrize("x", [1, 2])
    async def test_parametrized_method(self, x):
        assert isinstance(asyncio.current_task(), mnsched.G)
        assert x in (1, 2)

def test_async_fixture_teardown_ran():
    assert EVENTS == ["setup", "teardown"]

def test_starts_the_default_runtime():
    assert mnsched.go(mnsched.sleep(0, 3)).result(timeout=10) == 3

def test_the_default_runtime_was_closed_after_it():
    import threading
    from mnsched.runtime import started_default_runtime
    assert started_default_runtime() is None
    assert not [t for t in threading.enumerate() if t.name.startswith("mnsched-")]

@pytest.mark.mnsched
async def test_failure_shows_the_test_s_exception():
    raise ValueError("from the test body")


@pytest.mark.mnsched(procs=2)
async def test_a_deadlock_is_the_test_s_failure():
    await mnsched.Chan().recv()  # nobody sends: Go's "all goroutines are asleep"
"""


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_pytest_plugin(pytester, mode):
    pytester.makepyfile(test_plugin=PLUGIN_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", f"asyncio_mode={mode}")
    # The deadlock is its test's failure, not a CancelledError with the Deadlock left to
    # a teardown error and a pluggy warning.
    result.assert_outcomes(passed=12, failed=2, errors=0, warnings=0)
    result.stdout.fnmatch_lines(
        [
            "*ValueError: from the test body*",
            "E *Deadlock: all goroutines are asleep - deadlock!*",
            "FAILED test_plugin.py::test_a_deadlock_is_the_test_s_failure - mnsched.errors*",
        ]
    )
