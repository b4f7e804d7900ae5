"""The compatibility job: test suites nobody on this project wrote, run with every test
body as a goroutine, must give the same outcomes as when run plainly.

    python tests/compat/run.py [--suite cpython|anyio|all] [--modes p0:1,p0:2,other:2] [--fresh]

- ``cpython``: modules of CPython's own test_asyncio (the ``test`` package pyenv's
  Pythons ship) whose bodies exercise tasks;
- ``anyio``: anyio's test suite, from the sdist of the installed anyio on PyPI (its
  tests are not in the wheel), on its asyncio backends (plain, uvloop, eager tasks).

Each suite runs once plainly, then once per mode (``p0:N``: bodies start on P0, the
test's loop, of a runtime of N Ps; ``other:N``: on another P), each run in a fresh
interpreter. The plain outcomes depend only on the suite's version and the interpreter's
(and what the suite imports), so they are cached: ``baselines/SUITE-VERSION-pyX.Y.Z.json.gz``
in this directory, committed, so that CI runs each suite only as goroutines. A cache that
no longer matches (more than ``STALE_AFTER`` differences in a mode, say after a dependency
changed outcomes) is replaced by a fresh plain run, and the comparison made again;
``--fresh`` ignores the cache.

Starting on another P means running on another thread and loop, so there a test that
awaits its own loop's objects (CPython's, other than IsolatedAsyncioTestCase) or needs
the main thread (anyio's signal tests) cannot run: it is counted "not applicable", as a
Task of another loop could not run it either. A test whose outcome differs is run again
alone, plainly and in the mode, up to ``RECHECKS`` times: a difference that does not
repeat is a test that is flaky on its own (timing), reported but not failed.
Environmental failures (no IPv6, no network) are the same in every run and cancel out.
Exit status 1 if any difference repeats.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CPYTHON_MODULES = [
    "test_taskgroups",
    "test_timeouts",
    "test_locks",
    "test_queues",
    "test_waitfor",
    "test_tasks",
    "test_streams",
    "test_sock_lowlevel",
    "test_server",
    "test_futures2",
    "test_eager_task_factory",  # 3.12+
    "test_staggered",  # 3.12+
    "test_subprocess",
]
DEFAULT_MODES = "p0:1,p0:2,other:2"
RECHECKS = 3
# More differences than this in one mode against a cached plain baseline: the cache is
# stale (a dependency changed outcomes); run the suite plainly and compare again.
STALE_AFTER = 10
BASELINES = HERE / "baselines"
# A whole run of a suite; a hang shows as the last test named in its log.
RUN_TIMEOUT = 900


def _env(mode: str, procs: int, out: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["MNSCHED_COMPAT_MODE"] = mode
    env["MNSCHED_COMPAT_PROCS"] = str(procs)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    if out is not None:
        env["MNSCHED_COMPAT_OUT"] = str(out)
    return env


class Suite:
    name = ""
    version = ""  # what its plain outcomes depend on, besides the interpreter

    def run(self, mode: str, procs: int, out: Path, log: Path, only: list[str] | None) -> None:
        raise NotImplementedError

    def outcomes(self, mode: str, procs: int, work: Path, only: list[str] | None = None) -> dict:
        tag = f"{self.name}-{mode}-{procs}" + ("-recheck" if only else "")
        out, log = work / f"{tag}.json", work / f"{tag}.log"
        out.unlink(missing_ok=True)
        try:
            self.run(mode, procs, out, log, only)
        except subprocess.TimeoutExpired:
            last = log.read_text(errors="replace").strip().splitlines()[-1:]
            raise SystemExit(f"{tag}: no result in {RUN_TIMEOUT} s; last line: {last}") from None
        if not out.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise SystemExit(f"{tag}: the run wrote no outcomes; its log ends:\n{tail}")
        return json.loads(out.read_text())  # type: ignore[no-any-return]


class CPythonSuite(Suite):
    name = "cpython"
    version = "test_asyncio"  # it ships with the interpreter

    def __init__(self) -> None:
        self.modules = [
            m for m in CPYTHON_MODULES if importlib.util.find_spec(f"test.test_asyncio.{m}")
        ]

    def run(self, mode: str, procs: int, out: Path, log: Path, only: list[str] | None) -> None:
        # A recheck names test ids; cpython.py takes names relative to test.test_asyncio.
        names = (
            [
                t.split(" ")[0].removeprefix("test.test_asyncio.") for t in only
            ]  # a subtest: its test
            if only
            else self.modules
        )
        with open(log, "w") as f:
            subprocess.run(
                [sys.executable, str(HERE / "cpython.py"), str(out), *names],
                env=_env(mode, procs),
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=RUN_TIMEOUT,
                check=False,
            )


class AnyioSuite(Suite):
    name = "anyio"

    def __init__(self, work: Path) -> None:
        version = _dist_version("anyio")  # the installed one: its tests must match it
        self.version = version
        cache = Path(os.environ.get("MNSCHED_COMPAT_CACHE", work))
        src = cache / f"anyio-{version}"
        if not (src / "tests").is_dir():
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
                 ":all:", f"anyio=={version}", "-d", str(cache)],
                check=True,
            )  # fmt: skip
            with tarfile.open(cache / f"anyio-{version}.tar.gz") as tar:
                tar.extractall(cache, filter="data")
        self.src = src

    def run(self, mode: str, procs: int, out: Path, log: Path, only: list[str] | None) -> None:
        with open(log, "w") as f:
            subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p",
                 "no:cacheprovider", "-p", "anyio_plugin", *(only or [])],
                cwd=self.src,
                env=_env(mode, procs, out),
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=RUN_TIMEOUT,
                check=False,
            )  # fmt: skip


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _differences(plain: dict[str, str], other: dict[str, str]) -> list[str]:
    return sorted(
        t
        for t in plain.keys() | other.keys()
        if plain.get(t) != other.get(t) and other.get(t) != "n/a"
    )


def _baseline_path(suite: Suite) -> Path:
    py = sys.version.split()[0]
    return BASELINES / f"{suite.name}-{suite.version}-py{py}.json.gz"


def plain_outcomes(suite: Suite, work: Path, fresh: bool) -> tuple[dict[str, Any], bool]:
    """The suite's plain outcomes: cached, or run now (and cached); and whether cached."""
    path = _baseline_path(suite)
    if not fresh and path.exists():
        with gzip.open(path, "rt") as f:
            return {"outcomes": json.load(f), "details": {}, "seconds": 0.0}, True
    plain = suite.outcomes("plain", 1, work)
    BASELINES.mkdir(exist_ok=True)
    with gzip.GzipFile(path, "wb", mtime=0) as f:  # no timestamp: the same run, the same bytes
        f.write(json.dumps(plain["outcomes"], sort_keys=True, indent=0).encode())
    return plain, False


def check_suite(
    suite: Suite, modes: list[tuple[str, int]], work: Path, fresh: bool = False
) -> bool:
    start = time.monotonic()
    plain, cached = plain_outcomes(suite, work, fresh)
    counts = Counter(plain["outcomes"].values())
    print(
        f"== {suite.name}: {len(plain['outcomes'])} tests plainly "
        f"({', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}) "
        + (f"(cached: {_baseline_path(suite).name})" if cached else f"in {plain['seconds']:.0f} s"),
        flush=True,
    )
    ok = True
    for mode, procs in modes:
        run = suite.outcomes(mode, procs, work)
        diffs = _differences(plain["outcomes"], run["outcomes"])
        if cached and len(diffs) > STALE_AFTER:
            print(
                f"   {mode} procs={procs}: {len(diffs)} differences from the cached plain "
                "outcomes: the cache is stale; running the suite plainly",
                flush=True,
            )
            plain, cached = plain_outcomes(suite, work, fresh=True)
            diffs = _differences(plain["outcomes"], run["outcomes"])
        repeated, flaky = [], []
        for t in diffs:
            if _repeats(suite, mode, procs, work, t, run["outcomes"].get(t)):
                repeated.append(t)
            else:
                flaky.append(t)
        na = sum(v == "n/a" for v in run["outcomes"].values())
        print(
            f"   {mode} procs={procs}: {len(run['outcomes']) - na} tests in {run['seconds']:.0f} s"
            + (f" ({na} not applicable)" if na else "")
            + ", "
            + f"{len(repeated)} differences"
            + (f" ({len(flaky)} more did not repeat: {', '.join(flaky)})" if flaky else ""),
            flush=True,
        )
        for t in repeated:
            ok = False
            print(
                f"   DIFFERS {t}: plain {plain['outcomes'].get(t)}, "
                f"as goroutines {run['outcomes'].get(t)}\n"
                + _indent(run["details"].get(t) or plain["details"].get(t) or ""),
                flush=True,
            )
    print(f"== {suite.name}: {'same outcomes' if ok else 'DIFFERENT'} "
          f"({time.monotonic() - start:.0f} s)", flush=True)  # fmt: skip
    return ok


def _repeats(suite: Suite, mode: str, procs: int, work: Path, test: str, seen: str | None) -> bool:
    """Whether a difference is real: alone, the test keeps its plain outcome plainly and
    keeps differing as goroutines, every time."""
    for _ in range(RECHECKS):
        plain = suite.outcomes("plain", 1, work, [test])["outcomes"].get(test)
        other = suite.outcomes(mode, procs, work, [test])["outcomes"].get(test)
        if plain == other:
            return False
    return True


def _indent(text: str) -> str:
    return "\n".join("      " + line for line in text.strip().splitlines()[-25:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", choices=["cpython", "anyio", "all"], default="all")
    ap.add_argument("--modes", default=DEFAULT_MODES, help=f"default {DEFAULT_MODES}")
    ap.add_argument("--fresh", action="store_true", help="run plainly, not from the cache")
    args = ap.parse_args()
    modes = [(m, int(n)) for m, n in (x.split(":") for x in args.modes.split(","))]
    print(f"Python {sys.version.split()[0]}; modes {args.modes}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mnsched-compat-") as tmp:
        work = Path(tmp)
        suites: list[Suite] = []
        if args.suite in ("cpython", "all"):
            suites.append(CPythonSuite())
        if args.suite in ("anyio", "all"):
            suites.append(AnyioSuite(work))
        results = [check_suite(s, modes, work, args.fresh) for s in suites]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
