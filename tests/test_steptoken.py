"""Unit tests of the step token (serial steps), on both drivers' tokens: who holds it,
FIFO turns between threads, and sysmon's revoke and reclaim never taking it from a P
about to step."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from conftest import wait_until
from mnsched.g import CORE
from mnsched.p import _PurePBase
from mnsched.steptoken import _PureStepToken

KINDS = [(_PureStepToken, _PurePBase)] + ([] if CORE is None else [(CORE.StepToken, CORE.PBase)])


@pytest.fixture(params=KINDS, ids=lambda k: k[0].__module__.split(".")[-1])
def kind(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    return request.param


def _ps(kind: tuple[Any, Any], n: int) -> list[Any]:
    class FakeP(kind[1]):  # type: ignore[misc]
        __slots__ = ("name",)

    ps = []
    for i in range(n):
        p = FakeP()
        p.tick, p.name = 0, f"P{i}"
        ps.append(p)
    return ps


def test_acquire_idle_release(kind):
    tok = kind[0]()
    p0, p1 = _ps(kind, 2)
    assert tok.owner is None and not tok.stepping
    assert tok.acquire(p0) is True and tok.owner is p0 and tok.stepping
    assert tok.acquire(p0) is False  # held already
    tok.idle(p0)
    assert tok.owner is p0 and not tok.stepping
    tok.idle(p1)  # not its: a no-op
    tok.release(p1)
    assert tok.owner is p0
    tok.release(p0)
    assert tok.owner is None and tok.nhandoffs == 0


def test_waiting_ps_get_it_in_turn(kind):
    tok = kind[0]()
    ps = _ps(kind, 4)
    tok.acquire(ps[0])
    threads = []
    for p in ps[1:]:  # each queues in this order
        n = tok.waiting
        t = threading.Thread(target=tok.acquire, args=(p,))
        t.start()
        threads.append(t)
        wait_until(lambda n=n: tok.waiting == n + 1)
    for p in ps:  # and gets it in this order: each release hands it to the next
        assert tok.owner is p and tok.stepping  # (handed over to a P about to step)
        tok.release(p)
    for t in threads:
        t.join(10)
    assert tok.nhandoffs == 3 and tok.owner is None


def test_revoke_takes_it_only_from_the_step_sysmon_saw(kind):
    tok = kind[0]()
    p0, p1 = _ps(kind, 2)
    p0.tick = 7
    tok.acquire(p0)
    assert tok.revoke(p0, 6) is False  # that step ended: p0 is in the next one
    assert tok.revoke(p1, 7) is False  # not its
    assert tok.revoke(p0, 7) is True and tok.owner is None and tok.nrevokes == 1


def test_reclaim_takes_it_only_from_a_p_between_steps(kind):
    tok = kind[0]()
    p0, p1 = _ps(kind, 2)
    tok.acquire(p0)
    assert tok.reclaim(p0) is False  # stepping
    tok.idle(p0)
    got = threading.Event()
    t = threading.Thread(target=lambda: (tok.acquire(p1), got.set()))
    t.start()
    wait_until(lambda: tok.waiting == 1)
    assert tok.acquire(p0) is False  # p0 steps again before sysmon's reclaim...
    assert tok.reclaim(p0) is False  # ...which must then refuse
    tok.idle(p0)
    assert tok.reclaim(p0) is True
    assert got.wait(10) and tok.owner is p1 and tok.stepping
    t.join(10)


def test_an_interrupted_wait_gives_up_its_turn(kind):
    # A signal handler raising in the main thread's wait: the P leaves the queue, and a
    # turn handed to it meanwhile goes on to the next.
    import signal

    tok = kind[0]()
    p0, p1, p2 = _ps(kind, 3)
    tok.acquire(p0)

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGUSR1, interrupt)
    try:
        threading.Timer(0.05, lambda: signal.pthread_kill(threading.main_thread().ident or 0,
                                                          signal.SIGUSR1)).start()  # fmt: skip
        with pytest.raises(KeyboardInterrupt):
            tok.acquire(p1)  # waits behind p0, on the main thread
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert tok.waiting == 0 and tok.owner is p0
    t = threading.Thread(target=tok.acquire, args=(p2,))
    t.start()
    wait_until(lambda: tok.waiting == 1)
    tok.release(p0)
    t.join(10)
    assert tok.owner is p2


def test_a_busy_turn_taking_loop_loses_nothing(kind):
    # Threads each increment a plain counter only while holding the token: no increment
    # is lost, and each got turns.
    tok = kind[0]()
    ps = _ps(kind, 3)
    count = [0]
    turns = [0] * len(ps)
    end = time.monotonic() + 0.3

    def run(i: int) -> None:
        while time.monotonic() < end:
            tok.acquire(ps[i])
            for _ in range(100):
                v = count[0]
                count[0] = v + 1
            turns[i] += 1
            tok.release(ps[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(ps))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert count[0] == 100 * sum(turns) and all(turns)
