"""The samples run and compute the right thing, at every P count."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import default_sigint

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
sys.path.insert(0, str(SAMPLES))

import aiohttp_service  # noqa: E402
import crawler  # noqa: E402
import pipeline  # noqa: E402
import sieve  # noqa: E402
import worker_pool  # noqa: E402


def test_sieve(run):
    primes = run(sieve.primes(200))
    assert len(primes) == 200 and primes[-1] == 1223
    assert all(all(p % d for d in range(2, math.isqrt(p) + 1)) for p in primes)


def test_worker_pool(run):
    out = run(worker_pool.run_pool(40, 6))
    assert out == {n: worker_pool._hash(n) for n in range(40)}


def test_pipeline_cancellation_leaves_nothing_running(run):
    got, left = run(pipeline.first_squares(10))
    assert len(set(got)) == 10 and all(math.isqrt(v) ** 2 == v for v in got)
    assert left == 1


def test_crawler_visits_every_page_once(run):
    result = run(crawler.main_async(150, 8))
    assert result["pages"] == 150 and result["bytes"] > 0


def test_aiohttp_service_under_load(run):
    result = run(aiohttp_service.serve("127.0.0.1", 0, 300, 16))
    assert result["status"] == {200: 300} and result["handled"] == 300


def serve_until_ctrl_c(argv: list[str], check: Callable[[int], None]) -> str:
    """Start a service sample, wait for its "serving on" line, call check(port), send
    SIGINT (Ctrl-C): it must stop within seconds. Returns what it printed."""
    proc = subprocess.Popen(
        [sys.executable, *argv],
        cwd=SAMPLES,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded by the test's timeout
        port = int(re.search(r"serving on http://[\d.]+:(\d+)", line).group(1))
        check(port)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        return line + out
    finally:
        proc.kill()
        proc.wait()


def test_aiohttp_service_serves_until_ctrl_c():
    def check(port: int) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert json.load(r) == {"hello": "world"}

    out = serve_until_ctrl_c(["aiohttp_service.py", "--port", "0", "--procs", "2"], check)
    assert out.rstrip().endswith("stopped")


@pytest.mark.parametrize(
    "script, args, expect",
    [
        ("sieve.py", ["10"], "2 3 5 7 11 13 17 19 23 29"),
        ("worker_pool.py", ["--jobs", "5", "--workers", "2"], "5 results"),
        ("pipeline.py", ["--take", "3"], "goroutines left: 1"),
        ("crawler.py", ["--pages", "50"], "'pages': 50"),
        ("aiohttp_service.py", ["--selftest", "100"], '"status": {"200": 100}'),
    ],
)
def test_samples_run_from_the_command_line(script, args, expect):
    out = subprocess.run(
        [sys.executable, str(SAMPLES / script), *args, "--procs", "2"]
        if script != "sieve.py"
        else [sys.executable, str(SAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert expect in out.stdout
