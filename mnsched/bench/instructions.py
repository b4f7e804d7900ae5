"""``mnsched bench --instructions``: instructions per unit of work, counted by valgrind's
callgrind, for plain asyncio, uvloop and mnsched's two drivers.

This machine's wall clock drifts 15-50% between runs; instruction counts do not, so
this is how drivers are compared (docs/benchmarks.md, "Counting instructions"). Each
variant runs each workload at two sizes in a fresh interpreter under callgrind; the
difference of the two totals divided by the difference of the sizes cancels start-up
(interpreter, imports, runtime threads) and leaves the cost of one unit: a goroutine
(spawn, skynet's leaves), a round trip (ping-pong), a prime (sieve; its cost per prime
grows with n, so it is comparable only between variants at the same sizes). mnsched runs
at procs=1 without sysmon, its batches and time slices made endless (``counted``
variants): under callgrind's ~90x slowdown a 1 ms batch would end after a step or two,
and the count would measure the batch boundary instead of the driver.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

# Sizes (small, large) per workload; --quick divides both by 10.
SIZES = {
    "spawn": (2_000, 20_000),
    "skynet": (10_000, 100_000),
    "pingpong": (2_000, 20_000),
    "sieve": (50, 150),
}
UNITS = {"spawn": "goroutine", "skynet": "leaf", "pingpong": "round trip", "sieve": "prime"}
# (label, bench variant, MNSCHED_PURE)
VARIANTS = (
    ("asyncio", "asyncio", "0"),
    ("uvloop", "uvloop", "0"),
    ("mnsched (C core)", "mnsched-p1-counted", "0"),
    ("mnsched (pure Python)", "mnsched-p1-counted", "1"),
)
_COLLECTED = re.compile(r"==\d+== Collected : (\d+)")


@dataclass
class Count:
    workload: str
    variant: str
    per_unit: float


def valgrind() -> str:
    path = shutil.which("valgrind")
    if path is None:
        raise SystemExit(
            "mnsched bench --instructions needs valgrind (callgrind): apt-get install valgrind"
        )
    return path


def collected(workload: str, variant: str, pure: str, n: int) -> int:
    """Instructions callgrind counted for one child run."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [
                valgrind(),
                "--tool=callgrind",
                f"--callgrind-out-file={os.path.join(tmp, 'cg.out')}",
                sys.executable,
                "-m",
                "mnsched.bench",
                "--child",
                workload,
                variant,
                str(n),
            ],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "MNSCHED_PURE": pure},
        )
    found = _COLLECTED.search(out.stderr)
    if out.returncode != 0 or found is None:
        raise SystemExit(
            f"mnsched bench --instructions: {workload} under {variant} failed:\n"
            f"{out.stderr.strip()[-2000:]}"
        )
    return int(found.group(1))


def count(workloads: Sequence[str], quick: bool = False) -> list[Count]:
    counts = []
    for w in workloads:
        small, large = (n // 10 for n in SIZES[w]) if quick else SIZES[w]
        for label, variant, pure in VARIANTS:
            a = collected(w, variant, pure, small)
            b = collected(w, variant, pure, large)
            counts.append(Count(w, label, (b - a) / (large - small)))
    return counts


def table(counts: Sequence[Count]) -> str:
    """A markdown table: one row per workload, thousands of instructions per unit."""
    labels = [label for label, _, _ in VARIANTS]
    by = {(c.workload, c.variant): c.per_unit for c in counts}
    lines = [
        "| workload | unit | " + " | ".join(labels) + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    for w in dict.fromkeys(c.workload for c in counts):
        cells = [f"{by[w, label] / 1000:.1f}k" for label in labels]
        lines.append(f"| {w} | {UNITS[w]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
