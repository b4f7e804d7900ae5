"""Real servers on 127.0.0.1 for the tests and the service soak: PostgreSQL and Redis
from Debian's packages (``apt-get install postgresql redis-server``; .ci/run installs
them), each started in a temporary directory and stopped at the end of its ``with``.
Without the package, ``Unavailable`` says what to install. Depends on nothing of
mnsched's."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Unavailable(Exception):
    """The server cannot run here; the message says why and what to install."""


APT_HINT = "install it with: apt-get install {pkg} (as .ci/run does)"
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _wait_until_ready(
    port: int, proc: subprocess.Popen[bytes], what: str, ready: Callable[[], bool]
) -> None:
    """Until the server listens and says it is ready; fail if it exits or takes too long.
    (PostgreSQL listens before it accepts sessions: "the database system is starting up".)"""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting")
        if _listens(port) and ready():
            return
        time.sleep(0.05)  # polling a process we do not control: no event to wait on
    raise RuntimeError(f"{what} was not ready on 127.0.0.1:{port} in {START_TIMEOUT} s")


@contextmanager
def _running(
    argv: list[str], port: int, what: str, ready: Callable[[], bool] = lambda: True
) -> Iterator[None]:
    """Run a server process for the block, once it is ready on port; then stop it."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_ready(port, proc, what, ready)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pg_bin() -> str | None:
    """The directory of Debian's PostgreSQL server binaries (not on PATH there)."""
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))  # a link's own directory lacks the rest
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[4]))
    return dirs[-1] if dirs and os.path.exists(f"{dirs[-1]}/initdb") else None


@contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL server of our own (trust auth, user postgres); yields its DSN.
    PostgreSQL refuses to run as root: then it runs as the postgres user."""
    bindir = _pg_bin()
    if bindir is None:
        raise Unavailable("PostgreSQL is not installed: " + APT_HINT.format(pkg="postgresql"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable(
                "running as root and there is no postgres user to run PostgreSQL as"
            ) from None
        runuser = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
        if runuser is None:
            raise Unavailable("running as root and runuser (util-linux) is missing")
        as_user = [runuser, "-u", "postgres", "--"]
    with tempfile.TemporaryDirectory(prefix="mnsched-pg-") as tmp:
        data = os.path.join(tmp, "data")
        if as_user:
            os.chown(tmp, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            [*as_user, f"{bindir}/initdb", "-D", data, "-U", "postgres", "-A", "trust"],
            check=True,
            capture_output=True,
        )
        port = free_port()
        argv = [*as_user, f"{bindir}/postgres", "-D", data, "-h", "127.0.0.1", "-p", str(port)]
        argv += ["-k", tmp, "-c", "max_connections=300", "-c", "fsync=off"]
        isready = [f"{bindir}/pg_isready", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]

        def accepts_sessions() -> bool:  # pg_isready exits 0 once it does
            return subprocess.run(isready, capture_output=True, timeout=10).returncode == 0

        with _running(argv, port, "postgres", accepts_sessions):
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"


@contextmanager
def redis() -> Iterator[str]:
    """A Redis server of our own, nothing persisted; yields its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise Unavailable("Redis is not installed: " + APT_HINT.format(pkg="redis-server"))
    port = free_port()
    argv = [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    with _running([*argv, "--maxclients", "1000"], port, "redis-server"):
        yield f"redis://127.0.0.1:{port}/0"
