"""An aiohttp service served on every P (SO_REUSEPORT), each request a goroutine.

Endpoints: ``/`` (light JSON), ``/cpu?kb=`` (hashing: CPU work that releases the GIL,
run on an M thread so every core is used), ``/db?ms=`` (a blocking, sync database-style
call made through ``@mnsched.blocking``: it stalls nobody), ``/stats``.

Run the server until Ctrl-C: ``python samples/aiohttp_service.py --port 8080``; or serve and load it
with the built-in client in another thread, then print what it measured:
``python samples/aiohttp_service.py --selftest --requests 2000``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from typing import Any

import aiohttp
from aiohttp import web

import mnsched
from mnsched.serve import serve_aiohttp


@mnsched.blocking
def query_db(ms: int) -> dict[str, Any]:
    """Stands for a sync database driver call."""
    time.sleep(ms / 1000)
    return {"rows": 1, "took_ms": ms}


def digest(kb: int) -> str:
    return hashlib.sha256(b"x" * (kb * 1024)).hexdigest()


def make_app() -> web.Application:
    app = web.Application()

    async def index(request: web.Request) -> web.Response:
        return web.json_response({"hello": "world"})

    async def cpu(request: web.Request) -> web.Response:
        kb = int(request.query.get("kb", "512"))
        return web.json_response({"sha256": await mnsched.syscall(digest, kb)})

    async def db(request: web.Request) -> web.Response:
        return web.json_response(await query_db(int(request.query.get("ms", "20"))))

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(mnsched.stats())

    app.router.add_get("/", index)
    app.router.add_get("/cpu", cpu)
    app.router.add_get("/db", db)
    app.router.add_get("/stats", stats)
    return app


async def load(port: int, requests: int, concurrency: int) -> dict[str, Any]:
    """A small load client: a mix of the endpoints, every response checked."""
    paths = ["/", "/", "/", "/", "/db?ms=20", "/", "/cpu?kb=64", "/"]
    sem = asyncio.Semaphore(concurrency)
    status: dict[int, int] = {}
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:

        async def one(i: int) -> None:
            async with sem, s.get(f"http://127.0.0.1:{port}{paths[i % len(paths)]}") as r:
                await r.read()
                status[r.status] = status.get(r.status, 0) + 1

        await asyncio.gather(*(one(i) for i in range(requests)))
    took = time.perf_counter() - t0
    return {
        "requests": requests,
        "status": status,
        "seconds": round(took, 3),
        "req_per_s": round(requests / took),
    }


async def serve(host: str, port: int, selftest: int, concurrency: int) -> dict[str, Any]:
    server = await serve_aiohttp(make_app, host, port)
    print(f"serving on http://{host}:{server.port} from {len(server.addresses)} Ps", flush=True)
    try:
        if not selftest:
            await server.serve_forever()  # Ctrl-C cancels main, which closes the server
        result: dict[str, Any] = {}

        def client() -> None:
            result.update(asyncio.run(load(server.port, selftest, concurrency)))

        t = threading.Thread(target=client)
        t.start()
        await mnsched.syscall(t.join)
        result["handled"] = server.nhandled
        return result
    finally:
        await server.close()
        await server.wait_closed()


def main() -> None:
    from cli import parser  # (here: the app also imports as samples.<this module>)

    ap = parser(__doc__)
    ap.add_argument("--host", default="127.0.0.1", help="address to serve on")
    ap.add_argument("--port", type=int, default=8080, help="port to serve on")
    ap.add_argument(
        "--selftest",
        nargs="?",
        const=2000,
        type=int,
        default=0,
        metavar="REQUESTS",
        help="serve on a free port, load it with REQUESTS requests, report (0: just serve)",
    )
    ap.add_argument("--requests", type=int, default=None, help="with --selftest: requests to send")
    ap.add_argument(
        "--concurrency", type=int, default=32, help="with --selftest: requests in flight"
    )
    args = ap.parse_args()
    n = args.requests or args.selftest
    port = 0 if n else args.port
    try:
        result = mnsched.run(serve(args.host, port, n, args.concurrency), procs=args.procs)
    except KeyboardInterrupt:
        print("stopped")
        return
    print(json.dumps(result))


if __name__ == "__main__":
    main()
