"""put_many / get_many: our additions to Queue and JoinableQueue.

put_many(items, timeout=None): all items enqueued atomically and contiguously
(all or nothing); with a maxsize it waits for room for all of them;
len(items) > maxsize raises ValueError; timeout -> queue.Full.
get_many(max_items, timeout=None): waits for at least one item (timeout ->
queue.Empty; timeout=0 means don't wait) and returns a list of
1..max_items items in FIFO order.
"""

from __future__ import annotations

import queue
import threading
import time

import pytest

import _helpers
from conftest import call_in_thread, start_thread

SLACK = 3.0


def drain_many(q, max_items, total, timeout=10):
    """get_many until `total` items were received; check each batch size."""
    out = []
    while len(out) < total:
        batch = q.get_many(max_items, timeout=timeout)
        assert isinstance(batch, list)
        assert 1 <= len(batch) <= max_items
        out.extend(batch)
    assert len(out) == total
    return out


@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue"])
def test_put_many_get_many_fifo(ours, kind):
    q = getattr(ours, kind)()
    q.put_many([1, 2, 3])
    q.put(4)
    q.put_many((5, 6))  # a tuple works as well as a list
    assert q.qsize() == 6
    assert drain_many(q, 10, 6) == [1, 2, 3, 4, 5, 6]
    assert q.qsize() == 0 and q.empty()
    if kind == "JoinableQueue":
        for _ in range(6):
            q.task_done()


def test_get_many_respects_max_items(ours):
    q = ours.Queue()
    q.put_many(list(range(12)))
    first = q.get_many(5)
    assert 1 <= len(first) <= 5
    rest = drain_many(q, 5, 12 - len(first))
    assert first + rest == list(range(12))
    q.put_many(["a", "b", "c"])
    b = q.get_many(1)
    assert b == ["a"]
    assert drain_many(q, 100, 2) == ["b", "c"]


def test_get_many_mixed_with_get(ours):
    q = ours.Queue()
    q.put_many(list(range(100)))
    got = []
    while len(got) < 100:
        got.append(q.get(timeout=5))
        if len(got) < 100:
            got.extend(q.get_many(3, timeout=5))
    assert got == list(range(100))


def test_get_many_timeout_zero_does_not_wait(ours):
    q = ours.Queue()
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get_many(10, timeout=0)
    assert time.monotonic() - t0 < SLACK
    q.put("x")
    assert q.get_many(10, timeout=0) == ["x"]


def test_get_many_timeout_elapsed(ours):
    q = ours.Queue()
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get_many(10, timeout=0.3)
    dt = time.monotonic() - t0
    assert 0.25 <= dt < 0.3 + SLACK


def test_get_many_waits_for_at_least_one(ours):
    q = ours.Queue()
    t = start_thread(lambda: (time.sleep(0.3), q.put("late"))[1])
    t0 = time.monotonic()
    got = q.get_many(10)
    dt = time.monotonic() - t0
    assert got == ["late"]
    assert dt >= 0.2
    t.outcome(10)


def test_get_many_with_timeout_returns_when_item_arrives(ours):
    q = ours.Queue()
    t = start_thread(lambda: (time.sleep(0.2), q.put_many([1, 2]))[1])
    got = q.get_many(10, timeout=20)
    assert got in ([1], [1, 2])
    if got == [1]:
        assert q.get(timeout=5) == 2
    t.outcome(10)


def test_put_many_unbounded_never_blocks(ours):
    q = ours.Queue()
    n = 100_000

    def fill():
        for start in range(0, n, 10_000):
            q.put_many(list(range(start, start + 10_000)))

    call_in_thread(fill, timeout=60)
    assert q.qsize() == n
    assert drain_many(q, 1000, n) == list(range(n))


def test_put_many_more_than_maxsize_raises_valueerror(ours):
    q = ours.Queue(3)
    q.put("a")
    t0 = time.monotonic()
    with pytest.raises(ValueError):
        q.put_many([1, 2, 3, 4])
    with pytest.raises(ValueError):
        q.put_many([1, 2, 3, 4], timeout=5)
    assert time.monotonic() - t0 < SLACK  # raised at once, did not wait
    assert q.qsize() == 1
    assert q.get_nowait() == "a"
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.put_many([1, 2, 3])  # exactly maxsize is fine
    assert q.full() and q.qsize() == 3
    assert drain_many(q, 3, 3) == [1, 2, 3]


def test_put_many_timeout_all_or_nothing(ours):
    q = ours.Queue(5)
    q.put(0)
    q.put(1)
    q.put(2)
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        q.put_many(["a", "b", "c"], timeout=0.3)
    dt = time.monotonic() - t0
    assert 0.25 <= dt < 0.3 + SLACK
    assert q.qsize() == 3  # nothing of the batch was enqueued
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        q.put_many(["a", "b", "c"], timeout=0)
    assert time.monotonic() - t0 < SLACK
    assert q.qsize() == 3
    q.put_many(["a", "b"], timeout=0)  # fits exactly
    assert q.qsize() == 5 and q.full()
    with pytest.raises(queue.Full):
        q.put_many(["z"], timeout=0)
    assert drain_many(q, 10, 5) == [0, 1, 2, "a", "b"]


def test_put_many_waits_for_room_for_all(ours):
    q = ours.Queue(4)
    for i in range(3):
        q.put(i)
    t = start_thread(q.put_many, ["a", "b", "c"])
    time.sleep(0.3)
    assert t.is_alive()
    assert q.qsize() == 3  # nothing partially enqueued while waiting
    assert q.get(timeout=5) == 0
    time.sleep(0.3)
    assert t.is_alive()  # room for 2, needs 3
    assert q.qsize() == 2
    assert q.get(timeout=5) == 1
    t.outcome(10)  # room for 3 now
    assert q.qsize() == 4 and q.full()
    assert drain_many(q, 10, 4) == [2, "a", "b", "c"]


def test_put_many_unpicklable_nothing_enqueued(ours):
    lock = threading.Lock()
    q = ours.Queue(10)
    q.put("first")
    with pytest.raises(TypeError) as ei:
        q.put_many([1, 2, lock, 4])
    assert "pickle" in str(ei.value)
    with pytest.raises(Exception):
        q.put_many([1, lambda: 0])
    assert q.qsize() == 1
    assert q.get_nowait() == "first"
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.put_many(list(range(10)))  # all slots still free
    assert q.full()
    assert drain_many(q, 10, 10) == list(range(10))


@pytest.mark.parametrize("op", ["put_many", "get_many"])
def test_many_after_close_raises_valueerror(ours, op):
    q = ours.Queue()
    q.close()
    with pytest.raises(ValueError) as ei:
        if op == "put_many":
            q.put_many([1, 2])
        else:
            q.get_many(3, timeout=1)
    assert str(ei.value) == f"Queue {q!r} is closed"


def test_joinable_put_many_counts_tasks(ours):
    q = ours.JoinableQueue()
    q.put_many(["a", "b", "c"])
    t = start_thread(q.join)
    got = drain_many(q, 10, 3)
    assert got == ["a", "b", "c"]
    q.task_done()
    q.task_done()
    time.sleep(0.3)
    assert t.is_alive()
    q.task_done()
    t.outcome(10)
    with pytest.raises(ValueError, match=r"task_done\(\) called too many times"):
        q.task_done()


def test_put_many_get_many_across_processes_fifo(ours, procs):
    q = ours.Queue(50)
    p = procs.start(_helpers.producer, q, 0, 3000, True, 25)
    got = drain_many(q, 64, 3000, timeout=30)
    assert got == [(0, s) for s in range(3000)]
    procs.join(p)


@pytest.mark.parametrize("maxsize", [0, 25])
def test_put_many_atomic_contiguous_concurrent_producers(ours, procs, maxsize):
    """Batches from concurrent producer processes never interleave."""
    q = ours.Queue(maxsize)
    nprod, nbatches, bsize = 3, 60, 10
    ps = [
        procs.start(_helpers.batch_producer, q, pid, nbatches, bsize)
        for pid in range(nprod)
    ]
    got = []
    total = nprod * nbatches * bsize
    while len(got) < total:
        got.extend(q.get_many(13, timeout=30))
    for p in ps:
        procs.join(p)
    assert len(got) == total
    for k in range(0, total, bsize):
        batch = got[k : k + bsize]
        pid, b = batch[0][0], batch[0][1]
        assert batch == [(pid, b, i) for i in range(bsize)], f"batch at {k} interleaved"
    for pid in range(nprod):
        bs = [x[1] for x in got if x[0] == pid and x[2] == 0]
        assert bs == list(range(nbatches))
    assert q.qsize() == 0


def test_many_negative_timeout_is_zero(ours):
    """As the stdlib's put/get: a negative timeout means don't wait."""
    q = ours.Queue(2)
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get_many(3, timeout=-1)
    q.put_many([1, 2], timeout=-1)  # room: succeeds
    with pytest.raises(queue.Full):
        q.put_many([3], timeout=-0.5)
    assert time.monotonic() - t0 < SLACK
    assert q.qsize() == 2
    assert drain_many(q, 5, 2) == [1, 2]


@pytest.mark.parametrize("bad", ["x", [1], object()], ids=["str", "list", "object"])
def test_many_wrong_timeout_type_raises_typeerror(ours, bad):
    q = ours.Queue(2)
    with pytest.raises(TypeError):
        q.get_many(3, timeout=bad)
    with pytest.raises(TypeError):
        q.put_many([1], timeout=bad)
    assert q.qsize() == 0
    q.put("x")
    with pytest.raises(TypeError):
        q.get_many(3, timeout=bad)
    assert q.qsize() == 1
