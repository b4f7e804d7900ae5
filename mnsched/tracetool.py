"""``mnsched trace``: run a script under the execution trace (mnsched/trace.py), and
draw a trace as a timeline picture where no browser can open ui.perfetto.dev.

    mnsched trace -o out.json [--plot out.png] script.py [args...]
    mnsched trace --plot out.png --from out.json
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from pathlib import Path
from typing import Any

from . import trace

USAGE = "mnsched trace -o OUT.json [--plot OUT.png] script.py [args...]"


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(
        prog="mnsched trace",
        description="Run a Python script with mnsched's execution trace on, and write it "
        "as Chrome trace-event JSON (open it in ui.perfetto.dev or chrome://tracing).",
        usage=f"{USAGE}\n       mnsched trace --plot OUT.png --from TRACE.json",
    )
    ap.add_argument("-o", "--output", help="where to write the trace (JSON)")
    ap.add_argument("--plot", help="also draw it as a timeline picture (PNG; needs matplotlib)")
    ap.add_argument("--from", dest="source", help="draw an existing trace instead of running")
    ap.add_argument("script", nargs="?", help="the Python script to run")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    a = ap.parse_args(argv)
    if a.source:
        if not a.plot:
            ap.error("--from draws a trace: give --plot OUT.png")
        plot(json.loads(Path(a.source).read_text())["traceEvents"], a.plot)
        return
    if not a.script or not a.output:
        ap.error(f"give a script and -o: {USAGE}")
    events = run_traced(a.script, a.args, a.output)
    print(f"mnsched trace: {len(events)} events in {a.output} (open it in ui.perfetto.dev)")
    if a.plot:
        plot(events, a.plot)
        print(f"mnsched trace: timeline in {a.plot}")


def run_traced(script: str, args: list[str], output: str) -> list[dict[str, Any]]:
    """Run script as ``__main__`` with tracing on; the trace is written even if it fails."""
    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv = [script, *args]
    sys.path.insert(0, str(Path(script).resolve().parent))
    trace.start()
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            raise
    finally:
        sys.argv, sys.path[:] = old_argv, old_path
        tracer = trace.stop()
        events = tracer.events()
        tracer.write(output)
    return events


def plot(events: list[dict[str, Any]], out: str) -> None:
    """Draw the trace: one row per P and per M thread, a bar per step coloured by
    goroutine, arrows for steals, markers for handoffs and collections."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(
            "mnsched trace --plot needs matplotlib: pip install 'mnsched[plot]'"
        ) from None
    names: dict[tuple[int, int], str] = {}
    for e in events:
        if e["ph"] == "M" and e["name"] == "thread_name":
            names[(e["pid"], e["tid"])] = e["args"]["name"]
    rows = sorted(names)
    row_of = {k: i for i, k in enumerate(rows)}
    bars: dict[tuple[int, int], list[tuple[float, float, int, int]]] = {k: [] for k in rows}
    stacks: dict[tuple[int, int], list[dict[str, Any]]] = {k: [] for k in rows}
    steals: list[tuple[float, tuple[int, int], tuple[int, int]]] = []
    marks: list[tuple[float, tuple[int, int], str]] = []
    end = 0.0
    for e in events:
        ph, key = e["ph"], (e.get("pid", 0), e.get("tid", 0))
        if ph in ("B", "E", "i") and key not in row_of:
            continue
        ts = e.get("ts", 0.0) / 1000  # ms
        end = max(end, ts)
        if ph == "B":
            stacks[key].append(e)
        elif ph == "E" and stacks[key]:
            b = stacks[key].pop()
            color = b.get("args", {}).get("goid", -1) if b.get("cat") == "step" else -1
            bars[key].append((b["ts"] / 1000, ts, color, len(stacks[key])))
        elif ph == "i" and e.get("cat") == "steal":
            steals.append((ts, (key[0], e["args"]["victim"]), key))
        elif ph == "i" and e.get("cat") in ("handoff",):
            marks.append((ts, key, "handoff"))
    fig, ax = plt.subplots(figsize=(12, 1 + 0.5 * max(1, len(rows))), dpi=110)
    cmap = plt.get_cmap("tab20")
    for key, spans in bars.items():
        y = row_of[key]
        for start, stop, goid, depth in spans:
            h = 0.8 - 0.15 * min(depth, 3)
            color = cmap(goid % 20) if goid >= 0 else "0.55"
            ax.broken_barh([(start, max(stop - start, end / 5000))], (y - h / 2, h),
                           facecolors=color, linewidth=0)  # fmt: skip
    for ts, victim, thief in steals:
        if victim in row_of:
            ax.annotate("", xy=(ts, row_of[thief]), xytext=(ts, row_of[victim]),
                        arrowprops={"arrowstyle": "->", "color": "crimson", "lw": 1.2})  # fmt: skip
    for ts, key, _ in marks:
        ax.plot([ts], [row_of[key] + 0.45], marker="v", color="black", markersize=6)
    ax.set_yticks(range(len(rows)), [names[k] for k in rows])
    ax.invert_yaxis()
    ax.set_xlabel("ms since the trace started")
    ax.set_title("mnsched trace: steps per P (colour = goroutine); grey: blocking calls "
                 "(M rows) and collections; red arrows: steals; triangles: handoffs",
                 fontsize=9)  # fmt: skip
    ax.set_xlim(0, end * 1.01 if end else 1)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
