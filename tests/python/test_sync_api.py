"""Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event, Barrier: class
surface and behaviour within one process, in one thread and between threads.

Tests taking the ``sync`` fixture run against both the stdlib
(``multiprocessing.get_context('spawn').Lock`` ...) and ours, and assert the
same results, exception types and messages: they document the stdlib
behaviour we mirror. Tests taking ``osync`` cover ours only: our additions
and the places where we deliberately differ.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.synchronize as msync
import os
import pickle
import re
import threading
import time
from multiprocessing.reduction import ForkingPickler

import pytest

import _helpers
from conftest import (
    TThread,
    call_in_thread,
    outcome_of,
    start_thread,
    try_in_thread,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

# generous bounds: the machine is a noisy 2-core VM
SLACK = 3.0

NAMES = ("Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition", "Event", "Barrier")
LOCKLIKE = ("Lock", "RLock", "Semaphore", "BoundedSemaphore")
INHERITANCE_MSG = "objects should only be shared between processes through inheritance"


def make(sync, name):
    """A default instance of class `name` (Barrier: 2 parties)."""
    if name == "Barrier":
        return sync.Barrier(2)
    return getattr(sync, name)()


class Holder:
    """Acquires `lock` (`times` times) in its own thread and keeps it until release()."""

    def __init__(self, lock, times=1, name=None):
        self.lock = lock
        self._go = threading.Event()
        self._held = threading.Event()
        self.t = TThread(self._run, times)
        if name:
            self.t.name = name
        self.t.start()
        if not self._held.wait(10):
            self.release()  # re-raises the thread's failure
            pytest.fail("holder thread could not acquire")

    def _run(self, times):
        for _ in range(times):
            assert self.lock.acquire(timeout=10)
        self._held.set()
        self._go.wait(30)
        for _ in range(times):
            self.lock.release()

    def release(self):
        self._go.set()
        self.t.outcome(10)


# ---------------------------------------------------------------------------
# class surface
# ---------------------------------------------------------------------------


def test_exports(osync):
    m = osync.m
    import mpservice.multiprocessing.synchronize as s

    for name in NAMES:
        assert hasattr(m, name), name
        assert name in m.__all__, name
        assert getattr(m, name) is getattr(s, name), name
    assert issubclass(s.OwnerDiedError, OSError)


def test_subclasses_of_stdlib(osync):
    for name in NAMES:
        assert issubclass(osync.cls(name), getattr(msync, name)), name
        obj = make(osync, name)
        assert isinstance(obj, getattr(msync, name)), name
        assert type(obj) is osync.cls(name)
    assert isinstance(osync.Barrier(2), threading.Barrier)
    assert isinstance(osync.BoundedSemaphore(), msync.Semaphore)


def test_ctx_is_keyword_only(osync):
    m = osync.m
    ctx = m.MP_SPAWN_CTX
    for call in (
        lambda: m.Lock(ctx),
        lambda: m.RLock(ctx),
        lambda: m.Semaphore(1, ctx),
        lambda: m.BoundedSemaphore(1, ctx),
        lambda: m.Condition(None, ctx),
        lambda: m.Event(ctx),
        lambda: m.Barrier(2, None, None, ctx),
    ):
        with pytest.raises(TypeError):
            call()


@pytest.mark.parametrize("ctxname", [None, "MP_SPAWN_CTX", "spawn", "fork", "forkserver"])
def test_ctx_argument_accepted(osync, ctxname):
    if ctxname is None:
        ctx = None
    elif ctxname == "MP_SPAWN_CTX":
        ctx = osync.m.MP_SPAWN_CTX
    else:
        ctx = mp.get_context(ctxname)
    lock = osync.Lock(ctx=ctx)
    rlock = osync.RLock(ctx=ctx)
    sem = osync.Semaphore(2, ctx=ctx)
    bsem = osync.BoundedSemaphore(2, ctx=ctx)
    cond = osync.Condition(lock, ctx=ctx)
    cond2 = osync.Condition(ctx=ctx)
    event = osync.Event(ctx=ctx)
    barrier = osync.Barrier(1, ctx=ctx)
    assert lock.acquire(False) and not lock.acquire(False)
    lock.release()
    assert rlock.acquire(False) and rlock.acquire(False)
    rlock.release()
    rlock.release()
    assert sem.acquire(False) and sem.get_value() == 1
    with pytest.raises(ValueError):
        bsem.release()
    with cond:
        assert cond.wait(0.01) is False
    with cond2:
        cond2.notify_all()
    event.set()
    assert event.wait(1)
    assert barrier.wait(5) == 0


def test_constructor_keywords(sync):
    assert sync.Semaphore(value=3).get_value() == 3
    assert sync.BoundedSemaphore(value=2).get_value() == 2
    lock = sync.Lock()
    cond = sync.Condition(lock=lock)
    with cond:
        assert not try_in_thread(lock)
    b = sync.Barrier(parties=2, action=None, timeout=0.05)
    assert b.parties == 2
    with pytest.raises(threading.BrokenBarrierError):
        b.wait()


# ---------------------------------------------------------------------------
# acquire / release: Lock, RLock, Semaphore, BoundedSemaphore
# ---------------------------------------------------------------------------


def test_lock_basic(sync):
    lock = sync.Lock()
    assert lock.acquire() is True
    assert lock.acquire(False) is False
    assert lock.acquire(block=False) is False
    assert lock.acquire(True, 0.05) is False
    assert lock.acquire(timeout=0) is False
    assert lock.acquire(block=True, timeout=-1) is False
    assert lock.release() is None
    assert lock.acquire(block=False) is True
    lock.release()
    assert lock.acquire(timeout=-1) is True  # negative timeout = 0: a free lock is taken
    lock.release()
    assert lock.acquire(timeout=0) is True
    lock.release()


def _busy(sync, name):
    """An instance of `name` that cannot be acquired by the main thread now,
    and a function that makes it available again."""
    if name == "Lock":
        obj = sync.Lock()
        obj.acquire()
        return obj, obj.release
    if name == "RLock":
        obj = sync.RLock()
        h = Holder(obj)
        return obj, h.release
    obj = getattr(sync, name)(1)
    obj.acquire()
    return obj, obj.release


@pytest.mark.parametrize("name", LOCKLIKE)
def test_nonblocking_acquire_ignores_timeout(sync, name):
    obj, free = _busy(sync, name)
    try:
        t0 = time.monotonic()
        assert obj.acquire(False, 30) is False
        assert obj.acquire(block=False, timeout=30) is False
        assert obj.acquire(False, None) is False
        assert time.monotonic() - t0 < SLACK
    finally:
        free()


@pytest.mark.parametrize("name", LOCKLIKE)
def test_acquire_timeout_elapses(sync, name):
    obj, free = _busy(sync, name)
    try:
        t0 = time.monotonic()
        assert obj.acquire(timeout=0.3) is False
        dt = time.monotonic() - t0
        assert 0.25 <= dt < 0.3 + SLACK
    finally:
        free()


@pytest.mark.parametrize("timeout", [-5, -0.001, 0])
@pytest.mark.parametrize("name", LOCKLIKE)
def test_negative_or_zero_timeout(sync, name, timeout):
    obj, free = _busy(sync, name)
    t0 = time.monotonic()
    assert obj.acquire(timeout=timeout) is False
    assert obj.acquire(True, timeout) is False
    assert time.monotonic() - t0 < SLACK
    free()
    assert obj.acquire(timeout=timeout) is True
    obj.release()


@pytest.mark.parametrize("name", ["Lock", "RLock", "Semaphore"])
def test_blocked_acquire_woken_by_release(sync, name):
    if name == "Semaphore":
        obj = sync.Semaphore(0)
    else:
        obj = getattr(sync, name)()
        obj.acquire()

    def waiter():
        ok = obj.acquire(timeout=30)
        t = time.monotonic()
        if ok:
            obj.release()
        return ok, t

    t = start_thread(waiter)
    time.sleep(0.3)
    assert t.is_alive()
    t_release = time.monotonic()
    obj.release()
    ok, t_acquired = t.outcome(20)
    assert ok is True
    assert t_acquired >= t_release


def test_lock_release_unlocked_raises(sync):
    lock = sync.Lock()
    with pytest.raises(ValueError) as ei:
        lock.release()
    assert str(ei.value) == "semaphore or lock released too many times"
    lock.acquire()
    lock.release()
    with pytest.raises(ValueError) as ei:
        lock.release()
    assert str(ei.value) == "semaphore or lock released too many times"
    assert lock.acquire(False) is True  # still a working lock
    lock.release()


def test_lock_is_not_recursive(sync):
    lock = sync.Lock()
    lock.acquire()
    assert lock.acquire(timeout=0.1) is False
    lock.release()


def test_lock_released_by_another_thread(sync):
    """A Lock behaves as a binary semaphore: any thread may release it."""
    lock = sync.Lock()
    lock.acquire()
    assert call_in_thread(lock.release, timeout=10) is None
    assert lock.acquire(False) is True
    lock.release()


@pytest.mark.parametrize("name", LOCKLIKE)
def test_context_manager(sync, name):
    obj = getattr(sync, name)()
    with obj as r:
        assert r is True
        assert try_in_thread(obj) is False
    assert try_in_thread(obj) is True
    with pytest.raises(KeyError):
        with obj:
            raise KeyError("inside")
    assert try_in_thread(obj) is True
    if name in ("Semaphore", "BoundedSemaphore"):
        assert obj.get_value() == 1


def test_rlock_recursion(sync):
    r = sync.RLock()
    for _ in range(3):
        assert r.acquire() is True
    assert r.acquire(False) is True
    assert r.acquire(timeout=0) is True
    assert repr(r) == "<RLock(MainProcess, 5)>"
    assert try_in_thread(r) is False
    for _ in range(4):
        r.release()
    assert repr(r) == "<RLock(MainProcess, 1)>"
    assert try_in_thread(r) is False
    r.release()
    assert repr(r) == "<RLock(None, 0)>"
    with pytest.raises(AssertionError) as ei:
        r.release()
    assert str(ei.value) == "attempt to release recursive lock not owned by thread"
    assert try_in_thread(r) is True


def test_rlock_release_by_another_thread_raises(sync):
    r = sync.RLock()
    r.acquire()
    e = call_in_thread(lambda: outcome_of(r.release), timeout=10)
    assert e == ("raise", AssertionError, "attempt to release recursive lock not owned by thread")
    assert repr(r) == "<RLock(MainProcess, 1)>"  # still ours
    r.release()
    assert try_in_thread(r) is True


def test_rlock_ownership_per_thread(sync):
    r = sync.RLock()
    h = Holder(r, times=2)
    try:
        assert r.acquire(timeout=0.1) is False
        with pytest.raises(AssertionError) as ei:
            r.release()
        assert str(ei.value) == "attempt to release recursive lock not owned by thread"
        assert repr(r) == "<RLock(SomeOtherThread, nonzero)>"
    finally:
        h.release()
    assert r.acquire(timeout=10) is True
    assert repr(r) == "<RLock(MainProcess, 1)>"
    r.release()


@pytest.mark.parametrize("name", ["Lock", "RLock", "Semaphore", "BoundedSemaphore"])
def test_mutual_exclusion_threads(sync, name):
    obj = getattr(sync, name)()
    state = {"n": 0, "inside": 0, "overlaps": 0}

    def work():
        for _ in range(60):
            with obj:
                if state["inside"]:
                    state["overlaps"] += 1
                state["inside"] = 1
                x = state["n"]
                time.sleep(0.0002)
                state["n"] = x + 1
                state["inside"] = 0

    ts = [start_thread(work) for _ in range(4)]
    for t in ts:
        t.outcome(30)
    assert state == {"n": 240, "inside": 0, "overlaps": 0}


@pytest.mark.parametrize("bounded", [False, True])
def test_semaphore_limits_concurrency_threads(sync, bounded):
    sem = (sync.BoundedSemaphore if bounded else sync.Semaphore)(2)
    lock = threading.Lock()
    state = {"inside": 0, "max": 0, "entries": 0}

    def work():
        for _ in range(5):
            with sem:
                with lock:
                    state["inside"] += 1
                    state["entries"] += 1
                    state["max"] = max(state["max"], state["inside"])
                time.sleep(0.01)
                with lock:
                    state["inside"] -= 1

    ts = [start_thread(work) for _ in range(5)]
    for t in ts:
        t.outcome(30)
    assert state["entries"] == 25
    assert 1 <= state["max"] <= 2
    assert sem.get_value() == 2


# ---------------------------------------------------------------------------
# Semaphore / BoundedSemaphore
# ---------------------------------------------------------------------------


def test_semaphore_counting(sync):
    s = sync.Semaphore(2)
    assert s.get_value() == 2
    assert s.acquire() and s.acquire()
    assert s.get_value() == 0
    assert s.acquire(False) is False
    assert s.acquire(timeout=0.05) is False
    for _ in range(3):
        assert s.release() is None
    assert s.get_value() == 3  # unbounded: above the initial value
    for _ in range(3):
        assert s.acquire(False) is True
    assert s.acquire(False) is False
    assert sync.Semaphore().get_value() == 1
    z = sync.Semaphore(0)
    assert z.get_value() == 0
    assert z.acquire(timeout=0.05) is False
    z.release()
    assert z.acquire(False) is True


def test_semaphore_release_by_another_thread(sync):
    s = sync.Semaphore(0)
    call_in_thread(s.release, timeout=10)
    assert s.get_value() == 1
    assert s.acquire(False) is True


def test_bounded_semaphore_over_release(sync):
    b = sync.BoundedSemaphore(2)
    with pytest.raises(ValueError) as ei:
        b.release()
    assert str(ei.value) == "semaphore or lock released too many times"
    assert b.get_value() == 2
    assert b.acquire() and b.acquire()
    assert b.acquire(False) is False
    b.release()
    b.release()
    with pytest.raises(ValueError) as ei:
        b.release()
    assert str(ei.value) == "semaphore or lock released too many times"
    assert b.get_value() == 2
    d = sync.BoundedSemaphore()
    assert d.get_value() == 1
    with pytest.raises(ValueError):
        d.release()


def test_bounded_semaphore_zero(sync):
    """BoundedSemaphore(0): never acquirable, and any release exceeds the bound."""
    b = sync.BoundedSemaphore(0)
    assert b.get_value() == 0
    assert b.acquire(False) is False
    with pytest.raises(ValueError) as ei:
        b.release()
    assert str(ei.value) == "semaphore or lock released too many times"
    assert b.get_value() == 0
    assert repr(b) == "<BoundedSemaphore(value=0, maxvalue=0)>"


def test_semaphore_value_must_be_int(sync):
    with pytest.raises(TypeError):
        sync.Semaphore(1.5)
    with pytest.raises(TypeError):
        sync.BoundedSemaphore("2")


def test_semaphore_max_value(sync):
    s = sync.Semaphore(2**31 - 1)
    assert s.get_value() == 2**31 - 1
    assert s.acquire(False) is True
    assert s.get_value() == 2**31 - 2


@pytest.mark.parametrize("name", ["Semaphore", "BoundedSemaphore"])
def test_negative_value_raises_valueerror(osync, name):
    """Deliberate improvement: the stdlib raises OSError(EINVAL) from sem_open."""
    with pytest.raises(ValueError):
        getattr(osync, name)(-1)
    with pytest.raises(ValueError):
        getattr(osync, name)(value=-100)


# ---------------------------------------------------------------------------
# reprs
# ---------------------------------------------------------------------------


def _in_named_thread(fn, name="T1"):
    t = TThread(fn)
    t.name = name
    t.start()
    return t.outcome(10)


def test_lock_repr(sync):
    lock = sync.Lock()
    assert repr(lock) == "<Lock(owner=None)>"
    lock.acquire()
    assert repr(lock) == "<Lock(owner=MainProcess)>"
    lock.release()
    assert repr(lock) == "<Lock(owner=None)>"

    def in_thread():
        lock.acquire()
        return repr(lock)

    assert _in_named_thread(in_thread) == "<Lock(owner=MainProcess|T1)>"
    assert repr(lock) == "<Lock(owner=SomeOtherThread)>"
    lock.release()
    assert repr(lock) == "<Lock(owner=None)>"


def test_rlock_repr(sync):
    r = sync.RLock()
    assert repr(r) == "<RLock(None, 0)>"
    r.acquire()
    r.acquire()
    assert repr(r) == "<RLock(MainProcess, 2)>"
    r.release()
    r.release()
    h = Holder(r, times=3, name="T1")
    try:
        assert repr(r) == "<RLock(SomeOtherThread, nonzero)>"
        assert call_in_thread(lambda: repr(r)) == "<RLock(SomeOtherThread, nonzero)>"
    finally:
        h.release()
    assert repr(r) == "<RLock(None, 0)>"

    def in_thread():
        with r:
            with r:
                return repr(r)

    assert _in_named_thread(in_thread) == "<RLock(MainProcess|T1, 2)>"


def test_semaphore_reprs(sync):
    s = sync.Semaphore(2)
    assert repr(s) == "<Semaphore(value=2)>"
    s.acquire()
    assert repr(s) == "<Semaphore(value=1)>"
    assert repr(sync.Semaphore()) == "<Semaphore(value=1)>"
    b = sync.BoundedSemaphore(2)
    assert repr(b) == "<BoundedSemaphore(value=2, maxvalue=2)>"
    b.acquire()
    assert repr(b) == "<BoundedSemaphore(value=1, maxvalue=2)>"
    assert repr(sync.BoundedSemaphore()) == "<BoundedSemaphore(value=1, maxvalue=1)>"


def test_condition_repr(sync):
    c = sync.Condition()
    assert repr(c) == "<Condition(<RLock(None, 0)>, 0)>"
    with c:
        assert repr(c) == "<Condition(<RLock(MainProcess, 1)>, 0)>"
    c2 = sync.Condition(sync.Lock())
    assert repr(c2) == "<Condition(<Lock(owner=None)>, 0)>"
    with c2:
        assert repr(c2) == "<Condition(<Lock(owner=MainProcess)>, 0)>"


def test_event_repr(sync):
    e = sync.Event()
    assert repr(e) == f"<Event at {id(e):#x} unset>"
    e.set()
    assert repr(e) == f"<Event at {id(e):#x} set>"
    e.clear()
    assert repr(e) == f"<Event at {id(e):#x} unset>"


def test_barrier_repr(sync):
    b = sync.Barrier(3)
    cls = type(b)
    prefix = f"<{cls.__module__}.{cls.__qualname__} at {id(b):#x}:"
    assert repr(b) == f"{prefix} waiters=0/3>"
    t = start_thread(b.wait, 20)
    wait_until(lambda: b.n_waiting == 1, what="one waiter")
    assert repr(b) == f"{prefix} waiters=1/3>"
    b.abort()
    assert repr(b) == f"{prefix} broken>"
    with pytest.raises(threading.BrokenBarrierError):
        t.outcome(10)


# ---------------------------------------------------------------------------
# Condition
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("lockkind", ["default", "Lock", "RLock"])
def test_condition_requires_lock(sync, lockkind):
    c = sync.Condition() if lockkind == "default" else sync.Condition(getattr(sync, lockkind)())
    with pytest.raises(AssertionError) as ei:
        c.wait(0.01)
    assert str(ei.value) == "must acquire() condition before using wait()"
    with pytest.raises(AssertionError) as ei:
        c.wait_for(lambda: False, 0.01)
    assert str(ei.value) == "must acquire() condition before using wait()"
    for call in (c.notify, c.notify_all, lambda: c.notify(3)):
        with pytest.raises(AssertionError) as ei:
            call()
        assert str(ei.value) == "lock is not owned"
    # the lock held by another thread does not count either
    h = Holder(c)
    try:
        with pytest.raises(AssertionError) as ei:
            c.notify()
        assert str(ei.value) == "lock is not owned"
        with pytest.raises(AssertionError):
            c.wait(0.01)
    finally:
        h.release()


@pytest.mark.parametrize("lockkind", ["default", "Lock", "RLock"])
def test_condition_wait_timeout(sync, lockkind):
    lock = None if lockkind == "default" else getattr(sync, lockkind)()
    c = sync.Condition(lock)
    with c:
        t0 = time.monotonic()
        assert c.wait(0.2) is False
        dt = time.monotonic() - t0
        assert 0.15 <= dt < 0.2 + SLACK
        assert try_in_thread(c) is False  # the lock is held again
        t0 = time.monotonic()
        assert c.wait(0) is False
        assert c.wait(-1) is False
        assert time.monotonic() - t0 < SLACK
        assert c.wait_for(lambda: 0, timeout=0.1) == 0
        assert c.wait_for(lambda: 7) == 7
        assert c.wait_for(lambda: "x", timeout=0) == "x"
    assert try_in_thread(c) is True


def test_condition_acquire_release_delegate_to_lock(sync):
    lock = sync.Lock()
    c = sync.Condition(lock)
    assert c.acquire() is True
    assert try_in_thread(lock) is False
    assert lock.acquire(False) is False
    c.release()
    assert try_in_thread(lock) is True
    assert c.acquire(False) is True
    assert c.acquire(True, 0.05) is False
    assert c.acquire(block=False) is False
    lock.release()  # released through the lock: the condition sees it free
    with c as r:
        assert r is True
        assert try_in_thread(lock) is False
    assert lock.acquire(False) is True
    c.release()  # releases the lock taken through the lock itself
    with pytest.raises(ValueError):
        c.release()

    c2 = sync.Condition()  # default lock: recursive
    c2.acquire()
    c2.acquire()
    assert repr(c2) == "<Condition(<RLock(MainProcess, 2)>, 0)>"
    c2.release()
    c2.release()
    with pytest.raises(AssertionError) as ei:
        c2.release()
    assert str(ei.value) == "attempt to release recursive lock not owned by thread"


def test_condition_rejects_foreign_locks(osync):
    """Deliberate improvement: the lock must be one of ours (the stdlib takes
    anything and fails later, or hangs)."""
    std = mp.get_context("spawn")
    foreign = [
        std.Lock(),
        std.RLock(),
        threading.Lock(),
        threading.RLock(),
        osync.Semaphore(1),
        osync.BoundedSemaphore(1),
        osync.Event(),
        "a lock",
        42,
    ]
    for lock in foreign:
        with pytest.raises(TypeError):
            osync.Condition(lock)
        with pytest.raises(TypeError):
            osync.Condition(lock=lock)
    # ours are accepted
    for lock in (osync.Lock(), osync.RLock(), None):
        c = osync.Condition(lock)
        with c:
            c.notify()


def test_condition_wait_releases_recursive_lock_fully(sync):
    r = sync.RLock()
    c = sync.Condition(r)
    flag = []
    r.acquire()
    r.acquire()

    def notifier():
        time.sleep(0.2)
        with c:  # only possible if wait() released both levels
            flag.append(1)
            c.notify()

    t = start_thread(notifier)
    assert c.wait(20) is True
    assert flag == [1]
    assert repr(r) == "<RLock(MainProcess, 2)>"
    t.outcome(10)
    r.release()
    r.release()
    with pytest.raises(AssertionError):
        r.release()


def _cond_waiters(c, n, timeout=20):
    """Start n threads that wait on c; return (threads, ready list, woken list)
    once all of them are inside wait()."""
    ready, woken = [], []

    def waiter(i):
        with c:
            ready.append(i)  # the lock is held: wait() registers before the main thread gets it
            r = c.wait(timeout)
            woken.append((i, r))
        return r

    ts = [start_thread(waiter, i) for i in range(n)]
    wait_until(lambda: len(ready) == n, what="waiters")
    c.acquire()  # every waiter has released the lock inside wait()
    c.release()
    return ts, ready, woken


@pytest.mark.parametrize("lockkind", ["default", "Lock"])
def test_condition_notify_wakes_n(sync, lockkind):
    c = sync.Condition() if lockkind == "default" else sync.Condition(sync.Lock())
    ts, ready, woken = _cond_waiters(c, 3)
    with c:
        assert repr(c).endswith(", 3)>")
        c.notify()
    wait_until(lambda: len(woken) == 1, what="one woken")
    time.sleep(0.3)
    assert len(woken) == 1
    with c:
        c.notify(2)
    wait_until(lambda: len(woken) == 3, what="all woken")
    for t in ts:
        assert t.outcome(10) is True
    assert sorted(i for i, _ in woken) == [0, 1, 2]
    with c:
        assert repr(c).endswith(", 0)>")


def test_condition_notify_all(sync):
    c = sync.Condition()
    ts, ready, woken = _cond_waiters(c, 4)
    with c:
        c.notify_all()
    for t in ts:
        assert t.outcome(20) is True
    assert len(woken) == 4


def test_condition_notify_without_waiters(sync):
    c = sync.Condition()
    with c:
        c.notify()
        c.notify(5)
        c.notify_all()
        assert c.wait(0.05) is False  # earlier notifications are not kept


def test_condition_producer_consumer_threads(sync):
    c = sync.Condition(sync.Lock())
    items = []
    got = []

    def consumer():
        for _ in range(50):
            with c:
                assert c.wait_for(lambda: items, timeout=20)
                got.append(items.pop(0))

    t = start_thread(consumer)
    for i in range(50):
        with c:
            items.append(i)
            c.notify()
        if i % 10 == 0:
            time.sleep(0.01)
    t.outcome(30)
    assert got == list(range(50))


# ---------------------------------------------------------------------------
# Event
# ---------------------------------------------------------------------------


def test_event_basic(sync):
    e = sync.Event()
    assert e.is_set() is False
    assert e.wait(0) is False
    t0 = time.monotonic()
    assert e.wait(0.2) is False
    assert 0.15 <= time.monotonic() - t0 < 0.2 + SLACK
    assert e.wait(-1) is False
    assert e.set() is None
    assert e.is_set() is True
    assert e.wait() is True
    assert e.wait(0) is True
    assert e.wait(timeout=5) is True
    e.set()
    assert e.is_set() is True
    assert e.clear() is None
    assert e.is_set() is False
    e.clear()
    assert e.wait(0.01) is False


def test_event_set_wakes_all_threads(sync):
    e = sync.Event()
    ts = [start_thread(e.wait, 20) for _ in range(4)]
    time.sleep(0.2)
    assert all(t.is_alive() for t in ts)
    t_set = time.monotonic()
    e.set()
    for t in ts:
        assert t.outcome(10) is True
        assert t.finished_at >= t_set


def test_event_set_then_clear_still_wakes_waiters(sync):
    """A set() at once followed by clear() does not leave waiters asleep
    (what wait() returns then differs: the stdlib re-checks the flag)."""
    e = sync.Event()
    ts = [start_thread(e.wait, 30) for _ in range(3)]
    time.sleep(0.2)
    e.set()
    e.clear()
    for t in ts:
        t.join(15)
        assert not t.is_alive(), "a waiter missed set() followed by clear()"
        assert t.exc is None
        if sync.ours:  # documented: the event was set during the wait
            assert t.result is True


# ---------------------------------------------------------------------------
# Barrier
# ---------------------------------------------------------------------------


def test_barrier_properties(sync):
    b = sync.Barrier(3)
    assert (b.parties, b.n_waiting, b.broken) == (3, 0, False)
    one = sync.Barrier(1)
    assert [one.wait() for _ in range(3)] == [0, 0, 0]
    assert one.wait(0) == 0


def test_barrier_threads_generations_and_action(sync):
    actions = []
    b = sync.Barrier(3, action=lambda: actions.append(threading.current_thread().name))
    results = []
    lock = threading.Lock()

    def party():
        for g in range(4):
            idx = b.wait(20)
            with lock:
                results.append((g, idx, threading.current_thread().name))

    ts = []
    for k in range(3):
        t = TThread(party)
        t.name = f"party{k}"
        t.start()
        ts.append(t)
    for t in ts:
        t.outcome(30)
    assert len(actions) == 4
    for g in range(4):
        rows = [r for r in results if r[0] == g]
        assert sorted(idx for _, idx, _ in rows) == [0, 1, 2]
        last = [name for _, idx, name in rows if idx == 2]
        assert actions[g] == last[0], "the action runs in the last arriving thread"
    assert (b.n_waiting, b.broken) == (0, False)


def test_barrier_last_arrival_gets_last_index(sync):
    b = sync.Barrier(3)
    ts = [start_thread(b.wait, 20) for _ in range(2)]
    wait_until(lambda: b.n_waiting == 2, what="two waiters")
    assert b.wait(20) == 2
    assert sorted(t.outcome(10) for t in ts) == [0, 1]
    assert b.n_waiting == 0


def test_barrier_timeout_breaks(sync):
    b = sync.Barrier(2)
    t0 = time.monotonic()
    with pytest.raises(threading.BrokenBarrierError):
        b.wait(0.2)
    assert 0.15 <= time.monotonic() - t0 < 0.2 + SLACK
    assert b.broken is True
    t0 = time.monotonic()
    with pytest.raises(threading.BrokenBarrierError):
        b.wait()  # broken: at once
    assert time.monotonic() - t0 < SLACK
    b.reset()
    assert b.broken is False
    t = start_thread(b.wait, 20)
    assert b.wait(20) in (0, 1)
    t.outcome(10)


def test_barrier_negative_timeout(sync):
    b = sync.Barrier(2)
    t0 = time.monotonic()
    with pytest.raises(threading.BrokenBarrierError):
        b.wait(-1)
    assert time.monotonic() - t0 < SLACK
    assert b.broken
    assert sync.Barrier(1).wait(-1) == 0  # the last arrival does not wait


def test_barrier_default_timeout(sync):
    b = sync.Barrier(2, timeout=0.2)
    with pytest.raises(threading.BrokenBarrierError):
        b.wait()
    assert b.broken
    b.reset()
    t = start_thread(b.wait, 20)  # an explicit timeout overrides the default
    time.sleep(0.4)
    assert t.is_alive()
    assert b.wait() in (0, 1)
    t.outcome(10)


def test_barrier_abort(sync):
    b = sync.Barrier(3)
    ts = [start_thread(b.wait, 20) for _ in range(2)]
    wait_until(lambda: b.n_waiting == 2, what="two waiters")
    b.abort()
    for t in ts:
        with pytest.raises(threading.BrokenBarrierError):
            t.outcome(10)
    assert b.broken
    with pytest.raises(threading.BrokenBarrierError):
        b.wait(5)
    b.reset()
    assert not b.broken
    ts = [start_thread(b.wait, 20) for _ in range(2)]
    assert b.wait(20) in (0, 1, 2)
    for t in ts:
        t.outcome(10)


def test_barrier_reset_while_waiting(sync):
    b = sync.Barrier(2)
    t = start_thread(b.wait, 20)
    wait_until(lambda: b.n_waiting == 1, what="a waiter")
    b.reset()
    with pytest.raises(threading.BrokenBarrierError):
        t.outcome(10)
    assert b.broken is False
    assert b.n_waiting == 0
    t = start_thread(b.wait, 20)
    assert b.wait(20) in (0, 1)
    t.outcome(10)


def test_barrier_action_raises(sync):
    def action():
        raise ZeroDivisionError("action failed")

    b = sync.Barrier(2, action=action)
    first = start_thread(b.wait, 20)
    wait_until(lambda: b.n_waiting == 1, what="a waiter")
    with pytest.raises(ZeroDivisionError, match="action failed"):
        b.wait(20)  # the last arrival runs the action
    with pytest.raises(threading.BrokenBarrierError):
        first.outcome(10)
    assert b.broken is True


@pytest.mark.parametrize("parties", [0, -1])
def test_barrier_needs_a_party(osync, parties):
    """Deliberate improvement: the stdlib's Barrier(0) hangs in wait()."""
    with pytest.raises(ValueError):
        osync.Barrier(parties)


# ---------------------------------------------------------------------------
# pickling
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_pickling_outside_spawning_raises(sync, name):
    obj = make(sync, name)
    for dumps in (pickle.dumps, ForkingPickler.dumps):
        with pytest.raises(RuntimeError) as ei:
            dumps(obj)
        msg = str(ei.value)
        if name in ("Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition"):
            assert msg == f"{name} {INHERITANCE_MSG}"
        else:  # the stdlib names the Condition inside; ours may name the class
            assert re.fullmatch(rf"\w+ {INHERITANCE_MSG}", msg), msg


# ---------------------------------------------------------------------------
# signals (EINTR) neither shorten timeouts nor break blocking calls
# ---------------------------------------------------------------------------


SIGNAL_OPS = ["lock", "rlock", "semaphore", "event", "condition", "barrier"]


@pytest.mark.parametrize("op", SIGNAL_OPS)
def test_signals_do_not_shorten_timeouts(sync, op):
    cleanup = None
    if op == "lock":
        obj = sync.Lock()
        obj.acquire()
        call, expect = (lambda: obj.acquire(timeout=0.4)), False
    elif op == "rlock":
        obj = sync.RLock()
        h = Holder(obj)
        cleanup = h.release
        call, expect = (lambda: obj.acquire(timeout=0.4)), False
    elif op == "semaphore":
        obj = sync.Semaphore(0)
        call, expect = (lambda: obj.acquire(True, 0.4)), False
    elif op == "event":
        obj = sync.Event()
        call, expect = (lambda: obj.wait(0.4)), False
    elif op == "condition":
        obj = sync.Condition()
        obj.acquire()
        cleanup = obj.release
        call, expect = (lambda: obj.wait(0.4)), False
    else:
        obj = sync.Barrier(2)
        call, expect = (lambda: outcome_of(obj.wait, 0.4)[:2]), (
            "raise",
            threading.BrokenBarrierError,
        )
    try:
        with _helpers.SignalStorm() as storm:
            t0 = time.monotonic()
            r = call()
            dt = time.monotonic() - t0
    finally:
        if cleanup:
            cleanup()
    assert storm.count >= 3
    assert r == expect
    assert 0.35 <= dt < 0.4 + SLACK


@pytest.mark.parametrize("op", SIGNAL_OPS)
def test_signals_do_not_break_blocking_calls(sync, op):
    done = []
    if op == "lock":
        obj = sync.Lock()
        obj.acquire()
        later, call = obj.release, obj.acquire
    elif op == "rlock":
        obj = sync.RLock()
        h = Holder(obj)
        later, call = h.release, obj.acquire
    elif op == "semaphore":
        obj = sync.Semaphore(0)
        later, call = obj.release, obj.acquire
    elif op == "event":
        obj = sync.Event()
        later, call = obj.set, obj.wait
    elif op == "condition":
        obj = sync.Condition()

        def later():
            with obj:
                done.append(1)
                obj.notify()

        def call():
            with obj:
                r = obj.wait()
                return r, list(done)

    else:
        obj = sync.Barrier(2)
        later = lambda: obj.wait(20)  # noqa: E731
        call = obj.wait

    def helper():
        time.sleep(0.3)
        return later()

    with _helpers.SignalStorm() as storm:
        t = start_thread(helper)
        r = call()
    t.outcome(10)
    assert storm.count >= 3
    if op in ("lock", "rlock", "semaphore", "event"):
        assert r is True
        if op != "event":
            obj.release()
    elif op == "condition":
        assert r == (True, [1])  # woken by the notify, not by a signal
    else:
        assert r in (0, 1)


# ---------------------------------------------------------------------------
# many objects (ours)
# ---------------------------------------------------------------------------


def _nfds():
    return len(os.listdir("/proc/self/fd"))


def test_many_locks_few_descriptors(osync):
    """better: 5000 Locks (and 500 of each other kind) share a few memory
    segments instead of taking a descriptor or a named semaphore each."""
    before = _nfds()
    locks = [osync.Lock() for _ in range(5000)]
    others = []
    for _ in range(500):
        others += [
            osync.RLock(),
            osync.Semaphore(2),
            osync.BoundedSemaphore(2),
            osync.Condition(),
            osync.Event(),
            osync.Barrier(2),
        ]
    grown = _nfds() - before
    assert grown < 64, f"{grown} descriptors opened for 8000 objects"
    # distinct objects: acquiring every other lock leaves the rest free
    for lk in locks[::2]:
        assert lk.acquire(False) is True
    for i, lk in enumerate(locks):
        assert lk.acquire(False) is (i % 2 == 1), i
    for lk in locks:
        lk.release()
    ev = [o for o in others if isinstance(o, msync.Event)]
    ev[7].set()
    assert [e.is_set() for e in ev].count(True) == 1
    del locks, others, ev
