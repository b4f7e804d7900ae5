"""A FastAPI service on mnsched: the runtime starts in the lifespan, and every request
handler sees it (``mnsched.go``, ``syscall`` and ``stats`` use it from uvicorn's tasks).

Endpoints: ``/`` (light JSON); ``/cpu?ms=`` (pure-Python CPU work in a goroutine: it
runs on a P thread, and light requests are served meanwhile); ``/blocking?ms=`` (a
blocking call through ``mnsched.syscall``: it stalls nobody); ``/fanout?n=`` (n goroutines,
each calling ``/`` through its own P's ``httpx.AsyncClient``, made by ``mnsched.PerP``);
``/stats``.

Run until Ctrl-C: ``python samples/fastapi_service.py --port 8000 --procs 2``; or in
gunicorn processes, each with Ps of its own:
``gunicorn -k mnsched.gunicorn.Worker -w 2 -b 127.0.0.1:8000 --chdir samples fastapi_service:app``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request

import mnsched

# One HTTP client per P, made on the P that first asks: a client belongs to one loop.
clients = mnsched.PerP(lambda: httpx.AsyncClient(timeout=10))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # procs: $MNSCHED_PROCS (gunicorn's worker sets it per worker), else the CPUs.
    async with mnsched.Runtime() as rt:
        app.state.runtime = rt
        yield  # closing: goroutines cancelled, PerP clients closed, threads joined


app = FastAPI(lifespan=lifespan)


def burn(ms: float) -> int:
    """Pure-Python CPU work (holds the GIL) for about ms milliseconds."""
    end = time.perf_counter() + ms / 1000
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


async def cpu_work(ms: float) -> int:
    return burn(ms)


async def call(url: str) -> Any:
    r = await clients.get().get(url)
    r.raise_for_status()
    return r.json()


@app.get("/")
async def index() -> dict[str, str]:
    return {"hello": "world"}


@app.get("/cpu")
async def cpu(ms: float = 30) -> dict[str, int]:
    return {"loops": await mnsched.go(cpu_work(ms))}


@app.get("/blocking")
async def blocking(ms: float = 20) -> dict[str, float]:
    await mnsched.syscall(time.sleep, ms / 1000)  # a sync driver call, say
    return {"slept_ms": ms}


@app.get("/fanout")
async def fanout(request: Request, n: int = 10) -> dict[str, Any]:
    url = str(request.base_url)
    gs = [mnsched.go(call(url)) for _ in range(n)]
    return {"results": [await g for g in gs]}


@app.get("/stats")
async def stats(request: Request) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "lifespan_runtime": mnsched.current_runtime() is request.app.state.runtime,
        # One sysmon thread per runtime: 1 means no second (default) runtime was started.
        "runtimes": sum(t.name == "mnsched-sysmon" for t in threading.enumerate()),
        **mnsched.stats(),
    }


def main() -> None:
    from cli import parser  # (here: the app also imports as samples.<this module>)

    ap = parser(__doc__)
    ap.add_argument("--host", default="127.0.0.1", help="address to serve on")
    ap.add_argument("--port", type=int, default=8000, help="port to serve on (0: any free)")
    args = ap.parse_args()
    if args.procs is not None:
        os.environ["MNSCHED_PROCS"] = str(args.procs)
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", lifespan="on")


if __name__ == "__main__":
    main()
