"""``python -m mnsched.bench``: the same as ``mnsched bench`` (see cli.py). Internally the
harness also runs ``--child WORKLOAD VARIANT N``: one measurement, in this fresh process."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from .workloads import WORKLOADS


def run_variant(workload: str, variant: str, n: int) -> dict[str, float]:
    """Run one variant here; return its metric as ``value`` (seconds unless the workload
    measures another), plus any extra figures the workload reports.

    Variants: ``asyncio``, ``uvloop``, ``mnsched-pN`` (N Ps), ``mnsched-pN-nosysmon``,
    ``mnsched-pN-traced`` (with the execution trace recording, in memory),
    ``mnsched-pN-parallel`` (Go's parallel steps) and ``mnsched-pN-counted`` (no sysmon,
    endless batches: for callgrind, instructions.py).
    """
    w = WORKLOADS[workload]
    if variant == "asyncio":
        t = time.perf_counter()
        result: Any = asyncio.run(w.run_asyncio(n))
    elif variant == "uvloop":
        import uvloop

        t = time.perf_counter()
        result = uvloop.run(w.run_asyncio(n))
    elif variant.startswith("mnsched-p"):
        import mnsched

        procs, _, flag = variant.removeprefix("mnsched-p").partition("-")
        if flag not in ("", "nosysmon", "counted", "traced", "parallel") or not procs.isdigit():
            raise SystemExit(f"unknown variant {variant!r}")
        if flag == "traced":
            from mnsched import trace

            trace.start()  # recorded in memory; the file is not the point here
        if flag == "counted":
            import mnsched.p

            mnsched.p.BATCH_TIME = mnsched.p.TIME_SLICE = 1e9
            flag = "nosysmon"
        t = time.perf_counter()
        if w.embedded:
            import uvloop

            from . import workloads

            workloads.EMBEDDED.update(
                procs=int(procs), sysmon=flag != "nosysmon", parallel=flag == "parallel"
            )
            result = uvloop.run(w.run_mnsched(n))
        else:
            result = mnsched.run(
                w.run_mnsched(n),
                procs=int(procs),
                sysmon=flag != "nosysmon",
                parallel=flag == "parallel",
            )
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    elapsed = time.perf_counter() - t
    out: dict[str, float] = {}
    if w.metric != "seconds":
        result, value = result  # the workload measured it (seconds*: time to serve n)
        if isinstance(value, dict):
            out.update(value)
        else:
            out["value"] = float(value)
    else:
        out["value"] = elapsed
    w.check(n, result)
    return out


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        workload, variant, n = sys.argv[2:5]
        print(json.dumps(run_variant(workload, variant, int(n))))
        return
    from .cli import main as cli_main

    cli_main(sys.argv[1:])


if __name__ == "__main__":
    main()
