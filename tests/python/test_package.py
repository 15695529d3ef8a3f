"""The package surface (SPEC section 1) and the stdlib-based classes of
section 3's last bullet: Pool, Manager/SyncManager, RawValue, RawArray,
Value, Array, cpu_count.

Also: importing mpservice.multiprocessing stays cheap (lazy loading), checked
in fresh interpreters. Module-level targets for children are in
_thread_targets.py.
"""

from __future__ import annotations

import builtins
import importlib
import json
import logging
import multiprocessing
import multiprocessing.context
import multiprocessing.managers
import multiprocessing.pool
import os
import subprocess
import sys
import textwrap
import time

import pytest

import _thread_targets as tt
from conftest import CHILD_ENV_PYTHONPATH, call_in_thread, load_ours

import mpservice

pytestmark = pytest.mark.timeout(90)

SPEC_ALL = [
    "SpawnContext", "MP_SPAWN_CTX", "Process", "Manager", "SyncManager", "Lock", "RLock",
    "Condition", "Semaphore", "BoundedSemaphore", "Event", "Barrier", "Queue",
    "JoinableQueue", "SimpleQueue", "Pool", "RawValue", "RawArray", "Value", "Array",
    "cpu_count", "wait", "as_completed", "ALL_COMPLETED", "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
]

SUBMODULES = ["context", "queues", "synchronize", "pool", "managers", "remote_exception"]

NOT_YET = pytest.mark.xfail(
    strict=True,
    reason="SPEC section 1 lists this submodule; python/mpservice/multiprocessing/ has "
    "no such module yet",
)


@pytest.fixture(scope="module")
def mm():
    return load_ours()


def run_fresh(code, *flags, timeout=60):
    """Run `code` in a fresh interpreter; return its last stdout line as JSON."""
    env = dict(os.environ, PYTHONPATH=CHILD_ENV_PYTHONPATH)
    r = subprocess.run(
        [sys.executable, *flags, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def start_child(mm, target, *args):
    p = mm.SpawnProcess(target=target, args=args, daemon=True)
    p.start()
    return p


def reap(*ps):
    """Join (bounded; kill if need be) and close each process. close() also
    keeps the session's fd-growth check from seeing the descriptors that an
    unclosed SpawnProcess leaks (see test_pool_replaced_workers_leak_no_fds)."""
    for p in ps:
        if p._popen is None:
            continue
        try:
            p.join(30)
        except BaseException:
            pass
        if p.is_alive():
            p.kill()
            try:
                p.join(5)
            except BaseException:
                pass
        try:
            p.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------


def test_all_is_exactly_the_spec_list(mm):
    assert len(mm.__all__) == len(set(mm.__all__)), "duplicates in __all__"
    assert sorted(mm.__all__) == sorted(SPEC_ALL)


@pytest.mark.parametrize("name", SPEC_ALL)
def test_each_name_importable(mm, name):
    ns = {}
    exec(f"from mpservice.multiprocessing import {name}", ns)
    assert ns[name] is getattr(mm, name)
    assert name in dir(mm)


def test_star_import_gives_all(mm):
    ns = {}
    exec("from mpservice.multiprocessing import *", ns)
    ns.pop("__builtins__", None)
    assert set(ns) == set(SPEC_ALL)


def test_names_are_the_right_objects(mm):
    import mpservice.threading as mt
    from mpservice.multiprocessing import context, remote_exception

    assert mm.SpawnContext is context.SpawnContext
    assert mm.MP_SPAWN_CTX is context.MP_SPAWN_CTX
    assert isinstance(mm.MP_SPAWN_CTX, mm.SpawnContext)
    assert mm.Process is mm.SpawnProcess is context.SpawnProcess
    assert issubclass(mm.SpawnProcess, multiprocessing.context.SpawnProcess)
    assert mm.Manager is mm.SyncManager
    assert mm.Thread is mt.Thread
    assert mm.wait is mt.wait
    assert mm.as_completed is mt.as_completed
    assert mm.ALL_COMPLETED == mt.ALL_COMPLETED == "ALL_COMPLETED"
    assert mm.FIRST_COMPLETED == mt.FIRST_COMPLETED == "FIRST_COMPLETED"
    assert mm.FIRST_EXCEPTION == mt.FIRST_EXCEPTION == "FIRST_EXCEPTION"
    assert mm.RemoteException is remote_exception.RemoteException
    assert issubclass(mm.ProcessFailedError, OSError)


@pytest.mark.parametrize(
    "name", ["SpawnProcess", "Thread", "RemoteException", "remote_exception",
             "ProcessFailedError"]
)
def test_also_importable(mm, name):
    ns = {}
    exec(f"from mpservice.multiprocessing import {name}", ns)
    assert ns[name] is not None


def test_remote_exception_submodule(mm):
    from mpservice.multiprocessing import remote_exception

    assert remote_exception is sys.modules["mpservice.multiprocessing.remote_exception"]
    assert mm.remote_exception is remote_exception


@pytest.mark.parametrize("name", SUBMODULES)
def test_submodules(mm, name):
    mod = importlib.import_module(f"mpservice.multiprocessing.{name}")
    ns = {}
    exec(f"from mpservice.multiprocessing import {name}", ns)
    assert ns[name] is mod
    assert getattr(mm, name) is mod


@NOT_YET
def test_server_process_submodule(mm):
    ns = {}
    exec("from mpservice.multiprocessing import server_process", ns)
    assert ns["server_process"].__name__ == "mpservice.multiprocessing.server_process"


def test_runner_submodule():
    """runner is imported explicitly."""
    from mpservice.multiprocessing.runner import ProcessRunner  # noqa: F401


def test_unknown_attribute(mm):
    with pytest.raises(AttributeError):
        mm.NoSuchThing  # noqa: B018
    with pytest.raises(ImportError):
        exec("from mpservice.multiprocessing import NoSuchThing", {})


def test_threading_module_names():
    import mpservice.threading as mt

    for name in ("Thread", "InvalidStateError", "TimeoutError", "wait", "as_completed",
                 "FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED"):
        assert hasattr(mt, name), name


# ---------------------------------------------------------------------------
# TimeoutError
# ---------------------------------------------------------------------------


def test_timeout_error_in_mpservice():
    assert issubclass(mpservice.TimeoutError, builtins.TimeoutError)
    assert mpservice.TimeoutError is not builtins.TimeoutError
    assert "TimeoutError" in mpservice.__all__
    ns = {}
    exec("from mpservice import *", ns)
    assert ns["TimeoutError"] is mpservice.TimeoutError


def test_timeout_error_in_threading():
    import mpservice.threading as mt

    assert mt.TimeoutError is mpservice.TimeoutError
    assert "TimeoutError" in mt.__all__


def test_timeout_error_in_multiprocessing(mm):
    ns = {}
    exec("from mpservice.multiprocessing import TimeoutError", ns)
    assert ns["TimeoutError"] is mpservice.TimeoutError


def test_timeout_error_raised_by_result(mm):
    ev = mm.Event()
    p = start_child(mm, tt.return_after_event, ev, "v")
    try:
        with pytest.raises(mpservice.TimeoutError) as ei:
            p.result(timeout=0.05)
        assert ei.value.args == ()
        with pytest.raises(builtins.TimeoutError):
            p.exception(timeout=0)
        ev.set()
        assert p.result(timeout=30) == "v"
    finally:
        ev.set()
        reap(p)


# ---------------------------------------------------------------------------
# lazy loading: importing the package is cheap
# ---------------------------------------------------------------------------

HEAVY = ["multiprocessing.pool", "multiprocessing.managers", "logging", "typing"]

LAZY_CHECK = """
    import json, sys
    before = set(sys.modules)
    import mpservice.multiprocessing as mm
    after = set(sys.modules)
    heavy = %r
    ours = ["mpservice.multiprocessing.pool", "mpservice.multiprocessing.managers",
            "mpservice.threading"]
    out = {
        "present": sorted(m for m in heavy if m in after),
        "new": sorted(m for m in heavy if m in after - before),
        "ours": sorted(m for m in ours if m in after),
    }
    mm.Pool, mm.Manager, mm.wait
    out["pool_on_use"] = "multiprocessing.pool" in sys.modules
    out["managers_on_use"] = "multiprocessing.managers" in sys.modules
    out["threading_on_use"] = "mpservice.threading" in sys.modules
    print(json.dumps(out))
""" % (HEAVY,)


def test_import_is_lazy_without_site():
    """-S: no site-packages .pth files import typing/logging behind our back."""
    out = run_fresh(LAZY_CHECK, "-S")
    assert out["present"] == [], f"importing mpservice.multiprocessing imported {out}"
    assert out["ours"] == []
    assert out["pool_on_use"] and out["managers_on_use"] and out["threading_on_use"]


def test_import_is_lazy_with_site():
    out = run_fresh(LAZY_CHECK)
    assert out["new"] == [], f"importing mpservice.multiprocessing imported {out}"
    assert out["ours"] == []


def test_spawned_child_does_not_load_pool_or_managers(mm):
    p = start_child(mm, tt.loaded_modules, ["multiprocessing.pool", "multiprocessing.managers",
                                            "mpservice.multiprocessing.pool",
                                            "mpservice.multiprocessing.managers"])
    try:
        assert p.result(timeout=30) == []
    finally:
        reap(p)


# ---------------------------------------------------------------------------
# Pool
# ---------------------------------------------------------------------------


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_pool_class(mm):
    assert mm.Pool is mm.pool.Pool
    assert issubclass(mm.Pool, multiprocessing.pool.Pool)


def test_pool_map_apply_workers_and_logs(mm):
    log = logging.getLogger("mpx.test.pool")
    handler = ListHandler()
    old_level = log.level
    log.setLevel(logging.INFO)  # before the pool starts: the children learn it then
    log.addHandler(handler)
    pool = mm.Pool(2)
    workers = []
    try:
        assert isinstance(pool, multiprocessing.pool.Pool)
        assert isinstance(pool, mm.Pool)
        workers = list(pool._pool)
        pids = {w.pid for w in workers}
        names = {w.name for w in workers}
        assert len(workers) == 2
        assert all(isinstance(w, mm.SpawnProcess) for w in workers), workers
        assert pool.map(tt.log_and_square, range(6)) == [0, 1, 4, 9, 16, 25]
        r = pool.apply_async(tt.log_and_square, (7,))
        assert r.get(timeout=30) == 49
        assert pool.apply(tt.return_value, ("x",)) == "x"
        assert sorted(pool.imap_unordered(tt.return_value, range(5))) == list(range(5))
        assert pool.starmap(divmod, [(7, 2), (9, 4)]) == [(3, 1), (2, 1)]
        with pytest.raises(ValueError, match="in a pool"):
            pool.apply_async(tt.raise_value_error, ("in a pool",)).get(timeout=30)
        # the child sees itself as our SpawnProcess too
        infos = pool.map(tt.whoami, range(4), chunksize=1)
        assert all(info[0] for info in infos), infos
        assert {info[2] for info in infos} <= pids
        call_in_thread(pool.close, timeout=30)
        call_in_thread(pool.join, timeout=60)
        assert all(not w.is_alive() for w in workers)
    finally:
        pool.terminate()
        log.removeHandler(handler)
        log.setLevel(old_level)
        reap(*workers)
    infos = [r for r in handler.records if r.levelno == logging.INFO]
    msgs = sorted(r.getMessage().split()[1] for r in infos)
    assert msgs == sorted(str(i) for i in [0, 1, 2, 3, 4, 5, 7])
    for r in infos:
        assert r.name == "mpx.test.pool"
        assert r.process in pids and r.process != os.getpid()
        assert r.processName in names
    assert not [r for r in handler.records if r.levelno < logging.INFO]


def test_pool_terminate_while_busy(mm):
    pool = mm.Pool(2)
    try:
        rs = [pool.apply_async(time.sleep, (30,)) for _ in range(2)]
        workers = list(pool._pool)
        time.sleep(0.3)
        t0 = time.monotonic()
        call_in_thread(pool.terminate, timeout=30)
        assert time.monotonic() - t0 < 20
        call_in_thread(pool.join, timeout=30)
        assert all(not w.is_alive() for w in workers)
    finally:
        pool.terminate()
        reap(*workers)
    assert not any(r.ready() and r.successful() for r in rs)


def test_pool_context_manager_and_repeated_calls(mm):
    t0 = time.monotonic()
    with mm.Pool(1) as pool:
        assert pool.map(tt.return_value, [1, 2]) == [1, 2]
        workers = list(pool._pool)
    # __exit__ terminates
    call_in_thread(pool.join, timeout=30)
    for w in workers:
        w.join(30)
        assert not w.is_alive()
    call_in_thread(pool.terminate, timeout=30)  # again: no raise, no hang
    call_in_thread(pool.close, timeout=30)
    assert time.monotonic() - t0 < 40
    reap(*workers)


def test_pool_replaces_a_dead_worker(mm):
    """A worker that dies (os._exit in a task) is replaced, as in the stdlib;
    terminate/join then neither raise nor hang. (close() + join() would wait
    forever for the lost task, as in the stdlib.)"""
    pool = mm.Pool(1)
    try:
        first = pool._pool[0]
        pool.apply_async(os._exit, (3,))
        deadline = time.monotonic() + 30
        while first.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not first.is_alive()
        assert pool.apply_async(tt.return_value, ("after",)).get(timeout=30) == "after"
        assert all(isinstance(w, mm.SpawnProcess) for w in pool._pool)
        assert first not in pool._pool
        workers = [first, *pool._pool]
        call_in_thread(pool.terminate, timeout=30)
        call_in_thread(pool.join, timeout=30)
    finally:
        pool.terminate()
        reap(*workers)


def test_pool_maxtasksperchild(mm):
    pool = mm.Pool(1, maxtasksperchild=1)
    seen = []
    try:
        for _ in range(3):
            seen.extend(w for w in pool._pool if w not in seen)
            info = pool.apply_async(tt.whoami).get(timeout=30)
            assert info[0]
            seen.extend(w for w in pool._pool if w not in seen)
        call_in_thread(pool.close, timeout=30)
        call_in_thread(pool.join, timeout=60)
        seen.extend(w for w in pool._pool if w not in seen)
        assert len(seen) >= 3  # a new worker for every task
    finally:
        pool.terminate()
        reap(*seen)


LEAK_SCRIPT = """
    import gc, json, os, time
    import mpservice.multiprocessing as mm
    import _thread_targets as tt

    def fds():
        gc.collect()
        time.sleep(0.1)
        gc.collect()
        return len(os.listdir("/proc/self/fd"))

    def cycle(tasks, maxtasks):
        pool = mm.Pool(1, maxtasksperchild=maxtasks)
        for i in range(tasks):
            assert pool.apply(tt.return_value, (i,)) == i
        pool.close()
        pool.join()

    cycle(1, None)  # warm up: the per-process service is made at the first start
    before = fds()
    cycle(10, 1)  # ten workers, each replaced after one task
    print(json.dumps([before, fds()]))
"""


def test_pool_replaced_workers_leak_no_fds():
    before, after = run_fresh(LEAK_SCRIPT)
    assert after <= before + 2, f"fds: {before} before, {after} after 10 replaced workers"


# ---------------------------------------------------------------------------
# Manager / SyncManager
# ---------------------------------------------------------------------------


def test_manager_class(mm):
    assert mm.Manager is mm.SyncManager
    assert mm.SyncManager is mm.managers.SyncManager
    assert issubclass(mm.SyncManager, multiprocessing.managers.SyncManager)


def test_manager_unstarted_until_start(mm):
    kids = set(multiprocessing.active_children())
    m = mm.Manager()
    assert isinstance(m, multiprocessing.managers.SyncManager)
    assert m._state.value == multiprocessing.managers.State.INITIAL
    assert getattr(m, "_process", None) is None
    assert set(multiprocessing.active_children()) == kids
    std = multiprocessing.managers.SyncManager(ctx=multiprocessing.get_context("spawn"))
    with pytest.raises(Exception) as std_err:
        std.list()
    with pytest.raises(type(std_err.value)):
        m.list()
    m2 = mm.SyncManager(ctx=mm.MP_SPAWN_CTX)
    assert m2._state.value == multiprocessing.managers.State.INITIAL


def test_manager_with_statement(mm):
    with mm.Manager() as m:
        proc = m._process
        assert isinstance(proc, mm.SpawnProcess), type(proc)
        assert proc.is_alive()
        assert m._state.value == multiprocessing.managers.State.STARTED
        lst = m.list([1, 2])
        lst.append(3)
        assert lst[:] == [1, 2, 3]
        d = m.dict(a=1)
        d["b"] = 2
        assert d.copy() == {"a": 1, "b": 2}
        lock = m.Lock()
        assert lock.acquire(timeout=5)
        assert not lock.acquire(False)
        lock.release()
        with lock:
            pass
        ns = m.Namespace(x=1)
        assert ns.x == 1
        # proxies travel to our SpawnProcess children
        p = start_child(mm, tt.manager_child, lst, d, lock)
        pid = p.pid
        try:
            assert p.result(timeout=30) == 4
        finally:
            reap(p)
        assert lst[-1] == "child" and d["child"] == pid
    proc.join(10)
    assert not proc.is_alive()
    assert proc.exitcode == 0
    assert m._state.value == multiprocessing.managers.State.SHUTDOWN
    reap(proc)


def test_manager_start_and_shutdown(mm):
    m = mm.SyncManager()
    m.start()
    try:
        proc = m._process
        assert isinstance(proc, mm.SpawnProcess)
        d = m.dict()
        d[1] = "one"
        assert d[1] == "one"
        q = m.Queue()
        q.put("x")
        assert q.get(timeout=5) == "x"
        ev = m.Event()
        ev.set()
        assert ev.is_set()
    finally:
        t0 = time.monotonic()
        call_in_thread(m.shutdown, timeout=30)
        assert time.monotonic() - t0 < 20
    assert not proc.is_alive()
    assert proc.exitcode == 0
    call_in_thread(m.shutdown, timeout=30)  # again: no raise, no hang
    reap(proc)


# ---------------------------------------------------------------------------
# RawValue, RawArray, Value, Array, cpu_count
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["RawValue", "RawArray", "Value", "Array", "cpu_count"])
def test_context_functions_are_mp_spawn_ctx_ones(mm, name):
    f = getattr(mm, name)
    assert getattr(f, "__self__", None) is mm.MP_SPAWN_CTX
    assert f == getattr(mm.MP_SPAWN_CTX, name)
    assert f.__func__ is getattr(multiprocessing.context.BaseContext, name)


def test_cpu_count(mm):
    assert mm.cpu_count() == os.cpu_count()


def test_shared_values_across_children(mm):
    v = mm.Value("i", 0)
    a = mm.Array("d", [1.0, 2.0, 3.0])
    rv = mm.RawValue("i", 0)
    ra = mm.RawArray("i", 4)
    assert hasattr(v, "get_lock") and hasattr(a, "get_lock")
    assert not hasattr(rv, "get_lock")
    ps = [start_child(mm, tt.shared_values_child, v, a, rv, ra, 200) for _ in range(2)]
    try:
        assert [p.result(timeout=60) for p in ps] == [os.cpu_count()] * 2
    finally:
        reap(*ps)
    assert v.value == 400
    assert list(a) == [4.0, 8.0, 12.0]
    assert rv.value == 42
    assert list(ra) == [0, 10, 20, 30]
