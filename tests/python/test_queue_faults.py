"""Deterministic "killed in the middle of an operation" tests, driven by
libmpx's test-only fault-injection hook (``mpservice._mpx._fault_arm``, see
docs/queue.md "Crash consistency"): a child arms a named point, runs one
queue operation and SIGKILLs itself there; the parent then checks the queue's
contents, size, lock and sleepers.
"""

from __future__ import annotations

import queue
import signal
import time

import pytest

import _helpers
from conftest import start_thread

MiB = 1024 * 1024


@pytest.fixture
def faulty(ours):
    from mpservice import _mpx

    if not hasattr(_mpx, "_fault_arm"):
        pytest.skip("mpservice._mpx._fault_arm (test-only fault hook) not available")
    return ours


def run_to_death(procs, q, point, op, payload=None):
    p = procs.start(_helpers.fault_op, q, point, op, payload)
    p.join(60)
    if p.is_alive():
        p.kill()
        p.join(5)
        pytest.fail(f"child did not die at {point} within 60s")
    assert p.exitcode != 5, f"fault point {point} was never reached by {op}"
    assert p.exitcode == -signal.SIGKILL, f"child exit code {p.exitcode}"


def big(i):
    return _helpers.pattern(i, MiB)  # 1 MiB: larger than the initial ring


def assert_usable(q):
    q.put("probe1", timeout=5)
    assert q.get(timeout=5) == "probe1"
    q.put_many(["probe2", "probe3"], timeout=5)
    got = []
    while len(got) < 2:
        got += q.get_many(5, timeout=5)
    assert got == ["probe2", "probe3"]
    assert q.qsize() == 0 and q.empty()


PUT_POINTS = [
    ("queue.put.locked", False),
    ("queue.put.grown", False),
    ("queue.put.copied", False),
    ("queue.put.staged", False),
    ("queue.put.committed", True),
]


@pytest.mark.parametrize("op", ["put", "put_many"])
@pytest.mark.parametrize("point,committed", PUT_POINTS, ids=[p for p, _ in PUT_POINTS])
def test_killed_in_put(faulty, procs, point, committed, op):
    q = faulty.Queue()
    q.put("a")
    payload = big(1) if op == "put" else [big(1), big(2)]
    run_to_death(procs, q, point, op, payload)
    expected = ["a"]
    if committed:
        expected += [payload] if op == "put" else payload
    assert q.qsize() == len(expected)
    got = [q.get(timeout=5) for _ in expected]
    assert got == expected  # whole messages only, in order
    with pytest.raises(queue.Empty):
        q.get(timeout=0.1)
    assert_usable(q)


GET_POINTS = [
    ("queue.get.locked", False),
    ("queue.get.copied", False),
    ("queue.get.staged", False),
    ("queue.get.committed", True),
]


@pytest.mark.parametrize("op", ["get", "get_many"])
@pytest.mark.parametrize("point,committed", GET_POINTS, ids=[p for p, _ in GET_POINTS])
def test_killed_in_get(faulty, procs, point, committed, op):
    q = faulty.Queue()
    items = [big(7), "b", "c"]
    q.put_many(items)
    run_to_death(procs, q, point, op)
    left = []
    while True:
        try:
            left.append(q.get(timeout=0.1))
        except queue.Empty:
            break
    if not committed:
        assert left == items, "an uncommitted get removed or damaged a message"
    elif op == "get":
        assert left == items[1:], "a committed get did not remove exactly one message"
    else:
        assert left in (items[1:], items[2:], []), left
    assert_usable(q)


@pytest.mark.parametrize("point", ["queue.put.copied", "queue.put.committed"])
def test_killed_in_put_bounded_full_afterwards(faulty, procs, point):
    """Slots of a bounded queue are not leaked by a killed put."""
    q = faulty.Queue(2)
    q.put("a")
    run_to_death(procs, q, point, "put", big(3))
    if point == "queue.put.committed":
        assert q.full() and q.qsize() == 2
        assert q.get(timeout=5) == "a"
        assert q.get(timeout=5) == big(3)
    else:
        assert q.qsize() == 1 and not q.full()
        q.put_nowait("b")
        assert q.full()
        assert q.get(timeout=5) == "a"
        assert q.get(timeout=5) == "b"
    assert_usable(q)


@pytest.mark.parametrize("point,op", [("queue.put.copied", "simple_put"), ("queue.get.copied", "simple_get")])
def test_killed_in_simplequeue(faulty, procs, point, op):
    q = faulty.SimpleQueue()
    if op == "simple_get":
        q.put(big(4))
    run_to_death(procs, q, point, op, big(5))
    if op == "simple_get":
        assert q.get() == big(4)
    assert q.empty()
    q.put("ok")
    assert q.get() == "ok"


def test_killed_in_task_done(faulty, procs):
    jq = faulty.JoinableQueue()
    jq.put("task")
    run_to_death(procs, jq, "queue.task_done.staged", "task_done")
    assert jq.qsize() == 0
    waiter = start_thread(jq.join)
    time.sleep(0.3)
    assert waiter.is_alive(), "the killed task_done counted"
    jq.task_done()
    waiter.outcome(10)
    with pytest.raises(ValueError, match=r"task_done\(\) called too many times"):
        jq.task_done()


def test_killed_while_flagging_itself_as_waiter(faulty, procs):
    q = faulty.Queue()
    run_to_death(procs, q, "queue.wait.flagged", "wait")
    waiter = start_thread(q.get, timeout=30)
    time.sleep(0.2)
    q.put("x")
    assert waiter.outcome(10) == "x"
    assert_usable(q)


@pytest.mark.parametrize("point", ["queue.put.committed", "queue.put.staged"])
def test_sleeping_getter_not_stranded_by_killed_putter(faulty, procs, point):
    """A getter asleep in get() (no timeout) while a putter dies at the
    point: committed -> the sleeper receives the message without anybody
    else touching the queue; staged -> the sleeper keeps waiting and gets
    the next message."""
    q = faulty.Queue()
    waiter = start_thread(q.get)
    time.sleep(0.3)  # asleep
    run_to_death(procs, q, point, "put", "payload")
    if point == "queue.put.committed":
        assert waiter.outcome(15) == "payload"
    else:
        time.sleep(0.3)
        assert waiter.is_alive()
        q.put("next")
        assert waiter.outcome(15) == "next"
    assert_usable(q)
