"""The live console: a program opens it (MNSCHED_DEBUG=console=PATH or Runtime(console=)),
``mnsched console PATH`` attaches, in a real terminal (tmux) and in a pipe."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import mnsched
from conftest import wait_until
from mnsched.console import Client, ConsoleServer

PROGRAM = """
import sys, mnsched

async def sleeper():
    await mnsched.sleep(600)

async def reader(ch):
    await ch.recv()

def ready_then_wait():  # in a blocking call: its goroutine is in a syscall by now
    print("ready", flush=True)
    return sys.stdin.readline()

async def main():
    ch = mnsched.Chan()
    gs = [mnsched.go(sleeper(), name=f"sleeper-{i}") for i in range(5)]
    gs += [mnsched.go(reader(ch), name=f"reader-{i}") for i in range(3)]
    while any(g.status != "parked" for g in gs):
        await mnsched.sleep(0.001)
    await mnsched.go(mnsched.syscall(ready_then_wait), name="waiting-for-stdin")

mnsched.run(main(), procs=2)
"""


@pytest.fixture
def program(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A program with the console open at a socket in tmp_path, until its stdin closes."""
    path = str(tmp_path / "console.sock")
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "MNSCHED_DEBUG": f"console={path}"},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc, path
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # its main goroutine's readline returns: it ends
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert not os.path.exists(path)  # the socket goes with it


def poll(what: Callable[[], str], until: Callable[[str], bool], timeout: float = 20.0) -> str:
    """what() until until(it) holds (bounded): a screen has no event to wait on."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if until(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
def test_the_console_in_a_real_terminal(program, tmp_path):
    proc, path = program
    session = f"mnsched-console-{os.getpid()}"
    tmux = ["tmux", "-L", session]  # a server of its own: nothing of the user's is touched
    cmd = f"{sys.executable} -m mnsched console {path} --interval 0.2"
    subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "110", "-y", "50", cmd],
                   check=True, timeout=30)  # fmt: skip
    try:

        def screen() -> str:
            out = subprocess.run([*tmux, "capture-pane", "-p", "-t", session],
                                 capture_output=True, text=True, timeout=30)  # fmt: skip
            return out.stdout

        got = poll(screen, lambda s: "chan receive 3" in s)
        assert f"mnsched console: pid {proc.pid}" in got, got
        assert "P0" in got and "P1" in got and "goroutines 10" in got, got
        assert "sleep 5" in got and "syscall 1" in got, got
        assert "sleeper-4" in got, got
        # A goroutine's stack: s, its id, Enter.
        subprocess.run([*tmux, "send-keys", "-t", session, "s", "3", "Enter"], timeout=30)
        got = poll(screen, lambda s: "in sleeper" in s)
        assert "goroutine 3 'sleeper-1' [sleep" in got and "in sleeper" in got, got
        subprocess.run([*tmux, "send-keys", "-t", session, "q"], timeout=30)
        gone = poll(
            lambda: str(
                subprocess.run(
                    [*tmux, "has-session", "-t", session], capture_output=True, timeout=30
                ).returncode
            ),
            lambda rc: rc != "0",
        )
        assert gone != "0"  # q quit the console (and its terminal was restored: it exited)
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=30)


def test_the_console_in_a_pipe_prints_one_screen(program):
    proc, path = program
    out = subprocess.run([sys.executable, "-m", "mnsched", "console", path],
                         capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert f"pid {proc.pid}" in out.stdout and "chan receive 3" in out.stdout
    out = subprocess.run([sys.executable, "-m", "mnsched", "console", path, "--stack", "7"],
                         capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert "goroutine 7 'reader-0' [chan receive" in out.stdout and "in reader" in out.stdout


def test_the_socket_is_private_and_answers_bad_requests(program):
    _, path = program
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    client = Client(path)
    assert "unknown request" in client.ask("dance")["error"]
    assert "goroutine id" in client.ask("stack x")["error"]
    assert "no goroutine 999" in client.ask("stack 999")["error"]
    snap = client.ask("snapshot")
    assert snap["goroutines"] == 10 and json.dumps(snap)
    assert snap["by_wait"] == {"await goroutine": 1, "chan receive": 3, "sleep": 5, "syscall": 1}
    # A second program cannot take the path over while this one serves it.
    with pytest.raises(ValueError, match="another process is serving a console there"):
        mnsched.Runtime(procs=1, console=path).start()


def test_a_stale_socket_is_replaced_and_other_files_are_not(tmp_path):
    stale = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()  # nobody listens: a crashed program's
    with mnsched.Runtime(procs=1, console=stale):
        assert Client(stale).ask("snapshot")["goroutines"] == 0
    assert not os.path.exists(stale)
    plain = tmp_path / "notes.txt"
    plain.write_text("mine")
    with pytest.raises(ValueError, match="not a socket"):
        mnsched.Runtime(procs=1, console=str(plain)).start()
    assert plain.read_text() == "mine"


def test_no_console_unless_asked(rt_params, monkeypatch):
    monkeypatch.delenv("MNSCHED_DEBUG", raising=False)
    nprocs, loop = rt_params
    with mnsched.Runtime(procs=nprocs, loop=loop) as rt:
        assert rt._console is None
        assert not [t for t in threading.enumerate() if t.name == "mnsched-console"]


def test_attaching_to_nothing_says_how_to_open_one(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mnsched", "console", str(tmp_path / "none.sock")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0 and "MNSCHED_DEBUG=console=PATH" in out.stderr


def test_the_console_thread_ends_with_the_runtime(tmp_path):
    path = str(tmp_path / "c.sock")
    rt = mnsched.Runtime(procs=1, console=path).start()
    server = rt._console
    assert isinstance(server, ConsoleServer)
    client = Client(path)  # a client still attached does not hold the runtime up
    rt.close()
    wait_until(lambda: not server._thread.is_alive())
    assert not os.path.exists(path)
    client.sock.close()
