"""Queue / JoinableQueue / SimpleQueue: class surface and single-process behaviour.

Tests taking the ``impl`` fixture run against both the stdlib
(``multiprocessing.get_context('spawn').Queue`` ...) and ours, and assert
the same results, exception types and messages: they document the stdlib
behaviour we mirror. Tests taking ``ours`` cover our additions and the
places where we deliberately do better than the stdlib.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.queues as mq
import pickle
import queue
import threading
import time
import typing
from multiprocessing.reduction import ForkingPickler

import pytest

import _helpers
from _helpers import Point
from conftest import call_in_thread, outcome_of, start_thread

# generous bounds: the machine is a noisy 2-core VM
SLACK = 3.0

# ---------------------------------------------------------------------------
# class surface
# ---------------------------------------------------------------------------


def test_exports(ours):
    m = ours.m
    for name in ("Queue", "JoinableQueue", "SimpleQueue", "MP_SPAWN_CTX"):
        assert name in m.__all__
        assert hasattr(m, name)
    import mpservice.multiprocessing.queues as oq

    assert oq.Queue is m.Queue
    assert oq.JoinableQueue is m.JoinableQueue
    assert oq.SimpleQueue is m.SimpleQueue


def test_subclasses_of_stdlib(ours):
    Q, JQ, SQ = ours.classes
    assert issubclass(Q, mq.Queue)
    assert issubclass(JQ, mq.JoinableQueue)
    assert issubclass(JQ, mq.Queue)
    assert issubclass(SQ, mq.SimpleQueue)
    q, jq, sq = ours.Queue(), ours.JoinableQueue(), ours.SimpleQueue()
    assert isinstance(q, mq.Queue) and not isinstance(q, mq.JoinableQueue)
    assert isinstance(jq, mq.JoinableQueue) and isinstance(jq, mq.Queue)
    assert isinstance(sq, mq.SimpleQueue) and not isinstance(sq, mq.Queue)
    assert isinstance(q, Q) and isinstance(jq, JQ) and isinstance(sq, SQ)


@pytest.mark.parametrize("which", ["Queue", "JoinableQueue", "SimpleQueue"])
def test_generic_subscription(ours, which):
    cls = getattr(ours.m, which)
    assert issubclass(cls, typing.Generic)
    assert len(cls.__parameters__) == 1
    alias = cls[int]
    assert typing.get_origin(alias) is cls
    assert typing.get_args(alias) == (int,)
    # usable in annotations and callable like the class
    q: cls[int] = alias()
    ours._track(q)
    assert type(q) is cls
    q.put(5)
    assert q.get() == 5
    # nested parameters
    assert typing.get_args(cls[tuple[int, str]]) == (tuple[int, str],)


def test_ctx_is_keyword_only(ours):
    m = ours.m
    with pytest.raises(TypeError):
        m.Queue(1, m.MP_SPAWN_CTX)
    with pytest.raises(TypeError):
        m.JoinableQueue(1, m.MP_SPAWN_CTX)
    with pytest.raises(TypeError):
        m.SimpleQueue(m.MP_SPAWN_CTX)


@pytest.mark.parametrize("ctxname", [None, "MP_SPAWN_CTX", "spawn", "fork", "forkserver"])
def test_ctx_argument_accepted(ours, ctxname):
    if ctxname is None:
        ctx = None
    elif ctxname == "MP_SPAWN_CTX":
        ctx = ours.m.MP_SPAWN_CTX
    else:
        ctx = mp.get_context(ctxname)
    q = ours.Queue(3, ctx=ctx)
    jq = ours.JoinableQueue(3, ctx=ctx)
    sq = ours.SimpleQueue(ctx=ctx)
    q.put(1)
    jq.put(2)
    sq.put(3)
    assert (q.get(timeout=5), jq.get(timeout=5), sq.get()) == (1, 2, 3)
    jq.task_done()
    assert q.maxsize == 3 and jq.maxsize == 3


def test_maxsize_property(ours):
    assert ours.Queue().maxsize == 0
    assert ours.Queue(0).maxsize == 0
    assert ours.Queue(5).maxsize == 5
    assert ours.Queue(maxsize=7).maxsize == 7
    assert ours.JoinableQueue().maxsize == 0
    assert ours.JoinableQueue(3).maxsize == 3
    assert ours.Queue(10**6).maxsize == 10**6


def test_negative_maxsize_is_unbounded(impl):
    """stdlib: maxsize <= 0 means unbounded; ours reports maxsize 0."""
    q = impl.Queue(-1)
    for i in range(200):
        q.put_nowait(i)
    assert q.qsize() == 200
    assert not q.full()
    if impl.ours:
        assert q.maxsize == 0
    for i in range(200):
        assert q.get(timeout=5) == i


# ---------------------------------------------------------------------------
# basic put/get
# ---------------------------------------------------------------------------


VALUES = [
    None,
    0,
    -1,
    2**100,
    3.5,
    float("inf"),
    "text",
    "ünïcødé",
    b"",
    b"bytes",
    bytearray(b"ba"),
    (1, (2, 3)),
    [1, [2, [3]]],
    {"a": 1, 2: [b"x"]},
    {1, 2, 3},
    frozenset({4}),
    Point(1, "two"),
    ValueError("boom"),
    "x" * 100_000,
]


def test_roundtrip_values(impl):
    q = impl.Queue()
    for v in VALUES:
        q.put(v)
    for v in VALUES:
        got = q.get(timeout=10)
        if isinstance(v, Exception):
            assert type(got) is type(v) and got.args == v.args
        else:
            assert got == v and type(got) is type(v)


@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue", "SimpleQueue"])
def test_fifo_order(impl, kind):
    q = getattr(impl, kind)()
    # the stdlib SimpleQueue writes into a 64 KiB pipe from put(): stay below
    n = 1000 if kind == "SimpleQueue" else 2000
    for i in range(n):
        q.put(("item", i))
    got = [q.get() for _ in range(n)]
    assert got == [("item", i) for i in range(n)]
    if kind == "JoinableQueue":
        for _ in range(n):
            q.task_done()


def test_put_get_positional_block_timeout(impl):
    q = impl.Queue(2)
    q.put(1, True, 1.0)
    q.put(2, False)
    with pytest.raises(queue.Full):
        q.put(3, False)
    with pytest.raises(queue.Full):
        q.put(3, True, 0.05)
    assert q.get(True, 5.0) == 1
    impl.settle()
    assert q.get(False) == 2
    with pytest.raises(queue.Empty):
        q.get(False)
    with pytest.raises(queue.Empty):
        q.get(True, 0.05)


def test_nowait(impl):
    q = impl.Queue(2)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.put_nowait("a")
    q.put_nowait("b")
    with pytest.raises(queue.Full):
        q.put_nowait("c")
    impl.settle()
    assert q.get_nowait() == "a"
    q.put_nowait("c")
    impl.settle()
    assert q.get_nowait() == "b"
    assert q.get_nowait() == "c"
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_exceptions_are_the_queue_modules(impl):
    q = impl.Queue(1)
    q.put(0)
    with pytest.raises(queue.Full) as ei:
        q.put_nowait(1)
    assert type(ei.value) is queue.Full and str(ei.value) == ""
    q.get()
    with pytest.raises(queue.Empty) as ei:
        q.get_nowait()
    assert type(ei.value) is queue.Empty and str(ei.value) == ""


def test_qsize_full_empty_with_maxsize(impl):
    q = impl.Queue(3)
    assert q.qsize() == 0 and q.empty() and not q.full()
    q.put(1)
    assert q.qsize() == 1 and not q.full()
    q.put(2)
    q.put(3)
    assert q.qsize() == 3 and q.full()
    impl.settle()
    assert not q.empty()
    assert q.get(timeout=5) == 1
    assert q.qsize() == 2 and not q.full()
    assert q.get(timeout=5) == 2
    assert q.get(timeout=5) == 3
    assert q.qsize() == 0 and q.empty() and not q.full()


def test_qsize_unbounded(impl):
    q = impl.Queue()
    for i in range(500):
        q.put(i)
    assert q.qsize() == 500
    assert not q.full()
    for i in range(200):
        q.get(timeout=5)
    assert q.qsize() == 300
    for i in range(300):
        q.get(timeout=5)
    assert q.qsize() == 0


def test_simplequeue_basic(impl):
    q = impl.SimpleQueue()
    assert q.empty()
    q.put(1)
    q.put("two")
    impl.settle(0.05)
    assert not q.empty()
    assert q.get() == 1
    assert q.get() == "two"
    assert q.empty()
    for name in ("put", "get", "empty", "close"):
        assert callable(getattr(q, name))


def test_simplequeue_get_blocks_until_put(impl):
    q = impl.SimpleQueue()
    t = start_thread(q.get)
    time.sleep(0.3)
    assert t.is_alive()
    q.put("x")
    assert t.outcome(10) == "x"


# ---------------------------------------------------------------------------
# timeouts
# ---------------------------------------------------------------------------


def test_get_timeout_elapsed(impl):
    q = impl.Queue()
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.3)
    dt = time.monotonic() - t0
    assert 0.25 <= dt < 0.3 + SLACK


def test_put_timeout_elapsed(impl):
    q = impl.Queue(1)
    q.put(0)
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(1, timeout=0.3)
    dt = time.monotonic() - t0
    assert 0.25 <= dt < 0.3 + SLACK
    assert q.qsize() == 1


def test_timeout_zero(impl):
    q = impl.Queue(1)
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0)
    q.put(1)
    with pytest.raises(queue.Full):
        q.put(2, timeout=0)
    assert time.monotonic() - t0 < SLACK
    impl.settle()
    assert q.get(timeout=0) == 1


def test_get_with_timeout_returns_when_item_arrives(impl):
    q = impl.Queue()
    t = start_thread(lambda: (time.sleep(0.2), q.put("late")))
    t0 = time.monotonic()
    assert q.get(timeout=20) == "late"
    assert time.monotonic() - t0 < 20
    t.outcome(10)


def test_put_with_timeout_returns_when_room(impl):
    q = impl.Queue(1)
    q.put("first")
    t = start_thread(lambda: (time.sleep(0.2), q.get(timeout=10))[1])
    q.put("second", timeout=20)
    assert t.outcome(10) == "first"
    assert q.get(timeout=5) == "second"


def _timeout_scenarios():
    """(id, setup(impl, kind)->q, action(q)) -- run on both implementations."""

    def empty(i, kind):
        return getattr(i, kind)()

    def unbounded_with_one(i, kind):
        q = getattr(i, kind)()
        q.put("item")
        i.settle()
        return q

    def full(i, kind):
        q = getattr(i, kind)(1)
        q.put("item")
        return q

    return [
        ("get-negative-empty", empty, lambda q: q.get(timeout=-1)),
        ("get-negative-positional-empty", empty, lambda q: q.get(True, -0.5)),
        ("get-negative-nonempty", unbounded_with_one, lambda q: q.get(timeout=-1)),
        ("get-str-empty", empty, lambda q: q.get(timeout="x")),
        ("get-str-nonempty", unbounded_with_one, lambda q: q.get(timeout="1")),
        ("get-noblock-str", empty, lambda q: q.get(False, "x")),
        ("get-list-timeout", empty, lambda q: q.get(timeout=[1])),
        ("put-negative-unbounded", empty, lambda q: q.put(1, timeout=-1)),
        ("put-str-unbounded", empty, lambda q: q.put(1, timeout="x")),
        ("put-negative-full", full, lambda q: q.put(1, timeout=-1)),
        ("put-str-full", full, lambda q: q.put(1, timeout="x")),
        ("put-noblock-negative-full", full, lambda q: q.put(1, False, -1)),
    ]


@pytest.mark.parametrize(
    "setup,action",
    [pytest.param(s, a, id=n) for n, s, a in _timeout_scenarios()],
)
@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue"])
def test_timeout_edge_cases_match_stdlib(stdlib, ours, kind, setup, action):
    """A negative timeout behaves as 0 and a wrong timeout type raises the
    same TypeError as the stdlib. Both implementations run in the same test."""
    results = {}
    for i in (stdlib, ours):
        q = setup(i, kind)
        t0 = time.monotonic()
        r = outcome_of(action, q)
        dt = time.monotonic() - t0
        assert dt < SLACK, f"{i.name}: took {dt:.2f}s"
        results[i.name] = (r, q.qsize())
    assert results["ours"] == results["stdlib"]


# ---------------------------------------------------------------------------
# close / join_thread / cancel_join_thread
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue"])
@pytest.mark.parametrize(
    "op",
    ["put", "get", "put_nowait", "get_nowait", "put-timeout", "get-timeout"],
)
def test_use_after_close_raises_valueerror(impl, kind, op):
    q = getattr(impl, kind)(4)
    q.put("x")
    if kind == "JoinableQueue":
        q.get(timeout=5)
        q.task_done()
    q.close()
    call = {
        "put": lambda: q.put(1),
        "get": lambda: q.get(),
        "put_nowait": lambda: q.put_nowait(1),
        "get_nowait": lambda: q.get_nowait(),
        "put-timeout": lambda: q.put(1, timeout=1),
        "get-timeout": lambda: q.get(timeout=1),
    }[op]
    with pytest.raises(ValueError) as ei:
        call()
    assert str(ei.value) == f"Queue {q!r} is closed"


def test_close_twice_is_fine(impl):
    q = impl.Queue()
    q.close()
    q.close()
    q.join_thread()
    sq = impl.SimpleQueue()
    sq.close()
    sq.close()


@pytest.mark.parametrize("op", ["put", "get", "empty"])
def test_simplequeue_use_after_close_raises_oserror(impl, op):
    q = impl.SimpleQueue()
    q.put("x")
    q.close()
    call = {"put": lambda: q.put(1), "get": q.get, "empty": q.empty}[op]
    with pytest.raises(OSError) as ei:
        call()
    assert str(ei.value) == "handle is closed"


@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue"])
def test_join_thread_before_close_asserts(impl, kind):
    q = getattr(impl, kind)()
    q.put(1)
    with pytest.raises(AssertionError) as ei:
        q.join_thread()
    assert str(ei.value) == f"Queue {q!r} not closed"
    assert q.get(timeout=5) == 1
    if kind == "JoinableQueue":
        q.task_done()


@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue"])
def test_join_thread_after_close_returns(impl, kind):
    q = getattr(impl, kind)()
    for i in range(10):
        q.put(i)
    assert q.get(timeout=5) == 0
    q.close()
    assert call_in_thread(q.join_thread, timeout=10) is None


@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue"])
def test_cancel_join_thread(impl, kind):
    q = getattr(impl, kind)()
    assert q.cancel_join_thread() is None
    q.put(1)
    assert q.get(timeout=5) == 1
    q.close()
    assert q.cancel_join_thread() is None  # also fine after close
    assert call_in_thread(q.join_thread, timeout=10) is None


# ---------------------------------------------------------------------------
# pickling
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue", "SimpleQueue"])
def test_pickling_outside_spawning_raises(impl, kind):
    q = getattr(impl, kind)()
    with pytest.raises(RuntimeError) as ei:
        pickle.dumps(q)
    assert str(ei.value) == (
        f"{kind} objects should only be shared between processes through inheritance"
    )
    with pytest.raises(RuntimeError) as ei:
        ForkingPickler.dumps(q)
    assert "should only be shared between processes through inheritance" in str(ei.value)


def test_queue_inside_queue_raises_in_put(ours):
    """better: put pickles in the caller's thread, so putting a queue into a
    queue raises the stdlib's RuntimeError right there (the stdlib loses it
    in the feeder thread)."""
    q = ours.Queue()
    other = ours.Queue()
    with pytest.raises(RuntimeError) as ei:
        q.put(other)
    assert "should only be shared between processes through inheritance" in str(ei.value)
    assert q.qsize() == 0 and q.empty()


# ---------------------------------------------------------------------------
# unpicklable items
# ---------------------------------------------------------------------------


def _unpicklables():
    class Local:
        pass

    def gen():
        yield 1

    return {
        "lambda": lambda: 1,
        "lock": threading.Lock(),
        "local-class-instance": Local(),
        "generator": gen(),
        "nested-lock": {"ok": [1, 2], "bad": (threading.Lock(),)},
    }


UNPICKLABLE_IDS = list(_unpicklables())


def _expected_pickle_error(obj):
    try:
        ForkingPickler.dumps(obj)
    except Exception as e:  # noqa: BLE001
        return type(e), str(e)
    raise AssertionError("object unexpectedly picklable")


@pytest.mark.parametrize("which", UNPICKLABLE_IDS)
@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue"])
def test_unpicklable_put_raises_in_caller(ours, kind, which):
    """better: the pickling error is raised by put() itself and nothing is
    enqueued (the stdlib raises it in the feeder thread and loses the item)."""
    obj = _unpicklables()[which]
    etype, emsg = _expected_pickle_error(obj)
    q = getattr(ours, kind)(2)
    q.put("before")
    with pytest.raises(Exception) as ei:
        q.put(obj)
    assert type(ei.value) is etype
    assert str(ei.value) == emsg
    assert q.qsize() == 1
    # no slot consumed: the bounded queue still has room for exactly one
    q.put_nowait("after")
    assert q.full()
    assert q.get_nowait() == "before"
    assert q.get_nowait() == "after"
    with pytest.raises(queue.Empty):
        q.get_nowait()
    assert q.qsize() == 0 and q.empty()
    if kind == "JoinableQueue":
        q.task_done()
        q.task_done()
        # the failed put did not count as an unfinished task
        call_in_thread(q.join, timeout=5)
        with pytest.raises(ValueError, match="task_done\\(\\) called too many times"):
            q.task_done()


@pytest.mark.parametrize("which", ["lambda", "lock", "local-class-instance"])
@pytest.mark.parametrize("method", ["put_nowait", "put-timeout"])
def test_unpicklable_put_variants(ours, which, method):
    obj = _unpicklables()[which]
    etype, emsg = _expected_pickle_error(obj)
    q = ours.Queue(1)
    with pytest.raises(etype) as ei:
        if method == "put_nowait":
            q.put_nowait(obj)
        else:
            q.put(obj, timeout=1)
    assert str(ei.value) == emsg
    assert q.qsize() == 0 and q.empty() and not q.full()


@pytest.mark.parametrize("which", UNPICKLABLE_IDS)
def test_simplequeue_unpicklable_put_raises(impl, which):
    """The stdlib SimpleQueue pickles in put() too: same error, nothing sent."""
    obj = _unpicklables()[which]
    etype, emsg = _expected_pickle_error(obj)
    q = impl.SimpleQueue()
    with pytest.raises(Exception) as ei:
        q.put(obj)
    assert type(ei.value) is etype
    assert str(ei.value) == emsg
    impl.settle(0.05)
    assert q.empty()
    q.put("ok")
    assert q.get() == "ok"


def test_unpickling_error_raised_by_get_queue_usable(impl):
    """An item that pickles but cannot be unpickled: get() raises the
    unpickling error, the item is consumed, the queue stays usable."""
    q = impl.Queue()
    q.put(_helpers.BadUnpickle())
    q.put("next")
    with pytest.raises(ValueError, match="cannot rebuild"):
        q.get(timeout=10)
    assert q.get(timeout=10) == "next"
    assert q.qsize() == 0
    q.put("again")
    assert q.get(timeout=10) == "again"


def test_simplequeue_unpickling_error(impl):
    q = impl.SimpleQueue()
    q.put(_helpers.BadUnpickle())
    q.put("next")
    with pytest.raises(ValueError, match="cannot rebuild"):
        q.get()
    assert q.get() == "next"


# ---------------------------------------------------------------------------
# signals that do not raise: blocking calls resume (PEP 475)
# ---------------------------------------------------------------------------


def test_signals_do_not_shorten_get_timeout(impl):
    q = impl.Queue()
    with _helpers.SignalStorm() as storm:
        t0 = time.monotonic()
        with pytest.raises(queue.Empty):
            q.get(timeout=0.6)
        dt = time.monotonic() - t0
    assert storm.count >= 3
    assert 0.55 <= dt < 0.6 + SLACK


def test_signals_do_not_shorten_put_timeout(impl):
    q = impl.Queue(1)
    q.put(0)
    with _helpers.SignalStorm() as storm:
        t0 = time.monotonic()
        with pytest.raises(queue.Full):
            q.put(1, timeout=0.6)
        dt = time.monotonic() - t0
    assert storm.count >= 3
    assert 0.55 <= dt < 0.6 + SLACK
    assert q.qsize() == 1


@pytest.mark.parametrize("op", ["get", "put", "simple_get", "join"])
def test_signals_do_not_break_blocking_calls(impl, op):
    if op == "simple_get":
        q = impl.SimpleQueue()
    elif op == "join":
        q = impl.JoinableQueue()
        q.put("task")
    else:
        q = impl.Queue(1)
    if op == "put":
        q.put("first")

    def later():
        time.sleep(0.5)
        if op in ("get", "simple_get"):
            q.put("late")
        elif op == "put":
            return q.get(timeout=10)
        else:
            q.get(timeout=10)
            q.task_done()

    t = start_thread(later)
    with _helpers.SignalStorm() as storm:
        if op in ("get", "simple_get"):
            assert q.get() == "late"
        elif op == "put":
            q.put("second")
        else:
            q.join()
    assert storm.count >= 3
    r = t.outcome(10)
    if op == "put":
        assert r == "first"
        assert q.get(timeout=5) == "second"


def test_signals_do_not_break_many(ours):
    q = ours.Queue(2)
    t = start_thread(lambda: (time.sleep(0.4), q.put_many([1, 2]))[1])
    with _helpers.SignalStorm() as storm:
        got = q.get_many(5)
        while len(got) < 2:
            got += q.get_many(5, timeout=5)
        assert got == [1, 2]
        q.put_many(["a", "b"])
        t2 = start_thread(lambda: (time.sleep(0.4), q.get_many(2, timeout=5))[1])
        q.put_many(["c"])  # waits for room
    assert storm.count >= 3
    t.outcome(10)
    got2 = t2.outcome(10)
    rest = []
    while len(got2) + len(rest) < 3:
        rest += q.get_many(5, timeout=5)
    assert got2 + rest == ["a", "b", "c"]


# ---------------------------------------------------------------------------
# ours: exact state right after put (no feeder-thread lag)
# ---------------------------------------------------------------------------


def test_no_lag_after_put(ours):
    """better: put is synchronous, so empty()/get_nowait()/get(timeout=0)
    see an item immediately (the stdlib's feeder thread makes them lag)."""
    q = ours.Queue()
    for i in range(200):
        q.put(i)
        assert not q.empty()
        assert q.qsize() == 1
        assert q.get_nowait() == i
        assert q.empty()
        q.put(i)
        assert q.get(timeout=0) == i
    sq = ours.SimpleQueue()
    sq.put(1)
    assert not sq.empty()
    assert sq.get() == 1
    assert sq.empty()


def test_unbounded_put_never_blocks(ours):
    """better: an unbounded queue takes any amount of data with nobody
    reading (64 MiB in small pieces plus one 64 MiB message, in one thread)."""
    q = ours.Queue()
    piece = 64 * 1024
    n = 1024
    big = bytes(range(256)) * (64 * 1024 * 1024 // 256)

    def fill():
        for i in range(n):
            q.put(i.to_bytes(4, "little") * (piece // 4))
        q.put(big)
        q.put("tail")

    call_in_thread(fill, timeout=60)
    assert q.qsize() == n + 2
    for i in range(n):
        assert q.get_nowait() == i.to_bytes(4, "little") * (piece // 4)
    assert q.get_nowait() == big
    assert q.get_nowait() == "tail"
    assert q.empty()


def test_simplequeue_unbounded_put_never_blocks(ours):
    q = ours.SimpleQueue()
    big = b"\x01" * (16 * 1024 * 1024)

    def fill():
        for _ in range(3):
            q.put(big)

    call_in_thread(fill, timeout=60)
    for _ in range(3):
        assert q.get() == big
    assert q.empty()


def test_qsize_exact_many_items(ours):
    q = ours.Queue()
    n = 50_000
    for i in range(n):
        q.put(i)
    assert q.qsize() == n
    for i in range(n):
        assert q.get_nowait() == i
    assert q.qsize() == 0


# ---------------------------------------------------------------------------
# threads in one process
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("maxsize", [0, 5])
def test_threads_multiple_producers_consumers(impl, maxsize):
    q = impl.Queue(maxsize)
    nprod, ncons, n = 4, 3, 400
    results = [[] for _ in range(ncons)]

    def produce(pid):
        for s in range(n):
            q.put((pid, s), timeout=30)

    def consume(k):
        while True:
            x = q.get(timeout=30)
            if x is None:
                return
            results[k].append(x)

    cons = [start_thread(consume, k) for k in range(ncons)]
    prods = [start_thread(produce, p) for p in range(nprod)]
    for t in prods:
        t.outcome(60)
    for _ in cons:
        q.put(None, timeout=30)
    for t in cons:
        t.outcome(60)
    allgot = [x for r in results for x in r]
    assert sorted(allgot) == [(p, s) for p in range(nprod) for s in range(n)]
    for r in results:  # per-producer order preserved within each consumer
        for p in range(nprod):
            seq = [s for (pp, s) in r if pp == p]
            assert seq == sorted(seq)


# ---------------------------------------------------------------------------
# JoinableQueue in one process
# ---------------------------------------------------------------------------


def test_task_done_too_many(impl):
    q = impl.JoinableQueue()
    with pytest.raises(ValueError) as ei:
        q.task_done()
    assert str(ei.value) == "task_done() called too many times"
    q.put(1)
    q.get(timeout=5)
    q.task_done()
    with pytest.raises(ValueError) as ei:
        q.task_done()
    assert str(ei.value) == "task_done() called too many times"


def test_join_returns_immediately_when_no_tasks(impl):
    q = impl.JoinableQueue()
    call_in_thread(q.join, timeout=5)


def test_join_waits_for_task_done(impl):
    q = impl.JoinableQueue()
    q.put("a")
    q.put("b")
    t = start_thread(q.join)
    time.sleep(0.3)
    assert t.is_alive()
    q.get(timeout=5)
    q.task_done()
    time.sleep(0.3)
    assert t.is_alive()  # one unfinished task left
    q.get(timeout=5)
    q.task_done()
    t.outcome(10)


# ---------------------------------------------------------------------------
# resources of dropped queues
# ---------------------------------------------------------------------------


def _nfds():
    import os

    return len(os.listdir("/proc/self/fd"))


def _nmaps():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


@pytest.mark.parametrize("how", ["closed", "dropped"])
def test_no_fd_or_mapping_leak_for_many_queues(impl, how):
    """Creating, using and closing (or just dropping) many queues does not
    accumulate file descriptors or memory mappings."""
    import gc

    def churn(n):
        for i in range(n):
            qs = [impl.Queue(), impl.JoinableQueue(2), impl.SimpleQueue()]
            for q in qs:
                q.put(i)
                assert q.get() == i
            qs[1].task_done()
            if how == "closed":
                for q in qs:
                    q.close()
                qs[0].join_thread()
                qs[1].join_thread()
            impl._made.clear()  # drop our references
            del qs
        gc.collect()

    churn(5)  # warm-up: lazily created process-wide resources
    time.sleep(0.1)
    gc.collect()
    fds, maps = _nfds(), _nmaps()
    churn(60)
    time.sleep(0.3)
    gc.collect()
    assert _nfds() - fds <= 3, f"fds grew from {fds} to {_nfds()}"
    assert _nmaps() - maps <= 10, f"memory mappings grew from {maps} to {_nmaps()}"
