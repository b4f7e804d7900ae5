"""select (Go's chan_test.go intent): exactly one case, default, fairness, timeouts, stress."""

from __future__ import annotations

import asyncio
import math

import pytest

import mnsched
from mnsched import Chan, ChannelClosed, Recv, Send, after, select


def test_default_returns_when_no_case_is_ready(run):
    async def main():
        a, b = Chan(), Chan(1)
        return await select(Recv(a), Recv(b), default="nothing"), await select(default=7)

    assert run(main()) == ("nothing", 7)


def test_a_ready_receive_fires_instead_of_the_default(run):
    async def main():
        a, b = Chan(), Chan(1)
        b.try_send("x")
        ra, rb = Recv(a), Recv(b)
        fired = await select(ra, rb, default=None)
        return fired is rb, rb.value, rb.ok

    assert run(main()) == (True, "x", True)


def test_a_ready_send_fires_instead_of_the_default(run):
    async def main():
        a, b = Chan(), Chan(1)
        sb = Send(b, "y")
        fired = await select(Send(a, 1), sb, default=None)
        return fired is sb, b.try_recv()

    assert run(main()) == (True, "y")


def test_select_blocks_until_a_case_is_ready(run):
    async def main():
        a, b = Chan(), Chan()
        ra, rb = Recv(a), Recv(b)
        g = mnsched.go(select(ra, rb))
        for _ in range(20):
            await mnsched.gosched()
        assert not g.done()
        await b.send("hello")
        fired = await g
        # exactly one case fired; the other channel is untouched and the select's
        # waiter is gone from it
        assert fired is rb and rb.value == "hello"
        with pytest.raises(mnsched.WouldBlock):
            a.try_send(1)
        return True

    assert run(main())


def test_select_send_case_waits_for_a_receiver(run):
    async def main():
        a = Chan()
        s = Send(a, 5)
        g = mnsched.go(select(s, Recv(Chan())))
        assert await a.recv() == 5
        return await g is s

    assert run(main())


def test_timeout_case(run):
    async def main():
        never = Chan()
        timeout = Recv(after(0.02))
        fired = await select(Recv(never), timeout)
        return fired is timeout, isinstance(timeout.value, float)

    assert run(main()) == (True, True)


def test_closed_channels_in_select(run):
    async def main():
        a = Chan()
        a.close()
        r = Recv(a)
        assert await select(r) is r and not r.ok and r.value is None
        with pytest.raises(ChannelClosed):
            await select(Send(a, 1))
        b = Chan()
        g = mnsched.go(select(Send(b, 1), Recv(Chan())))
        for _ in range(20):
            await mnsched.gosched()
        b.close()
        with pytest.raises(ChannelClosed):
            await g
        return True

    assert run(main())


def test_select_cancel_removes_every_waiter(run):
    async def main():
        chans = [Chan() for _ in range(4)]
        g = mnsched.go(select(*(Recv(c) for c in chans)))
        for _ in range(20):
            await mnsched.gosched()
        g.cancel()
        with pytest.raises(asyncio.CancelledError):
            await g
        for c in chans:
            with pytest.raises(mnsched.WouldBlock):
                c.try_send(1)
        return True

    assert run(main())


def test_select_fairness(run):
    # Go's TestSelectFairness: two always-ready channels; each is chosen within 10 sigma
    # of half of 10,000 selects.
    trials = 10_000

    async def main():
        c1, c2 = Chan(trials + 1), Chan(trials + 1)
        for _ in range(trials + 1):
            c1.try_send(1)
            c2.try_send(2)
        r1, r2 = Recv(c1), Recv(c2)
        cnt1 = 0
        for _ in range(trials):
            if await select(r1, r2) is r1:
                cnt1 += 1
        return cnt1

    cnt1 = run(main())
    sigma = math.sqrt(trials) / 2
    assert abs(cnt1 - trials / 2) <= 10 * sigma, cnt1


@pytest.mark.timeout(300)
def test_select_stress(run):
    # Go's TestSelectStress: 4 channels (2 unbuffered, cap 2, cap 3); plain senders and
    # receivers plus select senders and receivers; nothing lost, no deadlock.
    n = 10_000  # values per channel per kind of sender (Go's size under -short)

    async def main():
        cs = [Chan(), Chan(), Chan(2), Chan(3)]
        wg = mnsched.WaitGroup()
        received = [0, 0]

        async def plain_sender(c):
            for i in range(n):
                await c.send(i)
            wg.done()

        async def plain_receiver(c):
            for _ in range(n):
                await c.recv()
            wg.done()

        async def select_sender():
            left = [n] * 4
            while any(left):
                cases = [Send(c, 1) for c, k in zip(cs, left, strict=True) if k]
                fired = await select(*cases)
                left[cs.index(fired.ch)] -= 1
            wg.done()

        async def select_receiver():
            left = [n] * 4
            while any(left):
                cases = [Recv(c) for c, k in zip(cs, left, strict=True) if k]
                fired = await select(*cases)
                left[cs.index(fired.ch)] -= 1
                received[1] += 1
            wg.done()

        for c in cs:
            wg.add(2)
            mnsched.go(plain_sender(c))
            mnsched.go(plain_receiver(c))
        wg.add(2)
        mnsched.go(select_sender())
        mnsched.go(select_receiver())
        await wg.wait()
        return received[1]

    assert run(main()) == 4 * n


# -- nil channels and select {} (Go's spec: "a nil channel is never ready") -----------------


def test_cases_on_a_nil_channel_never_fire(run):
    async def main():
        ch = Chan(1)
        # with a default: a nil case is never ready, whatever it would send or receive
        assert await select(Recv(None), Send(None, 1), default="idle") == "idle"
        ch.try_send("v")
        rx = Recv(ch)
        fired = await select(Recv(None), rx, Send(None, 2))
        return fired is rx, rx.value

    assert run(main()) == (True, "v")


def test_merging_two_channels_by_switching_closed_ones_off(run):
    """Go's idiom: set a closed channel's variable to nil so its case stops firing."""

    async def main():
        a, b, out = Chan(), Chan(), []

        async def feed(ch, items):
            for v in items:
                await ch.send(v)
            ch.close()

        mnsched.go(feed(a, [1, 2, 3]))
        mnsched.go(feed(b, [10, 20]))
        ca, cb = a, b
        while ca is not None or cb is not None:
            ra, rb = Recv(ca), Recv(cb)
            fired = await select(ra, rb)
            if not fired.ok:  # closed: never again
                if fired is ra:
                    ca = None
                else:
                    cb = None
                continue
            out.append(fired.value)
        return sorted(out)

    assert run(main()) == [1, 2, 3, 10, 20]


def test_select_with_no_cases_waits_until_cancelled(run):
    async def main():
        parked = mnsched.go(select(), name="forever")
        nil_only = mnsched.go(select(Recv(None), Send(None, 1)), name="nil-only")
        while {i.wait_reason for i in mnsched.stacks() if i.name in ("forever", "nil-only")} != {
            "select (no cases)"
        }:
            await mnsched.gosched()
        parked.cancel()
        nil_only.cancel()
        outcomes = []
        for g in (parked, nil_only):
            try:
                await g
            except asyncio.CancelledError:
                outcomes.append("cancelled")
        return outcomes

    assert run(main()) == ["cancelled", "cancelled"]


def test_a_task_of_a_plain_loop_can_select_for_ever_until_cancelled():
    async def main():
        t = asyncio.ensure_future(select())
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        return t.cancelled()

    assert asyncio.run(main())


def test_select_for_ever_is_a_deadlock_when_nothing_else_can_run(run):
    async def main():
        await select()

    with pytest.raises(mnsched.Deadlock, match=r"select \(no cases\)"):
        run(main())


def test_a_case_that_is_not_a_channel_is_refused():
    with pytest.raises(TypeError, match="or None, a case that never fires"):
        Recv(3)
    with pytest.raises(TypeError, match="or None, a case that never fires"):
        Send("ch", 1)
