"""PerP: one instance of a loop-bound resource per P, closed on its own loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import threading

import aiohttp
import pytest
from aiohttp import web

import mnsched
from conftest import matrix_loops


class Client:
    """Bound to the loop it was made on, as real clients are."""

    def __init__(self, log: list[tuple[str, bool]]) -> None:
        self.loop = asyncio.get_running_loop()
        self.lock = asyncio.Lock()
        self.log = log

    async def use(self) -> asyncio.AbstractEventLoop:
        if asyncio.get_running_loop() is not self.loop:
            raise AssertionError("used on another loop")
        async with self.lock:
            await asyncio.sleep(0)
        return self.loop

    async def aclose(self) -> None:
        self.log.append(("closed", asyncio.get_running_loop() is self.loop))


def test_one_instance_per_p_used_on_its_loop_and_closed_there(run):
    log: list[tuple[str, bool]] = []
    clients = mnsched.PerP(lambda: Client(log))

    async def worker():
        await mnsched.gosched()
        client = clients.get()
        loop = await client.use()
        await mnsched.gosched()  # pinned: still on the client's P
        return client, loop, clients.get() is client

    async def main():
        gs = [mnsched.go(worker()) for _ in range(200)]
        return [await g for g in gs]

    results = run(main())
    instances = {id(c) for c, _, _ in results}
    assert all(c.loop is loop and same for c, loop, same in results)
    assert len(instances) == len({id(loop) for _, loop, _ in results})  # one per P used
    assert log == [("closed", True)] * len(instances)  # each once, on its own loop


@pytest.mark.parametrize("kind", matrix_loops("uvloop", "asyncio"))
def test_a_retired_p_closes_its_instances_before_it_stops(kind):
    # gomaxprocs shrinks while a goroutine pinned to the last P holds that P's instance:
    # once the goroutine is done, the P closes the instance on its own loop, then stops.
    log: list[tuple[str, bool]] = []
    clients = mnsched.PerP(lambda: Client(log))

    async def holder(release):
        client = clients.get()
        await release.recv()
        await client.use()
        return client.loop

    async def main():
        rt = mnsched.current_runtime()
        last = rt.sched.allp[-1]
        release = mnsched.Chan()
        spawned = concurrent.futures.Future()
        # From the last P's own thread, pin=True pins the goroutine there.
        last.loop.call_soon_threadsafe(lambda: spawned.set_result(rt.go(holder(release), pin=True)))
        g = await asyncio.wrap_future(spawned)
        rt.gomaxprocs(1)
        await release.send(None)
        loop = await g
        await mnsched.syscall(last.thread.join, 10)
        return loop is last.loop, loop.is_closed(), list(log)

    assert mnsched.run(main(), procs=3, loop=kind) == (True, True, [("closed", True)])


def test_close_function_and_a_failing_close(run, caplog):
    closed = []

    def close(obj):
        closed.append(obj)
        if obj == "bad":
            raise RuntimeError("close failed")

    good = mnsched.PerP(lambda: "good", close=close)
    bad = mnsched.PerP(lambda: "bad", close=close)

    async def main():
        return good.get(), bad.get()

    with caplog.at_level(logging.ERROR, logger="mnsched"):
        assert run(main()) == ("good", "bad")
    assert closed == ["bad", "good"]  # newest first, and a failure stops nothing
    assert "closing 'bad'" in caplog.text


def test_get_outside_a_p_says_where_to_call_it():
    with pytest.raises(RuntimeError, match="call it from a goroutine"):
        mnsched.PerP(object).get()
    with pytest.raises(TypeError, match="needs a factory"):
        mnsched.PerP(42)  # type: ignore[arg-type]


def test_attach_mode_host_tasks_get_p0s_instance(rt_params):
    procs, kind = rt_params
    log: list[tuple[str, bool]] = []
    clients = mnsched.PerP(lambda: Client(log))

    async def host():
        async with mnsched.Runtime(procs=procs, loop=kind, attach=True):
            client = clients.get()
            await client.use()
            here = client.loop is asyncio.get_running_loop()
        return here, log

    assert asyncio.run(host()) == (True, [("closed", True)])


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text=request.query["i"])


@pytest.mark.timeout(120)
def test_aiohttp_session_per_p_against_a_real_server(run):
    # The one-client-per-app pattern: one aiohttp session per P, shared by goroutines.
    ready = threading.Event()
    stop: list[asyncio.AbstractEventLoop] = []
    port: list[int] = []

    def serve() -> None:
        async def main():
            runner = web.AppRunner(web.Application())
            runner.app.router.add_get("/", _hello)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port.append(site._server.sockets[0].getsockname()[1])
            stop.append(asyncio.get_running_loop())
            ready.set()
            try:
                await asyncio.Event().wait()
            finally:
                await runner.cleanup()

        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass

    server = threading.Thread(target=serve)
    server.start()
    assert ready.wait(10)
    sessions = mnsched.PerP(aiohttp.ClientSession)

    async def fetch(i):
        async with sessions.get().get(f"http://127.0.0.1:{port[0]}/?i={i}") as r:
            return int(await r.text())

    async def worker(base):
        return [await fetch(base + i) for i in range(5)]

    async def main():
        gs = [mnsched.go(worker(b * 5)) for b in range(80)]
        return [x for g in gs for x in await g]

    try:
        assert run(main()) == list(range(400))
    finally:
        loop = stop[0]
        loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(loop)])
        server.join(10)


def test_a_loop_mismatch_says_which_p_and_the_cure(run):
    other = asyncio.new_event_loop()  # a client made elsewhere, on another loop
    try:

        async def misuse():
            await other.create_future()

        async def wrapped():
            try:
                await misuse()
            except RuntimeError as e:
                raise ValueError("the client failed") from e

        async def main():
            outcomes = []
            for body in (misuse, wrapped):
                with pytest.raises((RuntimeError, ValueError)) as e:
                    await mnsched.go(body(), name="user")
                outcomes.append(e.value)
            return outcomes

        for exc in run(main()):
            (note,) = exc.__notes__
            assert re.match(r"mnsched: goroutine 'user' ran on P\d+, and this object", note)
            assert "mnsched.PerP(factory)" in note and "pin=True" in note
    finally:
        other.close()


def test_other_errors_get_no_note(run):
    async def fails():
        raise RuntimeError("something else")

    async def main():
        with pytest.raises(RuntimeError) as e:
            await mnsched.go(fails())
        return getattr(e.value, "__notes__", [])

    assert run(main()) == []
