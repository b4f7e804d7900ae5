"""Benchmark workloads, each written idiomatically twice: for asyncio and for mnsched.

A workload's ``run_asyncio(n)`` / ``run_mnsched(n)`` coroutines return a result that
``check`` verifies, so a wrong answer fails the benchmark instead of looking fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import mnsched


class WrongResult(AssertionError):
    """A workload computed the wrong answer."""


@dataclass(frozen=True)
class Workload:
    name: str
    what: str  # one line for the report
    unit: str  # what n counts, for the rate column
    size: int
    quick_size: int
    run_asyncio: Callable[[int], Coroutine[Any, Any, Any]]
    run_mnsched: Callable[[int], Coroutine[Any, Any, Any]]
    expected: Callable[[int], Any]

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


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("spawn", "spawn n trivial goroutines, then await each", "goroutines",
                 200_000, 20_000, spawn_asyncio, spawn_mnsched, lambda n: n),
        Workload("skynet", "skynet: 10-ary tree of n leaves, each leaf returns its number",
                 "leaves", 1_000_000, 10_000, skynet_asyncio, skynet_mnsched,
                 lambda n: n * (n - 1) // 2),
    )
}
