"""The lock order as ranks (lockrank.py): under MNSCHED_LOCKCHECK=1 every lock of the
runtime checks, as it is taken, that the thread holds none of a higher rank. Each
check runs in a child interpreter: the setting is read once, at import."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from mnsched.errors import InternalError
from mnsched.lockrank import RANK_CHAN, RANK_G, RANK_SELECT, RankedLock, lock_factory


def _child(code: str, lockcheck: str = "1") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "MNSCHED_LOCKCHECK": lockcheck},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_reversed_pair_of_the_runtimes_locks_fails_at_once_naming_both():
    out = _child(
        "from mnsched import Chan\n"
        "from mnsched.selectgo import Select\n"
        "ch, sel = Chan(), Select()\n"
        "with ch._lock:\n"
        "    with sel.lock:\n"  # the order select takes them: fine
        "        pass\n"
        "with sel.lock:\n"
        "    with ch._lock:\n"  # reversed
        "        pass\n"
    )
    assert out.returncode != 0
    assert (
        "InternalError: lock order: taking a channel's _lock (rank 3, chan) while holding "
        "Select.lock (rank 4, select)"
    ) in out.stderr


def test_two_locks_of_one_rank_fail_unless_the_rank_allows_several():
    out = _child(
        "from mnsched import Chan\n"
        "from mnsched.selectgo import Select\n"
        "a, b = Chan(), Chan()\n"
        "with b._lock, a._lock:\n"  # channels: several at once (select orders them)
        "    pass\n"
        "with Select().lock, Select().lock:\n"
        "    pass\n"
    )
    assert out.returncode != 0
    assert "taking Select.lock (rank 4, select) while holding Select.lock" in out.stderr


def test_a_whole_program_runs_clean_under_the_check():
    # Channels, select with timeouts, sync objects, sleeps, blocking calls, awaits and
    # cancellation at procs 2: every lock taken in order.
    code = """
import mnsched
from mnsched import Chan, Mutex, Recv, WaitGroup, after, select

async def main():
    jobs, results, mu, wg, total = Chan(4), Chan(), Mutex(), WaitGroup(), [0]

    async def worker():
        async for j in jobs:
            await mnsched.syscall(pow, j, 2)
            async with mu:
                total[0] += j
            fired = await select(Recv(results), Recv(after(0.001)), default=None)
            await mnsched.sleep(0)
        wg.done()

    wg.add(4)
    gs = [mnsched.go(worker()) for _ in range(4)]
    for j in range(200):
        await jobs.send(j)
    jobs.close()
    await wg.wait()
    stuck = mnsched.go(Chan().recv())
    await mnsched.gosched()
    stuck.cancel()
    return total[0], [await g for g in gs]

print(mnsched.run(main(), procs=2))
"""
    out = _child(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(19900, [None, None, None, None])"
    assert _child("import mnsched.lockrank as l; print(l.LOCKCHECK)").stdout.strip() == "True"


def test_a_bad_setting_names_the_fix():
    out = _child("import mnsched", lockcheck="yes")
    assert out.returncode != 0
    assert "MNSCHED_LOCKCHECK='yes': set it to 1 to check the lock order, or 0" in out.stderr


def test_a_ranked_lock_is_a_lock():
    lock = RankedLock(RANK_G, "a test lock")
    assert lock.acquire() and lock.locked()
    assert lock.acquire(False) is False
    assert lock.acquire(timeout=0.01) is False
    released = threading.Event()

    def release_elsewhere() -> None:  # any thread may release it, as threading.Lock
        lock.release()
        released.set()

    threading.Thread(target=release_elsewhere).start()
    assert released.wait(10)
    assert not lock.locked()
    # and the releaser's release left this thread holding nothing: a lower rank is fine
    with RankedLock(RANK_G - 1, "lower"), lock:
        pass
    assert "unlocked" in repr(lock)


def test_the_factory_gives_plain_locks_unless_checking():
    from mnsched import lockrank

    with pytest.raises(InternalError, match="lock rank 99 for x"):
        lock_factory(99, "x", threading.Lock)
    made = lock_factory(RANK_CHAN, "a test lock", threading.Lock)
    if lockrank.LOCKCHECK:  # (this suite run under MNSCHED_LOCKCHECK=1)
        assert isinstance(made(), RankedLock)
    else:
        assert made is threading.Lock  # no cost when not checking
    assert RANK_CHAN < RANK_SELECT < RANK_G
