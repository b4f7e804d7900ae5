"""Ctrl-C at awkward moments, in a subprocess running mnsched.run: the first SIGINT
cancels main and the program ends with KeyboardInterrupt within 2 s; if shutdown takes
longer than a second it says on stderr what it waits for; a second SIGINT exits at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest

from conftest import default_sigint, matrix_loops, matrix_procs
from mnsched.g import DRIVER

# Seconds from the (last) signal to the process's end. The pure-Python driver steps a
# goroutine 2-3x slower (docs/benchmarks.md, instruction counts), and a spawn storm
# leaves 10-30k goroutines to cancel at the exit: measured up to 2.0 s with it, 1.2 s
# with the C core.
PROMPT = 2.0 if DRIVER == "c" else 3.0

PRELUDE = """
import asyncio, os, signal, sys, threading, time
import mnsched

SIG = getattr(signal, sys.argv[3])
if SIG == signal.SIGTERM:  # as a service does: exit cleanly on SIGTERM
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

class Timeout(BaseException):  # as pytest-timeout's alarm raises pytest's Failed
    pass

def alarm(signum, frame):
    raise Timeout("the alarm rang")

if SIG == signal.SIGALRM:
    signal.signal(signal.SIGALRM, alarm)

def ready():
    print("ready", flush=True)

def report(main):
    try:
        print("returned", mnsched.run(main(), procs=int(sys.argv[1]), loop=sys.argv[2]))
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
        sys.exit(130)
"""

MOMENTS = {
    # main is computing when the signal arrives (the signal is its own)
    "cpu in main": """
        async def main():
            os.kill(os.getpid(), SIG)
            end = time.perf_counter() + 0.2
            while time.perf_counter() < end:
                pass
            ready()
            return "finished"
    """,
    "blocking call": """
        async def main():
            ready()
            await mnsched.syscall(time.sleep, 30)
    """,
    "everyone parked on channels": """
        async def main():
            # A plain thread that might send keeps it from being a deadlock (which the
            # detector would report before the signal comes).
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
            chans = [mnsched.Chan() for _ in range(50)]
            for ch in chans:
                mnsched.go(ch.recv())
            ready()
            await mnsched.Chan().recv()
    """,
    # P0's thread is inside mnsched (a channel's lock held) most of the time: a handler
    # raising there must not leave the lock held (it hung 1 run in 2; sigqueue.py)
    "busy on channels": """
        async def main():
            a, b = mnsched.Chan(), mnsched.Chan()
            async def echo():
                while True:
                    await b.send(await a.recv())
            for _ in range(2):
                mnsched.go(echo())
            for i in range(1000):  # warmed up: the echoes run on every P
                await a.send(i)
                await b.recv()
            ready()
            while True:
                await a.send(0)
                await b.recv()
    """,
    # Spawning as fast as it can, with up to 30,000 goroutines alive: the exit
    # cancels and steps each one (~5 us apiece: an unbounded backlog, 100k+ with the C
    # core, would measure that, not the signal's handling).
    "spawn storm": """
        async def main():
            async def leaf():
                await mnsched.gosched()
            async def storm():
                while True:
                    if mnsched.num_goroutine() < 30_000:
                        for _ in range(1000):
                            mnsched.go(leaf())
                    await mnsched.gosched()
            for _ in range(4):
                mnsched.go(storm())
            await mnsched.sleep(0.2)
            ready()
            await mnsched.sleep(30)
    """,
    # the signal arrives while a goroutine's finally runs, during the shutdown after
    # main returned (the signal is its own)
    "in a finally during shutdown": """
        async def main():
            async def worker():
                try:
                    await mnsched.Chan().recv()
                finally:
                    ready()
                    os.kill(os.getpid(), SIG)
                    end = time.perf_counter() + 0.2
                    while time.perf_counter() < end:
                        pass
            g = mnsched.go(worker())
            while not g.wait_reason:
                await mnsched.gosched()
            return "finished"
    """,
    "cpu hog in a goroutine": """
        async def main():
            async def hog():
                end = time.perf_counter() + 0.5
                while time.perf_counter() < end:
                    pass
            mnsched.go(hog())
            ready()
            await mnsched.sleep(30)
    """,
}


SELF_SIGNALLED = {"cpu in main", "in a finally during shutdown"}


def start(body: str, procs: int, kind: str, sig: str = "SIGINT") -> subprocess.Popen[str]:
    code = PRELUDE + textwrap.dedent(body) + "\nreport(main)\n"
    return subprocess.Popen(
        [sys.executable, "-c", code, str(procs), kind, sig],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )


def wait_ready(proc: subprocess.Popen[str]) -> None:
    """Until the child says "ready". Read byte by byte from the pipe itself: a buffered
    readline could take the next line too ("KeyboardInterrupt", when both arrive
    together on a loaded machine), and communicate(), which reads the pipe, would never
    see it."""
    assert proc.stdout is not None
    fd, line = proc.stdout.fileno(), b""
    while not line.endswith(b"\n"):  # bounded by the test's timeout
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
    text = line.decode()
    assert text.strip() == "ready", text + (proc.stderr.read() if proc.stderr else "")


def finish(proc: subprocess.Popen[str], since: float) -> tuple[str, str, float]:
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    return out, err, time.monotonic() - since


def at_every_moment(test: Callable[..., None]) -> Callable[..., None]:
    """The test for each moment, at procs 1, 2 and 4 on both loops (60 s at most each)."""
    for mark in (
        pytest.mark.parametrize("kind", matrix_loops("uvloop", "asyncio")),
        pytest.mark.parametrize("procs", matrix_procs(1, 2, 4)),
        pytest.mark.parametrize("moment", list(MOMENTS)),
        pytest.mark.timeout(60),
    ):
        test = mark(test)
    return test


def signal_at(
    moment: str, procs: int, kind: str, sig: str
) -> tuple[subprocess.Popen[str], str, str, float]:
    """Run the moment's program, signal it once it is ready (unless it signals itself),
    and return it once ended, with its output and the seconds from the signal."""
    proc = start(MOMENTS[moment], procs, kind, sig)
    if not (moment == "cpu in main" and sig != "SIGINT"):  # (there its handler's
        wait_ready(proc)  # exception comes at once, before "ready")
    sent = time.monotonic()
    if moment not in SELF_SIGNALLED:
        proc.send_signal(getattr(signal, sig))
    out, err, took = finish(proc, sent)
    return proc, out, err, took


@at_every_moment
def test_one_ctrl_c_ends_the_program_promptly(moment, procs, kind):
    proc, out, err, took = signal_at(moment, procs, kind, "SIGINT")
    assert "KeyboardInterrupt" in out, (out, err)
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert took < PROMPT, f"{took:.2f} s after SIGINT:\n{err}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("moment", list(MOMENTS))
@pytest.mark.parametrize("kind", matrix_loops("uvloop", "asyncio"))
def test_sigterm_with_an_exiting_handler_ends_the_program_promptly(moment, kind):
    # A service's SIGTERM handler raising SystemExit: the program ends with its code.
    proc, out, err, took = signal_at(moment, 2, kind, "SIGTERM")
    assert proc.returncode == 143, (proc.returncode, out, err)
    assert took < PROMPT, f"{took:.2f} s after SIGTERM:\n{err}"


STUBBORN = """
    async def main():
        async def stubborn():
            while True:
                try:
                    await mnsched.syscall(time.sleep, 0.05)
                except asyncio.CancelledError:
                    pass  # ignores cancellation: shutdown has to wait for it
        mnsched.go(stubborn(), name="stubborn")
        ready()
        await mnsched.sleep(30)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", matrix_loops("uvloop", "asyncio"))
def test_a_slow_shutdown_says_what_it_waits_for_and_a_second_ctrl_c_exits(kind):
    proc = start(STUBBORN, 2, kind)
    wait_ready(proc)
    proc.send_signal(signal.SIGINT)
    assert proc.stderr is not None
    lines = [proc.stderr.readline() for _ in range(2)]  # after a second, the report
    assert lines[0].startswith("mnsched: Ctrl-C: shutting down, waiting for:"), lines
    assert "stubborn" in lines[1], lines
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err, took = finish(proc, sent)
    assert "KeyboardInterrupt" in out and proc.returncode == 130, (out, err)
    assert took < PROMPT, f"{took:.2f} s after the second SIGINT"


@at_every_moment
def test_a_signal_handlers_exception_ends_the_program_as_under_asyncio(moment, procs, kind):
    # A handler raising anything else (pytest-timeout's alarm): asyncio.run passes it on
    # wherever the signal finds the main thread. So does run(): a handler queued while
    # the main thread was inside mnsched raises it when it runs on P0's loop. Where it
    # interrupts a goroutine other than main, that goroutine fails with it (as a Task
    # does), and it is reported as its unretrieved exception.
    proc, out, err, took = signal_at(moment, procs, kind, "SIGALRM")
    assert "Timeout: the alarm rang" in err, (out, err)
    if proc.returncode == 0:  # the handler ran in the worker's finally: reported there
        assert moment == "in a finally during shutdown", (out, err)
        assert "returned finished" in out and "nobody retrieved it" in err, (out, err)
    else:
        assert proc.returncode == 1, (proc.returncode, out, err)
    assert took < PROMPT, f"{took:.2f} s after SIGALRM:\n{err}"
