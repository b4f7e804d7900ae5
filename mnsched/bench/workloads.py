"""Benchmark workloads, each written idiomatically twice: for asyncio and for mnsched.

A workload's ``run_asyncio(n)`` / ``run_mnsched(n)`` coroutines return a result that
``check`` verifies, so a wrong answer fails the benchmark instead of looking fast.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import mnsched


class WrongResult(AssertionError):
    """A workload computed the wrong answer."""


@dataclass(frozen=True)
class Workload:
    """A workload's coroutines return its result; or, when ``metric`` is not wall time,
    a pair ``(result, value)`` where value is that metric (lower is better)."""

    name: str
    what: str  # one line for the report
    size: int
    # The demo's (--quick) size: the full one where that is cheap, else one large enough
    # that start-up and one-off costs do not decide the ratio (10,000 skynet leaves gave
    # 2x where a million give 28x; skynet's is a power of 10: its tree is 10-ary). The
    # demo prints the shipped full-size run's ratios (recorded.json) beside its own.
    quick_size: int
    run_asyncio: Callable[[int], Coroutine[Any, Any, Any]]
    run_mnsched: Callable[[int], Coroutine[Any, Any, Any]]
    expected: Callable[[int], Any]
    metric: str = "seconds"  # or what the coroutines report, e.g. "ms late"
    # Runs in a host loop (uvloop) with its runtime made by the workload (an app's
    # lifespan) for mnsched variants, as services deploy it; not under mnsched.run.
    embedded: bool = False

    def check(self, n: int, result: Any) -> None:
        want = self.expected(n)
        if result != want:
            raise WrongResult(f"{self.name}({n}) returned {result!r}, expected {want!r}")


# -- spawn: n trivial goroutines, spawned then awaited ---------------------------------------


async def _one() -> int:
    return 1


async def spawn_asyncio(n: int) -> int:
    tasks = [asyncio.create_task(_one()) for _ in range(n)]
    return sum([await t for t in tasks])


async def spawn_mnsched(n: int) -> int:
    gs = [mnsched.go(_one()) for _ in range(n)]
    return sum([await g for g in gs])


# -- skynet: a 10-ary tree of n leaves; each node spawns its children and sums them ---------


async def skynet_asyncio(n: int, num: int = 0) -> int:
    if n == 1:
        return num
    n //= 10
    tasks = [asyncio.create_task(skynet_asyncio(n, num + i * n)) for i in range(10)]
    return sum([await t for t in tasks])


async def skynet_mnsched(n: int, num: int = 0) -> int:
    if n == 1:
        return num
    n //= 10
    gs = [mnsched.go(skynet_mnsched(n, num + i * n)) for i in range(10)]
    return sum([await g for g in gs])


# -- blocking: n blocking 10 ms calls at once (asyncio.to_thread vs mnsched.syscall) --------


def _nap(i: int) -> int:
    time.sleep(0.01)
    return i


async def blocking_asyncio(n: int) -> int:
    return sum(await asyncio.gather(*[asyncio.to_thread(_nap, i) for i in range(n)]))


async def blocking_mnsched(n: int) -> int:
    gs = [mnsched.go(mnsched.syscall(_nap, i)) for i in range(n)]
    return sum([await g for g in gs])


async def blocking_pool_asyncio(n: int) -> int:
    """The fair baseline for ``blocking``: asyncio.to_thread on an executor as large as
    the load (the default one has min(32, cpus + 4) threads), so the comparison is about
    threads, not about defaults."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(n) as executor:
        asyncio.get_running_loop().set_default_executor(executor)
        return await blocking_asyncio(n)


# CPU work of a fixed size: under the GIL a burn of fixed *duration* does less work when
# several run at once (on several Ps), which would flatter mnsched. ~30 ms of one core on
# the reference machine (AMD EPYC, Python 3.11).
CPU_UNITS = 350_000


def work(units: int = CPU_UNITS) -> int:
    x = 0
    for i in range(units):
        x += i * i % 7
    return x


# -- hogs: the worst lateness of a 5 ms ticker while another task hogs for n ms ---------------

TICK = 0.005


def burn(seconds: float) -> None:
    """Hold the CPU for a duration: what a hog does (the ticker's lateness is measured
    against it). Throughput workloads use ``work`` instead."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _hog(kind: str, ms: int) -> None:
    if kind == "cpu":
        burn(ms / 1000)
    else:
        time.sleep(ms / 1000)  # an unmarked blocking call


async def _ticker_lateness(
    n: int, kind: str, spawn: Callable[[Any], Any], sleep: Callable[[float], Any]
) -> tuple[bool, float]:
    late: list[tuple[float, float]] = []
    stop = [False]

    async def ticker() -> None:
        while not stop[0]:
            t = time.perf_counter()
            await sleep(TICK)
            late.append((t, time.perf_counter() - t - TICK))

    async def hog() -> float:
        t = time.perf_counter()
        _hog(kind, n)
        return t

    tk = spawn(ticker())
    await sleep(0.05)  # let it settle
    t0 = await spawn(hog())
    t1 = time.perf_counter()
    await sleep(0.05)
    stop[0] = True
    await tk
    during = [lag for t, lag in late if t0 - TICK <= t <= t1]
    return bool(during), 1000 * max(lag for t, lag in late if t >= t0 - TICK)


async def hog_cpu_asyncio(n: int) -> tuple[bool, float]:
    return await _ticker_lateness(n, "cpu", asyncio.ensure_future, asyncio.sleep)


async def hog_cpu_mnsched(n: int) -> tuple[bool, float]:
    return await _ticker_lateness(n, "cpu", mnsched.go, mnsched.sleep)


async def hog_block_asyncio(n: int) -> tuple[bool, float]:
    return await _ticker_lateness(n, "block", asyncio.ensure_future, asyncio.sleep)


async def hog_block_mnsched(n: int) -> tuple[bool, float]:
    return await _ticker_lateness(n, "block", mnsched.go, mnsched.sleep)


# -- timers: the CPU n sleepers cost on a busy host ------------------------------------------
# n goroutines (tasks) each sleep a random time up to a second, beside TIMER_BURNERS
# processes spinning on the CPU: the metric is this process's CPU time. sysmon must not
# take the OS descheduling a P's thread for a hog (it once did: spare Ps and handoffs
# made 100k timers cost 1.8x asyncio's CPU).
TIMER_BURNERS = 2


def _cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _timers(n: int, spawn: Callable[[Any], Any], sleep: Callable[[float], Any]) -> Any:
    import random
    import subprocess
    import sys

    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(TIMER_BURNERS)
    ]
    try:
        rnd = random.Random(n)
        cpu = _cpu_seconds()
        handles = [spawn(sleep(rnd.random())) for _ in range(n)]
        for h in handles:
            await h
        return True, _cpu_seconds() - cpu
    finally:
        for b in burners:
            b.kill()
            b.wait()


async def timers_asyncio(n: int) -> tuple[bool, float]:
    return await _timers(n, asyncio.ensure_future, asyncio.sleep)  # type: ignore[no-any-return]


async def timers_mnsched(n: int) -> tuple[bool, float]:
    return await _timers(n, mnsched.go, mnsched.sleep)  # type: ignore[no-any-return]


# -- starvation: latencies while a task loops on a cooperative yield ------------------------
# A spinner (``while True: await gosched()``; plainly ``await asyncio.sleep(0)``) keeps
# its P busy forever. It must not hold up blocking calls finishing, wake-ups from other
# threads, or timers (under the GIL each busy P thread is one more contender).


async def _with_spinner(
    body: Coroutine[Any, Any, Any], spawn: Callable[[Any], Any], yield_: Callable[[], Any]
) -> Any:
    stop = [False]
    spins = [0]

    async def spinner() -> None:
        while not stop[0]:
            spins[0] += 1
            await yield_()

    s = spawn(spinner())
    try:
        return await body
    finally:
        stop[0] = True
        await s
        if not spins[0]:
            raise WrongResult("the spinner never ran")


def _asleep0() -> Any:
    return asyncio.sleep(0)


async def starve_syscall_asyncio(n: int) -> int:
    return await _with_spinner(blocking_asyncio(n), asyncio.ensure_future, _asleep0)  # type: ignore[no-any-return]


async def starve_syscall_mnsched(n: int) -> int:
    return await _with_spinner(blocking_mnsched(n), mnsched.go, mnsched.gosched)  # type: ignore[no-any-return]


WAKE_GAP = 0.002  # between the thread's sends: latency, not throughput, is measured


async def _thread_wakes(
    n: int, recv: Callable[[], Any], send_from_thread: Callable[[float], object]
) -> tuple[bool, float]:
    def sender() -> None:
        # Each value is stamped with the time it is due, so that the latency includes
        # the sender's own wait for the GIL after its sleep.
        due = time.perf_counter()
        for _ in range(n):
            due += WAKE_GAP
            time.sleep(max(0.0, due - time.perf_counter()))
            send_from_thread(due)

    t = threading.Thread(target=sender, name="bench-sender")
    t.start()
    lat = []
    try:
        for _ in range(n):
            sent = await recv()
            lat.append(time.perf_counter() - sent)
    finally:
        t.join()
    return len(lat) == n, _p99_ms(lat)


def _p99_ms(lat: list[float]) -> float:
    lat = sorted(lat)
    return 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))]


async def starve_wake_asyncio(n: int) -> tuple[bool, float]:
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[float] = asyncio.Queue()
    body = _thread_wakes(n, q.get, lambda t: loop.call_soon_threadsafe(q.put_nowait, t))
    return await _with_spinner(body, asyncio.ensure_future, _asleep0)  # type: ignore[no-any-return]


async def starve_wake_mnsched(n: int) -> tuple[bool, float]:
    ch: mnsched.Chan[float] = mnsched.Chan(n)
    body = _thread_wakes(n, ch.recv, ch.send_blocking)
    return await _with_spinner(body, mnsched.go, mnsched.gosched)  # type: ignore[no-any-return]


STARVE_SLEEP = 0.01


async def _timer_lateness(n: int, sleep: Callable[[float], Any]) -> tuple[bool, float]:
    late = []
    for _ in range(n):
        t = time.perf_counter()
        await sleep(STARVE_SLEEP)
        late.append(time.perf_counter() - t - STARVE_SLEEP)
    return min(late) >= -0.001, _p99_ms(late)


async def starve_timer_asyncio(n: int) -> tuple[bool, float]:
    body = _timer_lateness(n, asyncio.sleep)
    return await _with_spinner(body, asyncio.ensure_future, _asleep0)  # type: ignore[no-any-return]


async def starve_timer_mnsched(n: int) -> tuple[bool, float]:
    body = _timer_lateness(n, mnsched.sleep)
    return await _with_spinner(body, mnsched.go, mnsched.gosched)  # type: ignore[no-any-return]


# -- ping-pong: n round trips between two tasks over unbuffered channels / Queue(1) --------


async def pingpong_asyncio(n: int) -> int:
    ping: asyncio.Queue[int] = asyncio.Queue(1)
    pong: asyncio.Queue[int] = asyncio.Queue(1)

    async def ponger() -> None:
        for _ in range(n):
            await pong.put(await ping.get() + 1)

    t = asyncio.create_task(ponger())
    total = 0
    for i in range(n):
        await ping.put(i)
        total += await pong.get() - i
    await t
    return total


async def pingpong_mnsched(n: int) -> int:
    ping: mnsched.Chan[int] = mnsched.Chan()
    pong: mnsched.Chan[int] = mnsched.Chan()

    async def ponger() -> None:
        for _ in range(n):
            await pong.send(await ping.recv() + 1)

    g = mnsched.go(ponger())
    total = 0
    for i in range(n):
        await ping.send(i)
        total += await pong.recv() - i
    await g
    return total


# -- sieve: Go's concurrent prime sieve, the first n primes --------------------------------


async def sieve_asyncio(n: int) -> int:
    async def generate(q: asyncio.Queue[int]) -> None:
        i = 2
        while True:
            await q.put(i)
            i += 1

    async def filt(src: asyncio.Queue[int], dst: asyncio.Queue[int], prime: int) -> None:
        while True:
            i = await src.get()
            if i % prime:
                await dst.put(i)

    tasks = []
    q: asyncio.Queue[int] = asyncio.Queue(1)
    tasks.append(asyncio.create_task(generate(q)))
    prime = 0
    for _ in range(n):
        prime = await q.get()
        q1: asyncio.Queue[int] = asyncio.Queue(1)
        tasks.append(asyncio.create_task(filt(q, q1, prime)))
        q = q1
    for t in tasks:
        t.cancel()
    return prime


async def sieve_mnsched(n: int) -> int:
    async def generate(ch: mnsched.Chan[int]) -> None:
        i = 2
        while True:
            await ch.send(i)
            i += 1

    async def filt(src: mnsched.Chan[int], dst: mnsched.Chan[int], prime: int) -> None:
        while True:
            i = await src.recv()
            if i % prime:
                await dst.send(i)

    gs = []
    ch: mnsched.Chan[int] = mnsched.Chan()
    gs.append(mnsched.go(generate(ch)))
    prime = 0
    for _ in range(n):
        prime = await ch.recv()
        ch1: mnsched.Chan[int] = mnsched.Chan()
        gs.append(mnsched.go(filt(ch, ch1, prime)))
        ch = ch1
    for g in gs:
        g.cancel()
    return prime


# -- worker pool: WORKERS workers square n jobs from a buffered channel (gobench.go) ---------

WORKERS = 64  # gobench.go's WORKERS


async def worker_pool_asyncio(n: int) -> int:
    jobs: asyncio.Queue[int | None] = asyncio.Queue(WORKERS)
    results: asyncio.Queue[int] = asyncio.Queue(WORKERS)

    async def worker() -> None:
        while (j := await jobs.get()) is not None:  # None: Go's close(jobs)
            await results.put(j * j)

    async def feed() -> None:
        for j in range(n):
            await jobs.put(j)
        for _ in range(WORKERS):
            await jobs.put(None)

    tasks = [asyncio.create_task(worker()) for _ in range(WORKERS)]
    tasks.append(asyncio.create_task(feed()))
    total = 0
    for _ in range(n):
        total += await results.get()
    await asyncio.gather(*tasks)
    return total


async def worker_pool_mnsched(n: int) -> int:
    jobs: mnsched.Chan[int] = mnsched.Chan(WORKERS)
    results: mnsched.Chan[int] = mnsched.Chan(WORKERS)

    async def worker() -> None:
        async for j in jobs:
            await results.send(j * j)

    async def feed() -> None:
        for j in range(n):
            await jobs.send(j)
        jobs.close()

    gs = [mnsched.go(worker()) for _ in range(WORKERS)]
    gs.append(mnsched.go(feed()))
    total = 0
    for _ in range(n):
        total += await results.recv()
    for g in gs:
        await g
    return total


# -- mutex: WORKERS goroutines take one lock n times in all, yielding inside (gobench.go) ----


def _shares(n: int) -> list[int]:
    return [n // WORKERS + (w < n % WORKERS) for w in range(WORKERS)]


async def mutex_asyncio(n: int) -> int:
    lock = asyncio.Lock()
    counter = 0

    async def worker(k: int) -> None:
        nonlocal counter
        for _ in range(k):
            async with lock:
                c = counter
                await asyncio.sleep(0)
                counter = c + 1

    await asyncio.gather(*(worker(k) for k in _shares(n)))
    return counter


async def mutex_mnsched(n: int) -> int:
    mu = mnsched.Mutex()
    counter = 0

    async def worker(k: int) -> None:
        nonlocal counter
        for _ in range(k):
            async with mu:
                c = counter
                await mnsched.gosched()
                counter = c + 1

    gs = [mnsched.go(worker(k)) for k in _shares(n)]
    for g in gs:
        await g
    return counter


# -- http: requests/s of an aiohttp app on loopback; load from another process ---------------

BLOCK_S = 0.020  # the blocking call of the "blocking" mix
BLOCK_SHARE = 0.05


def _http_app(blocking: Callable[[], Coroutine[Any, Any, None]]) -> Any:
    from aiohttp import web

    async def light(request: Any) -> Any:
        return web.Response(text="ok")

    async def blocked(request: Any) -> Any:
        await blocking()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/light", light)
    app.router.add_get("/blocking", blocked)
    return app


def _loadgen_cmd(port: int, n: int, mix: float | str, *extra: str) -> list[str]:
    import sys

    return [
        sys.executable,
        "-m",
        "mnsched.bench.loadgen",
        f"http://127.0.0.1:{port}",
        "--requests",
        str(n),
        "--mix",
        str(mix),
        "--seconds",
        str(max(2, n // 4000)),
        *extra,
    ]


def _load_result(out: str) -> tuple[bool, float]:
    import json

    r = json.loads(out.strip().splitlines()[-1])
    return r["errors"] == 0, r["seconds"]


async def _http_asyncio(n: int, mix: float) -> tuple[bool, float]:
    from aiohttp import web

    async def block_the_loop() -> None:
        time.sleep(BLOCK_S)  # a sync driver call, as a plain aiohttp app makes it

    runner = web.AppRunner(_http_app(block_the_loop))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    proc = await asyncio.create_subprocess_exec(
        *_loadgen_cmd(runner.addresses[0][1], n, mix), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    await runner.cleanup()
    return _load_result(out.decode())


async def _http_mnsched(n: int, mix: float) -> tuple[bool, float]:
    import subprocess

    from mnsched.serve import serve_aiohttp

    async def through_syscall() -> None:
        await mnsched.syscall(time.sleep, BLOCK_S)

    srv = await serve_aiohttp(lambda: _http_app(through_syscall))
    out = await mnsched.syscall(
        subprocess.run, _loadgen_cmd(srv.port, n, mix), capture_output=True, text=True, check=True
    )
    await srv.close()
    await srv.wait_closed()
    return _load_result(out.stdout)


async def http_light_asyncio(n: int) -> tuple[bool, float]:
    return await _http_asyncio(n, 0.0)


async def http_light_mnsched(n: int) -> tuple[bool, float]:
    return await _http_mnsched(n, 0.0)


async def http_blocking_asyncio(n: int) -> tuple[bool, float]:
    return await _http_asyncio(n, BLOCK_SHARE)


async def http_blocking_mnsched(n: int) -> tuple[bool, float]:
    return await _http_mnsched(n, BLOCK_SHARE)


# -- fastapi: a FastAPI app on uvicorn, as services deploy it; load from another process ----
#
# Plain: uvicorn on the variant's loop; a CPU-heavy handler works in the handler (it holds
# the loop), a blocking one goes through asyncio.to_thread. mnsched: uvicorn on uvloop
# with the runtime started in the app's lifespan; the CPU work is a goroutine (on a P
# thread), the blocking call goes through syscall. These run in a host loop: the harness
# passes the P count in EMBEDDED (run_variant sets it), not through mnsched.run.

FASTAPI_MIX = "cpu=0.02,blocking=0.05"
FASTAPI_CONCURRENCY = 64
EMBEDDED: dict[str, Any] = {"procs": None, "sysmon": True, "parallel": False}


def _fastapi_app(cpu: Callable[[], Any], blocking: Callable[[], Any], lifespan: Any = None) -> Any:
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    app = FastAPI(lifespan=lifespan)
    ok = PlainTextResponse("ok")

    @app.get("/light")
    async def light() -> Any:
        return ok

    @app.get("/cpu")
    async def cpu_heavy() -> Any:
        await cpu()
        return ok

    @app.get("/blocking")
    async def blocked() -> Any:
        await blocking()
        return ok

    return app


async def _serve_and_load(app: Any, n: int, mix: str, *extra: str) -> tuple[bool, dict[str, float]]:
    """Serve app with uvicorn on the running loop, load it from another process."""
    import json
    import socket

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:  # uvicorn signals readiness only through this flag
        if serving.done():
            serving.result()  # it failed to start: say why
        await asyncio.sleep(0.01)
    try:
        proc = await asyncio.create_subprocess_exec(
            *_loadgen_cmd(sock.getsockname()[1], n, mix, *extra), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
    finally:
        server.should_exit = True
        await serving
        sock.close()
    r = json.loads(out.decode().strip().splitlines()[-1])
    figures = {k: float(r[k]) for k in ("p50_ms", "p99_ms", "rps") if k in r}
    return r["errors"] == 0, figures


def _plain_fastapi(pool: int | None) -> Any:
    import concurrent.futures
    import contextlib

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        if pool is None:
            yield
            return
        with concurrent.futures.ThreadPoolExecutor(pool) as executor:
            asyncio.get_running_loop().set_default_executor(executor)
            yield

    async def cpu() -> None:
        work()

    return _fastapi_app(cpu, lambda: asyncio.to_thread(time.sleep, BLOCK_S), lifespan)


def _mnsched_fastapi() -> Any:
    import contextlib

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        async with mnsched.Runtime(
            EMBEDDED["procs"], sysmon=EMBEDDED["sysmon"], parallel=EMBEDDED["parallel"]
        ):
            yield

    async def burn_in_goroutine() -> None:
        work()

    return _fastapi_app(
        lambda: mnsched.go(burn_in_goroutine()),
        lambda: mnsched.syscall(time.sleep, BLOCK_S),
        lifespan,
    )


async def _as_seconds(run: Coroutine[Any, Any, tuple[bool, dict[str, float]]], n: int) -> Any:
    ok, figures = await run
    return ok, {"value": n / figures["rps"], **figures}


async def fastapi_light_plain(n: int) -> Any:
    return await _as_seconds(_serve_and_load(_plain_fastapi(None), n, "0"), n)


async def fastapi_light_mnsched(n: int) -> Any:
    return await _as_seconds(_serve_and_load(_mnsched_fastapi(), n, "0"), n)


async def _light_p99(app: Any, n: int) -> Any:
    ok, figures = await _serve_and_load(app, n, FASTAPI_MIX, "--python")
    return ok, {"value": figures.pop("p99_ms"), **figures}


async def fastapi_mixed_plain(n: int) -> Any:
    return await _light_p99(_plain_fastapi(None), n)


async def fastapi_mixed_bigpool_plain(n: int) -> Any:
    return await _light_p99(_plain_fastapi(FASTAPI_CONCURRENCY), n)


async def fastapi_mixed_mnsched(n: int) -> Any:
    return await _light_p99(_mnsched_fastapi(), n)


# -- cpu: CPU work that releases the GIL (hashing 1 MiB buffers), one task per buffer -------

CHUNK = bytes(range(256)) * 4096  # 1 MiB: hashlib releases the GIL over such buffers
CHUNK_DIGEST = hashlib.sha256(CHUNK).hexdigest()


async def _hash_chunk() -> str:
    return hashlib.sha256(CHUNK).hexdigest()


async def cpu_asyncio(n: int) -> int:
    tasks = [asyncio.create_task(_hash_chunk()) for _ in range(n)]
    return sum([await t == CHUNK_DIGEST for t in tasks])


async def cpu_mnsched(n: int) -> int:
    gs = [mnsched.go(_hash_chunk()) for _ in range(n)]
    return sum([await g == CHUNK_DIGEST for g in gs])


# -- service: many light requests among a few blocking and CPU-heavy ones --------------------

LIGHT_EVERY = 0.0005  # a light request arrives every 0.5 ms
HEAVY_EVERY = 50  # one request in 50 burns 30 ms of CPU, one in 50 blocks 20 ms


async def _service(
    n: int, spawn: Callable[[Any], Any], sleep: Callable[[float], Any], blocking: Callable[[], Any]
) -> tuple[bool, dict[str, float]]:
    """n requests arrive at a steady pace; the light ones' latency is what is measured."""
    latencies: list[float] = []
    done = [0]

    async def light(t0: float) -> None:
        await sleep(0)
        latencies.append(time.perf_counter() - t0)
        done[0] += 1

    async def cpu_heavy() -> None:
        work()
        done[0] += 1

    async def io_heavy() -> None:
        await blocking()
        done[0] += 1

    handles = []
    start = time.perf_counter()
    for i in range(n):
        due = start + i * LIGHT_EVERY
        while time.perf_counter() < due:
            await sleep(max(0.0, due - time.perf_counter()))
        if i % HEAVY_EVERY == HEAVY_EVERY // 2:
            handles.append(spawn(cpu_heavy()))
        elif i % HEAVY_EVERY == 0:
            handles.append(spawn(io_heavy()))
        else:
            handles.append(spawn(light(time.perf_counter())))
    for h in handles:
        await h
    took = time.perf_counter() - start
    lat = sorted(latencies)
    p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
    return done[0] == n, {"value": 1000 * p99, "p50_ms": 1000 * p50, "throughput_per_s": n / took}


async def service_asyncio(n: int) -> tuple[bool, dict[str, float]]:
    return await _service(
        n, asyncio.ensure_future, asyncio.sleep, lambda: asyncio.to_thread(time.sleep, BLOCK_S)
    )


async def service_mnsched(n: int) -> tuple[bool, dict[str, float]]:
    return await _service(
        n, mnsched.go, mnsched.sleep, lambda: mnsched.syscall(time.sleep, BLOCK_S)
    )


def nth_prime(n: int) -> int:
    found, k = 0, 1
    while found < n:
        k += 1
        if all(k % d for d in range(2, int(k**0.5) + 1)):
            found += 1
    return k


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "spawn",
            "spawn n trivial goroutines, then await each",
            200_000,
            200_000,
            spawn_asyncio,
            spawn_mnsched,
            lambda n: n,
        ),
        Workload(
            "skynet",
            "skynet: 10-ary tree of n leaves, each leaf returns its number",
            1_000_000,
            100_000,
            skynet_asyncio,
            skynet_mnsched,
            lambda n: n * (n - 1) // 2,
        ),
        Workload(
            "blocking",
            "n blocking 10 ms calls at once: asyncio.to_thread vs syscall",
            400,
            400,
            blocking_asyncio,
            blocking_mnsched,
            lambda n: n * (n - 1) // 2,
        ),
        Workload(
            "blocking-pool",
            "the same, asyncio.to_thread on an executor of n threads (a fair baseline)",
            400,
            100,
            blocking_pool_asyncio,
            blocking_mnsched,
            lambda n: n * (n - 1) // 2,
        ),
        Workload(
            "pingpong",
            "n round trips over unbuffered channels (asyncio.Queue(1))",
            200_000,
            100_000,
            pingpong_asyncio,
            pingpong_mnsched,
            lambda n: n,
        ),
        Workload(
            "sieve",
            "Go's concurrent prime sieve: the first n primes",
            2_000,
            1_000,
            sieve_asyncio,
            sieve_mnsched,
            nth_prime,
        ),
        Workload(
            "worker-pool",
            f"{WORKERS} workers square n jobs from a buffered channel (asyncio.Queue)",
            50_000,
            20_000,
            worker_pool_asyncio,
            worker_pool_mnsched,
            lambda n: (n - 1) * n * (2 * n - 1) // 6,
        ),
        Workload(
            "mutex",
            f"{WORKERS} goroutines take one Mutex n times in all, yielding inside",
            50_000,
            20_000,
            mutex_asyncio,
            mutex_mnsched,
            lambda n: n,
        ),
        Workload(
            "http-light",
            "aiohttp on loopback, all requests light (load from another process)",
            20_000,
            10_000,
            http_light_asyncio,
            http_light_mnsched,
            lambda n: True,
            metric="seconds*",
        ),
        Workload(
            "http-blocking",
            "aiohttp on loopback, 5% of requests make a 20 ms blocking "
            "call (plain: in the handler; mnsched: through syscall)",
            4_000,
            1_000,
            http_blocking_asyncio,
            http_blocking_mnsched,
            lambda n: True,
            metric="seconds*",
        ),
        Workload(
            "fastapi-light",
            "FastAPI on uvicorn (mnsched: runtime in the lifespan), light requests only, "
            "wrk load; p50/p99 and requests/s",
            20_000,
            2_000,
            fastapi_light_plain,
            fastapi_light_mnsched,
            lambda n: True,
            metric="seconds*",
            embedded=True,
        ),
        Workload(
            "fastapi-mixed",
            "FastAPI: light requests among 2% CPU-heavy (30 ms) and 5% blocking (20 ms: "
            "asyncio.to_thread with the default pool vs syscall); p99 of the light ones",
            3_000,
            600,
            fastapi_mixed_plain,
            fastapi_mixed_mnsched,
            lambda n: True,
            metric="p99 ms",
            embedded=True,
        ),
        Workload(
            "fastapi-mixed-pool",
            "as fastapi-mixed, plain with a to_thread pool as large as the load (64)",
            3_000,
            600,
            fastapi_mixed_bigpool_plain,
            fastapi_mixed_mnsched,
            lambda n: True,
            metric="p99 ms",
            embedded=True,
        ),
        Workload(
            "starve-syscall",
            "n blocking 10 ms calls at once while a task spins on gosched (asyncio.sleep(0))",
            400,
            400,
            starve_syscall_asyncio,
            starve_syscall_mnsched,
            lambda n: n * (n - 1) // 2,
        ),
        Workload(
            "starve-wake",
            "p99 latency of n values sent from a plain thread every 2 ms (from when each is "
            "due), while a task spins",
            500,
            100,
            starve_wake_asyncio,
            starve_wake_mnsched,
            lambda n: True,
            metric="p99 ms",
        ),
        Workload(
            "starve-timer",
            "p99 lateness of n 10 ms sleeps in a row, while a task spins",
            200,
            50,
            starve_timer_asyncio,
            starve_timer_mnsched,
            lambda n: True,
            metric="p99 ms late",
        ),
        Workload(
            "cpu",
            "hash n 1 MiB buffers, a task each (hashlib releases the GIL)",
            200,
            40,
            cpu_asyncio,
            cpu_mnsched,
            lambda n: n,
        ),
        Workload(
            "service",
            "n requests at 2000/s: light ones among 2% CPU-heavy (30 ms) "
            "and 2% blocking (20 ms); p99 latency of the light ones",
            3_000,
            600,
            service_asyncio,
            service_mnsched,
            lambda n: True,
            metric="p99 ms",
        ),
        Workload(
            "timers",
            f"CPU time of n sleeps of up to 1 s, beside {TIMER_BURNERS} CPU burner processes",
            100_000,
            10_000,
            timers_asyncio,
            timers_mnsched,
            lambda n: True,
            metric="CPU s",
        ),
        Workload(
            "hog-cpu",
            "worst lateness of a 5 ms ticker while a task burns CPU n ms",
            300,
            300,
            hog_cpu_asyncio,
            hog_cpu_mnsched,
            lambda n: True,
            metric="ms late",
        ),
        Workload(
            "hog-block",
            "worst lateness of a 5 ms ticker while a task blocks n ms in an unmarked time.sleep",
            300,
            300,
            hog_block_asyncio,
            hog_block_mnsched,
            lambda n: True,
            metric="ms late",
        ),
    )
}

# Names that stand for several workloads on the command line.
GROUPS: dict[str, list[str]] = {
    "starvation": ["starve-syscall", "starve-wake", "starve-timer"],
}
