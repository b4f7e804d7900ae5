"""Serving a FastAPI app on mnsched: the lifespan runtime is the one requests use, under
Starlette's TestClient, uvicorn (until Ctrl-C) and gunicorn with mnsched's worker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from conftest import default_sigint, matrix_procs
from mnsched.gunicorn import procs_per_worker

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
sys.path.insert(0, str(SAMPLES))

import fastapi_service  # noqa: E402


def get(port: int, path: str) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return json.load(r)


@pytest.mark.parametrize("procs", matrix_procs(1, 2, 4))
def test_the_lifespan_runtime_is_the_one_requests_use(procs, monkeypatch):
    monkeypatch.setenv("MNSCHED_PROCS", str(procs))
    with TestClient(fastapi_service.app) as client:
        stats = client.get("/stats").json()
        assert stats["lifespan_runtime"] and stats["procs"] == procs
        assert stats["runtimes"] == 1  # no second, default runtime
        assert client.get("/cpu?ms=5").json()["loops"] > 0
        assert client.get("/blocking?ms=5").json() == {"slept_ms": 5.0}
        assert client.get("/stats").json()["syscalls"] == 1
    assert not [t for t in threading.enumerate() if t.name.startswith("mnsched-")]


def start(argv: list[str], pattern: str, env: dict[str, str] | None = None):
    """Start a server process; return it and the port it printed (pattern's group 1)."""
    proc = subprocess.Popen(
        argv,
        preexec_fn=default_sigint,
        cwd=SAMPLES,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # bounded by the test's timeout
        seen.append(line)
        if match := re.search(pattern, line):
            return proc, int(match.group(1))
    raise AssertionError("the server did not start:\n" + "".join(seen))


def stop(proc: subprocess.Popen[str], sig: int) -> str:
    proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    return out


@pytest.mark.timeout(120)
def test_fastapi_sample_on_uvicorn_serves_until_ctrl_c():
    proc, port = start(
        [sys.executable, "fastapi_service.py", "--port", "0", "--procs", "2"],
        r"Uvicorn running on http://127\.0\.0\.1:(\d+)",
    )
    try:
        assert get(port, "/") == {"hello": "world"}
        fan = get(port, "/fanout?n=40")  # 40 goroutines, each through its P's client
        assert fan == {"results": [{"hello": "world"}] * 40}
        with ThreadPoolExecutor(8) as pool:  # CPU and blocking work beside light requests
            heavy = [pool.submit(get, port, p) for p in ["/cpu?ms=50", "/blocking?ms=50"] * 4]
            assert all(get(port, "/") == {"hello": "world"} for _ in range(20))
            assert all(f.result() for f in heavy)
        stats = get(port, "/stats")
        assert stats["lifespan_runtime"] and stats["runtimes"] == 1 and stats["procs"] == 2
    finally:
        out = stop(proc, signal.SIGINT)
    assert proc.returncode == 0, out
    assert "Application shutdown complete" in out
    assert "Traceback" not in out and "ERROR" not in out, out


@pytest.mark.timeout(120)
def test_gunicorn_runs_two_workers_each_with_its_own_ps():
    pytest.importorskip("gunicorn")
    gunicorn = [sys.executable, "-m", "gunicorn", "-k", "mnsched.gunicorn.Worker", "-w", "2"]
    proc, port = start(
        [*gunicorn, "-b", "127.0.0.1:0", "fastapi_service:app"],
        r"Listening at: http://127\.0\.0\.1:(\d+)",
    )
    log = []
    try:
        assert proc.stdout is not None
        while sum("Application startup complete" in line for line in log) < 2:
            log.append(proc.stdout.readline())  # both workers' lifespans (test timeout)
        workers = set(re.findall(r"Booting worker with pid: (\d+)", "".join(log)))
        assert len(workers) == 2
        # Which worker accepts a connection is the kernel's choice (one idle worker may
        # take them all): each answer must come from one of them, with its own runtime.
        for _ in range(20):
            stats = get(port, "/stats")
            assert str(stats["pid"]) in workers and stats["lifespan_runtime"]
            assert stats["procs"] == procs_per_worker(2) and stats["runtimes"] == 1
        assert get(port, "/fanout?n=20") == {"results": [{"hello": "world"}] * 20}
    finally:
        out = "".join(log) + stop(proc, signal.SIGTERM)  # gunicorn's graceful stop
    assert proc.returncode == 0, out
    assert out.count("Application shutdown complete") == 2, out  # both lifespans closed
    assert "Traceback" not in out, out


def test_procs_per_worker(monkeypatch):
    monkeypatch.delenv("MNSCHED_PROCS", raising=False)
    cpus = len(os.sched_getaffinity(0))
    assert procs_per_worker(1) == cpus
    assert procs_per_worker(cpus * 4) == 1  # at least one
    monkeypatch.setenv("MNSCHED_PROCS", "3")
    assert procs_per_worker(8) == 3  # what the user set wins


@pytest.mark.parametrize("sample", ["fastapi_service", "aiohttp_service"])
def test_a_service_sample_imports_from_the_repo_root(sample):
    # As `uvicorn samples.fastapi_service:app` imports it: it failed with "No module
    # named 'cli'" (the samples' shared command line is for running them as scripts).
    r = subprocess.run([sys.executable, "-c", f"import samples.{sample}"],
                       cwd=SAMPLES.parent, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
