"""Synchronization primitives shared with child processes: every class as a
Process argument under spawn, fork and forkserver; mutual exclusion, waking
and counting across processes; a process SIGKILLed while it holds a lock or
waits (ours); Ctrl-C in a blocked call; CPU use of blocked waiters; nothing in
/dev/shm and nothing registered with the resource tracker (ours).

Tests taking ``sync`` run against the stdlib's (spawn context) and ours;
``osync`` is ours only. Results travel back through our Queue.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import queue
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import _helpers
from conftest import (
    CHILD_ENV_PYTHONPATH,
    load_ours,
    outcome_of,
    start_thread,
    try_in_thread,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

START_METHODS = ["spawn", "fork", "forkserver"]


def owner_died_error():
    load_ours()
    from mpservice.multiprocessing.synchronize import OwnerDiedError

    return OwnerDiedError


def expect(q, msg, timeout=60):
    got = q.get(timeout=timeout)
    assert got == msg
    return got


def max_overlap(spans):
    """The largest number of (tag, t0, t1) intervals open at one instant."""
    events = []
    for _, t0, t1 in spans:
        events.append((t0, 1))
        events.append((t1, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # at equal times, exits first
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


# ---------------------------------------------------------------------------
# every class as a Process argument, under every start method
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", START_METHODS)
def test_primitives_as_process_arguments(sync, ours, procs, method):
    """Positional and keyword Process arguments; the child sees the parent's
    state and the parent sees the child's changes."""
    lock, rlock, clock = sync.Lock(), sync.RLock(), sync.Lock()
    sem, bsem = sync.Semaphore(3), sync.BoundedSemaphore(2)
    cond, event, barrier = sync.Condition(clock), sync.Event(), sync.Barrier(2)
    out = ours.Queue()
    lock.acquire()
    rlock.acquire()
    sem.acquire()
    bsem.acquire()
    bsem.acquire()
    event.set()
    p = procs.start(
        _helpers.sync_travel_child,
        out,
        lock,
        rlock,
        sem,
        method=method,
        kwargs=dict(bsem=bsem, cond=cond, clock=clock, event=event, barrier=barrier),
    )
    my_index = barrier.wait(60)
    r = out.get(timeout=60)
    procs.join(p)
    name = r["name"]
    assert r == {
        "name": name,
        "lock_busy": False,
        "lock_repr_other": "<Lock(owner=SomeOtherProcess)>",
        "lock_release_other": ("ok", None),
        "lock_acquire": True,
        "lock_repr_mine": f"<Lock(owner={name})>",
        "rlock_busy": False,
        "rlock_repr_other": "<RLock(SomeOtherProcess, nonzero)>",
        "rlock_release_other": (
            "raise",
            "AssertionError",
            "attempt to release recursive lock not owned by thread",
        ),
        "sem_value": 2,
        "sem_acquire": True,
        "sem_repr": "<Semaphore(value=1)>",
        "bsem_busy": False,
        "bsem_release1": ("ok", None),
        "bsem_release2": ("ok", None),
        "bsem_release3": ("raise", "ValueError", "semaphore or lock released too many times"),
        "bsem_repr": "<BoundedSemaphore(value=2, maxvalue=2)>",
        "event_is_set": True,
        "event_wait": True,
        "clock_held_via_cond": True,
        "cond_wait": False,
        "barrier_parties": 2,
        "barrier_index": r["barrier_index"],
    }
    assert {my_index, r["barrier_index"]} == {0, 1}
    # the child's changes, seen here
    assert lock.acquire(False) is True  # the child released our acquisition
    lock.release()
    assert repr(rlock) == "<RLock(MainProcess, 1)>"
    rlock.release()
    assert try_in_thread(rlock) is True
    assert sem.get_value() == 1
    assert bsem.get_value() == 2
    assert event.is_set() is False
    assert clock.acquire(False) is True
    clock.release()
    assert (barrier.n_waiting, barrier.broken) == (0, False)


# ---------------------------------------------------------------------------
# working across processes
# ---------------------------------------------------------------------------


def _run_critical(sync, ours, procs, method, obj, nprocs, n, hold):
    out = ours.Queue()
    start = sync.Event()
    ps = [
        procs.start(_helpers.sync_log_critical, obj, out, k, n, hold, start, method=method)
        for k in range(nprocs)
    ]
    for _ in ps:
        assert out.get(timeout=60)[0] == "ready"
    start.set()  # all contend from now on
    spans = []
    for _ in ps:
        kind, s = out.get(timeout=60)
        assert kind == "spans"
        spans += s
    for p in ps:
        procs.join(p)
    assert len(spans) == nprocs * n
    return spans


@pytest.mark.parametrize("name", ["Lock", "RLock"])
@pytest.mark.parametrize("method", START_METHODS)
def test_mutual_exclusion_across_processes(sync, ours, procs, method, name):
    lock = getattr(sync, name)()
    spans = _run_critical(sync, ours, procs, method, lock, 3, 15, 0.003)
    spans.sort(key=lambda s: s[1])
    for a, b in zip(spans, spans[1:]):
        assert b[1] >= a[2], f"critical sections overlap: {a} and {b}"
    assert lock.acquire(False) is True
    lock.release()


@pytest.mark.parametrize("method", START_METHODS)
def test_semaphore_limits_concurrency_across_processes(sync, ours, procs, method):
    sem = sync.Semaphore(2)
    spans = _run_critical(sync, ours, procs, method, sem, 4, 6, 0.02)
    assert max_overlap(spans) <= 2
    assert sem.get_value() == 2


@pytest.mark.parametrize("method", START_METHODS)
def test_event_across_processes(sync, ours, procs, method):
    """An Event set in a child wakes the parent and waiting children."""
    e = sync.Event()
    out = ours.Queue()
    waiters = [
        procs.start(_helpers.sync_event_waiter, e, out, k, 60, method=method) for k in range(2)
    ]
    assert sorted(out.get(timeout=60) for _ in waiters) == [("ready", 0), ("ready", 1)]
    with pytest.raises(queue.Empty):
        out.get(timeout=0.2)  # nobody returned from wait() yet
    setter = procs.start(_helpers.sync_set_later, e, 0.3, method=method)
    assert e.wait(60) is True
    assert sorted(out.get(timeout=60) for _ in waiters) == [
        ("waited", 0, True),
        ("waited", 1, True),
    ]
    for p in waiters + [setter]:
        procs.join(p)
    assert e.is_set()


@pytest.mark.parametrize("method", START_METHODS)
def test_condition_notify_across_processes(sync, ours, procs, method):
    c = sync.Condition()
    out = ours.Queue()
    ps = [procs.start(_helpers.sync_cond_waiter, c, out, k, 60, method=method) for k in range(3)]
    assert sorted(out.get(timeout=60) for _ in ps) == [("waiting", k) for k in range(3)]
    with c:  # every waiter is inside wait() once we get the lock
        c.notify()
    first = out.get(timeout=30)
    assert first[0] == "woken" and first[2] is True
    with pytest.raises(queue.Empty):
        out.get(timeout=0.5)  # notify() woke one, not all
    with c:
        c.notify_all()
    rest = [out.get(timeout=30) for _ in range(2)]
    assert all(m[0] == "woken" and m[2] is True for m in rest)
    assert sorted(m[1] for m in [first] + rest) == [0, 1, 2]
    for p in ps:
        procs.join(p)


@pytest.mark.parametrize("method", START_METHODS)
def test_condition_child_notifies_parent(sync, procs, method):
    lock = sync.Lock()
    c = sync.Condition(lock)
    flag = sync.Event()
    p = procs.start(_helpers.sync_set_and_notify, c, flag, 0.3, method=method)
    with c:
        assert c.wait_for(flag.is_set, timeout=60) is True
        assert try_in_thread(lock) is False  # held again after wait_for
    procs.join(p)


@pytest.mark.parametrize("method", START_METHODS)
def test_barrier_across_processes(sync, ours, procs, method):
    """Barrier(3) in 3 processes for 3 generations: the indexes of each
    generation are a permutation of 0..2 and the action runs once per
    generation, in the process that got index 2 (the last arrival)."""
    out = ours.Queue()
    b = sync.Barrier(3, action=functools.partial(_helpers.sync_barrier_action, out))
    ps = [procs.start(_helpers.sync_barrier_worker, b, out, 3, 60, method=method) for _ in range(3)]
    msgs = [out.get(timeout=60) for _ in range(3 * 3 + 3)]
    for p in ps:
        procs.join(p)
    assert not [m for m in msgs if m[0] == "raise"], msgs
    actions = [m[1] for m in msgs if m[0] == "action"]
    assert len(actions) == 3
    pids = {p.pid for p in ps}
    for g in range(3):
        rows = [m for m in msgs if m[0] == "index" and m[1] == g]
        assert sorted(m[2] for m in rows) == [0, 1, 2]
        assert {m[3] for m in rows} == pids
        (last,) = [m[3] for m in rows if m[2] == 2]
        assert actions[g] == last
    assert (b.n_waiting, b.broken) == (0, False)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_barrier_action_raises_in_last_process(sync, ours, procs, method):
    """The action runs in the last arriving process: its exception propagates
    there, and the other party gets BrokenBarrierError."""
    out = ours.Queue()
    b = sync.Barrier(2, action=_helpers.sync_failing_action)
    first = start_thread(b.wait, 60)
    wait_until(lambda: b.n_waiting == 1, timeout=20.0, what="the parent waiting")
    p = procs.start(_helpers.sync_barrier_worker, b, out, 1, 60, method=method)
    assert out.get(timeout=60) == ("raise", 0, "ZeroDivisionError", p.pid)
    with pytest.raises(threading.BrokenBarrierError):
        first.outcome(30)
    procs.join(p)
    assert b.broken is True


@pytest.mark.parametrize("method", START_METHODS)
def test_many_objects_to_a_child(osync, ours, procs, method):
    """Thousands of objects, spread over several shared arenas, arrive in a
    child as distinct objects: what the child does to some leaves the rest."""
    n = 1500
    locks, events = [], []
    for _ in range(n):  # interleaved: both kinds in every arena
        locks.append(osync.Lock())
        events.append(osync.Event())
    for lk in locks:
        lk.acquire()
    out = ours.Queue()
    p = procs.start(_helpers.sync_touch_many, locks, events, out, method=method)
    assert out.get(timeout=60) == [("ok", None)] * (n // 2)
    procs.join(p)
    for i, lk in enumerate(locks):
        assert lk.acquire(False) is (i % 2 == 1), i
    for lk in locks:
        lk.release()
    assert [e.is_set() for e in events] == [i % 3 == 0 for i in range(n)]


# ---------------------------------------------------------------------------
# processes that die (ours)
# ---------------------------------------------------------------------------


def _check_owner_died(e, pid):
    OwnerDiedError = owner_died_error()
    assert isinstance(e, OwnerDiedError) and isinstance(e, OSError)
    assert e.errno == errno.EOWNERDEAD
    assert e.pid == pid
    assert str(pid) in str(e)


@pytest.mark.parametrize("method", ["spawn", "fork"])
@pytest.mark.parametrize("name", ["Lock", "RLock"])
def test_holder_killed_next_acquire_raises_owner_died(osync, ours, procs, name, method):
    OwnerDiedError = owner_died_error()
    lock = getattr(osync, name)()
    out = ours.Queue()
    p = procs.start(
        _helpers.sync_hold_forever, lock, out, 2 if name == "RLock" else 1, method=method
    )
    pid = p.pid
    assert out.get(timeout=60) == ("held", pid)
    assert lock.acquire(timeout=0.2) is False  # a live holder keeps it
    procs.kill(p)  # SIGKILL and reap
    with pytest.raises(OwnerDiedError) as ei:
        lock.acquire(timeout=20)  # (a lock never freed would return False)
    _check_owner_died(ei.value, pid)
    # not held after the exception, and an ordinary lock again
    assert try_in_thread(lock) is True
    assert lock.acquire(timeout=5) is True
    if name == "RLock":
        assert repr(lock) == "<RLock(MainProcess, 1)>"
    lock.release()
    p2 = procs.start(_helpers.sync_acquire_report, lock, out, 30, method=method)
    assert out.get(timeout=60) == ("ready", p2.pid)
    assert out.get(timeout=60) == ("ok", True)
    procs.join(p2)
    assert lock.acquire(False) is True
    lock.release()


@pytest.mark.parametrize("name", ["Lock", "RLock"])
def test_blocked_waiter_thread_raises_when_holder_dies(osync, ours, procs, name):
    """A thread already blocked in acquire() (no timeout) when the holder is
    SIGKILLed gets OwnerDiedError; the dead holder is not reaped meanwhile
    (a zombie counts as dead)."""
    OwnerDiedError = owner_died_error()
    lock = getattr(osync, name)()
    out = ours.Queue()
    p = procs.start(_helpers.sync_hold_forever, lock, out)
    pid = p.pid
    assert out.get(timeout=60) == ("held", pid)

    def waiter():
        try:
            r = lock.acquire()
        except OwnerDiedError as e:
            return ("died", e)
        lock.release()
        return ("ok", r)

    t = start_thread(waiter)
    time.sleep(0.3)
    assert t.is_alive()
    os.kill(pid, signal.SIGKILL)
    kind, e = t.outcome(20)
    assert kind == "died", e
    _check_owner_died(e, pid)
    assert try_in_thread(lock) is True
    procs.join(p, expect_exitcode=-signal.SIGKILL)


def test_blocked_waiter_process_raises_when_holder_dies(osync, ours, procs):
    lock = osync.Lock()
    out = ours.Queue()
    holder = procs.start(_helpers.sync_hold_forever, lock, out)
    assert out.get(timeout=60) == ("held", holder.pid)
    waiter = procs.start(_helpers.sync_acquire_report, lock, out, 60)
    assert out.get(timeout=60) == ("ready", waiter.pid)
    time.sleep(0.3)
    procs.kill(holder)
    kind, pid, err, msg, free_after = out.get(timeout=30)
    assert (kind, pid, err, free_after) == ("died", holder.pid, errno.EOWNERDEAD, True)
    assert str(holder.pid) in msg
    procs.join(waiter)
    assert lock.acquire(timeout=5) is True  # no second OwnerDiedError
    lock.release()


def test_two_waiters_only_one_gets_owner_died(osync, ours, procs):
    OwnerDiedError = owner_died_error()
    lock = osync.Lock()
    out = ours.Queue()
    p = procs.start(_helpers.sync_hold_forever, lock, out)
    assert out.get(timeout=60) == ("held", p.pid)

    def waiter():
        try:
            r = lock.acquire(timeout=30)
        except OwnerDiedError as e:
            return ("died", e.pid)
        if r:
            time.sleep(0.05)
            lock.release()
        return ("ok", r)

    ts = [start_thread(waiter) for _ in range(2)]
    time.sleep(0.3)
    procs.kill(p)
    results = sorted(t.outcome(30) for t in ts)
    assert results == [("died", p.pid), ("ok", True)]
    assert lock.acquire(False) is True
    lock.release()


@pytest.mark.parametrize("name", ["Lock", "RLock"])
def test_condition_wait_raises_when_lock_holder_dies(osync, ours, procs, name):
    """A waiter notified by a process that then dies holding the lock gets
    OwnerDiedError from wait(), with the lock held again by the waiter."""
    OwnerDiedError = owner_died_error()
    lock = getattr(osync, name)()
    c = osync.Condition(lock)
    out = ours.Queue()
    in_wait = threading.Event()

    def waiter():
        with c:
            in_wait.set()
            try:
                r = c.wait(30)
            except OwnerDiedError as e:
                # held by this thread: a release must succeed (the `with` then
                # finds it released: re-acquire for the exit)
                rel = outcome_of(c.release)
                c.acquire()
                return ("died", e.pid, e.errno, rel)
            return ("ok", r)

    t = start_thread(waiter)
    assert in_wait.wait(10)
    c.acquire()  # only once the waiter has released the lock inside wait()
    c.release()
    p = procs.start(_helpers.sync_notify_and_hold, c, out)
    assert out.get(timeout=60) == ("notified", p.pid)
    time.sleep(0.2)
    assert t.is_alive()  # notified, but the lock is held by the child
    procs.kill(p)
    assert t.outcome(20) == ("died", p.pid, errno.EOWNERDEAD, ("ok", None))
    assert try_in_thread(lock) is True
    with c:
        c.notify()


def test_barrier_party_killed_breaks_barrier(osync, ours, procs):
    b = osync.Barrier(3)
    out = ours.Queue()
    p = procs.start(_helpers.sync_block_in, b, "barrier", out)
    assert out.get(timeout=60) == ("ready", "barrier", p.pid)
    wait_until(lambda: b.n_waiting == 1, timeout=20.0, what="the child waiting")
    t = start_thread(b.wait)  # no timeout
    wait_until(lambda: b.n_waiting == 2, timeout=20.0, what="two waiting")
    os.kill(p.pid, signal.SIGKILL)  # not reaped until later
    with pytest.raises(threading.BrokenBarrierError):
        t.outcome(20)
    assert b.broken is True
    with pytest.raises(threading.BrokenBarrierError):
        b.wait(5)
    procs.join(p, expect_exitcode=-signal.SIGKILL)
    b.reset()
    assert b.broken is False
    ts = [start_thread(b.wait, 20) for _ in range(2)]
    idxs = [b.wait(20)] + [t.outcome(10) for t in ts]
    assert sorted(idxs) == [0, 1, 2]


@pytest.mark.parametrize("how", ["notify", "notify_all"])
def test_condition_waiter_killed_does_not_swallow_notification(osync, ours, procs, how):
    """A waiter SIGKILLed inside wait() is forgotten: notify() still wakes a
    live waiter, and notify_all() returns (the stdlib's notify_all() waits
    forever for the dead waiter to acknowledge)."""
    c = osync.Condition()
    out = ours.Queue()
    victim = procs.start(_helpers.sync_cond_waiter, c, out, "victim", 60)
    assert out.get(timeout=60) == ("waiting", "victim")
    survivor = procs.start(_helpers.sync_cond_waiter, c, out, "survivor", 60)
    assert out.get(timeout=60) == ("waiting", "survivor")
    with c:  # both are inside wait(), the victim first
        pass
    procs.kill(victim)

    def notify():
        with c:
            getattr(c, how)()

    start_thread(notify).outcome(10)
    assert out.get(timeout=30) == ("woken", "survivor", True)
    procs.join(survivor)
    with c:
        assert repr(c) == "<Condition(<RLock(MainProcess, 1)>, 0)>"


# ---------------------------------------------------------------------------
# blocked waiters sleep (ours)
# ---------------------------------------------------------------------------


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_blocked_waiters_use_no_cpu(osync, ours, procs):
    lock = osync.Lock()
    lock.acquire()
    objs = {
        "lock": lock,
        "event": osync.Event(),
        "condition": osync.Condition(),
        "barrier": osync.Barrier(2),
        "semaphore": osync.Semaphore(0),
    }
    out = ours.Queue()
    ps = {op: procs.start(_helpers.sync_block_in, obj, op, out) for op, obj in objs.items()}
    ready = sorted(out.get(timeout=60)[1] for _ in ps)
    assert ready == sorted(objs)
    time.sleep(0.3)  # let them block
    before = {op: _cpu_seconds(p.pid) for op, p in ps.items()}
    time.sleep(1.5)
    used = {op: _cpu_seconds(p.pid) - before[op] for op, p in ps.items()}
    alive = {op: p.is_alive() for op, p in ps.items()}
    for p in ps.values():
        procs.kill(p)
    lock.release()
    assert all(alive.values()), alive
    busy = {op: u for op, u in used.items() if u >= 0.05}
    assert not busy, f"CPU seconds used over 1.5 s while blocked: {used}"


# ---------------------------------------------------------------------------
# /dev/shm and the resource tracker, in a fresh interpreter
# ---------------------------------------------------------------------------

PRELUDE = {
    "stdlib": """
        import multiprocessing as mp
        _ctx = mp.get_context("spawn")
        Lock, RLock, Semaphore = _ctx.Lock, _ctx.RLock, _ctx.Semaphore
        BoundedSemaphore, Condition, Event, Barrier = (
            _ctx.BoundedSemaphore, _ctx.Condition, _ctx.Event, _ctx.Barrier)
    """,
    "ours": """
        from mpservice.multiprocessing import (
            Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event, Barrier)
    """,
}

RESOURCE_SCRIPT = """
import json, os, sys
import multiprocessing as mp
import multiprocessing.resource_tracker as rt

sent = []
_orig_send = rt.ResourceTracker._send

def _send(self, cmd, name, rtype):
    sent.append([cmd, rtype])
    return _orig_send(self, cmd, name, rtype)

rt.ResourceTracker._send = _send
assert rt._resource_tracker._pid is None
{prelude}
import _helpers

objs = []
for i in range(150):
    objs += [Lock(), RLock(), Semaphore(2), BoundedSemaphore(2), Condition(), Event(), Barrier(2)]
with objs[0]:
    pass
report = {{"refs": _helpers.shm_refs()}}

# a forked child (fork starts no resource tracker) uses some of them
ctx = mp.get_context("fork")
r, w = ctx.Pipe(False)
p = ctx.Process(target=_helpers.sync_shm_report, args=(w, objs[0], objs[2], objs[5]))
p.start()
w.close()
report["fork_child"] = r.recv()
p.join(30)
report["fork_exitcode"] = p.exitcode
report["tracker_pid"] = rt._resource_tracker._pid
report["sent"] = sorted(set(map(tuple, sent)))

# a spawned child (spawning itself starts the stdlib's tracker)
ctx = mp.get_context("spawn")
r, w = ctx.Pipe(False)
p = ctx.Process(target=_helpers.sync_shm_report, args=(w, objs[7], objs[9], objs[12]))
p.start()
w.close()
report["spawn_child"] = r.recv()
p.join(30)
report["spawn_exitcode"] = p.exitcode
report["sent_after_spawn"] = sorted(set(map(tuple, sent)))
print(json.dumps(report))
"""


def _script_env():
    return dict(os.environ, PYTHONPATH=CHILD_ENV_PYTHONPATH, PYTHONUNBUFFERED="1")


@pytest.mark.parametrize("name", ["stdlib", "ours"])
def test_no_dev_shm_and_no_resource_tracker(name):
    """better: ours creates nothing in /dev/shm (not even briefly mapped) and
    registers nothing with the resource tracker, so no tracker process is
    started. The stdlib run of the same script shows that the checks see
    both (named semaphores mapped from /dev/shm, 'semaphore' registrations)."""
    if name == "ours":
        load_ours()
    body = RESOURCE_SCRIPT.format(prelude=textwrap.dedent(PRELUDE[name]))
    proc = subprocess.run(
        [sys.executable, "-c", body],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=_script_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rep["fork_child"][0] is True and rep["spawn_child"][0] is True
    assert rep["fork_exitcode"] == 0 and rep["spawn_exitcode"] == 0
    if name == "stdlib":
        assert rep["tracker_pid"] is not None
        assert ["REGISTER", "semaphore"] in rep["sent"]
        assert any("/dev/shm/sem." in x for x in rep["refs"])
        assert any("/dev/shm/sem." in x for x in rep["fork_child"][1])
        return
    assert rep["tracker_pid"] is None, "a resource tracker was started"
    assert rep["sent"] == [] and rep["sent_after_spawn"] == []
    assert rep["refs"] == []
    assert rep["fork_child"][1] == []
    assert rep["spawn_child"][1] == []


# ---------------------------------------------------------------------------
# Ctrl-C (SIGINT) in a blocked call
# ---------------------------------------------------------------------------

# setup; then 'ready' is printed; then the blocking call
SIGINT_OPS = {
    "lock": ("x = Lock(); x.acquire()", "x.acquire()"),
    "lock-timeout": ("x = Lock(); x.acquire()", "x.acquire(timeout=120)"),
    "rlock": (
        "x = RLock(); _t = threading.Thread(target=x.acquire); _t.start(); _t.join()",
        "x.acquire()",
    ),
    "semaphore": ("x = Semaphore(0)", "x.acquire()"),
    "bounded-semaphore-timeout": ("x = BoundedSemaphore(1); x.acquire()", "x.acquire(True, 120)"),
    "event": ("x = Event()", "x.wait()"),
    "event-timeout": ("x = Event()", "x.wait(120)"),
    "condition": ("x = Condition(); x.acquire()", "x.wait()"),
    "condition-timeout": ("x = Condition(Lock()); x.acquire()", "x.wait(120)"),
    "barrier": ("x = Barrier(2)", "x.wait()"),
    "barrier-timeout": ("x = Barrier(2)", "x.wait(120)"),
}

# after catching KeyboardInterrupt from the blocked call: print the state
SIGINT_CAUGHT = {
    "lock": (
        "x = Lock(); x.acquire()",
        "x.acquire()",
        "x.release(); print(x.acquire(False), x.acquire(False))",
        "True False",
    ),
    "semaphore": (
        "x = Semaphore(0)",
        "x.acquire()",
        "x.release(); print(x.get_value(), x.acquire(False), x.get_value())",
        "1 True 0",
    ),
    "event": (
        "x = Event()",
        "x.wait()",
        "_s = x.is_set(); x.set(); print(_s, x.wait(5))",
        "False True",
    ),
    "condition": (
        "x = Condition(); x.acquire()",
        "x.wait()",
        "x.release(); print(repr(x))",  # the lock is held again after the interrupted wait
        "<Condition(<RLock(None, 0)>, 0)>",
    ),
}


def _sigint_cases():
    for op in SIGINT_OPS:
        for name in ("stdlib", "ours"):
            yield pytest.param(name, op, id=f"{name}-{op}")


def _caught_cases():
    for op in SIGINT_CAUGHT:
        for name in ("stdlib", "ours"):
            yield pytest.param(name, op, id=f"{name}-{op}")


class _Script:
    def __init__(self, body):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", body],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_script_env(),
        )
        self.head = b""
        self.ready = False
        self.eof = False
        self.alive_at_sigint = False
        self.dt = None
        self.out = self.err = ""


def _run_scripts(scripts, ready_timeout=60.0, exit_timeout=10.0):
    """Start all, wait until each printed 'ready' (or died), let them block,
    SIGINT them all at once, and collect their exits."""
    fds = {s.proc.stdout.fileno(): s for s in scripts}
    deadline = time.monotonic() + ready_timeout
    while fds and time.monotonic() < deadline:
        rl, _, _ = select.select(list(fds), [], [], 0.2)
        for fd in rl:
            s = fds[fd]
            chunk = os.read(fd, 4096)
            if not chunk:
                s.eof = True
                del fds[fd]
                continue
            s.head += chunk
            if b"ready\n" in s.head:
                s.ready = True
                del fds[fd]
    time.sleep(0.5)  # let them block
    t_sig = time.monotonic()
    for s in scripts:
        if s.ready and s.proc.poll() is None:
            s.alive_at_sigint = True
            s.proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + exit_timeout
    pending = [s for s in scripts if s.alive_at_sigint]
    while pending and time.monotonic() < deadline:
        for s in list(pending):
            if s.proc.poll() is not None:
                s.dt = time.monotonic() - t_sig
                pending.remove(s)
        time.sleep(0.02)
    for s in scripts:
        if s.proc.poll() is None:
            s.proc.kill()
        try:
            out, err = s.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            s.proc.kill()
            out, err = s.proc.communicate()
        s.out = (s.head + out).decode(errors="replace")
        s.err = err.decode(errors="replace")


@pytest.fixture(scope="module")
def sigint_runs():
    """All the Ctrl-C scripts, run concurrently once for the module."""
    load_ours()
    scripts = {}
    for name in ("stdlib", "ours"):
        prelude = textwrap.dedent(PRELUDE[name]) + "import threading\n"
        for op, (setup, call) in SIGINT_OPS.items():
            body = prelude + f"{setup}\nprint('ready', flush=True)\n{call}\n"
            body += "print('UNEXPECTED RETURN', flush=True)\n"
            scripts[("blocked", name, op)] = _Script(body)
        for op, (setup, call, after, _) in SIGINT_CAUGHT.items():
            body = prelude + textwrap.dedent(
                f"""
                {setup}
                print('ready', flush=True)
                try:
                    {call}
                except KeyboardInterrupt:
                    print('caught', flush=True)
                else:
                    print('UNEXPECTED RETURN', flush=True)
                {after}
                """
            )
            scripts[("caught", name, op)] = _Script(body)
    try:
        _run_scripts(list(scripts.values()))
    finally:
        for s in scripts.values():
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait(10)
    return scripts


def _check_blocked_then_signalled(s):
    assert s.ready, f"script did not get ready: {s.out!r} {s.err!r}"
    assert s.alive_at_sigint, f"script did not block: {s.out!r} {s.err!r}"
    assert s.dt is not None, f"no exit within 10 s of SIGINT (killed); stderr: {s.err!r}"


@pytest.mark.parametrize("name,op", list(_sigint_cases()))
def test_sigint_interrupts_blocked_call(sigint_runs, name, op):
    s = sigint_runs[("blocked", name, op)]
    _check_blocked_then_signalled(s)
    assert "KeyboardInterrupt" in s.err, s.err
    assert "UNEXPECTED RETURN" not in s.out
    assert s.proc.returncode != 0


@pytest.mark.parametrize("name,op", list(_caught_cases()))
def test_sigint_caught_object_still_usable(sigint_runs, name, op):
    """KeyboardInterrupt from a blocked call can be caught; the interrupted
    call took nothing (lock, permit) and left a condition's lock held."""
    s = sigint_runs[("caught", name, op)]
    _check_blocked_then_signalled(s)
    assert s.proc.returncode == 0, s.err
    assert s.out.split("\n")[:3] == ["ready", "caught", SIGINT_CAUGHT[op][3]], (s.out, s.err)
