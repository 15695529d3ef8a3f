"""The machinery behind :class:`~mpservice.multiprocessing.SpawnProcess`.

Parent side: one *service* per process, created at the first start: a libmpx inbox that
every child reports into (log records while it runs, then its outcome), and one daemon
thread that receives from it in order, hands each log record to the parent's logging, and
completes each child once its outcome (or, for a child that died without one, the marker
the joiner puts behind its last message) has been handled. ``join()`` waits for the process
(pidfd) and then for that completion, so it returns only after every record of the child
was handled.

Launch: the preparation data and the pickled process object go into a memfd; the pipe that
the standard ``spawn_main`` reads from carries only two small stub pickles that read them
from there, so a large launch never blocks ``start()`` on a full pipe. The parent's
sentinel is the child's pidfd.

The child's side, :class:`~mpservice.multiprocessing._report.ChildReport`, is in its own
module, so that a child imports none of this.
"""

from __future__ import annotations

import itertools
import operator
import os
import pickle
import sys
import threading
import time
from multiprocessing import popen_spawn_posix, reduction, spawn, util
from multiprocessing.context import get_spawning_popen, set_spawning_popen

from .. import _mpx

# ---------------------------------------------------------------------------------------
# The parent's service


class _Service:
    """The inbox of this process's children and the thread that serves it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.inbox = _mpx.Inbox()
        self.outcomes: dict[int, tuple[int, bytes]] = {}
        self.live: set[int] = set()  # tokens of process objects that may still take()
        self._tokens = itertools.count(1)
        self.thread = threading.Thread(
            target=self._serve, name="mpservice-supervisor", daemon=True
        )
        self.thread.start()

    def new_token(self) -> int:
        token = next(self._tokens)
        self.inbox.expect(token)
        self.live.add(token)
        return token

    def _serve(self) -> None:
        while True:
            try:
                batch = self.inbox.recv()
            except Exception:  # only a decode or memory error: report and go on
                _report_error("receiving from the inbox")
                time.sleep(0.05)  # an error that repeats (no memory) must not spin
                continue
            self._handle(batch)

    def _handle(self, batch) -> None:
        for item in batch:
            if type(item) is tuple:
                token, code, data = item
                # Keep an outcome only for a process object that can still take it.
                if code is not None and token in self.live:
                    self.outcomes[token] = (code, data)
                self.inbox.complete(token)
                continue
            try:
                # A record means logging is imported (the binding built a LogRecord).
                logger = sys.modules["logging"].getLogger(item.name)
                if logger.isEnabledFor(item.levelno):
                    logger.handle(item)
            except Exception:
                _report_error("handling a child's log record")

    def check_caller(self) -> None:
        """Raises if called on the service thread, which cannot wait for a child."""
        if threading.current_thread() is self.thread:
            # A log handler (they run on this thread) waiting for a process: its stream
            # can only be received by this thread, which is busy in that handler.
            raise RuntimeError(
                "cannot wait for a process's outcome from a logging handler: handlers of "
                "forwarded records run on the thread that receives every child's messages"
            )

    def finish(self, token: int, timeout: float | None) -> bool:
        """For an ended child: True once its stream was handled (False on timeout)."""
        return self.inbox.flush(token, timeout)

    def take(self, token: int) -> tuple[int, bytes] | None:
        self.live.discard(token)
        self.inbox.forget(token)
        return self.outcomes.pop(token, None)

    def drop(self, token: int) -> None:
        self.live.discard(token)
        self.inbox.forget(token)
        self.outcomes.pop(token, None)


def _report_error(what: str) -> None:
    try:
        import traceback

        sys.stderr.write(f"mpservice: error while {what}:\n")
        traceback.print_exc()
    except Exception:
        pass


_service: _Service | None = None
_service_lock = threading.Lock()


def service() -> _Service:
    global _service
    s = _service
    if s is None or s.pid != os.getpid():
        with _service_lock:
            s = _service
            if s is None or s.pid != os.getpid():
                s = _service = _Service()
    return s


def _after_fork_in_child() -> None:
    global _service, _service_lock
    _service = None
    _service_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def logging_levels() -> tuple[dict[str, int], int] | None:
    """The parent's explicit logger levels and logging.disable level, so that a child
    filters as the parent would (records the parent would drop are not shipped); None
    when the parent has not imported logging (its defaults apply)."""
    logging = sys.modules.get("logging")
    if logging is None:
        return None
    manager = logging.root.manager
    levels = {"": logging.root.level}
    for name, logger in list(manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            levels[name] = logger.level
    return levels, manager.disable


# ---------------------------------------------------------------------------------------
# Launch


class _Call:
    """Pickles as a call of ``fn(*args)``: the stub pickles are made of these."""

    def __init__(self, fn, *args):
        self.fn = fn
        self.args = args

    def __reduce__(self):
        return self.fn, self.args


def _stubs(fd: int, n1: int, n2: int) -> bytes:
    """Two pickles that, using only the standard library, load the preparation data from
    fd[0:n1] and the process object from fd[n1:n1+n2] (and then close fd)."""
    first = _Call(pickle.loads, _Call(os.pread, fd, n1, 0))
    second = _Call(
        operator.getitem,
        (_Call(pickle.loads, _Call(os.pread, fd, n2, n1)), _Call(os.close, fd)),
        0,
    )
    return pickle.dumps(first, 2) + pickle.dumps(second, 2)


_pidfd_ok: bool | None = None


def _pidfd_supported() -> bool:
    global _pidfd_ok
    if _pidfd_ok is None:
        try:
            os.close(os.pidfd_open(os.getpid()))
            _pidfd_ok = True
        except (OSError, AttributeError):
            _pidfd_ok = False
    return _pidfd_ok


class Popen(popen_spawn_posix.Popen):
    """The spawn Popen, launched through a memfd and supervised by pidfd."""

    def _launch(self, process_obj):
        from multiprocessing import resource_tracker

        tracker_fd = resource_tracker.getfd()
        self._fds.append(tracker_fd)
        prep_data = spawn.get_preparation_data(process_obj._name)
        set_spawning_popen(self)
        try:
            prep = reduction.ForkingPickler.dumps(prep_data)
            obj = reduction.ForkingPickler.dumps(process_obj)
        finally:
            set_spawning_popen(None)
        self._child = None
        data_fd = os.memfd_create("mpx-launch", os.MFD_CLOEXEC)
        to_close = [data_fd]
        keep = []
        try:
            _write_all(data_fd, prep)
            _write_all(data_fd, obj)
            child_r, parent_w = os.pipe()
            to_close.append(child_r)
            keep.append(parent_w)
            # The stubs go first: they fit in any pipe, so the write below never waits
            # for the child.
            os.write(parent_w, _stubs(data_fd, len(prep), len(obj)))
            fds = self._fds + [child_r, data_fd]
            pidfd = _pidfd_supported()
            if not pidfd:
                # No pidfd: the standard sentinel, a pipe whose write end only the child holds.
                parent_r, child_w = os.pipe()
                to_close.append(child_w)
                keep.append(parent_r)
                fds.append(child_w)
            cmd = spawn.get_command_line(tracker_fd=tracker_fd, pipe_handle=child_r)
            self.pid = util.spawnv_passfds(spawn.get_executable(), cmd, fds)
            self._child = _mpx.Child(self.pid, poll=not pidfd)
            self.sentinel = self._child.fileno() if pidfd else parent_r
        finally:
            for fd in to_close:
                os.close(fd)
            # The parent keeps the write end of the launch pipe open while it holds this
            # Popen, as the standard library does: the child's parent_process() sentinel.
            # (The pidfd belongs to self._child and closes with it.)
            self.finalizer = util.Finalize(self, util.close_fds, keep)

    def poll(self, flag=os.WNOHANG):
        if self.returncode is None and self._child is not None:
            self.returncode = self._child.wait(0 if flag == os.WNOHANG else None)
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None and self._child is not None:
            self.returncode = self._child.wait(timeout)
        return self.returncode

    def done(self) -> bool:
        return self.returncode is not None or (self._child is not None and self._child.done())

    def _send_signal(self, sig):
        if self.returncode is None and self._child is not None:
            self._child.signal(sig)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# ---------------------------------------------------------------------------------------
# What travels with the process object


class Launch:
    """The parent's side of a child's reporting: its token, the inbox, the parent's
    logging levels, and the memfd the child's faulthandler writes a crash into."""

    def __init__(self, name: str) -> None:
        svc = service()
        self.svc = svc
        self.token = svc.new_token()
        self.lock = threading.Lock()  # held by the thread settling the outcome
        self.levels = logging_levels()
        self.fault_fd = os.memfd_create("mpx-fault", os.MFD_CLOEXEC)

    def __reduce__(self):
        popen = get_spawning_popen()
        if popen is None:
            raise RuntimeError("a process's launch data is pickled only when it starts")
        from ._report import ChildReport

        return ChildReport, (
            self.token,
            popen.duplicate_for_child(self.svc.inbox.fileno()),
            popen.duplicate_for_child(self.fault_fd),
            self.levels,
        )

    def crash_text(self) -> str:
        """What the child's faulthandler wrote (empty if nothing)."""
        try:
            data = os.pread(self.fault_fd, 1 << 20, 0)
        except OSError:
            return ""
        return data.decode("utf-8", "replace").strip()

    def close(self) -> None:
        if self.fault_fd >= 0:
            os.close(self.fault_fd)
            self.fault_fd = -1

    def __del__(self):
        self.close()
