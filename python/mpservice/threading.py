"""Threads with a future-like API, and waiting on any mix of threads and processes.

:class:`Thread` subclasses :class:`threading.Thread` with ``done``, ``result``,
``exception``, a ``join`` that raises the thread's exception, ``handle_exception``, and
``throw``/``terminate``. :func:`wait` and :func:`as_completed` take any mix of started
:class:`Thread` and :class:`mpservice.multiprocessing.SpawnProcess` objects and follow
``concurrent.futures``; one wait in libmpx covers them all (a process is waited for by its
pidfd, a thread by an eventfd it writes when it ends).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from . import TimeoutError, _mpx

__all__ = [
    "Thread",
    "InvalidStateError",
    "TimeoutError",
    "wait",
    "as_completed",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "ALL_COMPLETED",
]

FIRST_COMPLETED = "FIRST_COMPLETED"
FIRST_EXCEPTION = "FIRST_EXCEPTION"
ALL_COMPLETED = "ALL_COMPLETED"


class InvalidStateError(RuntimeError):
    """The operation is not allowed in the thread's current state (``throw`` on a thread
    that is not alive)."""


class Thread(threading.Thread):
    """A subclass of the standard :class:`threading.Thread` that can be used like a
    ``concurrent.futures.Future``: :meth:`done`, :meth:`result`, :meth:`exception`, and
    :meth:`join`, which raises the exception the target raised.

    ``SystemExit(None)`` or ``SystemExit(0)`` in the target is a quiet end (result None);
    any other exception is kept, passed to :meth:`handle_exception`, and raised by
    ``join``/``result``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._future_result: Any = None
        self._future_exception: BaseException | None = None
        self._finished = False
        self._running = False
        self._done_fd = -1  # an eventfd made on demand by wait(); written when finished
        self._done_lock = threading.Lock()

    @staticmethod
    def handle_exception(exc: BaseException) -> None:
        """Called in the thread with the exception the target raised. Prints
        ``Exception in <thread name>: <repr>``. Override it to do something else; it must
        not raise."""
        print(f"Exception in {threading.current_thread().name}: {exc!r}", flush=True)

    def __init_subclass__(cls, **kwargs) -> None:
        # A subclass that overrides run() gets the same bookkeeping around its own run:
        # its return value is the result, what it raises is the exception, and the
        # thread becomes done() when it returns.
        super().__init_subclass__(**kwargs)
        run = cls.__dict__.get("run")
        if run is not None and not getattr(run, "_mpx_future_run", False):

            def future_run(self):
                self._run_as_future(run)

            future_run.__name__ = run.__name__
            future_run.__qualname__ = run.__qualname__
            future_run.__doc__ = run.__doc__
            future_run._mpx_future_run = True
            cls.run = future_run

    def run(self) -> None:
        self._run_as_future(Thread._call_target)

    run._mpx_future_run = True

    def _call_target(self):
        try:
            if self._target is not None:
                return self._target(*self._args, **self._kwargs)
        finally:
            # Avoid a refcycle if the target holds the thread object (as the stdlib does).
            del self._target, self._args, self._kwargs

    def _run_as_future(self, run) -> None:
        if self._running:  # a subclass's run() calling super().run(): one bookkeeping
            self._future_result = run(self)
            return
        self._running = True
        try:
            self._future_result = run(self)
        except SystemExit as e:
            if e.code is not None and e.code != 0:
                self._future_exception = e
        except BaseException as e:
            self._future_exception = e
            try:
                self.handle_exception(e)
            except BaseException:
                pass
        finally:
            with self._done_lock:
                self._finished = True
                if self._done_fd >= 0:
                    os.eventfd_write(self._done_fd, 1)

    def done(self) -> bool:
        """True once the target has finished (returned or raised)."""
        return self._finished

    def join(self, timeout: float | None = None) -> None:
        """As the standard ``join``; then, if the thread ended with an exception, raise it.
        Returns None, also when the timeout passed."""
        super().join(timeout)
        if self._finished and self._future_exception is not None:
            raise self._future_exception

    def result(self, timeout: float | None = None) -> Any:
        """The target's return value, or its exception raised; ``mpservice.TimeoutError``
        if not done within `timeout` seconds."""
        self._wait_done(timeout)
        if self._future_exception is not None:
            raise self._future_exception
        return self._future_result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The exception the target raised, or None; ``mpservice.TimeoutError`` if not
        done within `timeout` seconds."""
        self._wait_done(timeout)
        return self._future_exception

    def _wait_done(self, timeout: float | None) -> None:
        if not self._started.is_set():
            raise RuntimeError("cannot join thread before it is started")
        threading.Thread.join(self, timeout)
        if not self._finished:
            raise TimeoutError

    def throw(self, exc: BaseException | type[BaseException]) -> None:
        """Raise `exc` (an exception class or instance) asynchronously in the thread, as
        soon as it runs Python code. ``InvalidStateError`` if the thread is not alive."""
        if not self.is_alive() or self._finished:
            raise InvalidStateError(f"thread {self.name} is not alive")
        if isinstance(exc, BaseException):
            cls = _carrier(exc)
        elif isinstance(exc, type) and issubclass(exc, BaseException):
            cls = exc
        else:
            raise TypeError(f"throw() needs an exception class or instance, not {exc!r}")
        if _mpx.async_raise(self.ident, cls) == 0:
            raise InvalidStateError(f"thread {self.name} is not alive")

    def terminate(self) -> None:
        """End the thread quietly: raise ``SystemExit`` in it (result None). Code that
        catches BaseException can prevent it; a thread blocked in a system call sees it
        only when it next runs Python code."""
        self.throw(SystemExit)

    def _mpx_done_fd(self) -> int | None:
        """A descriptor readable once the thread finished, or None if it has."""
        with self._done_lock:
            if self._finished:
                return None
            if self._done_fd < 0:
                self._done_fd = os.eventfd(0, os.EFD_CLOEXEC)
            return self._done_fd

    def _mpx_failed(self) -> bool:
        return self._future_exception is not None

    def _mpx_started(self) -> bool:
        return self._started.is_set()

    def __del__(self):
        if self.__dict__.get("_done_fd", -1) >= 0:
            os.close(self._done_fd)
            self._done_fd = -1


def _carrier(exc: BaseException) -> type[BaseException]:
    """A one-off subclass of type(exc) whose instantiation yields `exc` itself: CPython
    can raise only a class asynchronously, and instantiates it with no arguments where it
    is raised, so this delivers the very instance, arguments and all."""
    base = type(exc)

    def __new__(cls, *args, **kwargs):
        return exc

    return type(base.__name__, (base,), {"__new__": __new__, "__module__": base.__module__})


# ---------------------------------------------------------------------------------------
# Waiting on threads and processes


def _check(workers: Sequence) -> list:
    workers = list(workers)
    for w in workers:
        if not hasattr(w, "_mpx_done_fd"):
            raise TypeError(f"expected Thread or SpawnProcess objects, not {w!r}")
        if not w._mpx_started():
            raise ValueError(f"{w!r} has not been started")
    return workers


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + max(timeout, 0)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0)


def _wait_some(pending: set, deadline: float | None) -> list:
    """Waits until at least one of `pending` completes (or the deadline); returns those
    that did."""
    ws, fds = [], []
    finished = []
    for w in pending:
        fd = w._mpx_done_fd()
        if fd is None:
            finished.append(w)
        else:
            ws.append(w)
            fds.append(fd)
    if finished:
        return finished
    ready = _mpx.wait_fds(fds, _left(deadline))
    return [ws[i] for i in ready]


def wait(
    workers: Sequence, /, timeout: float | None = None, return_when: str = ALL_COMPLETED
) -> tuple[set, set]:
    """Wait for the :class:`Thread` and :class:`~mpservice.multiprocessing.SpawnProcess`
    objects in `workers` (started; any mix) to complete, as
    :func:`concurrent.futures.wait`: returns ``(done, not_done)`` once `return_when`
    (``FIRST_COMPLETED``, ``FIRST_EXCEPTION`` or ``ALL_COMPLETED``) holds or `timeout`
    seconds passed. A process counts as completed once it has ended; one that ended with
    an exception or died (a signal, ``os._exit``) counts as completed with an exception."""
    if return_when not in (FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED):
        raise ValueError(f"invalid return_when: {return_when!r}")
    workers = _check(workers)
    deadline = _deadline(timeout)
    done = {w for w in workers if w.done()}
    pending = set(workers) - done
    while True:
        if return_when == FIRST_COMPLETED and done:
            break
        if return_when == FIRST_EXCEPTION and any(w._mpx_failed() for w in done):
            break
        if not pending:
            break
        newly = _wait_some(pending, deadline)
        if not newly:
            break  # timeout
        for w in newly:
            pending.discard(w)
            done.add(w)
    return done, pending


def as_completed(workers: Sequence, /, timeout: float | None = None) -> Iterator:
    """Yield the :class:`Thread` and :class:`~mpservice.multiprocessing.SpawnProcess`
    objects in `workers` as they complete, as :func:`concurrent.futures.as_completed`;
    raises ``mpservice.TimeoutError`` if some are not done within `timeout` seconds."""
    workers = _check(workers)
    deadline = _deadline(timeout)
    pending = set(workers)
    for w in list(pending):
        if w.done():
            pending.discard(w)
            yield w
    while pending:
        newly = _wait_some(pending, deadline)
        if not newly:
            total = len(set(workers))
            raise TimeoutError(f"{len(pending)} (of {total}) workers unfinished")
        for w in newly:
            pending.discard(w)
            yield w
