"""HTTP load for the bench, from a process of its own: wrk when it is installed, else an
aiohttp client. Every response is checked; prints JSON {requests, errors, seconds, rps}
and, where it can time the light requests (``/light``) apart, their p50_ms and p99_ms.

``python -m mnsched.bench.loadgen URL --requests N --concurrency C --mix blocking=0.05``

``--mix`` gives the share of requests to other paths (``/blocking``, ``/cpu``; a bare
number is the share of ``/blocking``); the rest go to ``/light``. wrk reports latency
over all requests: for a mix, only the Python client (``--python``) times the light
ones apart.
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

LIGHT = "/light"


def parse_mix(text: str) -> dict[str, float]:
    """``blocking=0.05,cpu=0.02`` (or ``0.05``, the share of /blocking) -> shares."""
    if not text or text in ("0", "0.0"):
        return {}
    if "=" not in text:
        text = f"blocking={text}"
    mix = {f"/{k.strip()}": float(v) for k, v in (part.split("=") for part in text.split(","))}
    if any(s < 0 for s in mix.values()) or sum(mix.values()) >= 1:
        raise SystemExit(f"--mix shares must be >= 0 and leave some light requests: {text!r}")
    return mix


def paths(n: int, mix: dict[str, float]) -> list[str]:
    """n request paths, each other path spread evenly through them (deterministic)."""
    out = [LIGHT] * n
    for k, (path, share) in enumerate(sorted(mix.items())):
        every = round(1 / share) if share else 0
        if every:
            for i in range(every // 2 + k, n, every):
                out[i] = path if out[i] == LIGHT else out[i]
    return out


def percentiles(latencies: list[float]) -> dict[str, float]:
    lat = sorted(latencies)
    if not lat:
        return {"p50_ms": 0.0, "p99_ms": 0.0}
    return {
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


async def python_client(
    url: str, n: int, concurrency: int, mix: dict[str, float]
) -> dict[str, Any]:
    errors = 0
    light: list[float] = []
    todo = iter(paths(n, mix))
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:

        async def worker() -> None:
            nonlocal errors
            for path in todo:  # shared: each path is taken by one worker
                start = time.perf_counter()
                try:
                    async with s.get(url + path) as r:
                        ok = r.status == 200 and await r.text() == "ok"
                except aiohttp.ClientError:
                    ok = False
                errors += not ok
                if path == LIGHT:
                    light.append(time.perf_counter() - start)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    took = time.perf_counter() - t0
    return {"requests": n, "errors": errors, "seconds": took, "rps": n / took, **percentiles(light)}


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


WRK_SCRIPT = """
local paths = {%s}
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
"""
WRK_CYCLE = 1000  # the mix repeats every this many requests (per wrk thread)


def wrk(
    url: str, n: int, concurrency: int, seconds: float, mix: dict[str, float]
) -> dict[str, Any]:
    """Load with wrk for ``seconds``; its rate gives the time to serve n."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % ", ".join(f'"{p}"' for p in paths(WRK_CYCLE, mix)))
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds:.0f}s", "--latency", "-s", f.name, url],
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
    result: dict[str, Any] = {
        "requests": n,
        "errors": errors,
        "seconds": n / rps,
        "rps": rps,
        "tool": "wrk",
    }
    if not mix:  # wrk's latencies are over all requests: the light ones here
        pct = re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        result.update({f"p{p}_ms": _ms(v, u) for p, v, u in pct})
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("url")
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--mix", default="", help="shares of other paths, e.g. blocking=0.05")
    ap.add_argument("--seconds", type=float, default=5, help="wrk's duration")
    ap.add_argument("--python", action="store_true", help="the Python client even with wrk")
    args = ap.parse_args()
    mix = parse_mix(args.mix)
    if shutil.which("wrk") and not args.python:
        result = wrk(args.url, args.requests, args.concurrency, args.seconds, mix)
    else:
        result = uvloop.run(python_client(args.url, args.requests, args.concurrency, mix))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
