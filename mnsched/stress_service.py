"""``python -m mnsched.stress --service --minutes N``: a soak that looks like production.

Two services run in processes of their own, each on mnsched with 2 Ps:

- the aiohttp sample's application (``samples/aiohttp_service.py``) served on every P
  (``serve_aiohttp``), each request a goroutine, with two routes more that use PerP
  clients (an asyncpg pool, a redis.asyncio client) to a PostgreSQL and a Redis of its
  own on 127.0.0.1 (``localservers``);
- the FastAPI sample (``samples/fastapi_service.py``) under uvicorn, its runtime started
  in the lifespan.

A bounded load runs against both from this process (plain asyncio, ``LOAD_CONCURRENCY``
requests in flight per service, closed loop): light requests mostly, and CPU-heavy ones
(pure-Python work in a goroutine; hashing on an M thread), blocking ones
(``mnsched.syscall``), PostgreSQL queries and Redis round trips; every response is
checked. Every ``--interval`` seconds a
line gives the requests, errors and p99 latency of that interval, and each service's
RSS, open fds and threads. At the end the services get Ctrl-C and must exit 0; the soak
fails (exit status 1) on any error, or if RSS, fds or threads grew after the warm-up
(the first interval) beyond the bounds below.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

from . import localservers

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
LOAD_CONCURRENCY = 8  # requests in flight per service: bounded, loopback only
PROCS = 2
START_TIMEOUT = 60.0
# What "flat after the warm-up" allows, against the first interval's figures: RSS may
# grow 10% plus 8 MiB (allocator noise, caches filling), fds by 8 (a connection in
# setup), threads by PROCS + 4 (M threads started and retired as blocking calls come).
RSS_GROWTH, RSS_SLACK_MIB, FD_SLACK, THREAD_SLACK = 0.10, 8.0, 8, PROCS + 4
# The request mix: (weight, service, path, check of the JSON answer).
MIX: list[tuple[int, str, str]] = [
    (60, "aiohttp", "/"),
    (6, "aiohttp", "/cpu?kb=64"),
    (6, "aiohttp", "/db?ms=10"),
    (8, "aiohttp", "/pg"),
    (8, "aiohttp", "/cache"),
    (60, "fastapi", "/"),
    (6, "fastapi", "/cpu?ms=5"),
    (6, "fastapi", "/blocking?ms=10"),
]


# -- the aiohttp service (run in its own process: --serve-aiohttp) --------------------------


def _serve_aiohttp(port: int, dsn: str, redis_url: str) -> None:
    """The aiohttp sample's application (samples/aiohttp_service.py: light, hashing on
    an M thread, a blocking call), plus a PostgreSQL query and a Redis round trip."""
    import aiohttp_service  # samples/, the working directory
    import asyncpg  # type: ignore[import-untyped]
    import redis.asyncio as aioredis
    from aiohttp import web

    import mnsched
    from mnsched.serve import serve_aiohttp

    pools = mnsched.PerP(lambda: asyncpg.create_pool(dsn, min_size=1, max_size=4))
    caches = mnsched.PerP(lambda: aioredis.Redis.from_url(redis_url))

    async def pg(request: web.Request) -> web.Response:
        pool = await pools.aget()
        n = random.randrange(1000)
        return web.json_response({"sum": await pool.fetchval("SELECT $1::int + 1", n), "n": n})

    async def cache(request: web.Request) -> web.Response:
        r = await caches.aget()  # (a Redis client is awaited to set it up)
        key = f"k{random.randrange(100)}"
        return web.json_response({"incr": await r.incr(key), "key": key})

    def make_app() -> web.Application:
        app = aiohttp_service.make_app()
        app.router.add_get("/pg", pg)
        app.router.add_get("/cache", cache)
        return app

    async def main() -> None:
        server = await serve_aiohttp(make_app, "127.0.0.1", port)
        print(f"serving on http://127.0.0.1:{server.port}", flush=True)
        try:
            await mnsched.Chan[None]().recv()  # until Ctrl-C cancels main
        finally:
            await server.close()

    with contextlib.suppress(KeyboardInterrupt):
        mnsched.run(main(), procs=PROCS)


# -- the soak -------------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[str]
    out: IO[str]  # its stdout and stderr
    port: int = 0  # once it listens
    lines: list[str] = field(default_factory=list)  # what it printed

    def usage(self) -> tuple[float, int, int]:
        """(RSS MiB, open fds, threads) of its process."""
        pid = self.proc.pid
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        rss = int(status["VmRSS"].split()[0]) / 1024
        return rss, len(os.listdir(f"/proc/{pid}/fd")), int(status["Threads"])


def _start(name: str, argv: list[str], pattern: str) -> Service:
    """Start a service; return it once it printed the port it listens on (pattern's
    group 1). Its output is read all along (a full pipe would block it)."""
    proc = subprocess.Popen(
        argv, cwd=SAMPLES, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "MNSCHED_PROCS": str(PROCS)},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    svc = Service(name, proc, cast(IO[str], proc.stdout))
    listening = threading.Event()

    def read() -> None:
        for line in svc.out:
            svc.lines.append(line)
            if not svc.port and (match := re.search(pattern, line)):
                svc.port = int(match.group(1))
                listening.set()
        listening.set()  # it ended: what it printed says why

    threading.Thread(target=read, name=f"soak-read-{name}", daemon=True).start()
    if not listening.wait(START_TIMEOUT) or not svc.port:
        proc.kill()
        raise RuntimeError(f"the {name} service did not start:\n" + "".join(svc.lines))
    return svc


@contextlib.contextmanager
def _services(dsn: str, redis_url: str) -> Iterator[list[Service]]:
    started: list[Service] = []
    try:
        started.append(
            _start(
                "aiohttp",
                [sys.executable, "-m", "mnsched.stress_service", "--serve-aiohttp",
                 "--dsn", dsn, "--redis", redis_url],
                r"serving on http://127\.0\.0\.1:(\d+)",
            )
        )  # fmt: skip
        started.append(
            _start(
                "fastapi",
                [sys.executable, "fastapi_service.py", "--port", "0"],
                r"Uvicorn running on http://127\.0\.0\.1:(\d+)",
            )
        )
        yield started
    finally:
        for svc in started:
            if svc.proc.poll() is None:
                svc.proc.send_signal(signal.SIGINT)
        for svc in started:
            try:
                svc.proc.wait(30)
            except subprocess.TimeoutExpired:
                svc.proc.kill()
                svc.proc.wait()


@dataclass
class Interval:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def _load(services: list[Service], seconds: float, interval: float) -> list[str]:
    """Run the mix against the services for seconds, printing a line every interval;
    return the failures found (errors, growth)."""
    import aiohttp

    ports = {s.name: s.port for s in services}
    weights = [w for w, _, _ in MIX]
    now = Interval()
    end = time.monotonic() + seconds
    failures: list[str] = []
    series: list[dict[str, tuple[float, int, int]]] = []

    async def client(name: str, session: aiohttp.ClientSession, rng: random.Random) -> None:
        while time.monotonic() < end:
            _, svc, path = rng.choices(MIX, weights)[0]
            if svc != name:
                continue
            t = time.perf_counter()
            try:
                async with session.get(f"http://127.0.0.1:{ports[svc]}{path}") as r:
                    body = await r.json()
                    if r.status != 200 or not isinstance(body, dict) or not body:
                        raise ValueError(f"{r.status} {body!r:.200}")
            except Exception as e:
                now.errors.append(f"{svc} {path}: {type(e).__name__}: {e}")
            else:
                now.latencies.append(time.perf_counter() - t)

    async def reporter() -> None:
        nonlocal now
        minute = 0
        while time.monotonic() < end:
            await asyncio.sleep(min(interval, max(0.0, end - time.monotonic())))
            done, now = now, Interval()
            minute += 1
            usage = {s.name: s.usage() for s in services}
            series.append(usage)
            lat = sorted(done.latencies)
            p99 = 1000 * lat[int(len(lat) * 0.99)] if lat else float("nan")
            line = (
                f"[{minute * interval:5.0f} s] {len(lat):6d} ok, {len(done.errors)} errors, "
                f"p99 {p99:6.1f} ms"
            )
            for name, (rss, fds, threads) in usage.items():
                line += f" | {name}: rss {rss:5.1f} MiB, fds {fds}, threads {threads}"
            print(line, flush=True)
            for err in done.errors[:5]:
                print("   ", err, flush=True)
            failures.extend(done.errors)

    rng = random.Random(1)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(30)) as session:
        tasks = [
            client(s.name, session, random.Random(rng.random()))
            for s in services
            for _ in range(LOAD_CONCURRENCY)
        ]
        await asyncio.gather(reporter(), *tasks)
    failures += _growth(series)
    return failures


def _growth(series: list[dict[str, tuple[float, int, int]]]) -> list[str]:
    """What grew after the warm-up (the first interval) beyond the bounds."""
    if len(series) < 2:
        return []
    out = []
    for name, (rss0, fds0, threads0) in series[0].items():
        rss, fds, threads = (max(u[name][i] for u in series[1:]) for i in range(3))
        if rss > rss0 * (1 + RSS_GROWTH) + RSS_SLACK_MIB:
            out.append(f"{name}: RSS grew from {rss0:.1f} to {rss:.1f} MiB after the warm-up")
        if fds > fds0 + FD_SLACK:
            out.append(f"{name}: open fds grew from {fds0} to {fds} after the warm-up")
        if threads > threads0 + THREAD_SLACK:
            out.append(f"{name}: threads grew from {threads0} to {threads} after the warm-up")
    return out


def soak(minutes: float, interval: float) -> int:
    """The service soak; returns the exit status (0: passed)."""
    try:
        with localservers.postgres() as dsn, localservers.redis() as redis_url:
            with _services(dsn, redis_url) as services:
                where = ", ".join(f"{s.name} on :{s.port}" for s in services)
                print(
                    f"mnsched.stress --service: {minutes:g} min, {LOAD_CONCURRENCY} requests "
                    f"in flight per service: {where}",
                    flush=True,
                )
                failures = asyncio.run(_load(services, minutes * 60, interval))
            for svc in services:
                if svc.proc.returncode != 0:
                    tail = "".join(svc.lines[-20:])
                    failures.append(f"{svc.name} exited with {svc.proc.returncode}:\n{tail}")
                if any("Traceback" in line for line in svc.lines):
                    failures.append(f"{svc.name} printed a traceback:\n{''.join(svc.lines[-40:])}")
    except localservers.Unavailable as e:
        print(f"mnsched.stress --service: {e}", file=sys.stderr)
        return 2
    if failures:
        print(f"mnsched.stress --service: FAILED ({len(failures)}):", file=sys.stderr)
        for f in failures[:20]:
            print("  " + f, file=sys.stderr)
        return 1
    print("mnsched.stress --service: passed: no errors, RSS, fds and threads flat", flush=True)
    return 0


def _serve_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m mnsched.stress_service")
    ap.add_argument("--serve-aiohttp", action="store_true", required=True)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--redis", required=True)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    _serve_aiohttp(args.port, args.dsn, args.redis)


if __name__ == "__main__":
    _serve_main(sys.argv[1:])
