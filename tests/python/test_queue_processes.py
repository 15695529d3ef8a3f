"""Queues shared with child processes: start methods, blocking across
processes, JoinableQueue across processes, many producers/consumers, and
children SIGKILLed in the middle of queue operations.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import random
import time

import pytest

import _helpers
from conftest import start_thread

START_METHODS = ["spawn", "fork", "forkserver"]


# ---------------------------------------------------------------------------
# start methods
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("ctx_style", ["default-ctx", "matching-ctx"])
@pytest.mark.parametrize("method", START_METHODS)
def test_queues_as_process_arguments(impl, procs, method, ctx_style):
    """All three classes travel to a child as Process args/kwargs under each
    start method; default-ctx: created without ctx (ours: MP_SPAWN_CTX,
    stdlib: the spawn context), matching-ctx: created with the child's context."""
    ctx = mp.get_context(method) if ctx_style == "matching-ctx" else None
    q = impl.Queue(ctx=ctx)
    jq = impl.JoinableQueue(ctx=ctx)
    sq = impl.SimpleQueue(ctx=ctx)
    p = procs.start(
        _helpers.roundtrip_child, q, jq, method=method, kwargs={"sq": sq, "tag": method}
    )
    q.put(41)
    assert sq.get() == ("sq", 41, method)
    assert jq.get(timeout=30) == ("jq", 41, method)
    time.sleep(0.05)
    jq.task_done()  # releases the child's jq.join()
    assert q.get(timeout=30) == ("done", 41, method)
    procs.join(p)


def test_with_mpservice_spawn_context_process(ours, procs):
    """The processes of our own context (MP_SPAWN_CTX.Process) pass our queues too."""
    q_in, q_out = ours.Queue(), ours.Queue()
    p = procs.start(_helpers.echo_worker, q_in, q_out, process_class=ours.m.MP_SPAWN_CTX.Process)
    for i in range(20):
        q_in.put(("x", i))
    q_in.put(None)
    assert [q_out.get(timeout=30) for _ in range(20)] == [("x", i) for i in range(20)]
    p.join(30)
    assert not p.is_alive() and p.exitcode == 0


def test_fifo_across_processes(impl, procs):
    q = impl.Queue()
    items = [("i", i, "p" * (i % 50)) for i in range(3000)]
    p = procs.start(_helpers.put_items, q, items)
    got = [q.get(timeout=30) for _ in items]
    assert got == items
    procs.join(p)


def test_fork_while_parent_thread_blocked_in_get(impl, procs):
    """Fork a child while a parent thread is blocked in get(): both sides
    keep working (the child's copy of the queue state is usable)."""
    q = impl.Queue(ctx=mp.get_context("fork"))
    back = impl.Queue(ctx=mp.get_context("fork"))
    waiter = start_thread(q.get, timeout=60)
    time.sleep(0.3)  # the thread is blocked in get
    p = procs.start(_helpers.put_items, q, ["from child"], method="fork")
    assert waiter.outcome(30) == "from child"
    procs.join(p)
    p2 = procs.start(_helpers.drain_and_report, q, 2, back, method="fork")
    q.put("a")
    q.put("b")
    assert back.get(timeout=30) == ["a", "b"]
    procs.join(p2)


def test_queue_passed_on_to_grandchild(impl, procs):
    q = impl.Queue()
    p = procs.start(_helpers.spawn_grandchild_put, q, "from grandchild", daemon=False)
    assert q.get(timeout=60) == "from grandchild"
    procs.join(p, timeout=60)


def test_parent_drops_its_reference_child_keeps_using(ours, procs):
    """The parent drops (and garbage-collects) its queue right after start():
    the child still receives it intact. (The stdlib fails here under spawn:
    the child rebuilds the queue's named semaphores after the parent's
    finalizer unlinked them -> FileNotFoundError in the child.)"""
    import gc

    q = ours.Queue()
    out = ours.Queue()
    for i in range(5):
        q.put(i)
    p = procs.start(_helpers.drain_and_report, q, 5, out)
    ours._made.remove(q)
    del q
    gc.collect()
    assert out.get(timeout=30) == [0, 1, 2, 3, 4]
    procs.join(p)


def test_child_closing_its_handle_does_not_close_parents(impl, procs):
    q = impl.Queue()
    p = procs.start(_helpers.put_then_close, q, [1, 2, 3])
    procs.join(p)
    assert [q.get(timeout=10) for _ in range(3)] == [1, 2, 3]
    q.put(4)
    assert q.get(timeout=10) == 4


def test_qsize_exact_after_child_puts(impl, procs):
    q = impl.Queue(10)
    out = impl.Queue()
    p = procs.start(_helpers.put_items_then_report, q, list(range(5)), out)
    assert out.get(timeout=30) == ("qsize_in_child", 5)
    procs.join(p)
    assert q.qsize() == 5
    assert not q.full()
    assert [q.get(timeout=10) for _ in range(2)] == [0, 1]
    assert q.qsize() == 3


# ---------------------------------------------------------------------------
# blocking across processes
# ---------------------------------------------------------------------------


def test_put_blocks_on_full_until_other_process_gets(impl, procs):
    q = impl.Queue(2)
    out = impl.Queue()
    q.put(0)
    q.put(1)
    assert q.full()
    p = procs.start(_helpers.sleepy_get, q, 0.5, out)
    t0 = time.monotonic()
    q.put(2)  # blocks until the child took one
    dt = time.monotonic() - t0
    assert dt >= 0.4, f"put returned after {dt:.3f}s, before the child's get"
    assert out.get(timeout=30) == 0
    procs.join(p)
    assert q.get(timeout=10) == 1
    assert q.get(timeout=10) == 2


def test_get_blocks_until_other_process_puts(impl, procs):
    q = impl.Queue()
    p = procs.start(_helpers.sleepy_put, q, 0.3, "hello")
    t0 = time.monotonic()
    assert q.get() == "hello"
    assert time.monotonic() - t0 >= 0.25
    procs.join(p)


def test_get_timeout_in_child(impl, procs):
    q = impl.Queue()
    out = impl.Queue()
    p = procs.start(_helpers.get_with_timeout_report, q, 0.3, out)
    status, item, dt = out.get(timeout=30)
    assert status == "Empty" and item is None
    assert 0.25 <= dt < 5
    procs.join(p)


def test_simplequeue_across_processes(impl, procs):
    q_in, q_out = impl.SimpleQueue(), impl.SimpleQueue()
    p = procs.start(_helpers.echo_worker, q_in, q_out)
    for i in range(200):
        q_in.put(i)
    got = [q_out.get() for _ in range(200)]
    q_in.put(None)
    assert got == list(range(200))
    procs.join(p)


# ---------------------------------------------------------------------------
# JoinableQueue across processes
# ---------------------------------------------------------------------------


def test_joinable_join_across_processes(impl, procs):
    jq = impl.JoinableQueue()
    nworkers = 2
    for i in range(60):
        jq.put(i)
    for _ in range(nworkers):
        jq.put(None)
    waiter = start_thread(jq.join)
    time.sleep(0.3)
    assert waiter.is_alive()  # nobody called task_done yet
    ps = [procs.start(_helpers.joinable_worker, jq) for _ in range(nworkers)]
    waiter.outcome(60)
    for p in ps:
        procs.join(p)
    with pytest.raises(ValueError) as ei:
        jq.task_done()
    assert str(ei.value) == "task_done() called too many times"


def test_joinable_several_joiners_in_processes(impl, procs):
    ctx = mp.get_context("spawn")
    jq = impl.JoinableQueue()
    out = impl.Queue()
    jq.put("task")
    readies = [ctx.Event() for _ in range(2)]
    ps = [procs.start(_helpers.join_and_report, jq, out, r) for r in readies]
    for r in readies:
        assert r.wait(30)
    time.sleep(0.3)
    with pytest.raises(queue.Empty):
        out.get(timeout=0.1)  # nobody returned from join() yet
    assert jq.get(timeout=5) == "task"
    jq.task_done()
    assert [out.get(timeout=30) for _ in ps] == ["joined", "joined"]
    for p in ps:
        procs.join(p)


def test_task_done_too_many_in_child(impl, procs):
    jq = impl.JoinableQueue()
    out = impl.Queue()
    jq.put("only")
    p = procs.start(_helpers.task_done_too_many, jq, out)
    assert out.get(timeout=30) == ("ValueError", "task_done() called too many times", "only")
    procs.join(p)
    jq.join()  # nothing unfinished


# ---------------------------------------------------------------------------
# many producers and consumers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("maxsize", [0, 8])
def test_multiple_producers_consumers(impl, procs, maxsize):
    q = impl.Queue(maxsize)
    out = impl.Queue()
    nprod, ncons, n = 3, 2, 400
    cons = [procs.start(_helpers.consumer, q, out) for _ in range(ncons)]
    prods = [procs.start(_helpers.producer, q, pid, n) for pid in range(nprod)]
    for p in prods:
        procs.join(p, timeout=60)
    for _ in range(ncons):
        q.put(None)
    results = [out.get(timeout=60) for _ in range(ncons)]
    for p in cons:
        procs.join(p, timeout=60)
    allgot = [tuple(x) for r in results for x in r]
    assert len(allgot) == nprod * n, "lost or duplicated items"
    assert sorted(allgot) == [(p, s) for p in range(nprod) for s in range(n)]
    for r in results:  # each producer's items stay in order within a consumer
        for pid in range(nprod):
            seq = [s for (pp, s) in r if pp == pid]
            assert seq == sorted(seq)
    assert q.qsize() == 0


def test_multiple_producers_consumers_many(ours, procs):
    q = ours.Queue(20)
    out = ours.Queue()
    nprod, ncons, n = 3, 2, 600
    cons = [procs.start(_helpers.consumer, q, out, True) for _ in range(ncons)]
    prods = [procs.start(_helpers.producer, q, pid, n, True, 9) for pid in range(nprod)]
    for p in prods:
        procs.join(p, timeout=60)
    q.put_many([None] * ncons)
    results = [out.get(timeout=60) for _ in range(ncons)]
    for p in cons:
        procs.join(p, timeout=60)
    allgot = [tuple(x) for r in results for x in r]
    assert len(allgot) == nprod * n
    assert sorted(allgot) == [(p, s) for p in range(nprod) for s in range(n)]


# ---------------------------------------------------------------------------
# exit does not wait on undelivered data
# ---------------------------------------------------------------------------


def test_child_exit_does_not_wait_for_reader(ours, procs):
    """better: a child that put 16 MiB and 1000 items and nobody read them
    yet exits at once (the stdlib child would block in its feeder thread);
    the data is then still there for the parent."""
    q = ours.Queue()
    big = 16 * 1024 * 1024
    p = procs.start(_helpers.put_lots_then_exit, q, big, 1000)
    procs.join(p, timeout=30)
    assert q.qsize() == 1001
    assert q.get(timeout=10) == b"B" * big
    assert [q.get(timeout=10) for _ in range(1000)] == list(range(1000))
    assert q.empty()


# ---------------------------------------------------------------------------
# children SIGKILLed while blocked or busy
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["get", "get_many", "put", "put_many", "simple_get", "join"])
def test_sigkill_while_blocked_leaves_queue_usable(ours, procs, op):
    """better (the stdlib's get holds a lock while blocked in the pipe read:
    killing that process breaks the queue for everybody)."""
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    if op == "simple_get":
        q = ours.SimpleQueue()
    elif op == "join":
        q = ours.JoinableQueue()
        q.put("task")
    else:
        q = ours.Queue(2)
        if op in ("put", "put_many"):
            q.put("a")
            q.put("b")
    p = procs.start(_helpers.block_in, q, op, ready)
    assert ready.wait(30)
    time.sleep(0.3)  # let it block
    assert p.is_alive()
    procs.kill(p)

    if op == "simple_get":
        q.put(1)
        q.put(2)
        assert q.get() == 1
        assert q.get() == 2
        assert q.empty()
        return
    if op == "join":
        assert q.get(timeout=5) == "task"
        q.task_done()
        start_thread(q.join).outcome(10)
        return
    if op in ("put", "put_many"):
        # the killed put never completed: exactly the two earlier items
        assert q.qsize() == 2
        assert q.get(timeout=5) == "a"
        assert q.get(timeout=5) == "b"
        with pytest.raises(queue.Empty):
            q.get(timeout=0.2)
    assert q.qsize() == 0 and q.empty()
    q.put("x")
    q.put("y")
    assert q.full()
    assert q.get(timeout=5) == "x"
    assert q.get_many(5, timeout=5) == ["y"]
    # a new process can still use it
    out = ours.Queue()
    p2 = procs.start(_helpers.get_n, q, 2, out)
    q.put_many([1, 2])
    assert out.get(timeout=30) == [1, 2]
    procs.join(p2)


def test_sigkill_one_waiter_other_waiter_still_woken(ours, procs):
    """A getter is SIGKILLed while another process is also blocked in get:
    the next put still wakes the live one."""
    ctx = mp.get_context("spawn")
    q, out = ours.Queue(), ours.Queue()
    r1, r2 = ctx.Event(), ctx.Event()
    victim = procs.start(_helpers.block_in, q, "get", r1)
    survivor = procs.start(_helpers.get_and_report, q, out, r2)
    assert r1.wait(30) and r2.wait(30)
    time.sleep(0.3)
    procs.kill(victim)
    q.put("wake")
    assert out.get(timeout=30) == ("got", "wake")
    procs.join(survivor)
    assert q.empty()


@pytest.mark.parametrize("use_many", [False, True], ids=["put", "put_many"])
def test_sigkill_producer_mid_put_no_partial_item(ours, procs, use_many):
    """Kill a producer of 512 KiB items at arbitrary points; what the queue
    holds afterwards is a contiguous run of intact items and it stays usable."""
    size = 512 * 1024
    rng = random.Random(1234)
    q = ours.Queue(4)
    next_i = 0
    for round_ in range(3):
        p = procs.start(_helpers.bulk_producer, q, next_i, 100_000, size, use_many)
        k = rng.randint(3, 25)
        for _ in range(k):
            i, data = q.get(timeout=30)
            assert i == next_i and _helpers.check_pattern(i, data, size)
            next_i += 1
        if round_ % 2:
            time.sleep(rng.random() * 0.02)
        procs.kill(p)
        while True:
            try:
                i, data = q.get(timeout=0.25)
            except queue.Empty:
                break
            assert i == next_i, f"round {round_}: expected item {next_i}, got {i}"
            assert _helpers.check_pattern(i, data, size), f"item {i} corrupted"
            next_i += 1
        assert q.qsize() == 0 and q.empty()
        if use_many:  # items come in put_many pairs: an odd count = a split batch
            assert next_i % 2 == 0, f"round {round_}: a put_many pair was split"
    q.put("still works")
    assert q.get(timeout=5) == "still works"


def test_sigkill_consumer_mid_get_no_partial_item(ours, procs):
    size = 512 * 1024
    q = ours.Queue(3)
    rng = random.Random(99)
    i = 0
    for round_ in range(3):
        p = procs.start(_helpers.bulk_consumer, q, size)
        k = rng.randint(3, 30)
        for _ in range(k):
            q.put((i, _helpers.pattern(i, size)), timeout=30)
            i += 1
        procs.kill(p)
        # what is left is the tail of what was put, intact
        left = []
        while True:
            try:
                left.append(q.get(timeout=0.2))
            except queue.Empty:
                break
        idx = [x[0] for x in left]
        assert idx == list(range(i - len(left), i)), f"round {round_}: {idx}"
        for j, data in left:
            assert _helpers.check_pattern(j, data, size), f"item {j} corrupted"
        assert q.qsize() == 0
    q.put_many(["a", "b", "c"])
    assert [q.get(timeout=5) for _ in range(3)] == ["a", "b", "c"]


def test_sigkill_does_not_affect_other_queues_process(ours, procs):
    """A SIGKILLed producer's death does not disturb a concurrent producer."""
    q = ours.Queue(10)
    good = procs.start(_helpers.producer, q, 1, 500)
    bad = procs.start(_helpers.bulk_producer, q, 0, 100_000, 1024)
    got_good = []
    deadline = time.monotonic() + 60
    killed = False
    while len(got_good) < 500 and time.monotonic() < deadline:
        x = q.get(timeout=30)
        if isinstance(x[1], int):  # the good producer's (1, seq)
            got_good.append(x[1])
        if not killed and len(got_good) >= 50:
            procs.kill(bad)
            killed = True
    assert killed
    assert got_good == list(range(500))
    procs.join(good)
