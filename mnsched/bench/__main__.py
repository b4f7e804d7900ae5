"""``python -m mnsched.bench``: compare mnsched against plain asyncio and uvloop.

Every variant of every workload runs in a fresh interpreter (so heaps, GC state and
threads do not leak from one into the next), checks its own answer, and reports its
wall time; ratios are taken against plain asyncio measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib.metadata import version as _version

from .workloads import WORKLOADS

VARIANTS_BASE = ("asyncio", "uvloop")


def run_variant(workload: str, variant: str, n: int) -> float:
    """Run one variant here, in this process; return its metric (seconds by default).

    Variants: ``asyncio``, ``uvloop``, ``mnsched-pN`` (N Ps) and ``mnsched-pN-nosysmon``.
    """
    w = WORKLOADS[workload]
    if variant == "asyncio":
        t = time.perf_counter()
        result = asyncio.run(w.run_asyncio(n))
    elif variant == "uvloop":
        import uvloop

        t = time.perf_counter()
        result = uvloop.run(w.run_asyncio(n))
    elif variant.startswith("mnsched-p"):
        import mnsched

        spec = variant.removeprefix("mnsched-p")
        procs, _, flag = spec.partition("-")
        if flag not in ("", "nosysmon"):
            raise SystemExit(f"unknown variant {variant!r}")
        rt = mnsched.Runtime(procs=int(procs), sysmon=flag != "nosysmon")
        t = time.perf_counter()
        result = rt._run_main(w.run_mnsched(n))
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    elapsed = time.perf_counter() - t
    if w.metric != "seconds":
        result, value = result  # the workload measured it (seconds*: time to serve n)
    else:
        value = elapsed
    w.check(n, result)
    return float(value)


def child_main(args: argparse.Namespace) -> None:
    print(json.dumps({"seconds": run_variant(args.workload, args.variant, args.n)}))


def measure(workload: str, variant: str, n: int) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "mnsched.bench", "--child", workload, variant, str(n)],
        capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{workload}/{variant} failed:\n{out.stderr}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m mnsched.bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--repeat", type=int, default=1, help="runs per variant (median kept)")
    ap.add_argument("--procs", default="1,2", help="mnsched P counts, comma-separated")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="which workloads")
    ap.add_argument("--overhead", action="store_true",
                    help="also run mnsched without sysmon, to measure what it costs")
    ap.add_argument("--child", nargs=3, metavar=("WORKLOAD", "VARIANT", "N"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.workload, args.variant, n = args.child
        args.n = int(n)
        child_main(args)
        return
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    try:
        procs = [int(p) for p in args.procs.split(",")]
    except ValueError:
        ap.error(f"--procs takes comma-separated integers, not {args.procs!r}")
    if any(p < 1 for p in procs):
        ap.error("--procs values must be >= 1")
    names = args.workloads.split(",")
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workloads {unknown}; choose from {sorted(WORKLOADS)}")
    variants = [*VARIANTS_BASE, *(f"mnsched-p{p}" for p in procs)]
    if args.overhead:
        variants += [f"mnsched-p{p}-nosysmon" for p in procs]
    print(f"# mnsched bench: Python {platform.python_version()} "
          f"({platform.python_implementation()}), uvloop {_version('uvloop')}, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    for name in names:
        w = WORKLOADS[name]
        n = w.quick_size if args.quick else w.size
        print(f"\n## {name} (n={n:,}): {w.what}")
        rate = w.unit + "/s" if w.metric.startswith("seconds") else ""
        print(f"{'variant':<20} {w.metric:>9} {rate:>16} {'vs asyncio':>11}")
        times: dict[str, float] = {}
        for _ in range(args.repeat):  # alternate variants, so drift hits them all alike
            for v in variants:
                times.setdefault(v, [])  # type: ignore[arg-type]
                times[v].append(measure(name, v, n))  # type: ignore[attr-defined]
        base = statistics.median(times["asyncio"])  # type: ignore[arg-type]
        for v in variants:
            t = statistics.median(times[v])  # type: ignore[arg-type]
            rate = f"{n / t:,.0f}" if w.metric.startswith("seconds") else ""
            print(f"{v:<20} {t:>9.3f} {rate:>16} {base / t:>10.2f}x")


if __name__ == "__main__":
    main()
