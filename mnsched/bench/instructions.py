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
# The run of record per skynet leaf at the quick sizes (1,000 and 10,000 leaves), by
# interpreter and driver (``mnsched bench --instructions --quick --workloads skynet``'s
# two mnsched columns; pyenv's CPythons on this project's CI machine). A count moves
# by up to ~1% between runs of the same tree; tests/test_bench.py fails when one grows more
# than LEAF_TOLERANCE over its record. Re-record (and say why in the CHANGELOG) when a
# change makes a leaf dearer on purpose, or much cheaper.
RECORDED_LEAF = {
    "3.11": {"C": 7_140, "pure": 43_600},
    "3.12": {"C": 8_680, "pure": 48_100},
    "3.13": {"C": 8_550, "pure": 47_300},
}
LEAF_TOLERANCE = 0.10
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


def per_unit(workload: str, variant: str, pure: str, quick: bool = False) -> float:
    """Instructions per unit of workload: the difference of two sizes' counts."""
    small, large = (n // 10 for n in SIZES[workload]) if quick else SIZES[workload]
    a = collected(workload, variant, pure, small)
    b = collected(workload, variant, pure, large)
    return (b - a) / (large - small)


def count(workloads: Sequence[str], quick: bool = False) -> list[Count]:
    return [
        Count(w, label, per_unit(w, variant, pure, quick))
        for w in workloads
        for label, variant, pure in VARIANTS
    ]


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
