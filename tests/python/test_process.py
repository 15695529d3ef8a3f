"""SpawnProcess (SPEC section 2): every way a child can end and what the parent sees of it,
the future-like API, log forwarding, many children on one service thread, interpreter exit,
and leaks.

Targets live in ``_proc_targets`` (importable by spawned children: conftest puts this
directory on sys.path and PYTHONPATH). A few tests write a throw-away target module into
``tmp_path`` (put on sys.path, which spawn hands on to the child) when what matters happens
while the child imports its target. Every process is reaped by the ``spawn`` fixture (kill
if alive, then join with a timeout).
"""

from __future__ import annotations

import builtins
import gc
import importlib
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

import _helpers
import _proc_targets as T
from conftest import (
    CHILD_ENV_PYTHONPATH,
    _shm,
    _shm_held_by_this_process,
    call_in_thread,
    leftover_children,
    load_ours,
)

load_ours()

import mpservice  # noqa: E402
import mpservice.multiprocessing as mpm  # noqa: E402
from mpservice.multiprocessing import (  # noqa: E402
    MP_SPAWN_CTX,
    Process,
    ProcessFailedError,
    SpawnContext,
    SpawnProcess,
)
from mpservice.multiprocessing.remote_exception import (  # noqa: E402
    RemoteExceptionStandIn,
    RemoteTraceback,
    get_remote_traceback,
    is_remote_exception,
)

pytestmark = pytest.mark.timeout(120)

SUPERVISOR = "mpservice-supervisor"


# ---------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------


def reap(p: SpawnProcess, timeout: float = 10.0) -> None:
    """Kill if alive, join (bounded, ignoring the child's outcome), close()."""
    _helpers.reap_process(p, grace=0, timeout=timeout)


@pytest.fixture
def spawn():
    """spawn(target, *args, cls=SpawnProcess, start=True, **init_kwargs) -> a process,
    started unless start=False; all of them are reaped at the end of the test."""
    made = []

    def make(target=None, *args, cls=SpawnProcess, start=True, **kw):
        p = cls(target=target, args=args, **kw)
        made.append(p)
        if start:
            p.start()
        return p

    yield make
    for p in made:
        reap(p)


def wait_ended(p, timeout=60.0):
    """Wait (on the sentinel) until the OS process ended; fail after `timeout`."""
    if not multiprocessing.connection.wait([p.sentinel], timeout):
        pytest.fail(f"{p!r} still running after {timeout}s")


def wait_for_file(path, p=None, timeout=60.0):
    """Wait until the child created `path` (its target runs)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if p is not None and p.done():
            pytest.fail(f"{p!r} ended (exitcode {p.exitcode}) before creating {path}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path} not created within {timeout}s")
        time.sleep(0.01)


def outcome(p, timeout=60.0):
    """('ok', value) or ('raise', exc) of p.result(timeout)."""
    try:
        return "ok", p.result(timeout)
    except BaseException as e:  # noqa: BLE001 - KeyboardInterrupt and SystemExit too
        return "raise", e


def supervisor_threads():
    return [t for t in threading.enumerate() if t.name == SUPERVISOR]


class ListHandler(logging.Handler):
    """Collects the records it handles."""

    def __init__(self):
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def messages(self):
        return [r.getMessage() for r in self.records]


class GateHandler(ListHandler):
    """Holds the parent's service thread on the first record until `gate` is set (60 s at
    most), so that a child's records pile up in the inbox."""

    def __init__(self, gate: threading.Event):
        super().__init__()
        self.gate = gate
        self.first_seen = threading.Event()

    def emit(self, record):
        if not self.records:
            self.first_seen.set()
            self.gate.wait(60)
        self.records.append(record)


@pytest.fixture
def logs():
    """logs(level=DEBUG, handler=None, name=None) -> (logger name, handler): a fresh logger
    (unique name unless given) with `level`, not propagating, with a collecting handler.
    Levels, propagation, handlers and logging.disable are restored at the end."""
    saved = []

    def attach(level=logging.DEBUG, handler=None, name=None):
        name = name or f"mpxtest.{uuid.uuid4().hex[:10]}"
        lg = logging.getLogger(name)
        h = handler if handler is not None else ListHandler()
        saved.append((lg, lg.level, lg.propagate, h))
        lg.setLevel(level)
        lg.propagate = False
        lg.addHandler(h)
        return name, h

    yield attach
    for lg, level, propagate, h in reversed(saved):
        lg.removeHandler(h)
        lg.setLevel(level)
        lg.propagate = propagate
        gate = getattr(h, "gate", None)
        if gate is not None:
            gate.set()
    logging.disable(logging.NOTSET)


def make_module(tmp_path, monkeypatch, source: str):
    """Write `source` as a uniquely named module in tmp_path, put tmp_path on sys.path
    (spawned children get the parent's sys.path) and import it here."""
    name = f"mpx_tmp_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module(name)
    monkeypatch.setitem(sys.modules, name, mod)  # removed from sys.modules at teardown
    return mod


def run_script(body: str, timeout=60, path=None):
    """Run a Python script in a fresh interpreter (this directory on PYTHONPATH)."""
    env = dict(os.environ, PYTHONPATH=CHILD_ENV_PYTHONPATH, PYTHONUNBUFFERED="1")
    if path is not None:
        path.write_text(textwrap.dedent(body))
        cmd = [sys.executable, str(path)]
    else:
        cmd = [sys.executable, "-c", textwrap.dedent(body)]
    return subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=timeout
    )


def check_failed(e, p, *phrases):
    """e is the ProcessFailedError of p, naming it, with `phrases` in its message."""
    assert type(e) is ProcessFailedError
    assert isinstance(e, OSError)
    msg = str(e)
    assert p.name in msg and str(p.pid) in msg, msg
    for phrase in phrases:
        assert phrase in msg, msg
    assert e.pid == p.pid
    assert e.exitcode == p.exitcode


# ---------------------------------------------------------------------------
# 1. the termination matrix
# ---------------------------------------------------------------------------


def test_normal_return(spawn):
    value = {"x": [1, 2.5, "three"], "y": (None, b"\x00")}
    p = spawn(T.return_value, value)
    assert p.result(60) == value
    assert p.exception(1) is None
    assert p.join(1) is None
    assert p.join() is None
    assert p.exitcode == 0
    assert p.done() and not p.is_alive()


def test_exception_arrives_with_remote_traceback(spawn, capfd):
    p = spawn(T.raise_value_error, "boom-1")
    with pytest.raises(ValueError) as ei:
        p.join(60)
    e = ei.value
    assert type(e) is ValueError and e.args == ("boom-1",)
    cause = e.__cause__
    assert isinstance(cause, RemoteTraceback)
    text = str(cause)
    assert text == cause.tb
    assert text.startswith(f"[{p.name}] "), text
    assert "Traceback (most recent call last)" in text
    assert "raise ValueError(msg)  # <- the failing line" in text  # the child's line
    assert "in raise_value_error" in text  # the target's name
    # It starts at the target's frame: none of SpawnProcess's own frames.
    assert text.splitlines()[1].endswith(", in raise_value_error"), text
    assert "context.py" not in text, text
    assert "ValueError: boom-1" in text
    assert is_remote_exception(e) and get_remote_traceback(e) == text
    # the same exception from every accessor
    assert p.exception() is e
    with pytest.raises(ValueError) as ei2:
        p.result()
    assert ei2.value is e
    assert p.exitcode == 1
    assert p.done()
    # handle_exception printed to the child's stdout (inherited: this process's fd 1)
    out = capfd.readouterr().out
    assert f"Exception in {p.name}: ValueError('boom-1')" in out.splitlines(), out


def test_exception_prefix_uses_custom_process_name(spawn):
    p = spawn(T.raise_value_error, "named", name="my-worker")
    e = p.exception(60)
    assert isinstance(e, ValueError)
    assert str(e.__cause__).startswith("[my-worker] ")


def test_keyboard_interrupt_in_target(spawn, capfd):
    p = spawn(T.raise_keyboard_interrupt)
    e = p.exception(60)
    assert type(e) is KeyboardInterrupt
    assert isinstance(e.__cause__, RemoteTraceback)
    assert str(e.__cause__).startswith(f"[{p.name}] ")
    assert "raise_keyboard_interrupt" in str(e.__cause__)
    with pytest.raises(KeyboardInterrupt):
        p.join()
    with pytest.raises(KeyboardInterrupt):
        p.result()
    assert p.exitcode == 1
    assert f"Exception in {p.name}: KeyboardInterrupt()" in capfd.readouterr().out


@pytest.mark.parametrize("code", [None, 0])
def test_system_exit_zero_is_a_normal_end(spawn, capfd, code):
    p = spawn(T.system_exit, code)
    assert p.result(60) is None
    assert p.exception() is None
    p.join()
    assert p.exitcode == 0
    assert "Exception in" not in capfd.readouterr().out


def test_system_exit_with_status(spawn, capfd):
    p = spawn(T.system_exit, 3)
    e = p.exception(60)
    assert type(e) is SystemExit and e.code == 3
    assert isinstance(e.__cause__, RemoteTraceback)
    with pytest.raises(SystemExit) as ei:
        p.join()
    assert ei.value.code == 3
    with pytest.raises(SystemExit):
        p.result()
    assert p.exitcode == 3
    assert "Exception in" not in capfd.readouterr().out  # SystemExit: no handle_exception


def test_system_exit_with_text(spawn, capfd):
    p = spawn(T.system_exit, "bye text")
    e = p.exception(60)
    assert type(e) is SystemExit and e.code == "bye text"
    with pytest.raises(SystemExit):
        p.join()
    assert p.exitcode == 1
    assert "bye text" in capfd.readouterr().err  # as the stdlib: the text goes to stderr


def test_no_target(spawn):
    p = spawn()
    assert p.result(60) is None
    assert p.exception() is None
    p.join()
    assert p.exitcode == 0


def test_terminate_running_child_is_a_quiet_end(spawn, tmp_path):
    flag = tmp_path / "running"
    p = spawn(T.touch_then_sleep, str(flag))
    wait_for_file(flag, p)
    p.terminate()
    assert p.result(60) is None
    assert p.exception() is None
    assert p.join() is None
    assert p.exitcode == -signal.SIGTERM
    assert p.done()


def test_terminate_right_after_start(spawn):
    p = spawn(T.sleep_forever)
    p.terminate()
    assert p.result(60) is None
    assert p.exitcode == -signal.SIGTERM


def test_kill_gives_process_failed_error(spawn, tmp_path):
    flag = tmp_path / "running"
    p = spawn(T.touch_then_sleep, str(flag))
    wait_for_file(flag, p)
    pid = p.pid
    p.kill()
    with pytest.raises(ProcessFailedError) as ei:
        p.join(60)
    e = ei.value
    check_failed(e, p, "SIGKILL", "possibly out of memory")
    assert e.pid == pid
    assert e.signal is signal.SIGKILL and isinstance(e.signal, signal.Signals)
    assert p.exitcode == -signal.SIGKILL == e.exitcode
    for get in (p.result, p.exception, p.join):
        with pytest.raises(ProcessFailedError) as again:
            get()
        assert again.value is e


@pytest.mark.parametrize(
    "target, sig, words",
    [
        (T.segfault_here, signal.SIGSEGV, ["Segmentation fault", "segfault_here"]),
        (T.abort_here, signal.SIGABRT, ["Aborted", "abort_here"]),
    ],
    ids=["SIGSEGV", "SIGABRT"],
)
def test_crash_by_signal_carries_the_childs_traceback(spawn, target, sig, words):
    p = spawn(target)
    with pytest.raises(ProcessFailedError) as ei:
        p.result(60)
    e = ei.value
    check_failed(e, p, sig.name)
    assert "out of memory" not in str(e)
    assert e.signal is sig
    assert p.exitcode == -sig
    cause = e.__cause__
    assert isinstance(cause, RemoteTraceback), cause
    text = str(cause)
    assert text.startswith(f"[{p.name}] "), text
    for w in words:
        assert w in text, text


def test_killed_by_other_signal(spawn):
    p = spawn(T.kill_self, signal.SIGUSR1)
    with pytest.raises(ProcessFailedError) as ei:
        p.join(60)
    check_failed(ei.value, p, "SIGUSR1")
    assert ei.value.signal is signal.SIGUSR1
    assert "out of memory" not in str(ei.value)
    assert p.exitcode == -signal.SIGUSR1


@pytest.mark.parametrize("code", [3, 0])
def test_os_exit_before_reporting(spawn, code):
    p = spawn(T.os_exit, code)
    with pytest.raises(ProcessFailedError) as ei:
        p.result(60)
    e = ei.value
    check_failed(e, p, f"exited with status {code} before reporting a result")
    assert e.signal is None
    assert p.exitcode == code
    with pytest.raises(ProcessFailedError):
        p.join()
    with pytest.raises(ProcessFailedError):
        p.exception()


@pytest.mark.parametrize("target", [T.return_lambda, T.return_lock], ids=["lambda", "lock"])
def test_result_that_cannot_be_pickled(spawn, target):
    p = spawn(target)
    with pytest.raises(ProcessFailedError) as ei:
        p.result(60)
    check_failed(ei.value, p, "its result could not be pickled")
    assert ei.value.signal is None
    assert p.exitcode == 1  # the child exits with status 1 after reporting the failure
    with pytest.raises(ProcessFailedError):
        p.join()


@pytest.mark.parametrize(
    "target, what",
    [(T.return_bad_unpickle, "cannot rebuild me"), (T.return_child_only_object, "mpx_child_only")],
    ids=["rebuild-raises", "class-only-in-child"],
)
def test_result_that_cannot_be_unpickled(spawn, target, what):
    p = spawn(target)
    with pytest.raises(ProcessFailedError) as ei:
        p.join(60)
    check_failed(ei.value, p, "its result could not be unpickled", what)
    assert p.exitcode == 0  # the child reported fine; only the parent could not rebuild it
    with pytest.raises(ProcessFailedError):
        p.result()


@pytest.mark.parametrize(
    "target, args, type_name, message",
    [
        (T.raise_locked_error, ("locked",), "_proc_targets.LockedError", "locked"),
        (T.raise_custom_init_error, ("custom", 7), "_proc_targets.CustomInitError", "custom"),
        (
            T.raise_child_only_error,
            ("only here",),
            "mpx_child_only_module.ChildOnlyError",
            "only here",
        ),
    ],
    ids=["unpicklable-attribute", "custom-init-signature", "class-only-in-child"],
)
def test_exception_that_cannot_be_rebuilt_arrives_as_stand_in(
    spawn, target, args, type_name, message
):
    p = spawn(target, *args)
    e = p.exception(60)  # never hangs: a stand-in, not a failure
    assert type(e) is RemoteExceptionStandIn
    assert e.type_name == type_name
    assert e.message == message
    assert type_name in str(e) and message in str(e)
    assert e.reason  # why it could not be rebuilt
    assert isinstance(e.__cause__, RemoteTraceback)
    text = str(e.__cause__)
    assert text.startswith(f"[{p.name}] ")
    assert target.__name__ in text and message in text
    with pytest.raises(RemoteExceptionStandIn):
        p.join()
    assert p.exitcode == 1


def test_handle_exception_override_is_used(spawn, capfd):
    p = spawn(T.raise_value_error, "custom-handled", cls=T.CustomHandlerProcess)
    with pytest.raises(ValueError):
        p.join(60)
    out = capfd.readouterr().out
    assert "custom handler got ValueError: custom-handled" in out
    assert "Exception in" not in out


def test_handle_exception_that_raises_does_not_change_the_outcome(spawn):
    p = spawn(T.raise_value_error, "original", cls=T.RaisingHandlerProcess)
    e = p.exception(60)
    assert type(e) is ValueError and e.args == ("original",)
    with pytest.raises(ValueError):
        p.join(60)
    assert p.exitcode == 1


def test_process_failed_error_api():
    assert mpm.ProcessFailedError is ProcessFailedError
    assert issubclass(ProcessFailedError, OSError)
    e = ProcessFailedError("process X (pid 5) was killed", pid=5, exitcode=-9,
                           signal=signal.SIGKILL)
    assert str(e) == "process X (pid 5) was killed"
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is ProcessFailedError and str(e2) == str(e)
    assert (e2.pid, e2.exitcode, e2.signal) == (5, -9, signal.SIGKILL)


# ---------------------------------------------------------------------------
# 2. the future API and the stdlib Process API
# ---------------------------------------------------------------------------


def test_timeouts_while_running(spawn, tmp_path):
    flag = tmp_path / "running"
    p = spawn(T.touch_then_sleep, str(flag))
    wait_for_file(flag, p)
    for get in (p.result, p.exception):
        t0 = time.monotonic()
        with pytest.raises(mpservice.TimeoutError) as ei:
            get(timeout=0.1)
        assert time.monotonic() - t0 >= 0.09
        assert isinstance(ei.value, builtins.TimeoutError)
        assert ei.value.args == ()
    with pytest.raises(mpservice.TimeoutError):
        p.result(timeout=0)
    assert p.join(0.1) is None
    assert p.join(0) is None
    assert p.join(-1) is None
    assert p.is_alive() and not p.done() and p.exitcode is None
    p.terminate()
    assert p.result(60) is None


def test_timeout_error_is_exported_by_the_subpackages():
    """SPEC section 1: mpservice.TimeoutError, raised by result()/exception() timeouts, is
    also exported by mpservice.multiprocessing (and mpservice.threading)."""
    import mpservice.threading as mpt

    assert issubclass(mpservice.TimeoutError, builtins.TimeoutError)
    assert mpt.TimeoutError is mpservice.TimeoutError
    assert mpm.TimeoutError is mpservice.TimeoutError


def test_before_start():
    p = SpawnProcess(target=T.return_value, args=(1,))
    assert not p.done()
    assert p.exitcode is None and p.pid is None and not p.is_alive()
    with pytest.raises(AssertionError, match="can only join a started process"):
        p.join()


def test_done_as_soon_as_the_process_ended(spawn):
    p = spawn(T.sleep_then_return, 0.3, [1, 2])
    assert not p.done()
    wait_ended(p)
    assert p.done()  # before any join
    assert p.done()
    r1 = p.result()
    assert r1 == [1, 2]
    assert p.result() is r1  # settled once
    assert p.done()


def test_join_raises_each_time(spawn):
    p = spawn(T.raise_value_error, "again")
    errs = []
    for _ in range(3):
        with pytest.raises(ValueError) as ei:
            p.join()
        errs.append(ei.value)
    assert errs[0] is errs[1] is errs[2] is p.exception()


def test_kwargs_not_mutated(spawn):
    kwargs = {"a": 1, "b": [2]}
    snapshot = {"a": 1, "b": [2]}
    p = SpawnProcess(target=T.echo_args, args=(0,), kwargs=kwargs)
    assert kwargs == snapshot
    p.start()
    try:
        assert p.result(60) == ((0,), {"a": 1, "b": [2]})
    finally:
        reap(p)
    assert kwargs == snapshot and list(kwargs) == ["a", "b"]


def test_context_and_aliases():
    assert Process is SpawnProcess
    assert mpm.SpawnProcess is SpawnProcess
    assert isinstance(MP_SPAWN_CTX, SpawnContext)
    assert isinstance(MP_SPAWN_CTX, multiprocessing.context.SpawnContext)
    assert MP_SPAWN_CTX.Process is SpawnProcess
    assert issubclass(SpawnProcess, multiprocessing.context.SpawnProcess)
    assert MP_SPAWN_CTX.get_context() is MP_SPAWN_CTX
    assert MP_SPAWN_CTX.get_context(None) is MP_SPAWN_CTX
    assert MP_SPAWN_CTX.get_context("spawn") is MP_SPAWN_CTX
    assert MP_SPAWN_CTX.get_context("fork") is multiprocessing.get_context("fork")
    assert MP_SPAWN_CTX.get_context("forkserver") is multiprocessing.get_context("forkserver")
    with pytest.raises(ValueError):
        MP_SPAWN_CTX.get_context("no-such-method")
    assert MP_SPAWN_CTX.get_start_method() == "spawn"


def test_ctx_process_is_ours_and_an_instance_of_the_stdlib_class(spawn):
    p = spawn(T.return_value, 11, cls=MP_SPAWN_CTX.Process)
    assert type(p) is SpawnProcess
    assert isinstance(p, multiprocessing.context.SpawnProcess)
    assert isinstance(p, multiprocessing.process.BaseProcess)
    assert p.result(60) == 11


def test_sentinel_with_connection_wait(spawn):
    p = spawn(T.sleep_then_return, 0.5, "s")
    assert multiprocessing.connection.wait([p.sentinel], 0.05) == []
    assert multiprocessing.connection.wait([p.sentinel], 60) == [p.sentinel]
    assert p.done()
    assert p.result() == "s"


def test_start_with_unpicklable_arguments_fails_cleanly(spawn):
    assert spawn(T.return_value, 0).result(60) == 0  # the service exists
    gc.collect()
    fds_before = sorted(os.listdir("/proc/self/fd"))
    p = SpawnProcess(target=T.return_value, args=(threading.Lock(),))
    with pytest.raises(TypeError, match="pickle"):
        p.start()
    assert p.pid is None and not p.done()
    del p
    gc.collect()
    assert sorted(os.listdir("/proc/self/fd")) == fds_before
    assert spawn(T.return_value, 1).result(60) == 1  # and the next start works


def test_stdlib_process_api(spawn, tmp_path):
    flag = tmp_path / "running"
    p = spawn(T.touch_then_sleep, str(flag), daemon=True, name="api-check")
    assert p.name == "api-check" and p.daemon is True
    assert isinstance(p.pid, int) and p.ident == p.pid
    with pytest.raises(AssertionError, match="cannot start a process twice"):
        p.start()
    wait_for_file(flag, p)
    assert p.is_alive() and p.exitcode is None
    assert p in multiprocessing.active_children()
    with pytest.raises(ValueError):
        p.close()  # still running
    p.kill()
    with pytest.raises(ProcessFailedError):
        p.join(60)
    assert not p.is_alive() and p.exitcode == -signal.SIGKILL
    assert p not in multiprocessing.active_children()
    p.kill()  # already ended: no error, as the stdlib
    p.terminate()
    p.close()
    p.close()  # twice is fine
    for use in (p.is_alive, p.join, p.result, p.exception):
        with pytest.raises(ValueError, match="closed"):
            use()


def test_join_interrupted_by_a_signal_then_joinable_again(spawn, tmp_path):
    """A signal handler's exception interrupts a blocked join(); the process stays usable."""

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted

    flag = tmp_path / "running"
    p = spawn(T.touch_then_sleep, str(flag))
    wait_for_file(flag, p)
    old = signal.signal(signal.SIGUSR2, handler)
    main = threading.main_thread().ident
    timer = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGUSR2))
    try:
        timer.start()
        with pytest.raises(Interrupted):
            p.join(30)
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR2, old)
    assert p.is_alive()
    p.terminate()
    assert p.result(60) is None
    assert p.exitcode == -signal.SIGTERM


def test_result_under_a_signal_storm(spawn):
    with _helpers.SignalStorm(period=0.01) as storm:
        p = spawn(T.sleep_then_return, 0.5, "calm")
        assert p.result(60) == "calm"
    assert storm.count > 0


def test_result_from_two_threads_at_once(spawn):
    """Two threads asking for the result of the same ended process get the same value (as
    concurrent.futures.Future.result). The result takes 0.5 s to unpickle in the parent,
    so the second caller arrives while the first one is settling the outcome."""
    p = spawn(T.return_slow_unpickle, 42, 0.5)
    wait_ended(p)
    results = []

    def get():
        try:
            results.append(("ok", p.result(30)))
        except BaseException as e:  # noqa: BLE001
            results.append(("raise", repr(e)))

    threads = [threading.Thread(target=get, daemon=True) for _ in range(2)]
    threads[0].start()
    time.sleep(0.15)
    threads[1].start()
    for t in threads:
        t.join(30)
    assert results == [("ok", 42), ("ok", 42)]
    assert p.result() == 42


# ---------------------------------------------------------------------------
# 3. log forwarding
# ---------------------------------------------------------------------------


def test_record_identity_is_the_childs(spawn, logs):
    name, h = logs(logging.DEBUG)
    p = spawn(T.log_with_identity, name)
    info = p.result(60)
    assert len(h.records) == 1
    r = h.records[0]
    assert r.name == name and r.levelno == logging.WARNING and r.levelname == "WARNING"
    assert r.getMessage() == "identity"
    assert r.processName == p.name == info["processName"]
    assert r.process == p.pid == info["process"]
    assert r.threadName == "MainThread" == info["threadName"]
    assert info["t0"] - 1e-6 <= r.created <= info["t1"] + 1e-6
    assert r.funcName == "log_with_identity"
    assert r.pathname == T.__file__ and r.filename == "_proc_targets.py"
    assert r.module == "_proc_targets"
    # the parent's formatting applies
    fmt = logging.Formatter("%(levelname)s|%(name)s|%(processName)s|%(funcName)s|%(message)s")
    assert fmt.format(r) == f"WARNING|{name}|{p.name}|log_with_identity|identity"


def test_records_from_a_second_thread(spawn, logs):
    name, h = logs(logging.DEBUG)
    p = spawn(T.log_from_thread, name)
    p.join(60)
    assert [(r.threadName, r.getMessage()) for r in h.records] == [
        ("child-worker-thread", "from the second thread"),
        ("MainThread", "from the main thread"),
    ]
    assert {r.process for r in h.records} == {p.pid}


def test_warnings_arrive_as_py_warnings(spawn, logs):
    _, h = logs(logging.WARNING, name="py.warnings")
    p = spawn(T.warn_in_child, "careful-xyz")
    p.join(60)
    assert len(h.records) == 1, h.messages()
    r = h.records[0]
    assert r.name == "py.warnings" and r.levelno == logging.WARNING
    assert "UserWarning: careful-xyz" in r.getMessage()
    assert r.processName == p.name


def test_logger_exception_text_arrives(spawn, logs):
    name, h = logs(logging.DEBUG)
    p = spawn(T.log_exception, name)
    p.join(60)
    assert len(h.records) == 1
    r = h.records[0]
    assert r.levelno == logging.ERROR
    msg = r.getMessage()
    assert msg.startswith("caught it")
    assert "Traceback (most recent call last)" in msg
    assert "in log_exception" in msg
    assert "KeyError: 'missing-key-xyz'" in msg
    assert "missing-key-xyz" in logging.Formatter().format(r)


def test_parent_levels_filter_and_child_does_not_ship_below_them(spawn, logs):
    base, h = logs(logging.INFO)
    quiet = f"{base}.quiet"
    logging.getLogger(quiet).setLevel(logging.ERROR)
    verbose = f"{base}.verbose"
    logging.getLogger(verbose).setLevel(logging.DEBUG)
    try:
        names = [base, f"{base}.sub", quiet, verbose]
        p = spawn(T.log_levels, names)
        view, disable = p.result(60)
    finally:
        logging.getLogger(quiet).setLevel(logging.NOTSET)
        logging.getLogger(verbose).setLevel(logging.NOTSET)
    got = [(r.name, r.getMessage()) for r in h.records]
    expected = []
    for n in names:
        levels = {
            quiet: ["error"],
            verbose: ["debug", "info", "warning", "error"],
        }.get(n, ["info", "warning", "error"])
        expected += [(n, f"{lv} {n}") for lv in levels]
    assert got == expected
    # the child sees the parent's effective levels, so it does not even make records the
    # parent would drop
    assert view == {
        base: (logging.INFO, False),
        f"{base}.sub": (logging.INFO, False),
        quiet: (logging.ERROR, False),
        verbose: (logging.DEBUG, True),
    }
    assert disable == 0


def test_parent_logging_disable_applies(spawn, logs):
    name, h = logs(logging.DEBUG)
    logging.disable(logging.WARNING)  # restored by the fixture
    p = spawn(T.log_levels, [name])
    view, disable = p.result(60)
    assert [r.getMessage() for r in h.records] == [f"error {name}"]
    assert disable == logging.WARNING


def test_child_that_configures_logging_at_import_does_not_forward(
    spawn, logs, tmp_path, monkeypatch, capfd
):
    mod = make_module(
        tmp_path,
        monkeypatch,
        """
        import logging, multiprocessing, sys

        if multiprocessing.current_process().name != "MainProcess":  # only in the child
            logging.basicConfig(stream=sys.stderr, format="CHILD-OWN %(name)s %(message)s")

        def target(name):
            logging.getLogger(name).error("configured-child record")
            return len(logging.getLogger().handlers)
        """,
    )
    name, h = logs(logging.DEBUG)
    p = spawn(mod.target, name)
    assert p.result(60) == 1  # only its own handler: ours was not added
    assert h.records == []
    assert f"CHILD-OWN {name} configured-child record" in capfd.readouterr().err


def test_chatty_child_never_blocks_and_join_waits_for_every_record(spawn, logs):
    """The parent's service is held on the first record while the child logs 100 000
    records and ends: the child must not block; join() returns only once every record was
    handled, in the child's order."""
    n = 100_000
    gate = threading.Event()
    name, h = logs(logging.INFO, handler=GateHandler(gate))
    try:
        p = spawn(T.log_sequence, name, n)
        wait_ended(p, 90)  # the child finished although nobody is reading
        assert len(h.records) <= 1
        assert p.join(0.2) is None  # ended, but its records are not handled yet
        with pytest.raises(mpservice.TimeoutError):
            p.result(0.2)
    finally:
        gate.set()
    assert p.join(120) is None
    assert len(h.records) == n  # all handled by the time join() returned
    assert h.messages() == [f"seq {i}" for i in range(n)]
    assert p.result() == n and p.exitcode == 0


@pytest.mark.parametrize("how", ["sigkill", "raise"])
def test_records_before_a_failure_are_handled_before_join_raises(spawn, logs, how):
    n = 5000
    gate = threading.Event()
    name, h = logs(logging.INFO, handler=GateHandler(gate))
    target = T.log_then_kill if how == "sigkill" else T.log_then_raise
    try:
        p = spawn(target, name, n)
        wait_ended(p, 60)
        assert len(h.records) <= 1
    finally:
        gate.set()
    expected_exc = ProcessFailedError if how == "sigkill" else ValueError
    with pytest.raises(expected_exc):
        p.join(60)
    assert h.messages() == [f"pre-{'kill' if how == 'sigkill' else 'raise'} {i}" for i in range(n)]
    if how == "sigkill":
        assert p.exitcode == -signal.SIGKILL


def test_join_interrupted_while_waiting_for_records(spawn, logs):
    """A signal interrupts join() while it waits for the child's records to be handled;
    a later join() completes normally."""

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted

    gate = threading.Event()
    name, h = logs(logging.INFO, handler=GateHandler(gate))
    old = signal.signal(signal.SIGUSR2, handler)
    timer = None
    try:
        p = spawn(T.log_sequence, name, 200)
        wait_ended(p, 60)
        timer = threading.Timer(0.3, signal.pthread_kill,
                                (threading.main_thread().ident, signal.SIGUSR2))
        timer.start()
        with pytest.raises(Interrupted):
            p.join(30)
    finally:
        if timer is not None:
            timer.cancel()
        signal.signal(signal.SIGUSR2, old)
        gate.set()
    assert p.result(60) == 200
    assert h.messages() == [f"seq {i}" for i in range(200)]


def test_big_and_unicode_messages_and_custom_levels(spawn, logs):
    name, h = logs(1)
    logging.addLevelName(25, "NOTICE")
    try:
        cases = [
            (logging.INFO, "m" * 3_000_000),
            (logging.INFO, "h\u00e9llo \u2713 \u6f22\u5b57 \U0001f40d"),
            (25, "notice"),
            (5, "below debug"),
        ]
        ps = [spawn(T.log_message, name, lv, msg) for lv, msg in cases]
        for p in ps:
            p.join(60)
        by_proc = {r.process: r for r in h.records}
        assert len(h.records) == len(cases)
        for p, (lv, msg) in zip(ps, cases):
            r = by_proc[p.pid]
            assert r.levelno == lv
            assert r.getMessage() == msg
        assert by_proc[ps[2].pid].levelname == "NOTICE"
        assert by_proc[ps[3].pid].levelname == "Level 5"
    finally:
        del logging._levelToName[25]
        del logging._nameToLevel["NOTICE"]


def test_grandchild_records_and_exception_reach_the_top(spawn, logs):
    """A child's own SpawnProcess forwards to the child, whose forwarding passes the
    records on to this process."""
    name, h = logs(logging.INFO)
    p = spawn(T.nested_spawn, name, 5)
    kind, msg, gc_name = p.result(60)
    assert (kind, msg) == ("ValueError", "after logging")
    assert gc_name.startswith(p.name.split("-")[0]) and ":" in gc_name
    assert [(r.processName, r.getMessage()) for r in h.records] == [
        (gc_name, f"pre-raise {i}") for i in range(5)
    ]


# ---------------------------------------------------------------------------
# 4. many children, one service thread, large launches
# ---------------------------------------------------------------------------


def test_twenty_children_at_once(spawn, logs):
    name, h = logs(logging.INFO)
    n = 50
    ps = [spawn(T.log_and_return, name, i, n) for i in range(20)]
    assert len(supervisor_threads()) == 1
    results = [p.result(90) for p in ps]
    assert [r[0] for r in results] == list(range(20))
    assert [r[1] for r in results] == [p.pid for p in ps]
    for i, p in enumerate(ps):
        mine = [r for r in h.records if r.process == p.pid]
        assert [r.getMessage() for r in mine] == [f"child{i} {k}" for k in range(n)]
        assert {r.processName for r in mine} == {p.name}
        p.join(60)  # result() may return before the process has fully exited
        assert p.exitcode == 0
    assert len(h.records) == 20 * n
    assert len(supervisor_threads()) == 1
    assert supervisor_threads()[0].daemon


def test_large_launch_does_not_wait_for_the_child(spawn, tmp_path, monkeypatch):
    """Two processes whose pickled arguments (5 MB) exceed any pipe buffer start while their
    children are stuck importing the target's module (before reading any argument); a
    small process started after them runs to the end meanwhile."""
    release = tmp_path / "release"
    mod = make_module(
        tmp_path,
        monkeypatch,
        f"""
        import multiprocessing, os, sys, time

        if multiprocessing.current_process().name != "MainProcess":  # the child: wait
            _deadline = time.monotonic() + 60
            while not os.path.exists({str(release)!r}):
                if time.monotonic() > _deadline:
                    os._exit(7)
                time.sleep(0.01)

        def target(data):
            return len(data)
        """,
    )
    big1, big2 = b"\x01" * 5_000_000, bytes(range(256)) * 20_000
    ps = []
    try:

        def start_all():
            for target, arg in ((mod.target, big1), (mod.target, big2), (T.return_len, b"sm")):
                ps.append(spawn(target, arg))

        call_in_thread(start_all, timeout=30)  # fails if a start() waits for its child
        assert ps[2].result(60) == 2
        assert ps[0].is_alive() and ps[1].is_alive()  # still held at import
    finally:
        release.touch()
    assert ps[0].result(60) == len(big1)
    assert ps[1].result(60) == len(big2)


def test_large_result_and_large_exception(spawn):
    big = b"r" * 8_000_000
    p1 = spawn(T.return_value, big)
    p2 = spawn(T.raise_value_error, "e" * 1_000_000)
    assert p1.result(60) == big
    e = p2.exception(60)
    assert isinstance(e, ValueError) and e.args[0] == "e" * 1_000_000


def test_child_does_not_keep_the_launch_memfd(spawn):
    p = spawn(T.own_fds)
    fds = p.result(60)
    assert not [t for t in fds.values() if "mpx-launch" in t], fds


# ---------------------------------------------------------------------------
# 5. interpreter exit
# ---------------------------------------------------------------------------


def test_exit_with_unjoined_failed_child_and_daemon_sleeper():
    proc = run_script(
        """
        import _proc_targets as T
        from mpservice.multiprocessing import SpawnProcess

        p1 = SpawnProcess(target=T.raise_value_error, args=("never joined",))
        p1.start()
        p2 = SpawnProcess(target=T.sleep_forever, daemon=True)
        p2.start()
        print("main done", flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert "main done" in out
    assert "Exception in SpawnProcess-1: ValueError('never joined')" in out
    assert "Traceback" not in proc.stderr, proc.stderr


def test_exit_with_unjoined_killed_child():
    proc = run_script(
        """
        import time
        import _proc_targets as T
        from mpservice.multiprocessing import SpawnProcess

        p = SpawnProcess(target=T.sleep_forever)
        p.start()
        time.sleep(0.2)
        p.kill()
        q = SpawnProcess(target=T.kill_self, args=(9,))
        q.start()
        print("main done", flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["main done"]
    assert "Traceback" not in proc.stderr, proc.stderr


def test_exit_with_chatty_daemon_child():
    proc = run_script(
        """
        import logging, time
        logging.basicConfig(level=logging.INFO, handlers=[logging.NullHandler()])
        import _proc_targets as T
        from mpservice.multiprocessing import SpawnProcess

        p = SpawnProcess(target=T.log_forever, args=("chatty",), daemon=True)
        p.start()
        time.sleep(1.0)
        print("main done", flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["main done"]
    assert "Traceback" not in proc.stderr, proc.stderr


def test_exit_handles_all_records_of_an_unjoined_child():
    """At interpreter exit, multiprocessing joins the non-daemon children; their records are
    all handled by the parent's logging before the interpreter is gone."""
    proc = run_script(
        """
        import logging, multiprocessing, sys
        logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                            format="REC %(processName)s %(message)s")
        import _proc_targets as T
        from mpservice.multiprocessing import SpawnProcess

        p = SpawnProcess(target=T.log_sequence, args=("exit.test", 2000))
        p.start()
        print("main done", flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "main done" in lines
    assert [ln for ln in lines if ln != "main done"] == [
        f"REC SpawnProcess-1 seq {i}" for i in range(2000)
    ]


# ---------------------------------------------------------------------------
# 6. leaks
# ---------------------------------------------------------------------------


LEAK_TARGETS = [(T.return_value, (i,)) for i in range(14)] + [
    (T.raise_value_error, ("x",)),
    (T.raise_value_error, ("y",)),
    (T.kill_self, (signal.SIGKILL,)),
    (T.os_exit, (3,)),
    (T.segfault_here, ()),
    (T.sleep_forever, ()),  # terminated
]


def _run_leak_round(close: bool) -> list[int]:
    """Start 20 processes ending every which way, settle them all, then close() them or
    just drop them; returns their pids."""
    ps = []
    try:
        for t, a in LEAK_TARGETS:
            p = SpawnProcess(target=t, args=a)
            ps.append(p)
            p.start()
        ps[-1].terminate()
        for p in ps:
            outcome(p, 60)
            try:
                p.join(60)  # result() may return before the process has fully exited
            except BaseException:  # noqa: BLE001 - the failures were seen by outcome()
                pass
            assert p.exitcode is not None
        assert [p.result() for p in ps[:14]] == list(range(14))
        assert ps[-1].exitcode == -signal.SIGTERM
        pids = [p.pid for p in ps]
        if close:
            for p in ps:
                p.close()
        return pids
    finally:
        if close:
            for p in ps:
                reap(p)
        else:  # kill and join what is left, but do not close()
            for p in ps:
                if p.is_alive():
                    p.kill()
                    outcome(p, 10)
        del ps[:]


def test_closed_processes_leave_no_fd_shm_or_child(spawn):
    # warm up: the service (inbox + thread) exists from the first start on
    assert spawn(T.return_value, 0).result(60) == 0
    gc.collect()
    fds_before = sorted(os.listdir("/proc/self/fd"))
    shm_before = _shm()
    pids = _run_leak_round(close=True)
    gc.collect()
    fds_after = sorted(os.listdir("/proc/self/fd"))
    assert len(fds_after) - len(fds_before) <= 2, (fds_before, fds_after)
    left = set(leftover_children()) & set(pids)
    assert not left, left
    assert not [p for p in multiprocessing.active_children() if p.pid in pids]
    new_shm = (_shm() - shm_before) & _shm_held_by_this_process()
    assert not new_shm, new_shm
    assert len(supervisor_threads()) == 1


def test_dropped_processes_release_their_descriptors(spawn):
    """Process objects dropped without close() release their descriptors when collected."""
    assert spawn(T.return_value, 0).result(60) == 0
    gc.collect()
    fds_before = sorted(os.listdir("/proc/self/fd"))
    pids = _run_leak_round(close=False)
    gc.collect()
    fds_after = sorted(os.listdir("/proc/self/fd"))
    assert len(fds_after) - len(fds_before) <= 2, (fds_before, fds_after)
    assert not set(leftover_children()) & set(pids)


def test_outcome_of_a_dropped_process_is_not_kept(spawn, logs):
    """Inspects the service's outcome table (internal): a process object dropped after its
    child ended, but before the service received the child's outcome, must not leave the
    outcome behind."""
    from mpservice.multiprocessing import _process

    gate = threading.Event()
    name, h = logs(logging.INFO, handler=GateHandler(gate))
    try:
        blocker = spawn(T.log_sequence, name, 1)
        assert h.first_seen.wait(60)  # the service now sits in the handler
        p = SpawnProcess(target=T.return_value, args=(b"z" * 1_000_000,))
        p.start()
        try:
            wait_ended(p)
        finally:
            if p.is_alive():  # only when wait_ended failed
                p.kill()
                outcome(p, 10)
        pid = p.pid
        del p
        multiprocessing.active_children()  # forgets the ended child: the object goes
        gc.collect()
        assert pid not in [c.pid for c in multiprocessing.active_children()]
        marker = spawn(T.return_value, 0)  # its outcome comes after p's in the inbox
    finally:
        gate.set()
    blocker.join(60)
    assert marker.result(60) == 0  # so the service has handled p's outcome by now
    sizes = [len(data) for _, data in _process.service().outcomes.values()]
    assert not [n for n in sizes if n >= 1_000_000], sizes  # p's pickled result


class JoiningHandler(ListHandler):
    """On its first record, calls result() of another process from inside the parent's
    service thread (where forwarded records are handled) and keeps what that gave."""

    def __init__(self, other):
        super().__init__()
        self.other = other
        self.joined = None

    def emit(self, record):
        if self.joined is None:
            self.joined = outcome(self.other, 60)
        super().emit(record)


def test_join_from_a_log_handler(spawn, logs):
    # The service thread cannot wait for another child's stream (it is the one that must
    # receive it): result() there raises a clear error at once instead of hanging or
    # making up an outcome, and everything goes on normally.
    b = spawn(T.sleep_then_return, 1.0, 7)
    name_a, handler = logs(handler=JoiningHandler(b))
    a = spawn(T.log_and_return, name_a, 1, 3)
    kind, value = outcome(a)
    assert kind == "ok" and value[0] == 1
    kind, err = handler.joined
    assert kind == "raise" and type(err) is RuntimeError
    assert "logging handler" in str(err)
    assert handler.messages() == ["child1 0", "child1 1", "child1 2"]
    assert b.result(60) == 7


LAZY_LOGGING_SCRIPT = """
    import sys
    from mpservice.multiprocessing import SpawnProcess

    def no_logging():
        return "logging" in sys.modules

    def late_logging():
        assert "logging" not in sys.modules
        import logging
        logging.getLogger("late").warning("imported late")
        return True

    def warn_first():
        import warnings
        assert "logging" not in sys.modules
        warnings.warn("a warning before any logging")
        return "logging" in sys.modules

    if __name__ == "__main__":
        import logging  # here, not at the top: a spawned child re-imports this module

        logging.basicConfig(format="%(processName)s|%(name)s|%(message)s", level=logging.INFO)
        for target in (no_logging, late_logging, warn_first):
            p = SpawnProcess(target=target)
            p.start()
            print(target.__name__, p.result(60), flush=True)
"""


def test_child_imports_logging_only_when_used(tmp_path):
    # A child that never logs never imports logging (it costs every child ~10 ms); one
    # that imports it during the target forwards all the same, and a warning before any
    # logging still arrives as a py.warnings record.
    r = run_script(LAZY_LOGGING_SCRIPT, path=tmp_path / "lazy_logging.py")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "no_logging False",
        "late_logging True",
        "warn_first True",
    ]
    err = r.stderr.splitlines()
    assert "SpawnProcess-2|late|imported late" in err
    warned = [line for line in err if line.startswith("SpawnProcess-3|py.warnings|")]
    assert len(warned) == 1 and "a warning before any logging" in warned[0]


def test_result_returns_before_the_exit(spawn):
    # The outcome is sent before the child's interpreter shuts down: result() returns as
    # soon as it was handled, while join() waits for the end.
    p = spawn(T.return_then_slow_exit, "early", 5.0)
    t0 = time.monotonic()
    assert p.result(60) == "early"
    assert time.monotonic() - t0 < 4.5  # the start and the result, not the 5 s shutdown
    assert not p.done() and p.exitcode is None
    assert p.exception(0) is None  # settled: no waiting either
    p.join(60)
    assert p.done() and p.exitcode == 0


def test_outcome_stands_when_the_exit_goes_wrong(spawn):
    # A child that reported its result and then dies in its shutdown (here os._exit(3)
    # from an atexit handler): the result stands, and the exit status is what it was.
    p = spawn(T.return_then_slow_exit, 11, 0.2, 3)
    assert p.result(60) == 11
    p.join(60)  # does not raise: the child reported a result
    assert p.exitcode == 3


def test_extra_attributes_are_forwarded(spawn, logs):
    # Attributes given with extra=... reach the parent's record (so a format that uses
    # them works); one that cannot be pickled arrives as its repr; the standard fields are
    # the child's; a record without extras has none.
    name, h = logs()
    p = spawn(T.log_with_extra, name)
    p.join(60)
    plain, extra, unpicklable, failed = h.records
    assert not hasattr(plain, "user")
    assert (extra.user, extra.n, extra.tags) == ("ann", 7, ["a", "b"])
    assert extra.getMessage() == "with extra" and extra.processName == p.name
    assert (unpicklable.user, unpicklable.n) == ("<NoPickle>", 1)
    assert (failed.user, failed.n) == ("bob", 2)
    assert failed.getMessage().startswith("failed\nTraceback (most recent call last):")
    assert "KeyError: 'k'" in failed.getMessage()
    formatted = logging.Formatter("%(user)s/%(n)s %(message)s").format(extra)
    assert formatted == "ann/7 with extra"
