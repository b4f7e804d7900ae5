"""One round of goroutine churn, for the memory probes (test_escapes.py, in process and
in a child): n goroutines spawned in one step (a hog spell, at procs 1), parked on a
channel, cancelled and awaited, and the collector run."""

from __future__ import annotations

import asyncio
import contextlib
import gc

import mnsched


async def parked(ch: mnsched.Chan[None]) -> None:
    await ch.recv()


async def churn_round(n: int) -> None:
    ch: mnsched.Chan[None] = mnsched.Chan()
    gs = [mnsched.go(parked(ch)) for _ in range(n)]
    while any(g.status != "parked" for g in gs[-100:]):
        await mnsched.sleep(0.001)
    for g in gs:
        g.cancel()
    for g in gs:
        with contextlib.suppress(asyncio.CancelledError):
            await g
    del gs, g, ch
    gc.collect()
