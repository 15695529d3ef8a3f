"""Keep one object alive in a background process and call it on demand.

>>> class Doubler(ProcessRunnee):
...     def __call__(self, x):
...         return x * 2
>>> with ProcessRunner(target=Doubler) as runner:
...     runner(21)
42

The object is created in the child from ``target(*args, **kwargs)`` and used as a context
manager there for the child's whole life. :meth:`ProcessRunner.restart` sends one call,
:meth:`ProcessRunner.rejoin` waits for its outcome.
"""

from __future__ import annotations

import abc
import queue
from typing import Any

from .context import MP_SPAWN_CTX, ProcessFailedError, SpawnProcess

__all__ = ["ProcessRunnee", "ProcessRunner"]

# How often rejoin() checks that the process is alive while it waits for a result.
_LIVENESS_SLICE = 0.1


class ProcessRunnee(abc.ABC):
    """The base class of objects run by :class:`ProcessRunner`: a context manager (entered
    when the process starts, exited when it ends) with an abstract ``__call__``."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    @abc.abstractmethod
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Do one piece of work; what it returns, or raises, goes back to the caller."""


# What the child sends back for one call: a return value, or an exception (as a
# RemoteException), told apart by a tag, so that returning an exception object is not
# mistaken for raising one.
_RETURNED, _RAISED = 0, 1


def _serve(instructions, results, target, args, kwargs) -> None:
    from .remote_exception import RemoteException

    with target(*args, **kwargs) as runnee:
        while True:
            call = instructions.get()
            if call is None:
                return
            call_args, call_kwargs = call
            try:
                value = runnee(*call_args, **call_kwargs)
            except Exception as e:
                results.put((_RAISED, RemoteException(e)))
            else:
                results.put((_RETURNED, value))


class ProcessRunner:
    """Runs an object of `target` (a :class:`ProcessRunnee` subclass) in a background
    :class:`~mpservice.multiprocessing.SpawnProcess` and calls it on demand.

    ``start()`` starts the process, ``restart(*args, **kwargs)`` asks for one call,
    ``rejoin()`` waits for it and returns its value or raises its exception (with the
    child's traceback), and ``runner(*args, **kwargs)`` does both. ``join()`` ends the
    process. As a context manager, it starts on entry and joins on exit. If the process
    dies, ``rejoin()`` raises :class:`~mpservice.multiprocessing.ProcessFailedError`
    instead of waiting forever.
    """

    def __init__(self, *, target: type[ProcessRunnee], args=None, kwargs=None,
                 name: str | None = None) -> None:
        from .queues import Queue, SimpleQueue

        self._instructions = SimpleQueue(ctx=MP_SPAWN_CTX)
        self._results = Queue(ctx=MP_SPAWN_CTX)
        self._pending = 0
        self._death_reported = False
        self._process = SpawnProcess(
            target=_serve,
            args=(self._instructions, self._results, target, tuple(args or ()),
                  dict(kwargs or {})),
            name=name,
        )

    @property
    def process(self) -> SpawnProcess:
        """The background process."""
        return self._process

    def start(self) -> None:
        """Start the background process."""
        self._process.start()

    def join(self, timeout: float | None = None) -> None:
        """Ask the process to finish (after the calls already sent) and wait for it, as
        ``SpawnProcess.join`` (which raises what ended the process abnormally)."""
        if self._process.exitcode is None and not self._process.done():
            self._instructions.put(None)
        try:
            self._process.join(timeout)
        except BaseException:
            if not self._death_reported:
                raise  # already raised by restart() or rejoin(): not again

    def restart(self, *args: Any, **kwargs: Any) -> None:
        """Send one call of the object with these arguments; :meth:`rejoin` gets its
        outcome. Calls are served in order."""
        if self._process.done():
            self._raise_dead()
        self._instructions.put((args, kwargs))
        self._pending += 1

    def rejoin(self) -> Any:
        """Wait for the outcome of the oldest call sent by :meth:`restart`: its return
        value, or its exception raised here."""
        if self._pending == 0:
            raise RuntimeError("rejoin() without a call pending: call restart() first")
        results = self._results
        while True:
            # Each slice checks the process: a result queued before it died is still
            # delivered, and a dead process raises instead of waiting forever.
            try:
                tag, value = results.get(timeout=_LIVENESS_SLICE)
                break
            except queue.Empty:
                pass
            if self._process.done() and results.empty():
                self._raise_dead()
        self._pending -= 1
        if tag == _RAISED:
            raise value
        return value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.restart(*args, **kwargs)
        return self.rejoin()

    def __enter__(self) -> ProcessRunner:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.join()

    def _raise_dead(self):
        p = self._process
        self._death_reported = True
        p.join()  # raises the exception or ProcessFailedError that ended it, if any
        raise ProcessFailedError(
            f"process {p.name} (pid {p.pid}) has ended (exit status {p.exitcode}); "
            "it takes no more calls",
            pid=p.pid, exitcode=p.exitcode,
        )
