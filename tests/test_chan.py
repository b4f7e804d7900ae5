"""Channels (Go's chan_test.go intent): blocking, close and FIFO semantics, consumers,
cancellation, and use from plain threads and foreign loops."""

from __future__ import annotations

import asyncio
import threading

import pytest

import mnsched
from mnsched import Chan, ChannelClosed, WouldBlock


async def settle(n: int = 50) -> None:
    """Let every runnable goroutine run for a while (bounded: n yields)."""
    for _ in range(n):
        await mnsched.gosched()


@pytest.mark.parametrize("cap", [0, 1, 2, 5])
def test_chan_semantics(run, cap):
    async def main():
        ch: Chan[int] = Chan(cap)
        assert ch.cap == cap and len(ch) == 0
        # receive from an empty channel blocks; the non-blocking one does not
        with pytest.raises(WouldBlock):
            ch.try_recv()
        r = mnsched.go(ch.recv())
        await settle()
        assert not r.done()
        await ch.send(42)
        assert await r == 42
        # send to a full channel blocks
        for i in range(cap):
            ch.try_send(i)
        with pytest.raises(WouldBlock):
            ch.try_send(99)
        s = mnsched.go(ch.send(99))
        await settle()
        assert not s.done()
        assert len(ch) == cap
        got = [await ch.recv() for _ in range(cap + 1)]
        await s
        assert got == [*range(cap), 99]
        # FIFO: 100 values from one goroutine arrive in order, also through recv_ok
        async def produce():
            for i in range(100):
                await ch.send(i)

        p = mnsched.go(produce())
        assert [await ch.recv() for _ in range(50)] == list(range(50))
        assert [(await ch.recv_ok())[0] for _ in range(50)] == list(range(50, 100))
        await p
        # close: the buffer drains, then receivers see closed
        for i in range(cap):
            ch.try_send(i)
        ch.close()
        assert [await ch.recv() for _ in range(cap)] == list(range(cap))
        assert await ch.recv_ok() == (None, False)
        with pytest.raises(ChannelClosed, match="receive from closed"):
            await ch.recv()
        with pytest.raises(ChannelClosed, match="send on closed"):
            await ch.send(1)
        with pytest.raises(ChannelClosed, match="send on closed"):
            ch.try_send(1)
        with pytest.raises(ChannelClosed, match="close of closed"):
            ch.close()
        return True

    assert run(main())


def test_close_wakes_blocked_receivers_and_senders(run):
    async def main():
        ch: Chan[int] = Chan()
        rs = [mnsched.go(ch.recv_ok()) for _ in range(5)]
        await settle()
        ch.close()
        assert [await r for r in rs] == [(None, False)] * 5
        ch2: Chan[int] = Chan()
        ss = [mnsched.go(ch2.send(i)) for i in range(5)]
        await settle()
        ch2.close()
        for s in ss:
            with pytest.raises(ChannelClosed):
                await s
        return True

    assert run(main())


def test_async_for_drains_until_closed(run):
    async def main():
        ch: Chan[int] = Chan(3)

        async def produce():
            for i in range(10):
                await ch.send(i)
            ch.close()

        mnsched.go(produce())
        return [v async for v in ch]

    assert run(main()) == list(range(10))


def test_send_1000_integers_from_4_goroutines(run):
    async def main():
        ch: Chan[int] = Chan()

        async def send(base):
            for i in range(1000):
                await ch.send(base + i)

        for k in range(4):
            mnsched.go(send(k * 1000))
        got = sorted([await ch.recv() for _ in range(4000)])
        return got

    assert run(main()) == list(range(4000))


@pytest.mark.timeout(300)
def test_multi_consumer(run):
    # Go's TestMultiConsumer: 23 workers, 271,828 items, the sum is exact.
    nwork, niter = 23, 271_828

    async def main():
        q: Chan[int] = Chan(nwork * 3)
        r: Chan[int] = Chan(nwork * 3)
        wg = mnsched.WaitGroup()

        async def worker():
            async for v in q:
                await r.send(1 * v)
            wg.done()

        for _ in range(nwork):
            wg.add(1)
            mnsched.go(worker())

        async def closer():
            await wg.wait()
            r.close()

        async def feed():
            for i in range(niter):
                await q.send(i)
            q.close()

        mnsched.go(closer())
        mnsched.go(feed())
        n = s = 0
        async for v in r:
            n += 1
            s += v
        return n, s

    assert run(main()) == (niter, niter * (niter - 1) // 2)


def test_cancel_while_blocked_leaves_the_queue(run):
    async def main():
        ch: Chan[int] = Chan()
        r = mnsched.go(ch.recv())
        s = mnsched.go(Chan().send(1))
        await settle()
        r.cancel()
        s.cancel()
        with pytest.raises(asyncio.CancelledError):
            await r
        with pytest.raises(asyncio.CancelledError):
            await s
        with pytest.raises(WouldBlock):  # the cancelled receiver is gone from the queue
            ch.try_send(1)
        return True

    assert run(main())


def test_cancel_never_loses_or_duplicates_a_value(run):
    # The receiver may be cancelled just as a sender hands it a value: then it keeps the
    # value and takes the cancellation at its next wait.
    async def main():
        got: list[int] = []
        for i in range(300):
            ch: Chan[int] = Chan()

            async def receiver(ch=ch):
                got.append(await ch.recv())
                await mnsched.sleep(60)  # the cancellation lands here

            r = mnsched.go(receiver())
            await ch.send(i)  # returns once the receiver has taken it
            r.cancel()
            with pytest.raises(asyncio.CancelledError):
                await r
        # and senders: a sender cancelled as its value is taken still counts it sent
        sent = 0
        for i in range(300):
            ch = Chan()

            async def sender(ch=ch, i=i):
                await ch.send(i)
                return "sent"

            s = mnsched.go(sender())
            await settle(3)
            v = await ch.recv()
            s.cancel()
            try:
                assert await s == "sent"
                sent += 1
            except asyncio.CancelledError:
                sent += 1  # it was cancelled after the hand-off, at its next wait: ok
            assert v == i
        return got, sent

    got, sent = run(main())
    assert got == list(range(300)) and sent == 300


def test_plain_threads_and_goroutines_exchange(runtime):
    ch: Chan[int] = Chan()
    out: Chan[int] = Chan(10)

    async def doubler():
        async for v in ch:
            await out.send(2 * v)
        out.close()

    runtime.go(doubler())
    results = []

    def reader():
        while True:
            try:
                results.append(out.recv_blocking(timeout=10))
            except ChannelClosed:
                return

    t = threading.Thread(target=reader)
    t.start()
    for i in range(100):
        ch.send_blocking(i, timeout=10)
    ch.close()
    t.join(10)
    assert results == [2 * i for i in range(100)]
    with pytest.raises(TimeoutError):
        Chan().recv_blocking(timeout=0.01)
    with pytest.raises(TimeoutError):
        Chan().send_blocking(1, timeout=0.01)


def test_blocking_calls_refused_inside_goroutines(run):
    async def main():
        with pytest.raises(mnsched.BlockingCallError, match=r"await ch\.recv"):
            Chan().recv_blocking()
        with pytest.raises(mnsched.BlockingCallError, match=r"await ch\.send"):
            Chan().send_blocking(1)

    run(main())


def test_foreign_asyncio_loop_uses_channels(runtime):
    ch: Chan[int] = Chan()
    back: Chan[int] = Chan()

    async def echo():
        async for v in ch:
            await back.send(v + 1)

    runtime.go(echo())

    async def host():
        out = []
        for i in range(50):
            await ch.send(i)
            out.append(await back.recv())
        ch.close()
        return out

    assert asyncio.run(host()) == list(range(1, 51))


def test_foreign_task_cancelled_while_waiting(runtime):
    ch: Chan[int] = Chan()

    async def host():
        t = asyncio.ensure_future(ch.recv())
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        with pytest.raises(WouldBlock):  # gone from the queue
            ch.try_send(1)

    asyncio.run(host())


def test_bad_capacity():
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ValueError, match="capacity"):
            Chan(bad)
