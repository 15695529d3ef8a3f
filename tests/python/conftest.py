"""Shared fixtures for the mpservice.multiprocessing test suite.

* Puts this directory on ``sys.path`` and on ``PYTHONPATH`` so that spawned /
  forkserver children (and subprocess scripts) can import ``_helpers``.
* ``impl`` fixture: parametrizes a test over the stdlib queues
  (``multiprocessing.get_context('spawn').Queue`` etc.) and ours
  (``mpservice.multiprocessing.Queue`` etc.); ``ours`` gives only ours.
  Every queue made through an ``Impl`` is closed at the end of the test.
* ``sync`` fixture: the same for the synchronization primitives (a
  ``_helpers.SyncImpl`` of the stdlib's or ours); ``osync`` gives only ours.
* ``procs`` fixture: starts child processes and always reaps them
  (join with a timeout, then kill).
* ``TThread`` / ``call_in_thread``: threads that are always joined with a
  timeout, re-raising the thread's exception; ``try_in_thread``: a lock's
  ``acquire(False)`` from another thread.
* Leak checks: per module, no child process (``active_children()`` and a
  /proc scan of this pid's children and of the forkserver's children) and no
  new /dev/shm entry are left; per session, the number of open file
  descriptors does not grow beyond a small tolerance.

Set ``MPX_TESTS_SKIP_MISSING=1`` to skip (instead of fail) the tests of our
implementation while ``mpservice.multiprocessing`` cannot be imported.
"""

from __future__ import annotations

import gc
import importlib.util
import multiprocessing as mp
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import signal
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _helpers  # noqa: E402 - from HERE


def _child_pythonpath() -> str:
    parts = [HERE]
    try:
        spec = importlib.util.find_spec("mpservice")
    except Exception:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            parts.append(os.path.dirname(os.path.abspath(loc)))
    old = os.environ.get("PYTHONPATH")
    if old:
        parts.extend(old.split(os.pathsep))
    seen = []
    for p in parts:
        if p and p not in seen:
            seen.append(p)
    return os.pathsep.join(seen)


os.environ["PYTHONPATH"] = _child_pythonpath()
CHILD_ENV_PYTHONPATH = os.environ["PYTHONPATH"]

# ---------------------------------------------------------------------------
# Implementations under test
# ---------------------------------------------------------------------------

_ours_module = None
_ours_error = None


def load_ours():
    """Import mpservice.multiprocessing or fail (skip with MPX_TESTS_SKIP_MISSING=1)."""
    global _ours_module, _ours_error
    if _ours_module is None and _ours_error is None:
        try:
            import mpservice.multiprocessing as m

            _ours_module = m
        except Exception as e:  # pragma: no cover - depends on build state
            _ours_error = e
    if _ours_module is None:
        msg = f"cannot import mpservice.multiprocessing: {_ours_error!r}"
        if os.environ.get("MPX_TESTS_SKIP_MISSING"):
            pytest.skip(msg)
        pytest.fail(msg)
    return _ours_module


def close_queue(q, timeout=10.0):
    """Close a queue and wait (bounded) for its feeder thread, ignoring errors."""
    try:
        q.close()
    except Exception:
        pass
    if hasattr(q, "join_thread"):
        t = threading.Thread(target=_quiet, args=(q.join_thread,), daemon=True)
        t.start()
        t.join(timeout)


def _quiet(fn):
    try:
        fn()
    except Exception:
        pass


class Impl:
    """Factory of queues of one implementation ('stdlib' or 'ours')."""

    def __init__(self, name: str):
        self.name = name
        self._made = []
        if name == "stdlib":
            self.m = None
            self.ctx = mp.get_context("spawn")
        else:
            self.m = load_ours()
            self.ctx = self.m.MP_SPAWN_CTX

    def __repr__(self):
        return f"Impl({self.name})"

    @property
    def ours(self) -> bool:
        return self.name == "ours"

    @property
    def classes(self):
        """(Queue, JoinableQueue, SimpleQueue) classes of this implementation."""
        if self.ours:
            return self.m.Queue, self.m.JoinableQueue, self.m.SimpleQueue
        import multiprocessing.queues as mq

        return mq.Queue, mq.JoinableQueue, mq.SimpleQueue

    def _track(self, q):
        self._made.append(q)
        return q

    def Queue(self, maxsize=0, *, ctx=None):
        if self.ours:
            q = self.m.Queue(maxsize) if ctx is None else self.m.Queue(maxsize, ctx=ctx)
        else:
            q = (ctx or self.ctx).Queue(maxsize)
        return self._track(q)

    def JoinableQueue(self, maxsize=0, *, ctx=None):
        if self.ours:
            q = (
                self.m.JoinableQueue(maxsize)
                if ctx is None
                else self.m.JoinableQueue(maxsize, ctx=ctx)
            )
        else:
            q = (ctx or self.ctx).JoinableQueue(maxsize)
        return self._track(q)

    def SimpleQueue(self, *, ctx=None):
        if self.ours:
            q = self.m.SimpleQueue() if ctx is None else self.m.SimpleQueue(ctx=ctx)
        else:
            q = (ctx or self.ctx).SimpleQueue()
        return self._track(q)

    def settle(self, delay=0.25):
        """The stdlib's put() hands items to a feeder thread: give it time to
        write them into the pipe, so that empty()/get_nowait() see them. Ours
        enqueues synchronously: no wait."""
        if not self.ours:
            time.sleep(delay)

    def cleanup(self):
        for q in self._made:
            close_queue(q)
        self._made.clear()


@pytest.fixture(params=["stdlib", "ours"])
def impl(request):
    i = Impl(request.param)
    yield i
    i.cleanup()


@pytest.fixture
def ours():
    i = Impl("ours")
    yield i
    i.cleanup()


@pytest.fixture
def stdlib():
    i = Impl("stdlib")
    yield i
    i.cleanup()


@pytest.fixture(params=["stdlib", "ours"])
def sync(request):
    """The synchronization primitives of the stdlib's spawn context, then ours."""
    m = load_ours() if request.param == "ours" else None
    return _helpers.SyncImpl(request.param, m)


@pytest.fixture
def osync():
    """Our synchronization primitives only."""
    return _helpers.SyncImpl("ours", load_ours())


# ---------------------------------------------------------------------------
# Processes and threads that are always reaped
# ---------------------------------------------------------------------------


class Procs:
    def __init__(self):
        self.started = []

    def start(
        self, target, *args, method="spawn", kwargs=None, process_class=None, daemon=True
    ):
        cls = process_class or mp.get_context(method).Process
        p = cls(target=target, args=args, kwargs=kwargs or {}, daemon=daemon)
        p.start()
        self.started.append(p)
        return p

    def join(self, p, timeout=30.0, expect_exitcode=0):
        """Join with a timeout; kill and fail if still alive."""
        p.join(timeout)
        if p.is_alive():
            p.kill()
            p.join(5)
            pytest.fail(f"{p!r} did not finish within {timeout}s (killed)")
        if expect_exitcode is not None:
            assert p.exitcode == expect_exitcode, f"{p!r} exitcode {p.exitcode}"
        return p.exitcode

    def kill(self, p, timeout=10.0):
        os.kill(p.pid, signal.SIGKILL)
        p.join(timeout)
        assert not p.is_alive()
        assert p.exitcode == -signal.SIGKILL

    def reap_all(self):
        for p in self.started:
            _helpers.reap_process(p, grace=2.0)
        self.started.clear()


@pytest.fixture
def procs():
    ps = Procs()
    yield ps
    ps.reap_all()


class TThread(threading.Thread):
    """Daemon thread that records its outcome; outcome() joins with a timeout."""

    def __init__(self, fn, *args, **kwargs):
        super().__init__(daemon=True)
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self.result = None
        self.exc = None
        self.finished_at = None

    def run(self):
        try:
            self.result = self._fn(*self._args, **self._kwargs)
        except BaseException as e:  # noqa: BLE001
            self.exc = e
        finally:
            self.finished_at = time.monotonic()

    def outcome(self, timeout=30.0):
        self.join(timeout)
        if self.is_alive():
            pytest.fail(f"thread running {self._fn!r} still blocked after {timeout}s")
        if self.exc is not None:
            raise self.exc
        return self.result


def start_thread(fn, *args, **kwargs) -> TThread:
    t = TThread(fn, *args, **kwargs)
    t.start()
    return t


def call_in_thread(fn, *args, timeout=30.0, **kwargs):
    """Run fn in a daemon thread; fail (instead of hanging) if it blocks."""
    return start_thread(fn, *args, **kwargs).outcome(timeout)


def wait_until(pred, timeout=10.0, what="condition"):
    """Polls pred() every 10 ms; fails the test if it is not true within `timeout` s."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def try_in_thread(lock):
    """acquire(False) in another thread (released there again if acquired)."""

    def attempt():
        ok = lock.acquire(False)
        if ok:
            lock.release()
        return ok

    return call_in_thread(attempt, timeout=10)


def outcome_of(fn, *args, **kwargs):
    """('ok', result) or ('raise', type, str(exc)) of calling fn."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as e:  # noqa: BLE001
        return ("raise", type(e), str(e))


# ---------------------------------------------------------------------------
# Leak checks
# ---------------------------------------------------------------------------


def _helper_pids():
    pids = set()
    rt = getattr(multiprocessing.resource_tracker, "_resource_tracker", None)
    if rt is not None and getattr(rt, "_pid", None):
        pids.add(rt._pid)
    fs = getattr(multiprocessing.forkserver, "_forkserver", None)
    if fs is not None and getattr(fs, "_forkserver_pid", None):
        pids.add(fs._forkserver_pid)
    return pids


def _helper_fds():
    fds = set()
    rt = getattr(multiprocessing.resource_tracker, "_resource_tracker", None)
    if rt is not None and getattr(rt, "_fd", None) is not None:
        fds.add(rt._fd)
    fs = getattr(multiprocessing.forkserver, "_forkserver", None)
    if fs is not None and getattr(fs, "_forkserver_alive_fd", None) is not None:
        fds.add(fs._forkserver_alive_fd)
    return fds


def _children_of(ppids):
    """{pid: (state, comm, ppid)} of live or zombie processes whose parent is in ppids."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rp = s.rfind(")")
        fields = s[rp + 2 :].split()
        state, ppid = fields[0], int(fields[1])
        if ppid in ppids:
            out[int(d)] = (state, s[s.find("(") + 1 : rp], ppid)
    return out


def leftover_children():
    helpers = _helper_pids()
    kids = _children_of({os.getpid()} | helpers)
    return {pid: v for pid, v in kids.items() if pid not in helpers}


_fd_table = _helpers.fd_table


def _shm():
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def _shm_held_by_this_process():
    """/dev/shm names this process still maps, holds open, or owns through a
    live stdlib SemLock (named 'sem.<name>' in /dev/shm)."""
    held = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                i = line.find("/dev/shm/")
                if i >= 0:
                    held.add(line[i + 9 :].split(" (deleted)")[0].strip())
    except OSError:
        pass
    for target in _fd_table().values():
        if target.startswith("/dev/shm/"):
            held.add(target[9:].split(" (deleted)")[0])
    import multiprocessing.synchronize as msync

    for obj in gc.get_objects():
        if isinstance(obj, msync.SemLock):
            name = getattr(getattr(obj, "_semlock", None), "name", None)
            if name:
                held.add("sem." + name.lstrip("/"))
    return held


@pytest.fixture(scope="module", autouse=True)
def _no_leftovers_per_module():
    shm_before = _shm()
    kids_before = set(leftover_children())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        active = mp.active_children()
        kids = {p: v for p, v in leftover_children().items() if p not in kids_before}
        if (not active and not kids) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    # clean up so that one module's leak does not cascade, then report
    for p in active:
        try:
            p.kill()
            p.join(2)
        except Exception:
            pass
    for pid in kids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(pid, os.WNOHANG)
        except OSError:
            pass
    # stdlib named semaphores (sem.mp-*) live until their SemLock objects are
    # garbage collected: collect, and give finalizers a moment.
    # /dev/shm is machine-wide and other programs (benchmarks, other test
    # runs) may create entries meanwhile: an entry fails the check when this
    # process still maps it, holds it open or owns it through a live SemLock;
    # other new entries only produce a warning.
    new_shm = set()
    deadline = time.monotonic() + 2.0
    while True:
        gc.collect()
        new_shm = (_shm() - shm_before) & _shm_held_by_this_process()
        if not new_shm or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    unattributed = _shm() - shm_before - new_shm
    if unattributed:
        import warnings

        warnings.warn(
            f"new /dev/shm entries during this module, not held by this process "
            f"(possibly another program's): {sorted(unattributed)}"
        )
    problems = []
    if active:
        problems.append(f"multiprocessing.active_children() not empty: {active}")
    if kids:
        problems.append(f"child processes left (pid: state, comm, ppid): {kids}")
    if new_shm:
        problems.append(f"new /dev/shm entries: {sorted(new_shm)}")
    assert not problems, "; ".join(problems)


FD_TOLERANCE = 6


@pytest.fixture(scope="session", autouse=True)
def _no_fd_growth_per_session():
    gc.collect()
    before = _fd_table()
    yield
    for _ in range(3):
        gc.collect()
    time.sleep(0.2)
    gc.collect()
    after = _fd_table()
    helpers = _helper_fds()
    grown = {
        fd: target
        for fd, target in after.items()
        if fd not in helpers and (fd not in before or before[fd] != target)
    }
    assert len(grown) <= FD_TOLERANCE, (
        f"open fds grew by {len(grown)} (> {FD_TOLERANCE}) during the session: {grown}"
    )
