"""A worker pool with results fan-in: jobs go out on one channel to N workers, results
come back on another, a WaitGroup closes it when every worker is done.

Run: ``python samples/worker_pool.py [--jobs 100] [--workers 8] [--procs N]``.
"""

from __future__ import annotations

import hashlib

from cli import parser

import mnsched
from mnsched import Chan, WaitGroup


async def worker(
    wid: int, jobs: Chan[int], results: Chan[tuple[int, int, str]], wg: WaitGroup
) -> None:
    try:
        async for n in jobs:
            # CPU work that releases the GIL runs best as a blocking call on an M thread
            digest = await mnsched.syscall(_hash, n)
            await results.send((n, wid, digest))
    finally:
        wg.done()


def _hash(n: int) -> str:
    return hashlib.sha256(str(n).encode() * 10_000).hexdigest()[:12]


async def run_pool(njobs: int, nworkers: int) -> dict[int, str]:
    jobs: Chan[int] = Chan(nworkers)
    results: Chan[tuple[int, int, str]] = Chan(nworkers)
    wg = WaitGroup()
    for wid in range(nworkers):
        wg.add(1)
        mnsched.go(worker(wid, jobs, results, wg))

    async def feed() -> None:
        for n in range(njobs):
            await jobs.send(n)
        jobs.close()

    async def close_when_done() -> None:
        await wg.wait()
        results.close()

    mnsched.go(feed())
    mnsched.go(close_when_done())
    return {n: digest async for n, _, digest in results}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--jobs", type=int, default=100, help="jobs to hand out")
    ap.add_argument("--workers", type=int, default=8, help="worker goroutines")
    args = ap.parse_args()
    out = mnsched.run(run_pool(args.jobs, args.workers), procs=args.procs)
    print(f"{len(out)} results; job 0 -> {out[0]}")


if __name__ == "__main__":
    main()
