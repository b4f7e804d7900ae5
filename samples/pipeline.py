"""A pipeline with cancellation (Go's "pipelines and cancellation" pattern): numbers ->
square -> a merge of two squarers -> the consumer. The consumer stops early and closes
``done``; every stage selects on ``done`` and returns, so nothing is left blocked.

Run: ``python samples/pipeline.py [--take 10] [--procs N]``.
"""

from __future__ import annotations

from cli import parser

import mnsched
from mnsched import Chan, Recv, Send, WaitGroup, select


async def gen(done: Chan[None], nums: range) -> Chan[int]:
    out: Chan[int] = Chan()

    async def run() -> None:
        try:
            for n in nums:
                stop = Recv(done)
                if await select(Send(out, n), stop) is stop:
                    return
        finally:
            out.close()

    mnsched.go(run(), name="gen")
    return out


async def square(done: Chan[None], src: Chan[int]) -> Chan[int]:
    out: Chan[int] = Chan()

    async def run() -> None:
        try:
            async for n in src:
                stop = Recv(done)
                if await select(Send(out, n * n), stop) is stop:
                    return
        finally:
            out.close()

    mnsched.go(run(), name="square")
    return out


async def merge(done: Chan[None], *srcs: Chan[int]) -> Chan[int]:
    out: Chan[int] = Chan()
    wg = WaitGroup()

    async def forward(src: Chan[int]) -> None:
        try:
            async for n in src:
                stop = Recv(done)
                if await select(Send(out, n), stop) is stop:
                    return
        finally:
            wg.done()

    for src in srcs:
        wg.add(1)
        mnsched.go(forward(src), name="merge")

    async def close_after() -> None:
        await wg.wait()
        out.close()

    mnsched.go(close_after())
    return out


async def first_squares(take: int, upto: int = 1_000_000) -> tuple[list[int], int]:
    """Take the first ``take`` squares, then cancel the rest of the pipeline; return them
    and the number of goroutines left once it has wound down (1: this one)."""
    done: Chan[None] = Chan()
    src = await gen(done, range(upto))
    out = await merge(done, await square(done, src), await square(done, src))
    got = [await out.recv() for _ in range(take)]
    done.close()  # cancel every stage
    async for _ in out:  # drain until merge closes it: every stage has returned
        pass
    while mnsched.num_goroutine() > 1:  # close_after and the last stages finishing
        await mnsched.sleep(0.001)
    return got, mnsched.num_goroutine()


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--take", type=int, default=10, help="squares to take before stopping")
    args = ap.parse_args()
    got, left = mnsched.run(first_squares(args.take), procs=args.procs)
    print(f"took {len(got)} squares: {sorted(got)}; goroutines left: {left}")


if __name__ == "__main__":
    main()
