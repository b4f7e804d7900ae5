"""Unit tests of the run queue and the steal order (Go: proc_test.go's runq tests)."""

import gc
import random
import threading
import weakref

import pytest

from mnsched.g import CORE
from mnsched.runq import LOCAL_QUEUE_SIZE, _PureRunQ
from mnsched.sched import StealOrder

# Both drivers' queues: the pure driver's deque and the C driver's ring (when built).
KINDS = [_PureRunQ] + ([] if CORE is None else [CORE.RunQ])


@pytest.fixture(params=KINDS, ids=lambda k: k.__module__.split(".")[-1])
def RunQ(request):
    return request.param


def test_local_queue_is_fifo(RunQ):
    q = RunQ()
    for i in range(LOCAL_QUEUE_SIZE):
        q.append(i)
    assert [q.popleft() for _ in range(LOCAL_QUEUE_SIZE)] == list(range(LOCAL_QUEUE_SIZE))
    assert not q


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 100, 255, 256])
def test_steal_half_takes_half_rounded_up_from_the_head(RunQ, n):
    q = RunQ()
    q.extend(range(n))
    stolen = q.steal_half()
    assert len(stolen) == n - n // 2
    assert stolen == list(range(len(stolen)))  # the oldest, in order
    assert list(q) == list(range(len(stolen), n))


def test_steal_conserves_every_item_under_concurrency(RunQ):
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


def test_take_half_for_global(RunQ):
    q = RunQ()
    q.extend(range(LOCAL_QUEUE_SIZE))
    moved = q.take_half_for_global()
    assert moved == list(range(LOCAL_QUEUE_SIZE // 2))
    assert len(q) == LOCAL_QUEUE_SIZE // 2


@pytest.mark.parametrize("n", [1, 15, 16, 17, LOCAL_QUEUE_SIZE, 3 * LOCAL_QUEUE_SIZE + 5])
def test_the_queue_grows_past_its_size_and_keeps_its_order(RunQ, n):
    # Pinned Gs may not leave for the global queue, so a full local queue still takes
    # them; pushes at both ends around the ring keep the order.
    q = RunQ()
    for i in range(n):
        q.append(i)
        if i % 4 == 0:
            q.appendleft(-i - 1)
    q.extend(range(n, n + 3))
    want = [-i - 1 for i in reversed(range(0, n, 4))] + list(range(n + 3))
    assert list(q) == want and len(q) == len(want)
    assert [q[i] for i in range(len(q))] == want and q[-1] == want[-1]
    q.clear()
    assert not q and list(q) == []
    with pytest.raises(IndexError):
        q.popleft()
    with pytest.raises(IndexError):
        q[0]


@pytest.mark.parametrize("n", [1, 2, 5, 16, 40])
def test_taking_from_anywhere_keeps_the_rest_in_order(RunQ, n):
    # What the inline join does: take the awaited G from wherever it is (both halves of
    # the ring are moved over the gap, whichever is shorter), after pops moved the head.
    for i in range(n):
        q = RunQ()
        q.extend(range(-3, 0))
        for _ in range(3):
            q.popleft()
        q.extend(range(n))
        assert q.index(i) == i and q.index(i, i) == i
        with pytest.raises(ValueError):
            q.index(i, i + 1)
        del q[i]
        rest = [x for x in range(n) if x != i]
        assert list(q) == rest
        q.append(n)
        assert [q.popleft() for _ in range(len(q))] == [*rest, n]


def test_a_cycle_through_the_queue_is_collected(RunQ):
    # A queued G refers to its P, which holds the queue: the collector must see inside.
    class Item:
        pass

    item = Item()
    cyc = RunQ()
    cyc.append(item)
    item.q = cyc  # only the collector frees it
    ref = weakref.ref(item)
    del item, cyc
    gc.collect()
    assert ref() is None


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
