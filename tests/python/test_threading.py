"""mpservice.threading: the future-like Thread (done/result/exception, join
raising, handle_exception, throw, terminate) and wait/as_completed over
threads and over a mix of threads and SpawnProcess objects, compared with
the concurrent.futures semantics (SPEC section 2).

Threads block on events with bounded timeouts; the ``kit`` fixture sets every
event, terminates and joins every thread and reaps every process at the end.
Module-level targets for children are in _thread_targets.py.
"""

from __future__ import annotations

import builtins
import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import _helpers

import _thread_targets as tt
from conftest import CHILD_ENV_PYTHONPATH, load_ours, wait_until

import mpservice
from mpservice.threading import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    InvalidStateError,
    Thread,
    as_completed,
    wait,
)

pytestmark = pytest.mark.timeout(60)

GATE_TIMEOUT = 30.0  # how long a gated target waits before giving up


# ---------------------------------------------------------------------------
# targets run in threads of this process
# ---------------------------------------------------------------------------


def return_value(v):
    return v


def raise_it(exc):
    raise exc


def gated(ev, value=None, exc=None):
    """Wait for ev (bounded), then return value or raise exc."""
    if not ev.wait(GATE_TIMEOUT):
        raise RuntimeError("gate never opened")
    if exc is not None:
        raise exc
    return value


def python_loop(running):
    """A Python loop that runs until something is thrown into it."""
    running.set()
    deadline = time.monotonic() + GATE_TIMEOUT
    while time.monotonic() < deadline:
        time.sleep(0.001)
    return "loop ran out"


def catch_thrown(running):
    """Return the ValueError thrown into the loop, as caught by `except ValueError`."""
    try:
        running.set()
        deadline = time.monotonic() + GATE_TIMEOUT
        while time.monotonic() < deadline:
            time.sleep(0.001)
    except ValueError as e:
        return e
    return "nothing caught"


class Recording(Thread):
    """Records handle_exception calls (thread name, exception) instead of printing."""

    calls: list = []

    @staticmethod
    def handle_exception(exc):
        Recording.calls.append((threading.current_thread().name, exc))


class NeedsTwo(Exception):
    """Cannot be rebuilt from one string argument."""

    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")
        self.a, self.b = a, b


# ---------------------------------------------------------------------------
# fixture: every thread, event and process is cleaned up
# ---------------------------------------------------------------------------


class Kit:
    def __init__(self):
        self.threads = []
        self.events = []
        self.procs = []
        self.forever = []  # processes that never end by themselves: killed at once

    def event(self):
        ev = threading.Event()
        self.events.append(ev)
        return ev

    def mp_event(self):
        ev = load_ours().Event()
        self.events.append(ev)
        return ev

    def thread(self, target=None, *args, cls=Thread, start=True, **kwargs):
        t = cls(target=target, args=args, kwargs=kwargs, daemon=True)
        self.threads.append(t)
        if start:
            t.start()
        return t

    def gated(self, value=None, exc=None, ev=None):
        """A started Thread waiting for its own event; returns (thread, event)."""
        ev = ev or self.event()
        return self.thread(gated, ev, value=value, exc=exc), ev

    def process(self, target=None, *args, start=True, **kwargs):
        m = load_ours()
        p = m.SpawnProcess(target=target, args=args, kwargs=kwargs, daemon=True)
        self.procs.append(p)
        if target is tt.sleep_forever:
            self.forever.append(p)
        if start:
            p.start()
        return p

    def cleanup(self):
        for ev in self.events:
            ev.set()
        for t in self.threads:
            if t.is_alive():
                try:
                    t.terminate()
                except Exception:
                    pass
        stuck = []
        for t in self.threads:
            if t.ident is None:
                continue
            try:
                threading.Thread.join(t, 10)
            except Exception:
                pass
            if t.is_alive():
                stuck.append(t)
        for p in self.procs:
            _helpers.reap_process(p, grace=0 if p in self.forever else 5.0)
        assert not stuck, f"threads still alive after the test: {stuck}"


@pytest.fixture
def kit():
    k = Kit()
    yield k
    k.cleanup()


def timer(delay, fn, *args):
    """Call fn(*args) after delay seconds in a daemon thread."""
    t = threading.Timer(delay, fn, args)
    t.daemon = True
    t.start()
    return t


def fd_count():
    return len(os.listdir("/proc/self/fd"))


# ---------------------------------------------------------------------------
# Thread: outcomes
# ---------------------------------------------------------------------------


def test_thread_subclasses_stdlib_and_timeout_error():
    assert issubclass(Thread, threading.Thread)
    assert issubclass(InvalidStateError, RuntimeError)
    assert mpservice.threading.TimeoutError is mpservice.TimeoutError
    assert issubclass(mpservice.TimeoutError, builtins.TimeoutError)
    assert mpservice.threading.ALL_COMPLETED == "ALL_COMPLETED"
    assert mpservice.threading.FIRST_COMPLETED == "FIRST_COMPLETED"
    assert mpservice.threading.FIRST_EXCEPTION == "FIRST_EXCEPTION"


def test_result_value(kit):
    t = kit.thread(return_value, {"a": [1, 2]})
    t.join(10)
    assert not t.is_alive()
    assert t.done()
    assert t.result() == {"a": [1, 2]}
    assert t.result(timeout=0) == {"a": [1, 2]}
    assert t.exception() is None
    assert t.exception(timeout=0) is None
    t.join()  # again: no raise


def test_result_with_kwargs_and_no_target(kit):
    t = kit.thread(lambda a, *, b: (a, b), 1, b=2)
    assert t.result(timeout=10) == (1, 2)
    t0 = kit.thread(None)
    assert t0.result(timeout=10) is None
    assert t0.exception() is None


def test_exception_raised_by_join_and_result(kit, capsys):
    exc = ValueError("boom")
    t = kit.thread(raise_it, exc)
    with pytest.raises(ValueError) as ei:
        t.join(10)
    assert ei.value is exc
    assert not t.is_alive()
    assert t.done()
    assert t.exception() is exc
    assert t.exception(timeout=0) is exc
    with pytest.raises(ValueError) as ei:
        t.result()
    assert ei.value is exc
    with pytest.raises(ValueError) as ei:
        t.join()  # every time
    assert ei.value is exc
    out = capsys.readouterr().out
    assert f"Exception in {t.name}: ValueError('boom')" in out


def test_handle_exception_override_called_in_thread(kit, capsys):
    Recording.calls.clear()
    exc = KeyError("k")
    t = kit.thread(raise_it, exc, cls=Recording)
    with pytest.raises(KeyError):
        t.join(10)
    assert Recording.calls == [(t.name, exc)]
    assert t.exception() is exc
    assert "Exception in" not in capsys.readouterr().out


def test_base_exception_kept(kit):
    Recording.calls.clear()
    exc = KeyboardInterrupt()
    t = kit.thread(raise_it, exc, cls=Recording)
    with pytest.raises(KeyboardInterrupt):
        t.join(10)
    assert t.exception() is exc
    assert Recording.calls == [(t.name, exc)]


@pytest.mark.parametrize("code", [None, 0])
def test_system_exit_quiet(kit, capsys, code):
    Recording.calls.clear()
    t = kit.thread(raise_it, SystemExit(code), cls=Recording)
    t.join(10)  # no raise
    assert not t.is_alive()
    assert t.done()
    assert t.result() is None
    assert t.exception() is None
    assert Recording.calls == []
    assert "Exception in" not in capsys.readouterr().out


def test_system_exit_nonzero_kept(kit):
    exc = SystemExit(2)
    t = kit.thread(raise_it, exc)
    with pytest.raises(SystemExit) as ei:
        t.join(10)
    assert ei.value is exc
    assert ei.value.code == 2
    assert t.exception() is exc
    with pytest.raises(SystemExit):
        t.result()


def test_unrebuildable_exception_arrives_as_is(kit):
    """An exception whose class cannot be rebuilt from one string argument."""
    exc = NeedsTwo(1, [2])
    t = kit.thread(raise_it, exc, cls=Recording)
    t0 = time.monotonic()
    with pytest.raises(NeedsTwo) as ei:
        t.join(10)
    assert time.monotonic() - t0 < 9
    assert ei.value is exc
    assert (ei.value.a, ei.value.b) == (1, [2])
    assert t.exception() is exc
    done, not_done = wait([t], timeout=10, return_when=FIRST_EXCEPTION)
    assert done == {t} and not_done == set()


# ---------------------------------------------------------------------------
# Thread: states and timeouts
# ---------------------------------------------------------------------------


def test_done_before_start_while_running_after(kit):
    ev = kit.event()
    t = kit.thread(gated, ev, value=7, start=False)
    assert not t.done()
    with pytest.raises(RuntimeError):
        t.join()  # as the stdlib: cannot join a thread before it is started
    t.start()
    assert not t.done()
    time.sleep(0.05)
    assert not t.done()
    ev.set()
    assert t.result(timeout=10) == 7
    assert t.done()


def test_done_after_failure(kit):
    t = kit.thread(raise_it, OSError("x"), cls=Recording)
    wait_until(t.done, 10, "failed thread done")
    assert isinstance(t.exception(), OSError)


def test_result_and_exception_timeout(kit):
    t, ev = kit.gated(value="late")
    for call in (t.result, t.exception):
        t0 = time.monotonic()
        with pytest.raises(mpservice.TimeoutError) as ei:
            call(timeout=0.1)
        elapsed = time.monotonic() - t0
        assert 0.08 <= elapsed < 5
        assert type(ei.value) is mpservice.TimeoutError
        assert isinstance(ei.value, builtins.TimeoutError)
        assert ei.value.args == ()
    with pytest.raises(mpservice.TimeoutError):
        t.result(timeout=0)
    # join with a timeout returns None and raises nothing
    assert t.join(0.05) is None
    assert t.is_alive()
    assert not t.done()
    ev.set()
    assert t.result(timeout=10) == "late"
    assert t.exception(timeout=10) is None


def test_result_and_join_from_many_threads(kit):
    t, ev = kit.gated(value=123)
    getters = [kit.thread(t.result, timeout=30) for _ in range(8)]
    time.sleep(0.05)
    assert not any(g.done() for g in getters)
    ev.set()
    assert [g.result(timeout=30) for g in getters] == [123] * 8

    exc = ValueError("many")
    t2, ev2 = kit.gated(exc=exc)
    t2.handle_exception = lambda e: None  # quiet

    def join_and_catch():
        try:
            t2.join(30)
        except ValueError as e:
            return e
        return None

    joiners = [kit.thread(join_and_catch) for _ in range(8)]
    excs = [kit.thread(t2.exception, 30) for _ in range(4)]
    time.sleep(0.05)
    ev2.set()
    assert all(j.result(timeout=30) is exc for j in joiners)
    assert all(e.result(timeout=30) is exc for e in excs)


# ---------------------------------------------------------------------------
# Thread: throw and terminate
# ---------------------------------------------------------------------------


def test_throw_instance_is_delivered_as_is(kit):
    Recording.calls.clear()
    running = kit.event()
    t = kit.thread(python_loop, running, cls=Recording)
    assert running.wait(10)
    exc = ValueError("x", 2)
    t.throw(exc)
    with pytest.raises(ValueError) as ei:
        t.join(10)
    assert not t.is_alive()
    assert ei.value is exc
    assert type(ei.value) is ValueError
    assert ei.value.args == ("x", 2)
    assert t.exception() is exc
    assert Recording.calls == [(t.name, exc)]


def test_throw_instance_caught_by_its_class(kit):
    running = kit.event()
    t = kit.thread(catch_thrown, running)
    assert running.wait(10)
    exc = ValueError("caught")
    t.throw(exc)
    got = t.result(timeout=10)
    assert got is exc
    assert got.args == ("caught",)


def test_throw_same_instance_twice(kit):
    exc = ValueError("again")
    for _ in range(2):
        running = kit.event()
        t = kit.thread(python_loop, running, cls=Recording)
        assert running.wait(10)
        t.throw(exc)
        assert t.exception(timeout=10) is exc


def test_throw_class(kit):
    running = kit.event()
    t = kit.thread(python_loop, running, cls=Recording)
    assert running.wait(10)
    t.throw(KeyError)
    with pytest.raises(KeyError):
        t.join(10)
    e = t.exception()
    assert type(e) is KeyError
    assert e.args == ()


def test_throw_not_alive_raises_invalid_state(kit):
    t = kit.thread(return_value, 1, start=False)
    with pytest.raises(InvalidStateError):
        t.throw(ValueError("never started"))
    with pytest.raises(RuntimeError):  # InvalidStateError is a RuntimeError
        t.throw(KeyError)
    t.start()
    assert t.result(timeout=10) == 1
    t.join(10)
    assert not t.is_alive()
    with pytest.raises(InvalidStateError):
        t.throw(ValueError("finished"))
    with pytest.raises(InvalidStateError):
        t.throw(KeyError)
    assert t.result() == 1  # unchanged


def test_terminate_loop_quietly(kit, capsys):
    Recording.calls.clear()
    running = kit.event()
    t = kit.thread(python_loop, running, cls=Recording)
    assert running.wait(10)
    t0 = time.monotonic()
    t.terminate()
    t.join(10)  # no raise
    assert time.monotonic() - t0 < 5
    assert not t.is_alive()
    assert t.done()
    assert t.result() is None
    assert t.exception() is None
    assert Recording.calls == []
    assert "Exception in" not in capsys.readouterr().out


def test_terminate_in_wait(kit):
    """terminate() wakes up a wait() on that thread."""
    running = kit.event()
    t = kit.thread(python_loop, running)
    other, _ = kit.gated()
    assert running.wait(10)
    timer(0.1, t.terminate)
    t0 = time.monotonic()
    done, not_done = wait([t, other], timeout=20, return_when=FIRST_COMPLETED)
    assert time.monotonic() - t0 < 10
    assert done == {t} and not_done == {other}
    assert t.result() is None


class OverridesRun(Thread):
    """The classic threading style: a subclass that overrides run()."""

    def __init__(self, ev):
        super().__init__(daemon=True)
        self.ev = ev

    def run(self):
        self.ev.wait(GATE_TIMEOUT)


def test_subclass_overriding_run_completes(kit):
    ev = kit.event()
    t = OverridesRun(ev)
    kit.threads.append(t)
    t.start()
    timer(0.05, ev.set)
    # bounded: the bug makes an unbounded wait() hang
    assert wait([t], timeout=2) == ({t}, set())
    t.join(10)
    assert not t.is_alive()
    assert t.done()
    assert t.result() is None
    assert t.exception() is None


# ---------------------------------------------------------------------------
# wait over threads
# ---------------------------------------------------------------------------


def test_wait_all_completed(kit):
    pairs = [kit.gated(value=i) for i in range(3)]
    ts = [t for t, _ in pairs]
    for i, (_, ev) in enumerate(pairs):
        timer(0.05 * (i + 1), ev.set)
    res = wait(ts, timeout=30)
    assert isinstance(res, tuple) and len(res) == 2
    done, not_done = res
    assert isinstance(done, set) and isinstance(not_done, set)
    assert done == set(ts) and not_done == set()
    assert all(t.done() for t in ts)
    assert [t.result() for t in ts] == [0, 1, 2]
    # the default return_when is ALL_COMPLETED
    assert wait(ts, return_when=ALL_COMPLETED) == (set(ts), set())


def test_wait_first_completed(kit):
    pairs = [kit.gated(value=i) for i in range(3)]
    ts = [t for t, _ in pairs]
    timer(0.1, pairs[1][1].set)
    t0 = time.monotonic()
    done, not_done = wait(ts, timeout=30, return_when=FIRST_COMPLETED)
    assert time.monotonic() - t0 < 10
    assert done == {ts[1]}
    assert not_done == {ts[0], ts[2]}
    assert not ts[0].done() and not ts[2].done()


def test_wait_first_exception_returns_on_first_failure(kit):
    ok = kit.thread(return_value, "ok")
    ok.join(10)
    slow, _ = kit.gated(value="slow")
    exc = ValueError("fail")
    bad, ev = kit.gated(exc=exc)
    bad.handle_exception = lambda e: None
    timer(0.1, ev.set)
    t0 = time.monotonic()
    done, not_done = wait([ok, slow, bad], timeout=30, return_when=FIRST_EXCEPTION)
    assert time.monotonic() - t0 < 10
    assert done == {ok, bad}
    assert not_done == {slow}
    assert bad.exception() is exc


def test_wait_first_exception_without_failure_waits_for_all(kit):
    pairs = [kit.gated(value=i) for i in range(3)]
    ts = [t for t, _ in pairs]
    for i, (_, ev) in enumerate(pairs):
        timer(0.1 * (i + 1), ev.set)
    done, not_done = wait(ts, timeout=30, return_when=FIRST_EXCEPTION)
    assert done == set(ts) and not_done == set()
    assert all(t.done() for t in ts)


@pytest.mark.parametrize("return_when", [ALL_COMPLETED, FIRST_EXCEPTION, FIRST_COMPLETED])
def test_wait_timeout(kit, return_when):
    finished = kit.thread(return_value, 1)
    finished.join(10)
    blocked, ev = kit.gated(value=2)
    blocked2, ev2 = kit.gated(value=3)
    workers = [blocked, blocked2] if return_when == FIRST_COMPLETED else [
        finished, blocked, blocked2]
    t0 = time.monotonic()
    done, not_done = wait(workers, timeout=0.2, return_when=return_when)
    elapsed = time.monotonic() - t0
    assert 0.15 <= elapsed < 5
    assert done == set(workers) - {blocked, blocked2}
    assert not_done == {blocked, blocked2}
    # timeout=0 polls
    t0 = time.monotonic()
    assert wait(workers, timeout=0, return_when=return_when) == (done, not_done)
    assert time.monotonic() - t0 < 1
    # after a timed-out wait, a later wait still sees the completion
    ev.set()
    ev2.set()
    assert wait(workers, timeout=30) == (set(workers), set())
    assert wait(workers, timeout=0, return_when=return_when) == (set(workers), set())


def test_wait_invalid_return_when(kit):
    t = kit.thread(return_value, 1)
    t.join(10)
    for bad in ("SOME_COMPLETED", "all_completed", None, 0):
        with pytest.raises(ValueError):
            wait([t], return_when=bad)


def test_wait_unstarted_worker_is_an_error(kit):
    started = kit.thread(return_value, 1)
    unstarted = kit.thread(return_value, 2, start=False)
    with pytest.raises((ValueError, RuntimeError)):
        wait([started, unstarted], timeout=1)
    with pytest.raises((ValueError, RuntimeError)):
        list(as_completed([started, unstarted], timeout=1))
    p = kit.process(tt.return_value, 1, start=False)
    with pytest.raises((ValueError, RuntimeError, AssertionError)):
        wait([started, p], timeout=1)
    with pytest.raises((ValueError, RuntimeError, AssertionError)):
        list(as_completed([p], timeout=1))


def test_wait_not_a_worker_is_an_error():
    plain = threading.Thread(target=lambda: None)
    plain.start()
    plain.join(10)
    with pytest.raises((TypeError, ValueError)):
        wait([plain], timeout=1)
    with pytest.raises((TypeError, ValueError)):
        list(as_completed([object()], timeout=1))


def test_wait_already_done(kit):
    ok = kit.thread(return_value, 1)
    exc = ValueError("done already")
    bad = kit.thread(raise_it, exc, cls=Recording)
    ok.join(10)
    with pytest.raises(ValueError):
        bad.join(10)
    blocked, _ = kit.gated()
    for rw in (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION):
        t0 = time.monotonic()
        assert wait([ok, bad], return_when=rw) == ({ok, bad}, set())
        assert time.monotonic() - t0 < 1
    t0 = time.monotonic()
    assert wait([ok, blocked], return_when=FIRST_COMPLETED) == ({ok}, {blocked})
    assert wait([ok, bad, blocked], return_when=FIRST_EXCEPTION) == ({ok, bad}, {blocked})
    assert time.monotonic() - t0 < 1


def test_wait_empty():
    assert wait([]) == (set(), set())
    assert wait([], return_when=FIRST_COMPLETED) == (set(), set())
    assert wait([], timeout=0, return_when=FIRST_EXCEPTION) == (set(), set())
    assert list(as_completed([])) == []


def test_wait_accepts_any_iterable(kit):
    ts = [kit.thread(return_value, i) for i in range(3)]
    assert wait(iter(ts), timeout=30) == (set(ts), set())
    assert wait(tuple(ts), timeout=30) == (set(ts), set())


def test_wait_duplicates(kit):
    t, ev = kit.gated(value=1)
    timer(0.05, ev.set)
    assert wait([t, t], timeout=30) == ({t}, set())


def test_as_completed_duplicates_yielded_once(kit):
    t = kit.thread(return_value, 1)
    t.join(10)
    assert list(as_completed([t, t], timeout=10)) == [t]


def test_as_completed_duplicates_pending_yielded_once(kit):
    t, ev = kit.gated(value=1)
    timer(0.05, ev.set)
    assert list(as_completed([t, t], timeout=30)) == [t]


def test_wait_from_two_threads_at_once(kit):
    t, ev = kit.gated(value=1)
    w1 = kit.thread(wait, [t], 30)
    w2 = kit.thread(wait, [t], 30, FIRST_COMPLETED)
    time.sleep(0.1)
    assert not w1.done() and not w2.done()
    ev.set()
    assert w1.result(timeout=30) == ({t}, set())
    assert w2.result(timeout=30) == ({t}, set())


def test_wait_interrupted_by_ctrl_c(kit):
    t, _ = kit.gated()
    for call in (lambda: wait([t]), lambda: next(as_completed([t]))):
        timer(0.2, os.kill, os.getpid(), signal.SIGINT)
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            call()
        assert time.monotonic() - t0 < 10
    assert not t.done()


# ---------------------------------------------------------------------------
# as_completed over threads
# ---------------------------------------------------------------------------


def test_as_completed_completion_order(kit):
    pairs = [kit.gated(value=i) for i in range(4)]
    ts = [t for t, _ in pairs]
    order = [2, 0, 3, 1]
    pairs[order[0]][1].set()
    seen = []
    for w in as_completed(ts, timeout=30):
        seen.append(w)
        assert w.done()
        if len(seen) < len(order):
            # the next one completes only now: the order is fully controlled
            time.sleep(0.02)
            pairs[order[len(seen)]][1].set()
    assert seen == [ts[i] for i in order]
    assert [w.result() for w in seen] == order


def test_as_completed_done_ones_first(kit):
    d1 = kit.thread(return_value, 1)
    d2 = kit.thread(return_value, 2)
    d1.join(10)
    d2.join(10)
    blocked, ev = kit.gated(value=3)
    it = as_completed([blocked, d1, d2], timeout=30)
    first_two = {next(it), next(it)}
    assert first_two == {d1, d2}
    assert not blocked.done()
    ev.set()
    assert next(it) is blocked
    with pytest.raises(StopIteration):
        next(it)


def test_as_completed_timeout(kit):
    d1 = kit.thread(return_value, 1)
    d1.join(10)
    b1, ev1 = kit.gated(value="b1")
    b2, _ = kit.gated(value="b2")
    yielded = []
    t0 = time.monotonic()
    with pytest.raises(mpservice.TimeoutError) as ei:
        for w in as_completed([d1, b1, b2], timeout=0.3):
            yielded.append(w)
            if w is d1:
                ev1.set()
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 5
    assert isinstance(ei.value, builtins.TimeoutError)
    assert yielded[0] is d1 and set(yielded) == {d1, b1}
    assert len(yielded) == 2
    assert not b2.done()


def test_as_completed_timeout_nothing_done(kit):
    b1, _ = kit.gated()
    t0 = time.monotonic()
    with pytest.raises(mpservice.TimeoutError):
        next(as_completed([b1], timeout=0.1))
    assert 0.08 <= time.monotonic() - t0 < 5


# ---------------------------------------------------------------------------
# a mix of threads and processes
# ---------------------------------------------------------------------------


def test_mixed_as_completed_order_and_results(kit):
    m = load_ours()
    pev1, pev2 = kit.mp_event(), kit.mp_event()
    p1 = kit.process(tt.return_after_event, pev1, "p1")
    p2 = kit.process(tt.raise_after_event, pev2, "p2 failed")
    t1, tev1 = kit.gated(value="t1")
    t2, tev2 = kit.gated(value="t2")
    assert isinstance(p1, m.SpawnProcess)
    gates = {p1: pev1, t1: tev1, p2: pev2, t2: tev2}
    order = [p1, t1, p2, t2]
    gates[order[0]].set()
    seen = []
    for w in as_completed([t2, p2, t1, p1], timeout=50):
        seen.append(w)
        assert w.done()
        if len(seen) < len(order):
            gates[order[len(seen)]].set()
    assert seen == order
    assert p1.result() == "p1"
    assert p1.exitcode == 0
    with pytest.raises(ValueError, match="p2 failed"):
        p2.result()
    assert p2.exitcode == 1
    assert isinstance(p2.exception(), ValueError)
    assert (t1.result(), t2.result()) == ("t1", "t2")


def test_mixed_wait_first_completed_and_all(kit):
    pev = kit.mp_event()
    p = kit.process(tt.return_after_event, pev, "p")
    t, tev = kit.gated(value="t")
    fast = kit.process(tt.return_value, 5)
    done, not_done = wait([p, t, fast], timeout=50, return_when=FIRST_COMPLETED)
    assert done == {fast} and not_done == {p, t}
    assert fast.result() == 5
    tev.set()
    assert t.result(timeout=10) == "t"
    done, not_done = wait([p, t, fast], timeout=50, return_when=FIRST_COMPLETED)
    assert done == {fast, t} and not_done == {p}
    pev.set()
    done, not_done = wait([p, t, fast], timeout=50)
    assert done == {p, t, fast} and not_done == set()
    assert p.result() == "p"


def test_mixed_first_exception_on_process_failure(kit):
    pev = kit.mp_event()
    bad = kit.process(tt.raise_after_event, pev, "proc failure")
    t, _ = kit.gated(value="t")
    timer(0.2, pev.set)
    t0 = time.monotonic()
    done, not_done = wait([t, bad], timeout=50, return_when=FIRST_EXCEPTION)
    assert time.monotonic() - t0 < 40
    assert done == {bad} and not_done == {t}
    assert isinstance(bad.exception(), ValueError)


def test_mixed_first_exception_on_system_exit(kit):
    bad = kit.process(tt.exit_with, 3)
    t, _ = kit.gated(value="t")
    done, not_done = wait([t, bad], timeout=50, return_when=FIRST_EXCEPTION)
    assert done == {bad} and not_done == {t}
    assert isinstance(bad.exception(), SystemExit)
    assert bad.exitcode == 3


def test_sigkilled_process_completes_with_exception(kit):
    m = load_ours()
    p = kit.process(tt.sleep_forever)
    t, _ = kit.gated(value="t")
    time.sleep(0.3)
    assert p.is_alive()
    timer(0.1, os.kill, p.pid, signal.SIGKILL)
    t0 = time.monotonic()
    done, not_done = wait([t, p], timeout=50, return_when=FIRST_EXCEPTION)
    assert time.monotonic() - t0 < 40
    assert done == {p} and not_done == {t}
    assert p.done()
    assert p.exitcode == -signal.SIGKILL
    with pytest.raises(m.ProcessFailedError) as ei:
        p.exception()
    assert ei.value.signal == signal.SIGKILL
    # as_completed yields it too
    assert next(as_completed([t, p], timeout=10)) is p


def test_terminated_process_is_not_an_exception(kit):
    """terminate() (SIGTERM) is a quiet end: FIRST_EXCEPTION does not return on it."""
    p = kit.process(tt.sleep_forever)
    t, _ = kit.gated(value="t")
    time.sleep(0.3)
    p.terminate()
    p.join(30)
    assert p.exitcode == -signal.SIGTERM
    t0 = time.monotonic()
    done, not_done = wait([t, p], timeout=0.3, return_when=FIRST_EXCEPTION)
    assert time.monotonic() - t0 >= 0.25
    assert done == {p} and not_done == {t}
    assert p.exception() is None
    assert p.result() is None


def test_mixed_wait_timeout(kit):
    p = kit.process(tt.sleep_forever)
    t, _ = kit.gated()
    t0 = time.monotonic()
    assert wait([p, t], timeout=0.3) == (set(), {p, t})
    assert 0.25 <= time.monotonic() - t0 < 5
    with pytest.raises(mpservice.TimeoutError):
        list(as_completed([p, t], timeout=0.1))


# ---------------------------------------------------------------------------
# scale and resources
# ---------------------------------------------------------------------------


def test_wait_on_50_threads(kit):
    ev = kit.event()
    ts = [kit.thread(gated, ev, value=i) for i in range(50)]
    special = kit.event()
    ts[17] = kit.thread(gated, special, value=17)
    timer(0.05, special.set)
    done, not_done = wait(ts, timeout=30, return_when=FIRST_COMPLETED)
    assert done == {ts[17]} and not_done == set(ts) - {ts[17]}
    timer(0.05, ev.set)
    done, not_done = wait(ts, timeout=30)
    assert done == set(ts) and not_done == set()
    assert sorted(t.result() for t in ts) == list(range(50))
    assert len(list(as_completed(ts, timeout=30))) == 50


def test_as_completed_50_threads_each_once(kit):
    evs = [kit.event() for _ in range(50)]
    ts = [kit.thread(gated, ev, value=i) for i, ev in enumerate(evs)]

    def release():
        for ev in reversed(evs):
            ev.set()
            time.sleep(0.002)

    kit.thread(release)
    seen = list(as_completed(ts, timeout=30))
    assert len(seen) == 50 and set(seen) == set(ts)


def test_waiting_burns_no_cpu(kit):
    t, _ = kit.gated()
    p = kit.process(tt.sleep_forever)
    time.sleep(0.2)
    c0, w0 = time.process_time(), time.monotonic()
    assert wait([t, p], timeout=0.5) == (set(), {t, p})
    cpu, wall = time.process_time() - c0, time.monotonic() - w0
    assert wall >= 0.45
    assert cpu < 0.1, f"{cpu:.3f} s of CPU while waiting {wall:.3f} s"
    c0 = time.process_time()
    with pytest.raises(mpservice.TimeoutError):
        list(as_completed([t], timeout=0.5))
    assert time.process_time() - c0 < 0.1


def test_no_fd_leak_after_waiting_on_200_threads():
    gc.collect()
    before = fd_count()
    ev = threading.Event()
    ts = [Thread(target=gated, args=(ev,), kwargs={"value": i}, daemon=True) for i in range(200)]
    for t in ts:
        t.start()
    try:
        # no descriptor is made for a thread that is not waited on
        assert fd_count() <= before
        assert wait(ts, timeout=0.05) == (set(), set(ts))
        during = fd_count()
        assert during > before
        timer(0.05, ev.set)
        assert wait(ts, timeout=30) == (set(ts), set())
        assert len(list(as_completed(ts, timeout=30))) == 200
    finally:
        ev.set()
        for t in ts:
            threading.Thread.join(t, 10)
    assert not any(t.is_alive() for t in ts)
    del ts, t
    deadline = time.monotonic() + 5
    while True:
        gc.collect()
        after = fd_count()
        if after <= before or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert after <= before, f"fds: {before} before, {during} while waiting, {after} after"


PROC_FD_SCRIPT = """
    import gc, json, os, threading, time
    import mpservice.multiprocessing as mm
    from mpservice.threading import Thread, wait
    import _thread_targets as tt

    def fds():
        gc.collect()
        time.sleep(0.1)
        gc.collect()
        return len(os.listdir("/proc/self/fd"))

    def round(close):
        ev = threading.Event()
        t = Thread(target=ev.wait, args=(30,))
        t.start()
        ps = [mm.SpawnProcess(target=tt.return_value, args=(i,)) for i in range(8)]
        for p in ps:
            p.start()
        pending = set(ps)
        while pending:
            done, _ = wait([t, *pending], timeout=60, return_when=mm.FIRST_COMPLETED)
            assert done and t not in done, done
            pending -= done
        assert [p.result() for p in ps] == list(range(8))
        ev.set()
        t.join(30)
        if close:
            for p in ps:
                p.close()

    round(True)  # warm up: the per-process service is made at the first start
    before = fds()
    round(True)
    closed = fds()
    round(False)
    print(json.dumps([before, closed, fds()]))
"""


def run_proc_fd_script():
    env = dict(os.environ, PYTHONPATH=CHILD_ENV_PYTHONPATH)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(PROC_FD_SCRIPT)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def proc_fd_counts():
    return run_proc_fd_script()


def test_no_fd_leak_after_waiting_on_closed_processes(proc_fd_counts):
    before, closed, _ = proc_fd_counts
    assert closed <= before, f"fds: {before} before, {closed} after 8 closed processes"


def test_no_fd_leak_after_waiting_on_dropped_processes(proc_fd_counts):
    before, _, dropped = proc_fd_counts
    assert dropped <= before, f"fds: {before} before, {dropped} after 8 dropped processes"
