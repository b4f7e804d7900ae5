"""HTTP load for the bench, from a process of its own: wrk when it is installed, else an
aiohttp client. Every response is checked; prints JSON {requests, errors, seconds}.

``python -m mnsched.bench.loadgen URL --requests N --concurrency C --mix 0.05``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from typing import Any

import aiohttp
import uvloop

WRK_MIX = """
counter = 0
request = function()
  counter = counter + 1
  if %d > 0 and counter %% %d == 0 then
    return wrk.format("GET", "/blocking")
  end
  return wrk.format("GET", "/light")
end
"""


def path_for(i: int, every: int) -> str:
    return "/blocking" if every and (i + 1) % every == 0 else "/light"


async def python_client(url: str, n: int, concurrency: int, every: int) -> dict[str, float]:
    errors = 0
    sem = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:

        async def one(i: int) -> None:
            nonlocal errors
            async with sem, s.get(url + path_for(i, every)) as r:
                body = await r.text()
                if r.status != 200 or body != "ok":
                    errors += 1

        await asyncio.gather(*(one(i) for i in range(n)))
    return {"requests": n, "errors": errors, "seconds": time.perf_counter() - t0}


def wrk(url: str, n: int, concurrency: int, every: int, seconds: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_MIX % (every, every or 1))
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds:.0f}s", "-s", f.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(f.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    errors += sum(int(x) for x in errs.groups()) if errs else 0
    return {"requests": n, "errors": errors, "seconds": n / rps, "tool": "wrk"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("url")
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--mix", type=float, default=0.0, help="share of /blocking requests")
    ap.add_argument("--seconds", type=float, default=5, help="wrk's duration")
    ap.add_argument("--python", action="store_true", help="the Python client even with wrk")
    args = ap.parse_args()
    every = round(1 / args.mix) if args.mix else 0
    if shutil.which("wrk") and not args.python:
        result = wrk(args.url, args.requests, args.concurrency, every, args.seconds)
    else:
        result = uvloop.run(python_client(args.url, args.requests, args.concurrency, every))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
