"""Unit tests of the run queue and the steal order (Go: proc_test.go's runq tests)."""

import random
import threading

import pytest

from mnsched.runq import LOCAL_QUEUE_SIZE, RunQ
from mnsched.sched import StealOrder


def test_local_queue_is_fifo():
    q = RunQ()
    for i in range(LOCAL_QUEUE_SIZE):
        q.append(i)
    assert [q.popleft() for _ in range(LOCAL_QUEUE_SIZE)] == list(range(LOCAL_QUEUE_SIZE))
    assert not q


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 100, 255, 256])
def test_steal_half_takes_half_rounded_up_from_the_head(n):
    q = RunQ()
    q.extend(range(n))
    stolen = q.steal_half()
    assert len(stolen) == n - n // 2
    assert stolen == list(range(len(stolen)))  # the oldest, in order
    assert list(q) == list(range(len(stolen), n))


def test_steal_conserves_every_item_under_concurrency():
    # Go's TestRunqSteal idea: the owner pops while thieves steal; every item leaves
    # the queue exactly once.
    q = RunQ()
    total = 200_000
    got: list[list[int]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def owner():
        start.wait()
        for i in range(total):
            q.append(i)
            if i % 3 == 0:
                try:
                    got[0].append(q.popleft())
                except IndexError:
                    pass

    def thief(k):
        start.wait()
        while not done.is_set() or q:
            got[k].extend(q.steal_half())

    done = threading.Event()
    thieves = [threading.Thread(target=thief, args=(k,)) for k in (1, 2, 3)]
    for t in thieves:
        t.start()
    owner()
    done.set()
    for t in thieves:
        t.join(timeout=30)
        assert not t.is_alive()
    seen = sorted(x for part in got for x in part) + sorted(q)
    assert seen == list(range(total))


def test_take_half_for_global():
    q = RunQ()
    q.extend(range(LOCAL_QUEUE_SIZE))
    moved = q.take_half_for_global()
    assert moved == list(range(LOCAL_QUEUE_SIZE // 2))
    assert len(q) == LOCAL_QUEUE_SIZE // 2


@pytest.mark.parametrize("n", range(1, 17))
def test_steal_order_visits_every_p_exactly_once(n):
    # Go's TestRandomOrder idea, for every start and stride the random source can pick.
    order = StealOrder(n)
    rng = random.Random(n)
    starts = {rng.getrandbits(32) for _ in range(200)} | set(range(n * len(order.coprimes)))
    strides = set()
    for r in starts:
        visits = list(order.walk(r))
        assert sorted(visits) == list(range(n)), (r, visits)
        if n > 1:
            strides.add((visits[1] - visits[0]) % n)
    if n > 2:
        assert len(strides) > 1  # more than one stride is used, so thieves spread out
