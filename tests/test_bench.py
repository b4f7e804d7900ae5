"""The benchmark: each workload checks its answer; the CLI runs end to end and rejects
bad options."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mnsched
from mnsched.bench import __main__ as child
from mnsched.bench import cli, instructions
from mnsched.bench import workloads as wl
from mnsched.bench.cli import Cell, markdown, parse_args

CPU_FREE = [w for w in wl.WORKLOADS if not w.startswith(("http", "fastapi"))]


@pytest.mark.parametrize("name", CPU_FREE)
def test_each_workload_is_right_under_both_runtimes(name):
    w = wl.WORKLOADS[name]
    n = max(1, w.quick_size // 10) if name not in ("hog-cpu", "hog-block") else 50
    for result in (asyncio.run(w.run_asyncio(n)), mnsched.run(w.run_mnsched(n), procs=2)):
        if w.metric != "seconds":
            result, _ = result
        w.check(n, result)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", [w for w in wl.WORKLOADS if w.startswith("fastapi")])
@pytest.mark.parametrize("variant", ["uvloop", "mnsched-p2"])
def test_fastapi_workloads_serve_and_report(name, variant):
    # uvicorn on a host loop (mnsched: its runtime in the app's lifespan), load from
    # another process: no errors, and the latency and throughput figures reported.
    n = 200
    figures = child.run_variant(name, variant, n)  # raises WrongResult on errors
    assert figures["value"] > 0 and figures["rps"] > 0
    p99 = figures["p99_ms"] if name == "fastapi-light" else figures["value"]
    assert 0 < figures["p50_ms"] <= p99


@pytest.mark.parametrize("name", list(wl.WORKLOADS))
def test_a_wrong_answer_is_caught(name, monkeypatch):
    w = wl.WORKLOADS[name]
    good = w.expected(w.quick_size)
    with pytest.raises(wl.WrongResult, match=name):
        w.check(w.quick_size, not good if isinstance(good, bool) else good + 1)

    async def wrong(n):
        right = w.expected(n)
        bad = not right if isinstance(right, bool) else right + 1
        return bad if w.metric == "seconds" else (bad, 1.0)

    monkeypatch.setitem(
        wl.WORKLOADS,
        name,
        dataclasses.replace(w, run_asyncio=wrong, run_mnsched=wrong),
    )
    with pytest.raises(wl.WrongResult):
        child.run_variant(name, "mnsched-p1", 3)


@pytest.mark.timeout(300)
def test_quick_runs_end_to_end(tmp_path):
    # One workload per kind of metric (time, time under outside load, lateness): every
    # workload's answer is checked in-process above; this covers the CLI's plumbing.
    picked = ["spawn", "http-light", "hog-cpu"]
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnsched",
            "bench",
            "--quick",
            "--repeat",
            "1",
            "--procs",
            "2",
            "--workloads",
            ",".join(picked),
            "--json",
            str(out_json),
            "--markdown",
            "--plot",
            str(out_png),
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out_json.read_text())
    assert list(report["workloads"]) == picked
    for data in report["workloads"].values():
        for v in ("asyncio", "uvloop", "mnsched-p2"):
            cell = data["variants"][v]
            assert cell["median"] > 0 and cell["ratio_median"] > 0
        assert data["variants"]["asyncio"]["ratio_median"] == 1.0
    assert report["machine"]["build"] in ("GIL", "free-threaded")
    table = [ln for ln in proc.stdout.splitlines() if ln.startswith("| ")]
    assert table[0].startswith("| workload | metric | asyncio | uvloop | mnsched-p2")
    assert len(table) == 1 + len(picked)  # the header and a row per workload
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert markdown(report).count("\n") == len(picked) + 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--repeat", "0"], "--repeat must be at least 1"),
        (["--procs", "x"], "--procs takes comma-separated integers"),
        (["--procs", "0,2"], "--procs values must be at least 1"),
        (["--workloads", "spawn,nope"], "unknown workload"),
        (["--plot", "chart.jpg"], "ending in .png"),
        (["--frobnicate"], "unrecognized arguments"),
    ],
)
def test_cli_rejects_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_mnsched_help_says_what_it_is_and_lists_its_commands():
    proc = subprocess.run(
        [sys.executable, "-m", "mnsched", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert "M:N scheduler" in proc.stdout and "\n  bench " in proc.stdout


@pytest.mark.parametrize("argv", [[], ["bogus"]])
def test_mnsched_without_a_known_command_shows_usage_and_fails(argv):
    proc = subprocess.run([sys.executable, "-m", "mnsched", *argv], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage: mnsched COMMAND" in proc.stderr


def test_secondary_figures_get_rows_of_their_own():
    # The service workload's p50 latency and throughput sit under its p99 row.
    cells = {
        v: Cell([0.05 * k], [{"p50_ms": 1.5 * k, "throughput_per_s": 1900.0}], [1.0 / k])
        for k, v in enumerate(("asyncio", "uvloop", "mnsched-p1"), start=1)
    }
    report = {
        "command": "mnsched bench",
        "repeat": 1,
        "variants": list(cells),
        "machine": {
            "cpu": "cpu",
            "cpus": 2,
            "python": "3.11",
            "implementation": "CPython",
            "build": "GIL",
            "uvloop": "0",
            "mnsched": "0",
        },
        "workloads": {
            "service": {
                "n": 600,
                "metric": "p99 ms",
                "variants": {v: c.summary() for v, c in cells.items()},
            }
        },
    }
    rows = [ln for ln in markdown(report).splitlines() if ln.startswith("| service")]
    assert rows == [
        "| service (n=600) | p99 ms | 0.050 (1.00x) | 0.100 (0.50x) | 0.150 (0.33x) |",
        "| service | p50 ms | 1.500 | 3.000 | 4.500 |",
        "| service | throughput per s | 1900.000 | 1900.000 | 1900.000 |",
    ]


def test_quick_defaults_to_one_run_and_full_to_three():
    assert parse_args(["--quick"]).repeat == 1  # the suite in under a minute
    assert parse_args([]).repeat == 3
    assert parse_args(["--quick", "--repeat", "2"]).repeat == 2


@pytest.mark.skipif(
    shutil.which("valgrind") is None, reason="valgrind is not installed: apt-get install valgrind"
)
def test_instructions_are_counted_per_unit(monkeypatch):
    # Two sizes under callgrind, the difference per unit: small sizes here, two variants
    # (the bench itself runs four).
    monkeypatch.setitem(instructions.SIZES, "spawn", (100, 600))
    monkeypatch.setattr(instructions, "VARIANTS", instructions.VARIANTS[::2])
    counts = instructions.count(["spawn"])
    assert [c.variant for c in counts] == ["asyncio", "mnsched (C core)"]
    for c in counts:  # a goroutine or a task costs thousands of instructions, not millions
        assert 1_000 < c.per_unit < 1_000_000, c
    table = instructions.table(counts).splitlines()
    assert table[0].startswith("| workload | unit | asyncio | mnsched (C core) |")
    assert table[2].startswith("| spawn | goroutine | ")


@pytest.mark.skipif(
    shutil.which("valgrind") is None, reason="valgrind is not installed: apt-get install valgrind"
)
@pytest.mark.parametrize("driver", ["C", "pure"])
@pytest.mark.timeout(300)
def test_a_skynet_leaf_costs_no_more_than_its_record(driver):
    """Either driver's instructions per skynet leaf (callgrind: deterministic, unlike
    the clock) within 10% of the run of record for this interpreter."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    record = instructions.RECORDED_LEAF.get(version)
    assert record is not None, (
        f"no recorded skynet leaf for Python {version}: count one with "
        "'mnsched bench --instructions --quick --workloads skynet' and add it to "
        "mnsched/bench/instructions.py's RECORDED_LEAF"
    )
    pure = "1" if driver == "pure" else "0"
    leaf = instructions.per_unit("skynet", "mnsched-p1-counted", pure, quick=True)
    limit = record[driver] * (1 + instructions.LEAF_TOLERANCE)
    assert leaf <= limit, (
        f"a skynet leaf costs {leaf:,.0f} instructions on the {driver} driver, over 10% "
        f"more than the recorded {record[driver]:,} (Python {version})"
    )


def test_instructions_refuse_what_they_cannot_count():
    with pytest.raises(SystemExit):
        parse_args(["--instructions", "--workloads", "http-light"])
    assert parse_args(["--instructions"]).workloads == list(instructions.SIZES)


@pytest.mark.skipif(
    shutil.which("go") is None, reason="Go is not installed: apt-get install golang-go"
)
def test_the_go_programs_are_built_checked_and_compared(tmp_path):
    exe = cli.build_go(str(tmp_path))
    assert exe is not None
    sizes = {"skynet": 10_000, "sieve": 100, "worker-pool": 1_000, "mutex": 1_000}
    assert set(sizes) == set(cli.GO_WORKLOADS)
    for w, n in sizes.items():  # each program checked against its Python twin's result
        for variant in cli.GO_VARIANTS:
            assert cli.measure_go(exe, w, variant, n)["value"] > 0
    data = {
        "variants": {
            "asyncio": {"median": 8.0, "extras": {}},
            "mnsched-p2": {"median": 3.0, "extras": {}},
            "go-p1": {"median": 2.0, "extras": {}},
            "go-p2": {"median": 1.0, "extras": {}},
        }
    }
    rows = dict(cli.extra_rows(data, ["asyncio", "mnsched-p2", "go-p1"]))
    assert rows["time / Go's"] == ["4.00", "3.00", "-"]  # each against Go at its P count
    with pytest.raises(wl.WrongResult):
        cli.measure_go(exe, "skynet", "go-p1", 1000 + 1)  # not a power of 10: wrong sum


def test_parallel_variants_run_with_parallel_steps(monkeypatch):
    seen: list[bool] = []
    real_run = mnsched.run

    def run(main, **options):
        seen.append(options["parallel"])
        return real_run(main, **options)

    monkeypatch.setattr(mnsched, "run", run)
    for variant in ("mnsched-p2", "mnsched-p2-parallel"):
        assert child.run_variant("cpu", variant, 20)["value"] > 0
    assert seen == [False, True]
    assert parse_args(["--parallel"]).parallel


def test_the_demo_table_fits_80_columns_and_quotes_the_run_of_record():
    # The report of a --quick run, here the run of record's own figures: the table, in a
    # terminal or a pipe, is at most 80 columns, says "-" (never nan) for what was not
    # run, and prints the recorded full-size ratio beside each of the demo's.
    full = cli.recorded()
    assert full is not None and set(full["workloads"]) == set(wl.WORKLOADS)
    report = {**full, "quick": True}
    text = cli.text_table(report, full)
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "nan" not in text and "mnsched…" not in text
    assert text.count("  recorded, n=") == len(wl.WORKLOADS)
    assert "mn p1" in text and "Go p2" in text


def test_the_readme_quotes_the_run_of_record():
    # Every row of the README's first results table is the recorded run's, as
    # `mnsched bench --markdown` prints it.
    full = cli.recorded()
    assert full is not None
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "mnsched/bench/recorded.json" in readme
    rows = [ln for ln in cli.markdown(full).splitlines() if ln.startswith("| skynet")]
    assert rows and all(row in readme for row in rows)
    for name in ("spawn", "pingpong", "sieve", "http-blocking", "hog-block"):
        (row,) = [ln for ln in cli.markdown(full).splitlines() if ln.startswith(f"| {name} (")]
        assert row in readme


def test_skynet_sizes_are_powers_of_ten():
    # Its tree is 10-ary: any other n recursed for ever (200,000 ate 24 GB).
    for n in (wl.WORKLOADS["skynet"].size, wl.WORKLOADS["skynet"].quick_size):
        assert 10 ** round(math.log10(n)) == n
