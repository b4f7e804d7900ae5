"""asyncio and anyio code keeps working inside goroutines, at every P count."""

from __future__ import annotations

import asyncio
import contextvars

import anyio
import pytest

import mnsched


def test_current_task_is_the_goroutine(run):
    async def main():
        g = mnsched.go(_me())
        me = await g
        return me is g, asyncio.current_task() is mnsched.current_runtime().sched.main

    assert run(main()) == (True, True)


async def _me():
    return asyncio.current_task()


def test_the_current_task_stand_in_behaves_as_the_dict():
    """3.14 keeps the current task in thread state, and aio's _SwapCurrentTask stands in
    for the dict the driver writes on 3.11-3.13: a store replaces whoever is current (an
    inline join makes its G current over the joiner's), delete and pop leave it."""
    from mnsched.aio import _SwapCurrentTask

    async def main():
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        a, b = object(), object()
        ct = _SwapCurrentTask()
        assert ct.pop(loop, None) is me
        ct[loop] = a
        ct[loop] = b  # over a: no "another task is being executed"
        current = asyncio.current_task()
        del ct[loop]
        nobody = asyncio.current_task()
        ct[loop] = me
        popped = ct.pop(loop), ct.pop(loop, "none")
        ct[loop] = me  # (asyncio leaves it as main returns)
        return current is b, nobody, popped[0] is me, popped[1]

    assert asyncio.run(main()) == (True, None, True, "none")


def test_asyncio_sleep_and_mnsched_sleep_mix(run):
    async def worker(i):
        await asyncio.sleep(0.001)
        await mnsched.sleep(0.001)
        await asyncio.sleep(0)
        await mnsched.gosched()
        return i

    async def main():
        gs = [mnsched.go(worker(i)) for i in range(50)]
        return sum([await g for g in gs])

    assert run(main()) == sum(range(50))


def test_asyncio_timeout_expires_around_mnsched_and_asyncio_waits(run):
    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await mnsched.sleep(10)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await asyncio.sleep(10)
        inner = mnsched.go(mnsched.sleep(10))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await inner
        assert inner.cancelled() or (await _was_cancelled(inner))
        async with asyncio.timeout(5):
            await mnsched.sleep(0.001)
        assert asyncio.current_task().cancelling() == 0
        return await asyncio.wait_for(mnsched.go(mnsched.sleep(0.001, "ok")), 5)

    assert run(main()) == "ok"


async def _was_cancelled(g):
    try:
        await g
    except asyncio.CancelledError:
        return True
    return False


def test_taskgroup_inside_goroutines(run):
    async def child(i):
        await asyncio.sleep(0.001)
        return i * i

    async def worker(k):
        async with asyncio.TaskGroup() as tg:
            ts = [tg.create_task(child(i)) for i in range(5)]
            await mnsched.sleep(0.001)  # a park point inside the group
        return k + sum(t.result() for t in ts)

    async def main():
        gs = [mnsched.go(worker(k)) for k in range(20)]
        return sum([await g for g in gs])

    assert run(main()) == sum(range(20)) + 20 * sum(i * i for i in range(5))


def test_taskgroup_failure_propagates(run):
    async def bad():
        await asyncio.sleep(0)
        raise ValueError("in child")

    async def main():
        with pytest.raises(ExceptionGroup) as info:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(bad())
                tg.create_task(asyncio.sleep(10))
        return info.value.exceptions[0].args[0]

    assert run(main()) == "in child"


def test_gather_queue_and_to_thread_inside_goroutine(run):
    async def main():
        q: asyncio.Queue[int] = asyncio.Queue()

        async def producer():
            for i in range(10):
                await q.put(i)

        results = await asyncio.gather(producer(), asyncio.to_thread(sum, [1, 2, 3]))
        got = [q.get_nowait() for _ in range(10)]
        return results[1], got

    assert run(main()) == (6, list(range(10)))


def test_asyncio_streams_between_goroutines(run):
    async def handle(reader, writer):
        data = await reader.readline()
        writer.write(data.upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def client(port, i):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"hello {i}\n".encode())
        await writer.drain()
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return line.decode().strip()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            gs = [mnsched.go(client(port, i)) for i in range(30)]
            return [await g for g in gs]

    assert run(main()) == [f"HELLO {i}" for i in range(30)]


def test_contextvars_flow_into_tasks_and_goroutines(run):
    var = contextvars.ContextVar("v", default=None)

    async def read():
        await asyncio.sleep(0)
        return var.get()

    async def main():
        var.set("main")
        from_task = await asyncio.create_task(read())
        from_g = await mnsched.go(read())
        return from_task, from_g

    assert run(main()) == ("main", "main")


def test_async_generators_inside_goroutines(run):
    async def agen():
        try:
            for i in range(3):
                await mnsched.sleep(0)
                yield i
        finally:
            await asyncio.sleep(0)

    async def main():
        out = [x async for x in agen()]
        g = mnsched.go(_consume_one(agen()))
        return out, await g

    assert run(main()) == ([0, 1, 2], 0)


async def _consume_one(ag):
    async for x in ag:
        await ag.aclose()
        return x


# -- anyio --------------------------------------------------------------------------------


def test_anyio_task_group_and_sleep(run):
    async def worker(i, results):
        await anyio.sleep(0.001)
        results.append(i)

    async def main():
        results: list[int] = []
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(worker, i, results)
        return sorted(results)

    assert run(mnsched_anyio(main)) == list(range(10))


def mnsched_anyio(fn):
    async def wrapper():
        return await fn()

    return wrapper()


def test_anyio_cancel_scopes(run):
    async def main():
        with anyio.move_on_after(0.02) as scope:
            await mnsched.sleep(10)
        assert scope.cancelled_caught
        with anyio.move_on_after(0.02) as scope:
            await anyio.sleep(10)
        assert scope.cancelled_caught
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.02):
                await anyio.sleep(10)
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 10)
            await anyio.sleep(0.001)
            tg.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.001)
        return "ok"

    assert run(main()) == "ok"


def test_anyio_memory_streams_and_to_thread(run):
    async def main():
        send, receive = anyio.create_memory_object_stream[int](5)

        async def produce():
            async with send:
                for i in range(20):
                    await send.send(i)

        total = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            async with receive:
                async for v in receive:
                    total += v
        total += await anyio.to_thread.run_sync(sum, [1, 2, 3])
        return total

    assert run(main()) == sum(range(20)) + 6


def test_anyio_sockets(run):
    async def main():
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)

        async def serve(conn):
            async with conn:
                data = await conn.receive()
                await conn.send(data[::-1])

        async def client(i):
            async with await anyio.connect_tcp("127.0.0.1", port) as c:
                await c.send(f"abc{i}".encode())
                return (await c.receive()).decode()

        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, serve)
            gs = [mnsched.go(client(i)) for i in range(10)]
            out = [await g for g in gs]
            tg.cancel_scope.cancel()
        return out

    assert run(main()) == [f"abc{i}"[::-1] for i in range(10)]


def test_goroutine_pinned_after_asyncio_use_stays_on_its_p(run):
    async def worker():
        await asyncio.sleep(0)  # not a future: no pin
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(fut.set_result, None)
        await fut  # an asyncio future: pinned from here on
        home = asyncio.get_running_loop()
        for _ in range(20):
            await mnsched.gosched()
            await mnsched.sleep(0)
            assert asyncio.get_running_loop() is home
        return True

    async def main():
        gs = [mnsched.go(worker()) for _ in range(8)]
        return all([await g for g in gs])

    assert run(main())


def test_loop_bound_object_made_before_a_channel_wait(run):
    # A goroutine that creates something bound to its loop (here an aiohttp session,
    # which captures asyncio.get_running_loop()) and then waits on a channel must come
    # back on that loop: asking for the loop pins it.
    import aiohttp
    from aiohttp import web

    async def main():
        app = web.Application()
        app.router.add_get("/", _ok)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        ch = mnsched.Chan()

        async def client():
            async with aiohttp.ClientSession() as session:
                for _ in range(5):
                    await ch.recv()  # an mnsched park point: may not move it now
                    async with session.get(f"http://127.0.0.1:{port}/") as r:
                        assert await r.text() == "ok"
            return True

        gs = [mnsched.go(client()) for _ in range(4)]
        for _ in range(20):
            await ch.send(None)
        ok = all([await g for g in gs])
        await runner.cleanup()
        return ok

    assert run(main())


async def _ok(request):
    from aiohttp import web

    return web.Response(text="ok")


def test_a_future_of_another_loop_is_refused_as_a_task_refuses_it(run):
    # A Task raises at once; a goroutine must not wait on a loop that may never run
    # (it could be neither woken nor cancelled).
    other = asyncio.new_event_loop()
    try:

        async def main():
            fut = other.create_future()
            with pytest.raises(RuntimeError, match="attached to a different loop"):
                await fut
            return "still running"

        assert run(main()) == "still running"
    finally:
        other.close()


def test_cancel_lets_an_awaited_task_swallow_it_as_under_a_task(run):
    # Task.cancel cancels the future it awaits and nothing more: if the awaited task
    # handles the cancellation and returns, the canceller sees that result.
    async def body():
        async def inner():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                return "swallowed"

        t = asyncio.create_task(inner())
        try:
            async with asyncio.timeout(0.01):
                return await t
        except TimeoutError:
            return "TimeoutError"

    async def main():
        as_task = await asyncio.create_task(body())
        as_goroutine = await mnsched.go(body())
        return as_task, as_goroutine

    assert run(main()) == ("swallowed", "swallowed")


def test_cancel_after_the_awaited_future_completed_is_not_lost(run):
    # The future completed before the cancel reached it: the cancellation is thrown in
    # as the goroutine resumes, exactly where a Task takes it (Task._must_cancel).
    async def scenario(spawn):
        fut = asyncio.get_running_loop().create_future()
        reached = []

        async def child():
            try:
                await fut
                reached.append("after the future")
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                reached.append("cancelled")
                raise

        t = spawn(child())
        await asyncio.sleep(0.01)
        fut.set_result(None)  # done: the child's wake-up is pending, it has not resumed
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        return reached

    async def main():
        return await scenario(asyncio.create_task), await scenario(mnsched.go)

    as_task, as_goroutine = run(main())
    assert as_goroutine == as_task == ["cancelled"]


def test_a_goroutine_resumes_when_its_future_completes_as_a_task_does(run):
    # A Task resumes in its future's done-callback; so does a goroutine, so the two
    # interleave with other tasks the same way.
    async def body():
        log = []

        async def t():
            log.append(1)
            await asyncio.sleep(0)
            log.append(2)

        task = asyncio.create_task(t())
        await asyncio.sleep(0)
        seen = list(log)
        await task
        return seen

    async def main():
        return await asyncio.create_task(body()), await mnsched.go(body())

    as_task, as_goroutine = run(main())
    assert as_goroutine == as_task == [1]


def test_anyio_start_keeps_the_started_value_when_the_child_then_fails(run):
    # anyio re-delivers cancellation every loop iteration to tasks that await nothing:
    # a goroutine must never be caught between its future's completion and its step.
    async def body():
        async def child(*, task_status):
            task_status.started(2)
            raise RuntimeError("after started")

        value = None
        with pytest.raises(BaseExceptionGroup):
            async with anyio.create_task_group() as tg:
                value = await tg.start(child)
        return value

    async def main():
        return await asyncio.create_task(body()), await mnsched.go(body())

    as_task, as_goroutine = run(main())
    assert as_goroutine == as_task == 2


def test_goroutines_are_in_all_tasks_of_their_loop(run):
    async def main():
        me = asyncio.current_task()
        c = mnsched.Chan()
        loops = mnsched.Chan(3)

        async def waiter():
            await loops.send(asyncio.get_running_loop())  # pinned: it stays on this loop
            await c.recv()

        gs = [mnsched.go(waiter()) for _ in range(3)]
        where = {}
        for _ in gs:
            where.setdefault(await loops.recv(), 0)
        # Each parked waiter is listed on exactly one loop: its own.
        listed = [sum(g in asyncio.all_tasks(loop) for loop in where) for g in gs]
        for _ in gs:
            await c.send(None)
        for g in gs:
            await g
        gone = [g in asyncio.all_tasks(loop) for loop in where for g in gs]
        return me in asyncio.all_tasks(), listed, any(gone)

    assert run(main()) == (True, [1, 1, 1], False)


def test_all_tasks_lists_parked_goroutines_on_their_loop(run):
    async def main():
        loop = asyncio.get_running_loop()
        c = mnsched.Chan()
        started = mnsched.Chan()

        async def parked():
            await started.send(asyncio.get_running_loop())
            await c.recv()

        g = mnsched.go(parked(), pin=True)  # on main's P: main's loop
        assert await started.recv() is loop
        await mnsched.gosched()
        listed = g in asyncio.all_tasks(loop)
        await c.send(None)
        await g
        return listed

    assert run(main())


def test_anyio_wait_all_tasks_blocked_sees_goroutines(run):
    # anyio counts a task as blocked while its _fut_waiter is a pending future: a
    # goroutine parked on a channel is blocked, one that still runs is not.
    async def main():
        c = mnsched.Chan()
        log = []

        async def worker():
            for i in range(20):
                await mnsched.gosched()
                log.append(i)
            await c.recv()

        g = mnsched.go(worker(), pin=True)
        await anyio.wait_all_tasks_blocked()
        seen = len(log)
        await c.send(None)
        await g
        return seen

    assert run(main()) == 20


def test_the_loop_answers_the_task_factory_its_users_set(rt_params):
    # mnsched wraps each loop's task factory (a goroutine that makes a task is pinned to
    # that loop), but the loop still answers the factory its users set: anyio starts
    # tasks without asyncio's eager factory by recognising it.
    procs, kind = rt_params

    def factory(loop, coro, **kwargs):
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def inside():
        loop = asyncio.get_running_loop()
        before = loop.get_task_factory()
        loop.set_task_factory(factory)
        made = await asyncio.create_task(_me())
        after = loop.get_task_factory()
        loop.set_task_factory(None)
        return before, after is factory, type(made).__name__

    async def host():
        async with mnsched.Runtime(procs=procs, loop=kind, attach=True) as rt:
            return await rt.go(inside())

    assert asyncio.run(host()) == (None, True, "Task")


@pytest.mark.skipif(not hasattr(asyncio, "eager_task_factory"), reason="Python 3.12+")
def test_anyio_task_group_under_the_eager_task_factory(rt_params):
    procs, kind = rt_params

    async def body():
        started = []

        async def child(i):
            started.append(i)
            await anyio.sleep(0)

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(child, i)
        return started

    async def host():
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        as_task = await asyncio.create_task(body())
        async with mnsched.Runtime(procs=procs, loop=kind, attach=True) as rt:
            return as_task, await rt.go(body())

    as_task, as_goroutine = asyncio.run(host())
    assert as_goroutine == as_task == [0, 1, 2]
