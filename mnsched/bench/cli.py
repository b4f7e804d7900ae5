"""``mnsched bench``: the same workloads under plain asyncio, uvloop and mnsched, side by
side, with trustworthy numbers.

Every variant of every workload runs in a fresh interpreter (heaps, GC state and threads
do not carry over), checks its own answer (a wrong one fails the run), and is repeated
``--repeat`` times with the variants alternating, so that drift hits them all alike. For
each repetition the ratio to plain asyncio is taken within that repetition; the report
gives medians and spreads.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from . import instructions
from .instructions import SIZES
from .workloads import GROUPS, WORKLOADS

BASE_VARIANTS = ("asyncio", "uvloop")
HTTP_WORKLOADS = ("http-light", "http-blocking")
FASTAPI_WORKLOADS = ("fastapi-light", "fastapi-mixed", "fastapi-mixed-pool")


@dataclass
class Cell:
    """One workload under one variant: a value per repetition (lower is better)."""

    values: list[float] = field(default_factory=list)
    extras: list[dict[str, float]] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # asyncio's value / this one's, per rep

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "median": statistics.median(self.values),
            "min": min(self.values),
            "max": max(self.values),
            "values": self.values,
        }
        if self.ratios:
            out["ratio_median"] = statistics.median(self.ratios)
            out["ratio_min"], out["ratio_max"] = min(self.ratios), max(self.ratios)
        out["extras"] = {
            key: statistics.median(e[key] for e in self.extras if key in e)
            for key in sorted({k for e in self.extras for k in e})
        }
        return out


def extra_rows(data: dict[str, Any], variants: Sequence[str]) -> list[tuple[str, list[str]]]:
    """A workload's secondary figures (the service's p50 and throughput): one row each,
    medians per variant."""
    vs = [data["variants"].get(v, {"extras": {}}) for v in variants]
    keys = sorted({k for c in vs for k in c["extras"]})
    rows = [
        (k.replace("_", " "), [f"{c['extras'][k]:.3f}" if k in c["extras"] else "-" for c in vs])
        for k in keys
    ]
    if "go-p1" in data["variants"]:
        rows.append(("time / Go's", [go_ratio(data, v) for v in variants]))
    return rows


def go_ratio(data: dict[str, Any], variant: str) -> str:
    """A variant's median time over Go's at the same P count (GOMAXPROCS 1 for plain
    asyncio and uvloop, and for P counts Go was not run at)."""
    procs = variant.removeprefix("mnsched-p").partition("-")[0]
    go = data["variants"].get(f"go-p{procs}") or data["variants"]["go-p1"]
    mine = data["variants"].get(variant)
    if mine is None or variant.startswith("go-"):
        return "-"
    return f"{mine['median'] / go['median']:.2f}"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "build": "GIL" if gil else "free-threaded",
        "uvloop": version("uvloop"),
        "mnsched": version("mnsched"),
        "platform": platform.platform(),
    }


# Go's own runtime on the workloads Go anchors (mnsched/bench/gobench.go: the same
# programs in Go), when a Go toolchain is installed.
GO_WORKLOADS = ("skynet", "sieve", "worker-pool", "mutex")
GO_VARIANTS = ("go-p1", "go-p2")


def build_go(tmp: str) -> str | None:
    """Build gobench.go into tmp; None without a Go toolchain."""
    go = shutil.which("go")
    if go is None:
        return None
    exe = os.path.join(tmp, "gobench")
    src = Path(__file__).with_name("gobench.go")
    env = {**os.environ, "GOCACHE": os.path.join(tmp, "gocache"), "GO111MODULE": "off"}
    out = subprocess.run(
        [go, "build", "-o", exe, str(src)], capture_output=True, text=True, env=env, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"mnsched bench: building gobench.go failed:\n{out.stderr.strip()}")
    return exe


def measure_go(exe: str, workload: str, variant: str, n: int) -> dict[str, float]:
    procs = variant.removeprefix("go-p")
    out = subprocess.run(
        [exe, workload, str(n)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GOMAXPROCS": procs},
    )
    if out.returncode != 0:
        raise SystemExit(f"mnsched bench: {workload} in Go failed:\n{out.stderr.strip()}")
    result = json.loads(out.stdout)
    WORKLOADS[workload].check(n, result["result"])
    return {"value": float(result["value"])}


def measure(workload: str, variant: str, n: int, go_exe: str | None = None) -> dict[str, float]:
    if variant.startswith("go-"):
        assert go_exe is not None
        return measure_go(go_exe, workload, variant, n)
    out = subprocess.run(
        [sys.executable, "-m", "mnsched.bench", "--child", workload, variant, str(n)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"mnsched bench: {workload} under {variant} failed:\n{out.stderr.strip()}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="mnsched bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, one run each: the whole suite in under a minute",
    )
    ap.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated, from: {', '.join([*WORKLOADS, *GROUPS])}",
    )
    ap.add_argument("--procs", default="1,2", help="mnsched P counts (default 1,2)")
    ap.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="repetitions per variant (default 3; 1 with --quick)",
    )
    ap.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument(
        "--plot",
        metavar="PATH.png",
        help="draw each workload's ratio to asyncio (needs matplotlib)",
    )
    ap.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per unit under valgrind's callgrind instead of timing "
        f"(workloads {', '.join(SIZES)}; needs valgrind)",
    )
    ap.add_argument(
        "--overhead",
        action="store_true",
        help="also run mnsched without sysmon, to see what it costs",
    )
    ap.add_argument(
        "--parallel",
        action="store_true",
        help="also run mnsched with parallel steps (Go's: Runtime(parallel=True)), for work "
        "that releases the GIL",
    )
    ap.add_argument(
        "--trace-overhead",
        action="store_true",
        help="also run mnsched with the execution trace on (mnsched.trace), to see what it costs",
    )
    args = ap.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3  # --quick promises under a minute
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    try:
        args.procs = sorted({int(p) for p in args.procs.split(",")})
    except ValueError:
        ap.error(f"--procs takes comma-separated integers, as 1,2,4; not {args.procs!r}")
    if not args.procs or args.procs[0] < 1:
        ap.error("--procs values must be at least 1")
    args.workloads = [v for w in args.workloads.split(",") if w for v in GROUPS.get(w, [w])]
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown or not args.workloads:
        ap.error(f"unknown workload(s) {unknown}; choose from {', '.join([*WORKLOADS, *GROUPS])}")
    if args.instructions:
        if args.workloads == list(WORKLOADS):  # not chosen: all that can be counted
            args.workloads = list(SIZES)
        elif any(w not in SIZES for w in args.workloads):
            ap.error(f"--instructions counts {', '.join(SIZES)}; not {args.workloads}")
    if args.plot:
        if not args.plot.endswith(".png"):
            ap.error("--plot writes a PNG: give a path ending in .png")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            ap.error("--plot needs matplotlib: pip install 'mnsched[plot]'")
    return args


def missing(workload: str) -> str | None:
    """What a workload needs that is not installed (bench's own extras), or None."""
    needs = {"aiohttp": HTTP_WORKLOADS, "fastapi": FASTAPI_WORKLOADS, "uvicorn": FASTAPI_WORKLOADS}
    for module, users in needs.items():
        if workload in users:
            try:
                importlib.import_module(module)
            except ImportError:
                return module
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    skipped = {w: need for w in args.workloads if (need := missing(w)) is not None}
    workloads = [w for w in args.workloads if w not in skipped]
    variants = [*BASE_VARIANTS, *(f"mnsched-p{p}" for p in args.procs)]
    if args.overhead:
        variants += [f"mnsched-p{p}-nosysmon" for p in args.procs]
    if args.parallel:
        variants += [f"mnsched-p{p}-parallel" for p in args.procs if p > 1]
    if args.trace_overhead:
        variants += [f"mnsched-p{p}-traced" for p in args.procs]
    tmp = tempfile.TemporaryDirectory()
    go_exe = build_go(tmp.name) if any(w in GO_WORKLOADS for w in workloads) else None
    if go_exe is not None:
        variants += GO_VARIANTS
    per_workload = {
        w: [v for v in variants if not v.startswith("go-") or w in GO_WORKLOADS] for w in workloads
    }
    cells = {w: {v: Cell() for v in per_workload[w]} for w in workloads}
    sizes = {w: WORKLOADS[w].quick_size if args.quick else WORKLOADS[w].size for w in workloads}
    t0 = time.monotonic()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        total = args.repeat * sum(len(vs) for vs in per_workload.values())
        task = progress.add_task("bench", total=total)
        for rep in range(args.repeat):
            for w in workloads:
                vs = per_workload[w]
                order = vs[rep % len(vs) :] + vs[: rep % len(vs)]
                for v in order:  # alternating: each repetition starts elsewhere
                    progress.update(task, description=f"{w} / {v} (run {rep + 1})")
                    r = measure(w, v, sizes[w], go_exe)
                    cells[w][v].values.append(r.pop("value"))
                    cells[w][v].extras.append(r)
                    progress.advance(task)
                base = cells[w]["asyncio"].values[rep]
                for v in vs:
                    cells[w][v].ratios.append(base / cells[w][v].values[rep])
    tmp.cleanup()
    return {
        "machine": machine(),
        "command": "mnsched bench " + " ".join(sys.argv[1:] if args.argv is None else args.argv),
        "date": time.strftime("%Y-%m-%d"),
        "quick": args.quick,
        "repeat": args.repeat,
        "variants": variants,
        "seconds": round(time.monotonic() - t0, 1),
        "skipped": skipped,
        "workloads": {
            w: {
                "what": WORKLOADS[w].what,
                "metric": WORKLOADS[w].metric,
                "n": sizes[w],
                "variants": {v: cells[w][v].summary() for v in per_workload[w]},
            }
            for w in workloads
        },
    }


def header(report: dict[str, Any]) -> str:
    m = report["machine"]
    return (
        f"{m['cpu']} x {m['cpus']}, Python {m['python']} ({m['implementation']}, "
        f"{m['build']}), uvloop {m['uvloop']}, mnsched {m['mnsched']}"
    )


# The text table: a label column and a column per variant, 80 columns wide at most (six
# variants: asyncio, uvloop, two P counts and Go's two), whatever the terminal or pipe.
LABEL_WIDTH, CELL_WIDTH = 21, 9
RECORDED = Path(__file__).with_name("recorded.json")  # the full-size run the demo quotes


def label(variant: str) -> str:
    """A variant's short column title: mnsched-p2 is "mn p2", go-p1 "Go p1"."""
    name, _, rest = variant.partition("-p")
    if name == "mnsched":
        procs, _, flag = rest.partition("-")
        return f"mn p{procs}" + {"": "", "nosysmon": " -sm", "traced": " tr",
                                 "parallel": " par"}.get(flag, f" {flag}")  # fmt: skip
    return f"Go p{rest}" if name == "go" else variant


def number(v: float | None) -> str:
    """A figure in at most 8 characters, "-" for one not measured."""
    if v is None or math.isnan(v):
        return "-"
    return f"{v:.0f}" if v >= 1000 else f"{v:.1f}" if v >= 100 else f"{v:.3f}"


def short(n: int) -> str:
    """1000000 as 1M, 20000 as 20k."""
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def recorded() -> dict[str, Any] | None:
    """The full-size run shipped with mnsched (``mnsched bench --json``), if any."""
    try:
        data: dict[str, Any] = json.loads(RECORDED.read_text())
    except (OSError, ValueError):
        return None
    return data


def text_table(report: dict[str, Any], full: dict[str, Any] | None = None) -> str:
    """The report as text: per workload its metric and n, the median values, the ratios
    to asyncio, any secondary figures, and in a --quick run the ratios the recorded
    full-size run (full) measured, beside the demo's."""
    variants = report["variants"]

    def row(name: str, cells: Sequence[str]) -> str:
        return (f"{name:<{LABEL_WIDTH}}" + "".join(f"{c:>{CELL_WIDTH}}" for c in cells)).rstrip()

    def ratio(c: dict[str, Any] | None) -> str:
        return "-" if c is None or "ratio_median" not in c else f"{c['ratio_median']:.2f}x"

    lines = [header(report), "", row("", [label(v) for v in variants])]
    differs = False
    for w, data in report["workloads"].items():
        cells = [data["variants"].get(v) for v in variants]
        lines.append(f"{w}: {data['metric']}, n={data['n']:,}")
        lines.append(row("  value", [number(None if c is None else c["median"]) for c in cells]))
        if report["repeat"] > 1:
            lines.append(row("  x asyncio", [ratio(c) for c in cells]))
            lines.append(row("  (spread)", [
                "-" if c is None else f"±{(c['ratio_max'] - c['ratio_min']) / 2:.2f}"
                for c in cells
            ]))  # fmt: skip
        else:
            lines.append(row("  x asyncio", [ratio(c) for c in cells]))
        for metric, extra in extra_rows(data, variants):
            lines.append(row(f"  {metric}", [number(_float(x)) for x in extra]))
        big = (full or {}).get("workloads", {}).get(w)
        if report["quick"] and big is not None:
            lines.append(
                row(
                    f"  recorded, n={short(big['n'])}",
                    [ratio(big["variants"].get(v)) for v in variants],
                )
            )
            differs |= any(
                not 0.7 <= c["ratio_median"] / b["ratio_median"] <= 1.3
                for v, c in zip(variants, cells, strict=True)
                if c is not None and (b := big["variants"].get(v)) is not None
            )
    lines.append("")
    notes = [
        "value: median of the runs; x asyncio: the ratio to plain asyncio (higher is "
        "better), median of the runs' ratios; mn pN: mnsched with N Ps; -: not run."
    ]
    if full is not None and report["quick"]:
        notes.append(
            "recorded: the ratios of the full-size run shipped with mnsched "
            f"(mnsched/bench/recorded.json: {full['command']}, {full.get('date', 'undated')}"
            f"{', ' + full['machine']['cpu'] if 'machine' in full else ''})."
        )
        if differs:
            notes.append(
                "Where the demo's ratio and the recorded one differ by more than 30%, it is "
                "the demo's smaller n (start-up and one-off costs weigh more, asyncio's "
                "collector less), or the noise of a p99 or of a busy machine: the full "
                "sizes are `mnsched bench` without --quick."
            )
    if report["skipped"]:
        notes.append(
            "skipped: "
            + ", ".join(f"{w} ({need} not installed)" for w, need in report["skipped"].items())
        )
    lines += [textwrap.fill(n, 80) for n in notes]
    return "\n".join(lines)


def _float(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def show(report: dict[str, Any]) -> None:
    print(text_table(report, recorded()))


def markdown(report: dict[str, Any]) -> str:
    variants = report["variants"]
    lines = [
        f"Measured with `{report['command']}` on {header(report)}; "
        f"{report['repeat']} run(s) per variant, each in a fresh process. Cells: "
        "median value, then the median ratio to plain asyncio (higher is better).",
        "",
        "| workload | metric | " + " | ".join(variants) + " |",
        "|---|---|" + "---|" * len(variants),
    ]
    for w, data in report["workloads"].items():
        cells = [
            f"{data['variants'][v]['median']:.3f} ({data['variants'][v]['ratio_median']:.2f}x)"
            if v in data["variants"]
            else "-"
            for v in variants
        ]
        lines.append(f"| {w} (n={data['n']:,}) | {data['metric']} | " + " | ".join(cells) + " |")
        lines += [
            f"| {w} | {metric} | " + " | ".join(cells) + " |"
            for metric, cells in extra_rows(data, variants)
        ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(report["workloads"])
    variants = [v for v in report["variants"] if v != "asyncio"]
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(workloads) + 3), 5))
    for i, v in enumerate(variants):
        ratios = [
            report["workloads"][w]["variants"].get(v, {}).get("ratio_median", float("nan"))
            for w in workloads
        ]
        xs = [k + (i - (len(variants) - 1) / 2) * width for k in range(len(workloads))]
        ax.bar(xs, ratios, width, label=v)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(workloads)), workloads, rotation=30, ha="right")
    ax.set_ylabel("speed relative to plain asyncio (x, log scale)")
    ax.set_title(header(report), fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    args.argv = list(argv) if argv is not None else None
    if args.instructions:
        counts = instructions.count(args.workloads, quick=args.quick)
        print(f"Instructions per unit (callgrind), {header({'machine': machine()})}:\n")
        print(instructions.table(counts))
        if args.json:
            Path(args.json).write_text(json.dumps([vars(c) for c in counts], indent=2))
        return
    try:
        import rich  # noqa: F401
    except ImportError:
        raise SystemExit("mnsched bench needs rich: pip install 'mnsched[bench]'") from None
    report = run(args)
    show(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.markdown:
        print(markdown(report))
    if args.plot:
        plot(report, args.plot)
