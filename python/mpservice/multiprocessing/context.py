"""The "spawn" context of mpservice and its process class, :class:`SpawnProcess`."""

import multiprocessing
import multiprocessing.context as _std
import multiprocessing.process as _mp_process
import pickle
import signal
import time

from .. import TimeoutError

__all__ = ["SpawnContext", "MP_SPAWN_CTX", "SpawnProcess", "ProcessFailedError"]


class ProcessFailedError(OSError):
    """A process ended without reporting a result or an exception.

    Raised by ``join()``, ``result()`` and ``exception()`` when the child was killed by a
    signal (other than SIGTERM, which is a quiet end), exited (``os._exit``) before
    reporting, or its result or exception could not be pickled or unpickled. Attributes:
    ``pid``, ``exitcode`` (as ``Process.exitcode``), ``signal`` (a :class:`signal.Signals`
    or None). For a crash by signal, the child's Python traceback at the moment of the crash
    is attached as the ``__cause__`` (a ``RemoteTraceback``) when it could be captured.
    """

    def __init__(self, message: str, *, pid: int | None = None, exitcode: int | None = None,
                 signal: signal.Signals | None = None) -> None:
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode
        self.signal = signal

    def __reduce__(self):
        return _rebuild_failed, (str(self), self.pid, self.exitcode, self.signal)


def _rebuild_failed(message, pid, exitcode, sig):
    return ProcessFailedError(message, pid=pid, exitcode=exitcode, signal=sig)


def _proc():
    """The parent's machinery, imported on first start: importing the package stays
    cheap, and a spawned child never imports it."""
    from . import _process

    return _process


# Outcome codes: what the payload of a child's outcome message is.
_CODE_RESULT = 0  # the pickled return value
_CODE_ERROR = 1  # a pickled RemoteException of what the target raised
_CODE_FAILED = 2  # UTF-8 text: why neither could be sent

# The settled outcome of a process, from the parent's point of view.
_OK, _RAISED, _FAILED = 0, 1, 2


class SpawnProcess(_std.SpawnProcess):
    """A subclass of the standard :class:`multiprocessing.context.SpawnProcess`, this
    customization adds two things:

    1. The result and exception of the target are available on the process object, so
       that it can be used like the ``Future`` returned by
       ``concurrent.futures.ProcessPoolExecutor.submit``: :meth:`done`, :meth:`result`,
       :meth:`exception`, and :meth:`join`, which raises the child's exception.
    2. Logs produced in the child while the target runs are handled in the parent, by the
       parent's logging configuration (format, levels, handlers). No record is lost or
       reordered: ``join()`` returns only after every record of the child was handled.

    Every way a child can end is reported: a return value, an exception (raised as its
    original type, with the child's traceback as a ``RemoteTraceback`` cause), ``SystemExit``,
    ``terminate()`` (a quiet end: result None), and anything else (a signal, ``os._exit``,
    a result that cannot be pickled) as :class:`ProcessFailedError`.
    """

    _start_method = "spawn"

    @staticmethod
    def _Popen(process_obj):
        return _proc().Popen(process_obj)

    def start(self) -> None:
        """Start the child process (as the standard ``start``)."""
        self._check_closed()
        if self._popen is not None:
            raise AssertionError("cannot start a process twice")
        self._mpx_launch = _proc().Launch(self._name)
        self._mpx_outcome = None
        try:
            super().start()
        except BaseException:
            self._mpx_launch.svc.drop(self._mpx_launch.token)
            self._mpx_launch.close()
            del self._mpx_launch
            raise

    # ---- the child ----

    @staticmethod
    def handle_exception(exc: BaseException) -> None:
        """Called in the child with the exception the target raised, before it is sent
        to the parent. Prints ``Exception in <process name>: <repr>``. Override it to do
        something else; it must not raise."""
        print(f"Exception in {multiprocessing.current_process().name}: {exc!r}", flush=True)

    def __init_subclass__(cls, **kwargs) -> None:
        # A subclass that overrides run() gets the same reporting around its own run: log
        # forwarding while it runs, its return value as the result, what it raises as the
        # exception. Without this its child would end without an outcome.
        super().__init_subclass__(**kwargs)
        run = cls.__dict__.get("run")
        if run is not None and not getattr(run, "_mpx_reporting", False):

            def reporting_run(self):
                return self._run_reporting(run)

            reporting_run.__name__ = run.__name__
            reporting_run.__qualname__ = run.__qualname__
            reporting_run.__doc__ = run.__doc__
            reporting_run._mpx_reporting = True
            cls.run = reporting_run

    def run(self) -> None:
        """Overrides the standard ``Process.run``: runs the target with log forwarding and
        sends its outcome to the parent. ``start`` arranges for this to be run in a child
        process."""
        return self._run_reporting(SpawnProcess._call_target)

    run._mpx_reporting = True

    def _call_target(self):
        target = self._target
        try:
            return target(*self._args, **self._kwargs) if target else None
        finally:
            # Drop references held by the target's frames before the interpreter exits.
            self._target = self._args = self._kwargs = None

    def _run_reporting(self, run) -> None:
        report = self.__dict__.get("_mpx_launch")
        if not getattr(report, "is_child_report", False):
            # Not in a child started by SpawnProcess.start (run() called directly, or a
            # subclass's run() calling super().run() inside the reporting already).
            return run(self)
        del self._mpx_launch
        report.start()
        exit_with = None
        try:
            value = run(self)
        except SystemExit as e:
            report.stop()
            if e.code is None or e.code == 0:
                _send_result(report, None)
            else:
                _send_error(report, e)
            raise
        except BaseException as e:
            try:
                self.handle_exception(e)
            except BaseException:
                pass
            report.stop()
            _send_error(report, e)
            exit_with = 1
        else:
            report.stop()
            if not _send_result(report, value):
                exit_with = 1
        if exit_with is not None:
            raise SystemExit(exit_with)

    # ---- the parent ----

    def done(self) -> bool:
        """True once the process has ended, however; False while it runs or before it
        was started."""
        popen = self._popen
        return popen is not None and popen.done()

    def join(self, timeout: float | None = None) -> None:
        """Same behavior as the standard library, except that if the process ended with an
        exception, the exception is raised (also :class:`ProcessFailedError`). Returns
        None, also when the timeout passed."""
        from multiprocessing import util

        outcome = self._settle(timeout)
        # At interpreter exit, multiprocessing joins the children left running; an
        # exception there would stop it from joining the others.
        if outcome is not None and outcome[0] != _OK and not util._exiting:
            raise outcome[1].with_traceback(None)

    def result(self, timeout: float | None = None) -> object:
        """The target's return value; raises its exception, :class:`ProcessFailedError`,
        or ``mpservice.TimeoutError`` if not done within `timeout` seconds (as
        ``concurrent.futures.Future.result``). Returns as soon as the child's result has
        been handled, which may be before its interpreter has finished shutting down
        (``join()`` waits for that)."""
        outcome = self._settle(timeout, wait_exit=False)
        if outcome is None:
            raise TimeoutError
        if outcome[0] != _OK:
            raise outcome[1].with_traceback(None)
        return outcome[1]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The exception the target raised, or None; raises :class:`ProcessFailedError`,
        or ``mpservice.TimeoutError`` if not done within `timeout` seconds. Like
        :meth:`result`, returns once the child's outcome has been handled."""
        if self._settle(timeout, wait_exit=False) is None:
            raise TimeoutError
        kind, value = self._mpx_outcome
        if kind == _FAILED:
            raise value.with_traceback(None)
        return value if kind == _RAISED else None

    def _settle(self, timeout: float | None, wait_exit: bool = True):
        """Settles the outcome once and returns it, or None on timeout. With `wait_exit`
        (join) it also waits for the process to end; without (result, exception) it
        returns as soon as the child's result or exception has been handled, which the
        child sends before its interpreter shuts down."""
        self._check_closed()
        if self._popen is None:
            raise AssertionError("can only join a started process")
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0)
        if self._mpx_outcome is None:
            self._mpx_launch.svc.check_caller()
        if not wait_exit:
            # result()/exception() may return before the process has ended, leaving it to
            # be reaped later: reap the ones that ended since, as start() does.
            _mp_process._cleanup()
        if wait_exit:
            super().join(timeout)
            if self.exitcode is None:
                return None
        if self._mpx_outcome is not None:
            return self._mpx_outcome
        launch = self._mpx_launch
        svc, token = launch.svc, launch.token
        # One thread settles; others calling join()/result() meanwhile wait for it.
        if not launch.lock.acquire(timeout=-1 if deadline is None else _left(deadline)):
            return None
        try:
            if self._mpx_outcome is not None:
                return self._mpx_outcome
            if self.exitcode is None:
                # Running, or ended and not yet reaped: whichever comes first, the
                # outcome handled or the end (the pidfd).
                done = svc.inbox.wait(token, self._popen.sentinel, _left(deadline))
                if done is None:
                    return None
                early = svc.outcomes.get(token) if done else None
                if early is not None and early[0] in (_CODE_RESULT, _CODE_ERROR):
                    self._mpx_outcome = self._decide(svc.take(token), launch)
                    launch.close()
                    return self._mpx_outcome
                # No outcome (or one that needs the exit status): wait for the end.
                super().join(_left(deadline))
                if self.exitcode is None:
                    return None
            if not svc.finish(token, _left(deadline)):
                return None
            self._mpx_outcome = self._decide(svc.take(token), launch)
            launch.close()
        finally:
            launch.lock.release()
        return self._mpx_outcome

    def _decide(self, outcome, launch) -> tuple[int, object]:
        code = self.exitcode
        if outcome is not None:
            kind, data = outcome
            if kind == _CODE_RESULT:
                try:
                    return _OK, pickle.loads(data)
                except BaseException as e:
                    return _FAILED, self._failure(
                        f"failed: its result could not be unpickled: {e!r}"
                    )
            if kind == _CODE_ERROR:
                try:
                    return _RAISED, pickle.loads(data)
                except BaseException as e:
                    return _FAILED, self._failure(
                        f"failed: its exception could not be unpickled: {e!r}"
                    )
            return _FAILED, self._failure("failed: " + data.decode("utf-8", "replace"))
        if code == -signal.SIGTERM:
            return _OK, None  # terminate(): a quiet end
        err = self._failure(_describe_end(code))
        crash = launch.crash_text()
        if crash:
            from .remote_exception import RemoteTraceback

            err.__cause__ = RemoteTraceback(f"[{self.name}] {crash}\n")
        return _FAILED, err

    def _failure(self, what: str) -> ProcessFailedError:
        code = self.exitcode
        sig = None
        if code is not None and code < 0:
            try:
                sig = signal.Signals(-code)
            except ValueError:
                sig = None
        return ProcessFailedError(
            f"process {self.name} (pid {self.pid}) {what}", pid=self.pid, exitcode=code,
            signal=sig,
        )

    # ---- for mpservice.threading.wait / as_completed ----

    def _mpx_started(self) -> bool:
        return self._popen is not None

    def _mpx_done_fd(self) -> int | None:
        """A descriptor readable once the process ended (its pidfd), or None if it has."""
        return None if self.done() else self._popen.sentinel

    def _mpx_failed(self) -> bool:
        return self._settle(None)[0] != _OK

    def __del__(self):
        # A process dropped without being joined: forget its entry in the service.
        launch = self.__dict__.get("_mpx_launch")
        if self.__dict__.get("_mpx_outcome") is None and hasattr(launch, "svc"):
            try:
                launch.svc.drop(launch.token)
            except Exception:
                pass


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0)


def _describe_end(code: int) -> str:
    if code < 0:
        from .. import _mpx

        text = _mpx.describe_exit(code)
        if code == -signal.SIGKILL:
            text += " (possibly out of memory)"
        return f"was {text}" if text.startswith("killed") else text
    return f"exited with status {code} before reporting a result"


def _send_result(report, value) -> bool:
    try:
        data = _dumps(value)
    except BaseException as e:
        report.send(_CODE_FAILED, f"its result could not be pickled: {e!r}".encode())
        return False
    report.send(_CODE_RESULT, data)
    return True


def _send_error(report, exc: BaseException) -> None:
    from .remote_exception import RemoteException

    # The traceback starts at the target's frame: the frames of run() tell nothing.
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    try:
        data = _dumps(RemoteException(exc, tb))
    except BaseException as e:
        report.send(
            _CODE_FAILED,
            f"its exception {type(exc).__qualname__} could not be pickled: {e!r}".encode(),
        )
        return
    report.send(_CODE_ERROR, data)


def _dumps(obj) -> bytes:
    from multiprocessing.reduction import ForkingPickler

    return bytes(ForkingPickler.dumps(obj))


class _ServiceProcess(SpawnProcess):
    """A SpawnProcess whose ``join`` only waits, as the standard one does: for the
    workers of ``Pool`` and the server of ``SyncManager``, whose standard machinery joins
    them from its own threads and finalizers and replaces or discards dead ones. A raise
    there would kill the pool's maintenance thread or break a manager's shutdown."""

    def join(self, timeout=None):
        try:
            super().join(timeout)
        except BaseException:
            pass


# Process names come from the class name ("SpawnProcess-3", "SpawnPoolWorker-1"): keep the
# public one. Pickling finds the class by its __qualname__.
_ServiceProcess.__name__ = "SpawnProcess"


class _ServiceContext(_std.SpawnContext):
    """MP_SPAWN_CTX for the standard machinery of Pool and SyncManager."""

    Process = _ServiceProcess


class SpawnContext(_std.SpawnContext):
    """A subclass of the standard :class:`multiprocessing.context.SpawnContext`, whose
    ``Process`` is :class:`SpawnProcess`.

    ``get_context(None)`` and ``get_context('spawn')`` return this context itself; other
    start methods are served by the standard library.
    """

    Process = SpawnProcess

    def get_context(self, method: str | None = None):
        if method is None or method == "spawn":
            return self
        return multiprocessing.get_context(method)


MP_SPAWN_CTX = SpawnContext()
"""The single instance of :class:`SpawnContext`."""

_SERVICE_CTX = _ServiceContext()
