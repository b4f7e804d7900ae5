"""``python -m mnsched.stress --minutes 10``: a seeded soak of the runtime, with invariant
checks after every round. CI runs it for one minute.

Each round runs for ``--round-seconds`` under ``mnsched.run`` at a P count, loop kind and
step mode (serial, or one round in four parallel) drawn from the seed. Workers spawn
children, send and receive on shared channels, select with timeouts, make blocking calls,
take a mutex around a read-await-write of a shared counter, add to another without a lock
between two awaits, and sleep; a chaos goroutine cancels random workers (replacing them)
and changes ``gomaxprocs``. At the end the channels are closed and drained, and:

1. every goroutine that started ran its ``finally`` exactly once, every handle is done,
   and ``num_goroutine()`` is back to 1 (main);
2. every value whose send returned was received exactly once, and no other value was;
3. no two goroutines were ever inside the mutex at once, and no increment was lost;
   under serial steps, neither was one of a counter updated without a lock between two
   awaits (unless sysmon took a hogging step's token that round: the one exception);
4. every blocking call returned what its function returned;
5. once the runtime is closed no mnsched thread is alive and no fd is left open.

A round that does not end within ``ROUND_TIMEOUT`` dumps every thread's stack and exits
1. The scheduling itself is not deterministic (threads, the OS): the seed fixes the
program each round runs, so a failing seed is worth re-running a few times.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import itertools
import operator
import os
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .api import go, gomaxprocs, gosched, num_goroutine, sleep, stats, syscall
from .chan import Chan, ChannelClosed, WouldBlock
from .g import G
from .runtime import run
from .selectgo import Recv, Send, select
from .sync import Mutex
from .timers import after

# A round that takes this much longer than planned is hung: dump the stacks and stop.
ROUND_TIMEOUT = 60.0
NCHANS = 4
NWORKERS = 24


class Violation(AssertionError):
    """An invariant did not hold."""


@dataclass
class Ledger:
    """What happened in one round, written by goroutines on every P."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    started: set[int] = field(default_factory=set)
    finals: Counter[int] = field(default_factory=Counter)
    sent: list[int] = field(default_factory=list)
    got: list[int] = field(default_factory=list)
    holder: int | None = None
    count: int = 0  # the mutex-protected counter
    increments: int = 0
    plain: int = 0  # a counter updated without a lock, between two awaits
    plain_increments: int = 0
    violations: list[str] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)

    def start(self, gid: int) -> None:
        with self.lock:
            self.started.add(gid)

    def finish(self, gid: int) -> None:
        with self.lock:
            self.finals[gid] += 1

    def violate(self, what: str) -> None:
        with self.lock:
            self.violations.append(what)


class Round:
    def __init__(self, rnd: random.Random, seconds: float) -> None:
        self.rnd = rnd
        self.seconds = seconds
        self.ledger = Ledger()
        self.ids = itertools.count()
        self.values = itertools.count()
        self.handles: list[G[Any]] = []

    def spawn(self, kind: str) -> G[None]:
        gid = next(self.ids)
        rnd = random.Random(self.rnd.getrandbits(64))
        coro = self.worker(gid, rnd) if kind == "worker" else self.child(gid, rnd)
        g = go(coro)
        self.handles.append(g)
        self.ledger.stats["goroutines"] += 1
        return g

    async def main(self) -> Ledger:
        L = self.ledger
        self.chans: list[Chan[int]] = [Chan(self.rnd.choice((0, 1, 4))) for _ in range(NCHANS)]
        self.mu = Mutex()
        self.deadline = time.monotonic() + self.seconds
        workers = [self.spawn("worker") for _ in range(NWORKERS)]
        await self.chaos(workers)
        for ch in self.chans:
            ch.close()  # every worker blocked on one ends now
        for g in list(self.handles):
            try:
                await g
            except (asyncio.CancelledError, ChannelClosed):
                pass
        for ch in self.chans:
            while True:
                try:
                    L.got.append(ch.try_recv())
                except (ChannelClosed, WouldBlock):
                    break
        st = stats()  # a hog that sysmon took the token from ran beside the others
        self.check(serial=not st["parallel"] and not st["token_revokes"])
        return L

    async def chaos(self, workers: list[G[None]]) -> None:
        """Cancel random workers (a cancelled one is replaced), change the P count."""
        L, rnd = self.ledger, self.rnd
        while time.monotonic() < self.deadline:
            await sleep(rnd.uniform(0, 0.01))
            i = rnd.randrange(len(workers))
            workers[i].cancel()
            L.stats["cancels"] += 1
            if workers[i].done():
                workers[i] = self.spawn("worker")
            if rnd.random() < 0.1:
                gomaxprocs(rnd.randint(1, 4))
                L.stats["gomaxprocs"] += 1

    async def worker(self, gid: int, rnd: random.Random) -> None:
        L = self.ledger
        L.start(gid)
        try:
            while time.monotonic() < self.deadline:
                op = rnd.random()
                ch = rnd.choice(self.chans)
                if op < 0.25:
                    v = next(self.values)
                    await ch.send(v)
                    L.sent.append(v)  # the send returned: it must be received
                elif op < 0.45:
                    L.got.append(await ch.recv())
                elif op < 0.65:
                    await self.select_once(rnd, ch)
                elif op < 0.70:
                    await self.critical_section(gid)
                elif op < 0.75:
                    for _ in range(rnd.randrange(100)):  # read, a call, write: no await
                        L.plain = _plus_one(L.plain)
                        with L.lock:
                            L.plain_increments += 1
                    await gosched()
                elif op < 0.85:
                    x = rnd.randrange(10**6)
                    if (r := await syscall(operator.mul, x, x)) != x * x:
                        L.violate(f"syscall(mul, {x}, {x}) returned {r}")
                    L.stats["syscalls"] += 1
                elif op < 0.95:
                    child = self.spawn("child")
                    if rnd.random() < 0.5:
                        await child  # else joined at the end of the round
                else:
                    await sleep(rnd.uniform(0, 0.002))
        except ChannelClosed:
            pass  # the round is over
        finally:
            L.finish(gid)

    async def select_once(self, rnd: random.Random, ch: Chan[int]) -> None:
        L = self.ledger
        v = next(self.values)
        recv, send = Recv(ch), Send(rnd.choice(self.chans), v)
        timeout = Recv(after(rnd.uniform(0, 0.002)))
        fired = await select(recv, send, timeout)
        if fired is recv:
            if recv.ok:
                L.got.append(recv.value)
            else:
                raise ChannelClosed("receive from closed channel")
        elif fired is send:
            L.sent.append(v)
        else:
            L.stats["timeouts"] += 1

    async def critical_section(self, gid: int) -> None:
        L = self.ledger
        async with self.mu:
            if L.holder is not None:
                L.violate(f"G{gid} entered the mutex held by G{L.holder}")
            L.holder = gid
            try:
                c = L.count
                await gosched()  # another holder would lose this increment
                L.count = c + 1
                L.increments += 1
            finally:
                L.holder = None

    async def child(self, gid: int, rnd: random.Random) -> None:
        L = self.ledger
        L.start(gid)
        try:
            if rnd.random() < 0.5:
                await sleep(rnd.uniform(0, 0.001))
            else:
                await gosched()
        finally:
            L.finish(gid)

    def check(self, serial: bool) -> None:
        """serial: every step ran alone (serial steps, and no hog preempted)."""
        L = self.ledger
        if num_goroutine() != 1:
            L.violate(f"num_goroutine() is {num_goroutine()} after the round, not 1")
        if not all(g.done() for g in self.handles):
            L.violate("a goroutine handle never finished")
        twice = [gid for gid, n in L.finals.items() if n != 1]
        skipped = L.started - set(L.finals)
        if twice:
            L.violate(f"finally ran more than once in goroutines {twice[:5]}")
        if skipped:
            L.violate(f"finally never ran in goroutines {sorted(skipped)[:5]}")
        got = Counter(L.got)
        dup = [v for v, n in got.items() if n > 1]
        lost = set(L.sent) - set(got)
        extra = set(got) - set(L.sent)
        if dup or lost or extra:
            L.violate(
                f"values received twice {dup[:5]}, lost {sorted(lost)[:5]}, "
                f"received but never sent {sorted(extra)[:5]}"
            )
        if L.count != L.increments:
            L.violate(f"mutex: counter {L.count}, increments {L.increments}")
        if serial and L.plain != L.plain_increments:
            L.violate(f"serial steps: counter {L.plain}, increments {L.plain_increments}")
        L.stats["values"] = len(L.sent)


def _plus_one(v: int) -> int:
    return v + 1


def _fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1  # no /proc: not checked


def _mnsched_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("mnsched-")]


def run_round(seed: int, procs: int, loop: str, seconds: float, parallel: bool) -> Ledger:
    fds = _fds()
    faulthandler.dump_traceback_later(seconds + ROUND_TIMEOUT, exit=True)
    try:
        ledger: Ledger = run(
            Round(random.Random(seed), seconds).main(), procs=procs, loop=loop, parallel=parallel
        )
    finally:
        faulthandler.cancel_dump_traceback_later()
    if left := _mnsched_threads():
        ledger.violate(f"threads alive after close: {left}")
    if fds >= 0 and (now := _fds()) != fds:
        ledger.violate(f"{now - fds} fd(s) left open after close")
    return ledger


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m mnsched.stress",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    ap.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    ap.add_argument("--procs", default="1,2,4", help="P counts to draw from (default 1,2,4)")
    ap.add_argument("--loops", default="uvloop,asyncio", help="loop kinds to draw from")
    ap.add_argument("--round-seconds", type=float, default=5.0, help="per round (default 5)")
    ap.add_argument(
        "--service",
        action="store_true",
        help="the service soak instead (mnsched/stress_service.py): aiohttp and FastAPI "
        "services with PostgreSQL and Redis under a bounded load",
    )
    ap.add_argument(
        "--interval",
        type=float,
        default=60.0,
        help="--service: seconds between the series' lines (default 60)",
    )
    args = ap.parse_args(argv)
    if args.service:
        if args.minutes <= 0 or args.interval <= 0:
            ap.error("--minutes and --interval must be positive")
        from .stress_service import soak

        return soak(args.minutes, args.interval)
    try:
        procs = [int(p) for p in args.procs.split(",")]
    except ValueError:
        ap.error(f"--procs takes comma-separated integers, as 1,2,4; not {args.procs!r}")
    loops = args.loops.split(",")
    if bad := [lk for lk in loops if lk not in ("uvloop", "asyncio")]:
        ap.error(f"--loops takes uvloop and/or asyncio, not {bad}")
    if args.minutes <= 0 or args.round_seconds <= 0 or min(procs) < 1:
        ap.error("--minutes and --round-seconds must be > 0, --procs values >= 1")
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"mnsched.stress: seed {seed}, {args.minutes:g} min", flush=True)
    rnd = random.Random(seed)
    if "uvloop" in loops:
        run(sleep(0), loop="uvloop")  # libuv opens a pipe for its signal lock once per process
    end = time.monotonic() + 60 * args.minutes
    total: Counter[str] = Counter()
    for n in itertools.count(1):
        if time.monotonic() >= end:
            break
        rseed, p, lk = rnd.getrandbits(32), rnd.choice(procs), rnd.choice(loops)
        parallel = rnd.random() < 0.25
        seconds = min(args.round_seconds, max(0.5, end - time.monotonic()))
        ledger = run_round(rseed, p, lk, seconds, parallel)
        s = ledger.stats
        total.update(s)
        mode = "parallel" if parallel else "serial"
        print(
            f"round {n} (seed {rseed}, procs={p}, {lk}, {mode}): {s['goroutines']} goroutines, "
            f"{s['values']} values, {s['cancels']} cancels, {s['syscalls']} syscalls, "
            f"{s['timeouts']} select timeouts, {s['gomaxprocs']} P-count changes: "
            + ("ok" if not ledger.violations else "FAILED"),
            flush=True,
        )
        if ledger.violations:
            for v in ledger.violations:
                print(f"  {v}", file=sys.stderr)
            print(f"mnsched.stress: FAILED in round {n}; re-run it with --seed {seed}")
            return 1
    print(
        f"mnsched.stress: {n - 1} rounds passed: {total['goroutines']} goroutines, "
        f"{total['values']} values, {total['cancels']} cancels"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
