"""Cancellation racing a wake-up on every wait queue, and channels conserving values
under random cancellation and close. A plain thread wakes the goroutine while
the main goroutine cancels it, from many random offsets: whichever wins, the outcome is
consistent and nothing (a value, a lock, a count) is lost or duplicated."""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import mnsched
from mnsched import Chan, ChannelClosed, Mutex, Once, WaitGroup, WouldBlock

ROUNDS = 60


async def parked(g: mnsched.G[Any]) -> None:
    """Until g waits somewhere."""
    while not g.wait_reason and not g.done():
        await mnsched.gosched()


def spin(us: float) -> None:
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass


async def race(
    rnd: random.Random, waiter: Awaitable[Any], wake: Callable[[], None], done: list[Any]
) -> str:
    """Park a goroutine on ``waiter``; then one plain thread runs ``wake`` while another
    cancels it, each after a random few microseconds. Returns "ok" or
    "cancelled". The operation's result is in ``done`` when it completed (the
    goroutine may still end cancelled: as a Task, one cancelled during its last step)."""

    async def recorded() -> Any:
        r = await waiter
        done.append(r)
        return r

    g = mnsched.go(recorded())
    await parked(g)
    barrier = threading.Barrier(2)

    def act(fn: Callable[[], object], us: float) -> None:
        barrier.wait(10)
        spin(us)
        fn()

    # The cancel is quicker than most wake-ups: give it more slack, for both orders.
    threads = [
        threading.Thread(target=act, args=(wake, rnd.uniform(0, 30))),
        threading.Thread(target=act, args=(g.cancel, rnd.uniform(0, 150))),
    ]
    for t in threads:
        t.start()
    try:
        await g
        return "ok"
    except asyncio.CancelledError:
        return "cancelled"
    finally:
        for t in threads:
            await mnsched.syscall(t.join, 10)


@pytest.fixture(autouse=True)
def switch_often():
    """Threads take turns with the GIL every few microseconds (instead of 5 ms), so the
    waker and the canceller interleave inside each other's operations."""
    saved = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(saved)


# Each kind: make (the state, the waiter, the wake) and check the state afterwards,
# given ``done``: the waiter operation's result if it completed, else nothing.


async def _recv() -> tuple[Any, ...]:
    ch: Chan[int] = Chan(1)
    return ch, ch.recv(), lambda: ch.send_blocking(7, timeout=10)


async def _check_recv(ch: Chan[int], done: list[Any]) -> None:
    left = [ch.try_recv()] if len(ch) else []
    assert done + left == [7], f"value received {done}, left in the channel {left}"


async def _send() -> tuple[Any, ...]:
    ch: Chan[str] = Chan(1)
    ch.try_send("first")
    return ch, ch.send("second"), lambda: ch.recv_blocking(timeout=10)


async def _check_send(ch: Chan[str], done: list[Any]) -> None:
    left = [ch.try_recv()] if len(ch) else []
    want = ["second"] if done else []
    assert left == want, f"send completed: {bool(done)}, but the channel holds {left}"


async def _select() -> tuple[Any, ...]:
    a: Chan[int] = Chan(1)
    b: Chan[int] = Chan(1)

    async def sel() -> int:
        fired = await mnsched.select(mnsched.Recv(a), mnsched.Recv(b))
        assert isinstance(fired, mnsched.Recv) and fired.ok
        return fired.value  # type: ignore[no-any-return]

    return (a, b), sel(), lambda: b.send_blocking(7, timeout=10)


async def _check_select(chans: tuple[Chan[int], Chan[int]], done: list[Any]) -> None:
    a, b = chans
    assert not len(a)
    await _check_recv(b, done)


async def _mutex() -> tuple[Any, ...]:
    mu = Mutex()
    assert mu.try_lock()
    return mu, mu.lock(), mu.unlock


async def _check_mutex(mu: Mutex, done: list[Any]) -> None:
    # Locked by the waiter if its lock() completed; else the unlock left it free.
    assert mu.locked() == bool(done), f"lock() completed: {bool(done)}, locked: {mu.locked()}"
    if done:
        mu.unlock()
    assert mu.try_lock()
    mu.unlock()


async def _waitgroup() -> tuple[Any, ...]:
    wg = WaitGroup()
    wg.add(1)
    return wg, wg.wait(), wg.done


async def _check_waitgroup(wg: WaitGroup, done: list[Any]) -> None:
    assert wg.count == 0
    wg.wait_blocking(timeout=0)


async def _once() -> tuple[Any, ...]:
    once = Once()
    gate: Chan[None] = Chan(1)
    calls: list[int] = []

    async def first() -> None:
        calls.append(1)
        await gate.recv()

    runner = mnsched.go(once.do(first))
    await parked(runner)  # inside first()
    waiter = once.do(calls.append, 2)  # waits for first() to end, then does nothing
    return (once, runner, calls), waiter, lambda: gate.send_blocking(None, timeout=10)


async def _check_once(state: tuple[Once, mnsched.G[None], list[int]], done: list[Any]) -> None:
    once, runner, calls = state
    await runner
    assert once.done and calls == [1]


async def _syscall() -> tuple[Any, ...]:
    ev = threading.Event()
    return ev, mnsched.syscall(ev.wait, 10), ev.set


async def _check_syscall(ev: threading.Event, done: list[Any]) -> None:
    assert done in ([], [True])


async def _join() -> tuple[Any, ...]:
    ch: Chan[int] = Chan(1)
    child = mnsched.go(ch.recv())
    await parked(child)

    async def join() -> int:
        return await child

    return (ch, child), join(), lambda: ch.send_blocking(7, timeout=10)


async def _check_join(state: tuple[Chan[int], mnsched.G[int]], done: list[Any]) -> None:
    # Cancelling the awaiter cancels the awaited goroutine (as a Task): the value is
    # then the child's, or still in the channel.
    ch, child = state
    try:
        got = [await child]
    except asyncio.CancelledError:
        got = []
    left = [ch.try_recv()] if len(ch) else []
    assert got + left == [7]
    assert done in ([], [7])


async def _sleep() -> tuple[Any, ...]:
    return None, mnsched.sleep(0.0005, "slept"), lambda: None


async def _check_sleep(state: None, done: list[Any]) -> None:
    assert done in ([], ["slept"])


KINDS: dict[
    str, tuple[Callable[[], Awaitable[tuple[Any, ...]]], Callable[[Any, Any], Awaitable[None]]]
] = {
    "chan recv": (_recv, _check_recv),
    "chan send": (_send, _check_send),
    "select": (_select, _check_select),
    "mutex": (_mutex, _check_mutex),
    "waitgroup": (_waitgroup, _check_waitgroup),
    "once": (_once, _check_once),
    "syscall": (_syscall, _check_syscall),
    "await goroutine": (_join, _check_join),
    "sleep": (_sleep, _check_sleep),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_cancel_racing_a_wake_up_loses_and_duplicates_nothing(run, kind):
    make, check = KINDS[kind]
    rnd = random.Random(kind)

    async def main() -> dict[str, int]:
        seen = {"ok": 0, "cancelled": 0}
        for _ in range(ROUNDS):
            state, waiter, wake = await make()
            done: list[Any] = []
            seen[await race(rnd, waiter, wake, done)] += 1
            await check(state, done)
        assert mnsched.num_goroutine() == 1, "a goroutine outlived its round"
        return seen

    seen = run(main())
    assert sum(seen.values()) == ROUNDS


def test_channel_conservation_under_random_cancellation_and_close(run):
    # Producers send unique values, consumers receive, a chaos goroutine cancels random
    # ones of both, and the channel is closed while they run. Every value whose send
    # returned is received exactly once; none whose send failed is received.
    rnd = random.Random(12)

    async def main() -> tuple[int, int]:
        ch: Chan[int] = Chan(4)
        sent: list[int] = []
        got: list[int] = []

        bases = itertools.count(0, 10**7)

        async def producer() -> None:
            base = next(bases)  # a range of its own: values are unique
            for i in range(base, base + 10**7):
                try:
                    await ch.send(i)
                except ChannelClosed:
                    return
                sent.append(i)

        async def consumer() -> None:
            while True:
                try:
                    got.append(await ch.recv())
                except ChannelClosed:
                    return

        producers = [mnsched.go(producer()) for _ in range(6)]
        consumers = [mnsched.go(consumer()) for _ in range(6)]
        everyone = producers + consumers
        for _ in range(300):
            victim = rnd.choice(everyone)
            victim.cancel()
            await mnsched.sleep(rnd.uniform(0, 0.0005))
            if victim.done():  # a cancelled one is replaced, so traffic goes on
                i = everyone.index(victim)
                if victim in producers:
                    new = mnsched.go(producer())
                    producers[producers.index(victim)] = new
                else:
                    new = mnsched.go(consumer())
                    consumers[consumers.index(victim)] = new
                everyone[i] = new
        ch.close()
        for g in everyone:
            try:
                await g
            except asyncio.CancelledError:
                pass
        while True:
            try:
                got.append(ch.try_recv())
            except (ChannelClosed, WouldBlock):
                break
        assert len(got) == len(set(got)), "a value was received twice"
        assert sorted(got) == sorted(sent), (
            f"lost {sorted(set(sent) - set(got))[:10]}, "
            f"never sent {sorted(set(got) - set(sent))[:10]}"
        )
        return len(sent), len(got)

    n_sent, n_got = run(main())
    assert n_sent == n_got > 0
