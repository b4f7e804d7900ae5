"""Go's own channel test programs (go/test/chan/*.go, go/test/chancap.go, closedchan.go,
chanlinear.go; Copyright The Go Authors, BSD-style licence), ported to mnsched: each
keeps its Go program's checks, and its comments where they still apply (quoted as
"Go:"). They run at procs 1, 2 and 4 on both loop kinds.

Where Go waits on a timer and hopes that a goroutine has blocked meanwhile
(nonblock.go's sleep, select3.go's 0.1 s), these wait until it is parked instead. What
Python cannot say is left out and named: a nil channel outside a select (``None`` has
no ``send``), Go's zero values (a receive on a closed channel raises ChannelClosed;
``recv_ok`` gives ``(None, False)``), and perm.go's compile-time channel directions.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import itertools
import time
import tracemalloc
from collections import deque
from typing import Any

import pytest

import mnsched
from conftest import at_procs
from mnsched import Chan, ChannelClosed, Recv, Send, WaitGroup, WouldBlock, select

PRIMES_TO_100 = [
    2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
    97,
]  # fmt: skip


async def parked(g: mnsched.G[Any]) -> None:
    """Until g is parked (blocked on a channel or select): the deterministic form of Go's
    tests' "sleep, and it will have blocked by then"."""
    while g.status != "parked":
        await mnsched.gosched()


async def blocks(coro: Any) -> bool:
    """select3.go's testBlock: True if coro blocks for ever (it parks and nothing can
    wake it; it is cancelled then), False if it finishes."""
    g = mnsched.go(coro)
    while g.status not in ("parked", "done"):
        await mnsched.gosched()
    if g.done():
        await g
        return False
    g.cancel()
    with pytest.raises(asyncio.CancelledError):
        await g
    return True


# -- doubleselect.go --------------------------------------------------------------------


def test_doubleselect(run):
    """Go: This test is designed to flush out the case where two cases of a select can
    both end up running."""
    iterations = 3000

    async def sender(n, c1, c2, c3, c4):
        # Go: sender sends a counter to one of four different channels. If two cases
        # both end up running in the same iteration, the same value will be sent to two
        # different channels.
        for i in range(n):
            await select(Send(c1, i), Send(c2, i), Send(c3, i), Send(c4, i))
        for c in (c1, c2, c3, c4):
            c.close()

    async def mux(out, inp, wg):
        # Go: mux receives the values from sender and forwards them onto another channel.
        async for v in inp:
            await out.send(v)
        wg.done()

    async def main():
        c1, c2, c3, c4, cmux = Chan(), Chan(), Chan(), Chan(), Chan()
        wg = WaitGroup()
        wg.add(4)
        mnsched.go(sender(iterations, c1, c2, c3, c4))
        for c in (c1, c2, c3, c4):
            mnsched.go(mux(cmux, c, wg))

        async def closer():
            await wg.wait()
            cmux.close()

        mnsched.go(closer())
        # Go: recver gets a stream of values from the four muxes and checks for
        # duplicates.
        seen = set()
        async for v in cmux:
            assert v not in seen, f"got duplicate value: {v}"
            seen.add(v)
        return len(seen)

    assert run(main()) == iterations


# -- fifo.go: unbuffered channels act as pure FIFOs --------------------------------------

N_FIFO = 10


def test_fifo(run):
    async def asynch_fifo():
        ch = Chan(N_FIFO)
        for i in range(N_FIFO):
            await ch.send(i)
        for i in range(N_FIFO):
            assert await ch.recv() == i, "bad receive"

    async def chain(ch, val, inp, out):
        await inp.recv()
        assert await ch.recv() == val
        await out.send(1)

    async def synch_fifo():
        # Go: thread together a daisy chain to read the elements in sequence
        ch, inp = Chan(), Chan()
        start = inp
        for i in range(N_FIFO):
            out = Chan()
            mnsched.go(chain(ch, i, inp, out))
            inp = out
        await start.send(0)
        for i in range(N_FIFO):
            await ch.send(i)
        await inp.recv()

    async def main():
        await asynch_fifo()
        await synch_fifo()
        return True

    assert run(main())


# -- goroutines.go: make a lot of goroutines, threaded together; tear them down cleanly --


def test_goroutines(run):
    n = 2000

    async def f(left, right):
        await left.send(await right.recv())

    async def main():
        leftmost = Chan()
        right = left = leftmost
        for _ in range(n):
            right = Chan()
            mnsched.go(f(left, right))
            left = right

        async def start(c):
            await c.send(1)

        mnsched.go(start(right))
        return await leftmost.recv()

    assert run(main()) == 1


# -- nonblock.go: channel operations that test for blocking, several sizes of value -----


def test_nonblock(run):
    values = [(123, 234), (123456, 234567), (True, True), ("hello", "hello again")]

    async def receiver(c, want, strobe):
        assert await c.recv() == want
        await strobe.send(True)

    async def sender(c, v, strobe):
        await c.send(v)
        await strobe.send(True)

    async def main():
        sync = Chan()
        for buffer in (0, 1):
            chans = [Chan(buffer) for _ in values]
            for c in chans:  # nothing to receive: a non-blocking receive fails
                with pytest.raises(WouldBlock):
                    c.try_recv()
            for c, (want, sent) in zip(chans, values, strict=True):
                r = mnsched.go(receiver(c, want, sync))
                await parked(r)  # Go: sleep()
                c.try_send(want)  # a receiver waits: it cannot fail
                await sync.recv()

                s = mnsched.go(sender(c, sent, sync))
                if buffer > 0:
                    await sync.recv()
                else:
                    await parked(s)
                assert c.try_recv() == sent
                if buffer == 0:
                    await sync.recv()
        return True

    assert run(main())


# -- powser1.go, powser2.go: McIlroy's power series, a goroutine per generator ----------
#
# Go: Power series package. A power series is a channel, along which flow rational
# coefficients. A denominator of zero signifies the end. Original code in Newsqueak by
# Doug McIlroy. See Squinting at Power Series by Doug McIlroy,
# https://swtch.com/~rsc/thread/squint.pdf
#
# The two Go programs are one algorithm with two representations of a coefficient:
# powser1 sends ``rat`` values, powser2 sends ``*rat`` pointers behind an ``item``
# interface and asserts their type on receipt. One port takes the representation as a
# parameter. What Go's main never calls (Recip, Subst, Binom, Mon, Monmul, Shift, the
# printing mode and eval) is not ported.


def _quo(a: int, b: int) -> int:
    """Go's integer division, which truncates toward zero (Python's // floors)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


class _RatValue(tuple[int, int]):
    """powser1.go's ``rat``: a value, copied into the channel."""

    __slots__ = ()

    def __new__(cls, num: int, den: int) -> _RatValue:
        return super().__new__(cls, (num, den))

    @property
    def num(self) -> int:
        return self[0]

    @property
    def den(self) -> int:
        return self[1]

    @staticmethod
    def of(it: object) -> _RatValue:
        """A value's type is static in Go: this only checks the port."""
        assert isinstance(it, _RatValue), it
        return it

    def eq(self, c: _RatValue) -> bool:
        return self.num == c.num and self.den == c.den


class _RatPointer:
    """powser2.go's ``*rat`` behind ``type item interface { pr(); eq(c item) bool }``."""

    __slots__ = ("den", "num")

    def __init__(self, num: int, den: int) -> None:
        self.num, self.den = num, den

    @staticmethod
    def of(it: object) -> _RatPointer:
        """Go's type assertion ``it.(*rat)``: panics on anything else."""
        if not isinstance(it, _RatPointer):
            raise TypeError(f"interface conversion: item is {type(it).__name__}, not *rat")
        return it

    def eq(self, c: object) -> bool:
        c1 = _RatPointer.of(c)
        return self.num == c1.num and self.den == c1.den


class _Dch:
    """A demand channel: a request on ``req`` is answered on ``dat``."""

    __slots__ = ("dat", "nam", "req")

    def __init__(self, nam: int) -> None:
        self.req: Chan[int] = Chan()
        self.dat: Chan[Any] = Chan()
        self.nam = nam


class _PowerSeries:
    CHNAMES = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

    def __init__(self, rat: Any) -> None:
        # Go: Init()
        self.rat = rat
        self.chnameserial = -1
        self.seqno = 0
        self.zero = self.itor(0)
        self.one = self.itor(1)
        self.finis = self.i2tor(1, 0)
        self.Ones = self.Rep(self.one)
        self.Twos = self.Rep(self.itor(2))

    def mkdch(self) -> _Dch:
        c = self.chnameserial % len(self.CHNAMES)
        self.chnameserial += 1
        return _Dch(c)

    def mkdch2(self) -> list[_Dch]:
        return [self.mkdch(), self.mkdch()]

    mkPS, mkPS2 = mkdch, mkdch2

    # Go: split reads a single demand channel and replicates its output onto two, which
    # may be read at different rates. A process is created at first demand for a rat
    # and dies after the rat has been sent to both outputs.
    #
    # When multiple generations of split exist, the newest will service requests on one
    # channel, which is always renamed to be out[0]; the oldest will service requests on
    # the other channel, out[1]. All generations but the newest hold queued data that
    # has already been sent to out[0]. When data has finally been sent to out[1], a
    # signal on the release-wait channel tells the next newer generation to begin
    # servicing out[1].
    async def dosplit(self, inp: _Dch, out: list[_Dch], wait: Chan[int]) -> None:
        both = False  # Go: do not service both channels
        first, waited = Recv(out[0].req), Recv(wait)
        if await select(first, waited) is waited:
            both = True
            first, second = Recv(out[0].req), Recv(out[1].req)
            if await select(first, second) is second:
                out[0], out[1] = out[1], out[0]
        self.seqno += 1
        await inp.req.send(self.seqno)
        release: Chan[int] = Chan()
        mnsched.go(self.dosplit(inp, out, release))
        dat = await inp.dat.recv()
        await out[0].dat.send(dat)
        if not both:
            await wait.recv()
        await out[1].req.recv()
        await out[1].dat.send(dat)
        await release.send(0)

    async def split(self, inp: _Dch, out: list[_Dch]) -> None:
        release: Chan[int] = Chan()
        mnsched.go(self.dosplit(inp, out, release))
        await release.send(0)

    async def put(self, dat: Any, out: _Dch) -> None:
        await out.req.recv()
        await out.dat.send(dat)

    async def get(self, inp: _Dch) -> Any:
        self.seqno += 1
        await inp.req.send(self.seqno)
        return self.rat.of(await inp.dat.recv())

    async def getn(self, inp: list[_Dch]) -> list[Any]:
        """Go: Get one rat from each of n demand channels; a nil channel switches its
        case off once that half is done."""
        n = len(inp)
        if n != 2:
            raise AssertionError("bad n in getn")
        req: list[Chan[int] | None] = [inp[0].req, inp[1].req]
        dat: list[Chan[Any] | None] = [None, None]
        out: list[Any] = [None, None]
        for _ in range(2 * n):
            self.seqno += 1
            cases = (
                Send(req[0], self.seqno),
                Send(req[1], self.seqno),
                Recv(dat[0]),
                Recv(dat[1]),
            )
            i = cases.index(await select(*cases))
            if i < 2:
                dat[i], req[i] = inp[i].dat, None
            else:
                out[i - 2], dat[i - 2] = self.rat.of(cases[i].value), None
        return out

    async def get2(self, in0: _Dch, in1: _Dch) -> list[Any]:
        return await self.getn([in0, in1])

    async def copy(self, inp: _Dch, out: _Dch) -> None:
        while True:
            await out.req.recv()
            await out.dat.send(await self.get(inp))

    async def repeat(self, dat: Any, out: _Dch) -> None:
        while True:
            await self.put(dat, out)

    # Go: Integer gcd; needed for rational arithmetic
    def gcd(self, u: int, v: int) -> int:
        if u < 0:
            return self.gcd(-u, v)
        if u == 0:
            return v
        return self.gcd(v - u * _quo(v, u), u)

    # Go: Make a rational from two ints and from one int
    def i2tor(self, u: int, v: int) -> Any:
        g = self.gcd(u, v)
        if v > 0:
            return self.rat(_quo(u, g), _quo(v, g))
        return self.rat(_quo(-u, g), _quo(-v, g))

    def itor(self, u: int) -> Any:
        return self.i2tor(u, 1)

    # Go: End mark and end test
    def end(self, u: Any) -> int:
        return 1 if u.den == 0 else 0

    # Go: Operations on rationals
    def add(self, u: Any, v: Any) -> Any:
        g = self.gcd(u.den, v.den)
        return self.i2tor(u.num * _quo(v.den, g) + v.num * _quo(u.den, g), u.den * _quo(v.den, g))

    def mul(self, u: Any, v: Any) -> Any:
        g1 = self.gcd(u.num, v.den)
        g2 = self.gcd(u.den, v.num)
        return self.rat(_quo(u.num, g1) * _quo(v.num, g2), _quo(u.den, g2) * _quo(v.den, g1))

    def neg(self, u: Any) -> Any:
        return self.i2tor(-u.num, u.den)

    # Go: Power-series constructors return channels on which power series flow. They
    # start an encapsulated generator that puts the terms of the series on the channel.

    def Split(self, U: _Dch) -> list[_Dch]:
        """Go: Make a pair of power series identical to a given power series"""
        UU = self.mkdch2()
        mnsched.go(self.split(U, UU))
        return UU

    def Add(self, U: _Dch, V: _Dch) -> _Dch:
        """Go: Add two power series"""
        Z = self.mkPS()

        async def body() -> None:
            while True:
                await Z.req.recv()
                uv = await self.get2(U, V)
                match self.end(uv[0]) + 2 * self.end(uv[1]):
                    case 0:
                        await Z.dat.send(self.add(uv[0], uv[1]))
                    case 1:
                        await Z.dat.send(uv[1])
                        await self.copy(V, Z)
                    case 2:
                        await Z.dat.send(uv[0])
                        await self.copy(U, Z)
                    case 3:
                        await Z.dat.send(self.finis)

        mnsched.go(body())
        return Z

    def Cmul(self, c: Any, U: _Dch) -> _Dch:
        """Go: Multiply a power series by a constant"""
        Z = self.mkPS()

        async def body() -> None:
            done = False
            while not done:
                await Z.req.recv()
                u = await self.get(U)
                if self.end(u) != 0:
                    done = True
                else:
                    await Z.dat.send(self.mul(c, u))
            await Z.dat.send(self.finis)

        mnsched.go(body())
        return Z

    def Sub(self, U: _Dch, V: _Dch) -> _Dch:
        return self.Add(U, self.Cmul(self.neg(self.one), V))

    def Rep(self, c: Any) -> _Dch:
        Z = self.mkPS()
        mnsched.go(self.repeat(c, Z))
        return Z

    def Mul(self, U: _Dch, V: _Dch) -> _Dch:
        """Go: Multiply. The algorithm is
        let U = u + x*UU
        let V = v + x*VV
        then UV = u*v + x*(u*VV+v*UU) + x*x*UU*VV"""
        Z = self.mkPS()

        async def body() -> None:
            await Z.req.recv()
            uv = await self.get2(U, V)
            if self.end(uv[0]) != 0 or self.end(uv[1]) != 0:
                await Z.dat.send(self.finis)
            else:
                await Z.dat.send(self.mul(uv[0], uv[1]))
                UU = self.Split(U)
                VV = self.Split(V)
                W = self.Add(self.Cmul(uv[0], VV[0]), self.Cmul(uv[1], UU[0]))
                await Z.req.recv()
                await Z.dat.send(await self.get(W))
                await self.copy(self.Add(W, self.Mul(UU[1], VV[1])), Z)

        mnsched.go(body())
        return Z

    def Diff(self, U: _Dch) -> _Dch:
        """Go: Differentiate"""
        Z = self.mkPS()

        async def body() -> None:
            await Z.req.recv()
            u = await self.get(U)
            if self.end(u) == 0:
                done = False
                i = 1
                while not done:
                    u = await self.get(U)
                    if self.end(u) != 0:
                        done = True
                    else:
                        await Z.dat.send(self.mul(self.itor(i), u))
                        await Z.req.recv()
                    i += 1
            await Z.dat.send(self.finis)

        mnsched.go(body())
        return Z

    def Integ(self, c: Any, U: _Dch) -> _Dch:
        """Go: Integrate, with const of integration"""
        Z = self.mkPS()

        async def body() -> None:
            await self.put(c, Z)
            done = False
            i = 1
            while not done:
                await Z.req.recv()
                u = await self.get(U)
                if self.end(u) != 0:
                    done = True
                await Z.dat.send(self.mul(self.i2tor(1, i), u))
                i += 1
            await Z.dat.send(self.finis)

        mnsched.go(body())
        return Z

    async def Exp(self, U: _Dch) -> _Dch:
        """Go: Exponential of a power series with constant term 0 (nonzero constant
        term would make nonrational coefficients); bug: the constant term is simply
        ignored.
        Z = exp(U)
        DZ = Z*DU
        integrate to get Z"""
        ZZ = self.mkPS2()
        await self.split(self.Integ(self.one, self.Mul(ZZ[0], self.Diff(U))), ZZ)
        return ZZ[1]

    def MonSubst(self, U: _Dch, c0: Any, n: int) -> _Dch:
        """Go: Monomial Substitution: U(c x^n). Each Ui is multiplied by c^i and
        followed by n-1 zeros"""
        Z = self.mkPS()

        async def body() -> None:
            c = self.one
            while True:
                await Z.req.recv()
                u = await self.get(U)
                await Z.dat.send(self.mul(u, c))
                c = self.mul(c, c0)
                if self.end(u) != 0:
                    await Z.dat.send(self.finis)
                    break
                for _ in range(1, n):
                    await Z.req.recv()
                    await Z.dat.send(self.zero)

        mnsched.go(body())
        return Z

    async def check(self, U: _Dch, c: Any, count: int, name: str) -> None:
        for _ in range(count):
            r = await self.get(U)
            if not r.eq(c):
                raise AssertionError(f"{name}: got {r.num}/{r.den}, should get {c.num}/{c.den}")

    async def checka(self, U: _Dch, a: list[Any], name: str) -> None:
        for want in a:  # Go: N = 10 terms
            await self.check(U, want, 1, name)


@pytest.mark.parametrize("rat", [_RatValue, _RatPointer], ids=["powser1", "powser2"])
def test_powser(run, rat):
    async def main():
        ps = _PowerSeries(rat)
        itor, i2tor, zero, one, neg = ps.itor, ps.i2tor, ps.zero, ps.one, ps.neg
        N = 10
        await ps.check(ps.Ones, one, 5, "Ones")
        await ps.check(ps.Add(ps.Ones, ps.Ones), itor(2), 0, "Add Ones Ones")  # 1 1 1 1 1
        await ps.check(ps.Add(ps.Ones, ps.Twos), itor(3), 0, "Add Ones Twos")  # 3 3 3 3 3
        await ps.checka(ps.Diff(ps.Ones), [itor(i + 1) for i in range(N)], "Diff")  # 1 2 3 4 5
        a = [zero] + [i2tor(1, i) for i in range(1, N)]  # Go: integration constant
        await ps.checka(ps.Integ(zero, ps.Ones), a, "Integ")  # 0 1 1/2 1/3 1/4 1/5
        await ps.check(ps.Cmul(neg(one), ps.Twos), itor(-2), 10, "CMul")  # -1 -1 -1 -1 -1
        await ps.check(ps.Sub(ps.Ones, ps.Twos), itor(-1), 0, "Sub Ones Twos")  # -1 -1 -1
        await ps.checka(ps.Mul(ps.Ones, ps.Ones), [itor(i + 1) for i in range(N)], "Mul")
        exp = [(1, 1), (1, 1), (3, 2), (13, 6), (73, 24), (167, 40), (4051, 720),
               (37633, 5040), (43817, 4480), (4596553, 362880)]  # fmt: skip
        await ps.checka(await ps.Exp(ps.Ones), [i2tor(*t) for t in exp], "Exp")  # 1 1 3/2
        at = ps.Integ(zero, ps.MonSubst(ps.Ones, neg(one), 2))
        a, c = [], 1
        for i in range(N):
            if i % 2 == 0:
                a.append(zero)
            else:
                a.append(i2tor(c, i))
                c *= -1
        await ps.checka(at, a, "ATan")  # 0 -1 0 -1/3 0 -1/5
        # Go's program exits with its generators blocked; run() cancels them.
        return True

    assert run(main())


# -- select.go: a select's value expressions, nil channels switching cases off ------------


def test_select(run):
    state = {"counter": 0, "shift": 0}

    def get_value():
        state["counter"] += 1
        return 1 << state["shift"]

    async def send(a, b):
        i = 0
        while True:
            # Go evaluates every case's value, nil channel or not, before choosing.
            sa, sb = Send(a, get_value()), Send(b, get_value())
            fired = await select(sa, sb, default=None)
            if fired is None:
                break
            i += 1
            if fired is sa:
                a = None
            else:
                b = None
            state["shift"] += 1
        return i

    async def main():
        a, b = Chan(1), Chan(1)
        assert await send(a, b) == 2
        av, bv = await a.recv(), await b.recv()
        assert av | bv == 3, ("bad values", av, bv)
        assert await send(a, None) == 1
        assert state["counter"] == 10
        return True

    assert run(main())


# -- select2.go: selects do not consume undue memory ----------------------------------


@at_procs(1, 2)
def test_select2(run):
    n = 20_000

    async def sender(c, n):
        for _ in range(n):
            await c.send(1)

    async def receiver(c, dummy, n):
        for _ in range(n):
            rc, rd = Recv(c), Recv(dummy)
            fired = await select(rc, rd)
            assert fired is rc, "dummy"

    async def main():
        c, dummy = Chan(), Chan()
        # Go: warm up
        mnsched.go(sender(c, n))
        await receiver(c, dummy, n)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            # Go: second time shouldn't increase footprint by much
            mnsched.go(sender(c, n))
            await receiver(c, dummy, n)
            gc.collect()
            return tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()

    grown = run(main())
    assert grown < 1.1e5, f"too much memory for {n} selects: {grown}"


# -- select3.go: the semantics of select for basic empty and non-empty cases ---------------


def test_select3(run):
    async def main():
        nilch = None
        closedch = Chan()
        closedch.close()

        async def nop():
            pass

        # Go: sending/receiving from a nil channel inside a select is never selected
        assert await select(Send(nilch, 7), default="default") == "default"
        assert await select(Recv(nilch), default="default") == "default"

        # Go: sending to an async channel with free buffer space never blocks
        async def send_buffered():
            await Chan(1).send(7)

        assert not await blocks(send_buffered())

        # Go: receiving from a closed channel never blocks
        async def recv_closed():
            for _ in range(10):
                with pytest.raises(ChannelClosed):
                    await closedch.recv()  # Go's zero value: ours raises
                assert await closedch.recv_ok() == (None, False)

        assert not await blocks(recv_closed())

        # Go: sending to a closed channel panics.
        with pytest.raises(ChannelClosed):
            await closedch.send(7)

        # Go: receiving from a non-ready channel always blocks
        assert await blocks(Chan().recv())

        # Go: empty selects always block
        assert await blocks(select())

        # Go: selects with only nil channels always block
        assert await blocks(select(Recv(nilch)))
        assert await blocks(select(Send(nilch, 7)))
        assert await blocks(select(Recv(nilch), Send(nilch, 7)))

        # Go: selects with non-ready non-nil channels always block
        assert await blocks(select(Recv(Chan())))

        # Go: selects with default cases don't block
        assert not await blocks(select(default=None))
        assert not await blocks(select(Recv(nilch), default=None))
        assert not await blocks(select(Send(nilch, 7), default=None))

        # Go: selects with ready channels don't block
        ch = Chan(1)
        s = Send(ch, 7)
        assert await select(s, default=None) is s
        r = Recv(ch)
        assert await select(r, default=None) is r and r.value == 7

        # Go: selects with closed channels behave like ordinary operations
        r = Recv(closedch)
        assert await select(r) is r and (r.value, r.ok) == (None, False)
        with pytest.raises(ChannelClosed):
            await select(Send(closedch, 7))

        # Go: select should not get confused if it sees itself
        c = Chan()
        assert await blocks(select(Send(c, 1), Recv(c)))
        assert not await blocks(nop())
        return True

    assert run(main())


# -- select4.go: only the chosen case's receive is assigned ------------------------------


def test_select4(run):
    async def main():
        c, c1 = Chan(1), Chan()
        await c.send(42)
        r1, r = Recv(c1), Recv(c)
        assert await select(r1, r) is r
        assert r.value == 42 and r1.value is None  # the other case took nothing
        return True

    assert run(main())


# -- select5.go: every combination of a real operation, defaults, dummy and nil cases ----


def _select5_cases(real: Any, dummy: Chan[int], nilch: None) -> Any:
    """Go's generator walks these choices: a default (before or after the real case in
    Go's source; one keyword here), a dummy send and receive (never ready), a nil send
    and receive. real() makes the real case, if any, afresh each time."""
    for default, dsend, drecv, nsend, nrecv in itertools.product((False, True), repeat=5):
        cases: list[Any] = real()
        if dsend:
            cases.append(Send(dummy, 1))
        if drecv:
            cases.append(Recv(dummy))
        if nsend:
            cases.append(Send(nilch, 1))
        if nrecv:
            cases.append(Recv(nilch))
        yield ({"default": "nonblock"} if default else {}), cases


def test_select5(run):
    async def main():
        c, dummy, nilch = Chan(1), Chan(), None
        n = 1
        ncases = 0
        # Go: Send n, receive it one way or another into x, check that they match.
        for kw, cases in _select5_cases(lambda: [Recv(c)], dummy, nilch):
            await c.send(n)
            fired = await select(*cases, **kw)
            assert fired is cases[0], f"recv: {fired!r}"
            assert fired.value == n, ("have", fired.value, "want", n)
            n += 1
            ncases += 1
        # Go: Send n one way or another, receive it into x, check that they match.
        # (the lambda reads n as it is when the generator calls it: each case sends the
        # n of its own turn)
        for kw, cases in _select5_cases(lambda: [Send(c, n)], dummy, nilch):  # noqa: B023
            fired = await select(*cases, **kw)
            assert fired is cases[0], f"send: {fired!r}"
            assert await c.recv() == n
            n += 1
            ncases += 1
        # Go (recvOrder, sendOrder): check order of operations by ensuring that
        # successive calls to checkorder have increasing o values (Python evaluates a
        # call's arguments left to right, as Go a select's cases).
        order: list[int] = []

        def fc(ch, o):
            order.append(o)
            return ch

        def fn(v, o):
            order.append(o)
            return v

        sent = Send(fc(c, 1), fn(n, 2))
        assert await select(sent, Send(fc(dummy, 3), fn(1, 4)), Recv(fc(nilch, 5))) is sent
        assert order == sorted(order) and await c.recv() == n
        # Go (nonblock): test various combinations of non-blocking operations.
        for _, cases in _select5_cases(lambda: [], dummy, nilch):
            assert await select(*cases, default="default") == "default"
            ncases += 1
        return ncases

    assert run(main()) == 3 * 32


# -- select6.go: a select must not corrupt the queues of its cases that did not fire -----


def test_select6(run):
    """Go (golang/go#2075): A bug in select corrupts channel queues of failed cases if there
    are multiple waiters on those channels and the select is the last in the queue. If
    further waits are made on the channel without draining it first then those waiters
    will never wake up. In the code below c1 is such a channel."""

    async def main():
        c1, c2, c3 = Chan(), Chan(), Chan()

        async def plain():
            await c1.recv()

        async def selector():
            r1, r2 = Recv(c1), Recv(c2)
            fired = await select(r1, r2)
            assert fired is r2, "dummy"
            await c3.send(True)
            await c1.recv()

        async def send_c2():
            await c2.send(True)

        gs = [mnsched.go(plain()), mnsched.go(selector()), mnsched.go(send_c2())]
        await c3.recv()
        await c1.send(True)
        await c1.send(True)
        for g in gs:
            await g
        return True

    assert run(main())


# -- select7.go: select when discarding a value ------------------------------------------


def test_select7(run):
    async def recv1(c):
        await c.recv()

    async def recv2(c):
        await select(Recv(c))

    async def recv3(c):
        await select(Recv(c), Recv(Chan()))

    async def send1(recv):
        c = Chan()
        g = mnsched.go(recv(c))
        await mnsched.gosched()
        await c.send(1)
        await g

    async def send2(recv):
        c = Chan()
        g = mnsched.go(recv(c))
        await mnsched.gosched()
        await select(Send(c, 1))
        await g

    async def send3(recv):
        c = Chan()
        g = mnsched.go(recv(c))
        await mnsched.gosched()
        await select(Send(c, 1), Send(Chan(), 1))
        await g

    async def main():
        for recv in (recv1, recv2, recv3):
            for send in (send1, send2, send3):
                await send(recv)
        return True

    assert run(main())


# -- sendstmt.go: a send case whose channel comes from a receive ------------------------


def test_sendstmt(run):
    async def main():
        # chanchan
        cc, c = Chan(1), Chan(1)
        await cc.send(c)
        s = Send(await cc.recv(), 2)  # Go: case <-cc <- 2
        assert await select(s, default="nonblock") is s
        assert await c.recv() == 2, "bad receive"
        # sendprec
        b = Chan(1)
        await b.send(False or True)  # noqa: SIM222 (Go's point: a send's value is an expression)
        assert await b.recv(), "sent false"
        return True

    assert run(main())


# -- sieve1.go: primes up to 100 through a linear chain of divisibility filters ----------


def test_sieve1(run):
    async def generate(ch):
        i = 2
        while True:
            await ch.send(i)  # Go: Send 'i' to channel 'ch'.
            i += 1

    async def filt(inp, out, prime):
        # Go: Copy the values from channel 'in' to channel 'out', removing those
        # divisible by 'prime'.
        async for i in inp:
            if i % prime:
                await out.send(i)

    async def sieve(primes, gs):
        # Go: The prime sieve: Daisy-chain Filter processes together.
        ch = Chan()
        gs.append(mnsched.go(generate(ch)))
        while True:
            prime = await ch.recv()  # Go: Note that ch is different on each iteration.
            await primes.send(prime)
            ch1 = Chan()
            gs.append(mnsched.go(filt(ch, ch1, prime)))
            ch = ch1

    async def main():
        primes, gs = Chan(), []
        gs.append(mnsched.go(sieve(primes, gs)))
        got = [await primes.recv() for _ in PRIMES_TO_100]
        for g in gs:  # Go's program exits; ours stops its goroutines
            g.cancel()
        return got

    assert run(main()) == PRIMES_TO_100


# -- sieve2.go: an Eratosthenes sieve of odd candidates, a heap of channels, a send proxy --


def test_sieve2(run):
    gs: list[mnsched.G[Any]] = []

    def go(coro):
        gs.append(mnsched.go(coro))

    def odds():
        # Go: Return a chan of odd numbers, starting from 5.
        out = Chan(50)

        async def body():
            n = 5
            while True:
                await out.send(n)
                n += 2

        go(body())
        return out

    def multiples(p):
        # Go: Return a chan of odd multiples of the prime number p, starting from p*p.
        out = Chan(10)

        async def body():
            n = p * p
            while True:
                await out.send(n)
                n += 2 * p

        go(body())
        return out

    def sendproxy(out):
        # Go: Return a channel to serve as a sending proxy to 'out'. Use a goroutine to
        # receive values from 'out' and store them in an expanding buffer, so that
        # sending to 'out' never blocks.
        proxy = Chan(10)

        async def body():
            buf: deque[int] = deque()
            while True:
                c = out if buf else None  # Go: buffer empty: disable output
                r = Recv(proxy)
                fired = await select(r, Send(c, buf[0] if buf else 0))
                if fired is r:
                    buf.append(r.value)
                else:
                    buf.popleft()

        go(body())
        return proxy

    def sieve():
        # Go: The output values.
        out = Chan(10)
        out.try_send(2)
        out.try_send(3)
        # Go: The channel of all composites to be eliminated in increasing order.
        composites = Chan(50)
        # Go: The feedback loop.
        primes = Chan(10)
        primes.try_send(3)

        async def merge():
            # Go: Merge channels of multiples of 'primes' into 'composites'.
            h: list[tuple[int, int, Chan[int]]] = []  # (head, tie-break, channel)
            seq = itertools.count()
            least = 15
            while True:
                m = multiples(await primes.recv())
                head = await m.recv()
                while least < head:
                    await composites.send(least)
                    least, _, ch = heapq.heappop(h)
                    heapq.heappush(h, (await ch.recv(), next(seq), ch))
                while least == head:
                    least, _, ch = heapq.heappop(h)
                    heapq.heappush(h, (await ch.recv(), next(seq), ch))
                await composites.send(head)
                heapq.heappush(h, (await m.recv(), next(seq), m))

        async def candidates_minus_composites():
            # Go: Sieve out 'composites' from 'candidates'. ... The merging goroutine
            # receives from 'primes' much slower than this one sends to it, so a proxy
            # goroutine buffers automatically.
            fb = sendproxy(primes)
            candidates = odds()
            p = await candidates.recv()
            while True:
                c = await composites.recv()
                while p < c:
                    await fb.send(p)
                    await out.send(p)
                    p = await candidates.recv()
                if p == c:
                    p = await candidates.recv()

        go(merge())
        go(candidates_minus_composites())
        return out

    async def main():
        primes = sieve()
        got = [await primes.recv() for _ in PRIMES_TO_100]
        for g in gs:
            g.cancel()
        return got

    assert run(main()) == PRIMES_TO_100


# -- zerosize.go, chancap.go -------------------------------------------------------------


def test_zerosize_and_chancap(run):
    async def main():
        for cap in (0, 1):  # zerosize.go: channels of empty values
            c = Chan(cap)
            if cap:
                await c.send(())
                assert await c.recv() == ()
        c = Chan(10)
        assert (len(c), c.cap) == (0, 10), "chan len/cap, want 0 10"
        for i in range(3):
            await c.send(i)
        assert (len(c), c.cap) == (3, 10), "chan len/cap, want 3 10"
        c = Chan()
        assert (len(c), c.cap) == (0, 0), "chan len/cap, want 0 0"
        return True

    assert run(main())


# -- closedchan.go: close(c), and receives from a closed channel ------------------------


class _XChan:
    """Go: direct channel operations when possible. A receive on a closed channel gives
    Go's zero value here as None (our recv raises ChannelClosed; recv_ok does not)."""

    impl = "(<- operator)"

    def __init__(self, c: Chan[int]) -> None:
        self.c = c

    async def send(self, x: int) -> None:
        await self.c.send(x)

    async def nbsend(self, x: int) -> bool:
        try:
            self.c.try_send(x)
        except WouldBlock:
            return False
        return True

    async def recv(self) -> int | None:
        return (await self.c.recv_ok())[0]

    async def nbrecv(self) -> tuple[int | None, bool]:
        x, _, selected = await self.nbrecv2()
        return x, selected

    async def recv2(self) -> tuple[int | None, bool]:
        return await self.c.recv_ok()

    async def nbrecv2(self) -> tuple[int | None, bool, bool]:
        try:
            return self.c.try_recv(), True, True
        except WouldBlock:
            return None, False, False
        except ChannelClosed:
            return None, False, True


class _SChan(_XChan):
    """Go: indirect operations via select (with SSChan's dummy case when dummy is set)."""

    impl = "(select)"
    dummy: Chan[bool] | None = None

    def _cases(self, case: Recv | Send) -> list[Recv | Send]:
        return [case] if self.dummy is None else [Recv(self.dummy), case]

    async def send(self, x: int) -> None:
        await select(*self._cases(Send(self.c, x)))

    async def nbsend(self, x: int) -> bool:
        s = Send(self.c, x)
        return await select(*self._cases(s), default=None) is s

    async def recv2(self) -> tuple[int | None, bool]:
        r = Recv(self.c)
        assert await select(*self._cases(r)) is r
        return r.value, r.ok

    async def recv(self) -> int | None:
        return (await self.recv2())[0]

    async def nbrecv2(self) -> tuple[int | None, bool, bool]:
        r = Recv(self.c)
        if await select(*self._cases(r), default=None) is not r:
            return None, False, False
        return r.value, r.ok, True


class _SSChan(_SChan):
    """Go: indirect operations via larger selects."""

    dummy = Chan()


async def _test1(c: _XChan) -> None:
    for _ in range(3):
        # Go: recv a close signal (a zero value)
        assert await c.recv() is None, ("test1: recv on closed", c.impl)
        assert await c.recv2() == (None, False), ("test1: recv2 on closed", c.impl)
        # Go: should work with select: received a value without blocking, so selected
        assert await c.nbrecv() == (None, True), ("test1: recv on closed nb", c.impl)
        assert await c.nbrecv2() == (None, False, True), ("test1: recv2 on closed nb", c.impl)
    # Go: send should work with ,ok too: sent a value without blocking, so ok == true.
    with pytest.raises(ChannelClosed):
        await c.nbsend(1)
    # Go: the value should have been discarded.
    assert await c.recv() is None
    # Go: similarly Send.
    with pytest.raises(ChannelClosed):
        await c.send(2)
    assert await c.recv() is None


async def _testasync(c: _XChan, how: int) -> None:
    # Go: should be able to get the last value via Recv, Recv2, Nbrecv, Nbrecv2
    if how == 1:
        assert await c.recv() == 1
    elif how == 2:
        assert await c.recv2() == (1, True)
    elif how == 3:
        assert await c.nbrecv() == (1, True)
    else:
        assert await c.nbrecv2() == (1, True, True)
    await _test1(c)


def test_closedchan(run):
    def closedsync():
        c = Chan()
        c.close()
        return c

    def closedasync():
        c = Chan(2)
        c.try_send(1)
        c.close()
        return c

    async def main():
        mks = (_XChan, _SChan, _SSChan)
        for mk in mks:
            await _test1(mk(closedsync()))
        for how in (1, 2, 3, 4):
            for mk in mks:
                await _testasync(mk(closedasync()), how)
        ch = Chan()
        ch.close()
        with pytest.raises(ChannelClosed, match="close of closed channel"):
            ch.close()
        return True

    assert run(main())


# -- chanlinear.go: dequeuing from a pending channel does not take linear time ----------


@at_procs(1)
def test_chanlinear(run):
    """Go's check, as Go makes it: f(2n) must take under 3 times f(n) (linear: 2x; the
    deque-based queues took 4x), n doubled while f(n) is under a second, and five
    failures in a row at that size before giving up. A ratio of two sizes in one
    process, retried: what the machine's drift cannot fake five times over."""
    messages = 10

    async def chan_select(n):
        c = Chan()  # Go: global channel
        a = [Chan() for _ in range(n)]  # Go: local channels for each goroutine

        async def body(d):
            for _ in range(messages):
                # Go: queue ourselves on the global channel
                await select(Recv(c), Recv(d))

        gs = [mnsched.go(body(d)) for d in a]
        for _ in range(messages):
            # Go: wake each goroutine up, forcing it to dequeue and then enqueue on the
            # global channel.
            for d in a:
                await d.send(True)
        for g in gs:
            await g

    async def timed(n):
        gc.collect()
        t = time.perf_counter()
        await chan_select(n)
        return time.perf_counter() - t

    async def main():
        n, fails = 16_000, 0  # Go starts at 1000: here a quadratic term shows from ~16,000
        while True:
            t1 = await timed(n)
            t2 = await timed(2 * n)
            if t2 < 3 * t1:
                return True
            if t1 < 1.0:
                n *= 2
                continue
            fails += 1
            assert fails < 5, f"too slow: {n} channels: {t1:.3f} s; {2 * n}: {t2:.3f} s"

    assert run(main())
