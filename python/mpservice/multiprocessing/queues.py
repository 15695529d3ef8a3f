"""Queues in shared memory: ``Queue``, ``JoinableQueue`` and ``SimpleQueue``.

The classes subclass their counterparts in :mod:`multiprocessing.queues` (``isinstance``
holds) and :class:`typing.Generic`, but none of the standard machinery (pipe, feeder thread,
semaphores) is used: every method runs in libmpx, on a memfd segment shared by the
processes. Objects are pickled in the calling thread with protocol 5; large buffers (a
bytes object put as such, bytearray, numpy arrays and other PickleBuffer-aware objects) are
copied once into shared memory and once out of it.

A queue travels to a child process as an argument of ``Process`` under the spawn, fork
and forkserver start methods; pickling it anywhere else raises the standard RuntimeError.
"""

from __future__ import annotations

import io
import os
import pickle
from multiprocessing import context as _context
from multiprocessing import queues as _std
from multiprocessing import reduction as _reduction
from typing import Generic, TypeVar

from .. import _mpx
from .context import MP_SPAWN_CTX

__all__ = ["Queue", "JoinableQueue", "SimpleQueue"]

Elem = TypeVar("Elem")

_STYLE_QUEUE = 0  # use after close raises ValueError("Queue ... is closed")
_STYLE_SIMPLE = 1  # use after close raises OSError("handle is closed")


class _ForkingBufferPickler(pickle.Pickler):
    """ForkingPickler's reducers with protocol 5 and out-of-band buffers."""

    def __init__(self, file, buffer_callback):
        super().__init__(file, 5, buffer_callback=buffer_callback)
        table = _reduction.ForkingPickler._copyreg_dispatch_table.copy()
        table.update(_reduction.ForkingPickler._extra_reducers)
        self.dispatch_table = table


def _forking_dumps(obj, buffer_callback):
    # Used by the engine only when plain pickle.dumps fails: objects such as connections
    # and sockets are picklable only with multiprocessing's own reducers.
    buf = io.BytesIO()
    _ForkingBufferPickler(buf, buffer_callback).dump(obj)
    return buf.getvalue()


_mpx._set_fallback_dumps(_forking_dumps)


class _Shared:
    """Pickling of a queue handle: the segment travels as a descriptor."""

    _style = _STYLE_QUEUE

    def __getstate__(self):
        _context.assert_spawning(self)
        return (_reduction.DupFd(self._fd()),)

    def __setstate__(self, state):
        fd = state[0].detach()
        try:
            self._attach(fd, self._style)
        finally:
            os.close(fd)
        self._joincancelled = False


class Queue(_mpx.Queue, _Shared, _std.Queue, Generic[Elem]):
    """A process-shared FIFO queue, a subclass of :class:`multiprocessing.queues.Queue`.

    ``maxsize`` bounds the number of items (0 or less: unbounded; an unbounded queue never
    blocks ``put``). ``qsize()`` is exact. In addition to the standard methods there are
    :meth:`put_many` and :meth:`get_many`, which move many items under one lock.
    """

    def __init__(self, maxsize: int = 0, *, ctx=None):
        self._ctx = ctx if ctx is not None else MP_SPAWN_CTX
        self._create(maxsize if maxsize > 0 else 0, self._style)
        self._joincancelled = False

    @property
    def maxsize(self) -> int:
        """The maximum number of items (0 for an unbounded queue)."""
        return self._maxsize_value

    def join_thread(self) -> None:
        """As the standard method: only valid after :meth:`close`. There is no feeder thread
        and nothing is ever left unflushed, so it returns at once."""
        assert self._closed, "Queue {0!r} not closed".format(self)

    def cancel_join_thread(self) -> None:
        """Kept for compatibility: a process exit never waits on queued data here."""
        self._joincancelled = True


class JoinableQueue(Queue[Elem], _std.JoinableQueue):
    """A :class:`Queue` that also counts unfinished tasks, like
    :class:`multiprocessing.JoinableQueue`: every ``put`` adds one, :meth:`task_done`
    removes one, and :meth:`join` waits until none is left."""

    def task_done(self) -> None:
        """Indicate that a formerly enqueued item is done; ValueError if called more times
        than items were put."""
        self._task_done()

    def join(self) -> None:
        """Block until every item put has been matched by a :meth:`task_done` call."""
        self._join()


class SimpleQueue(_mpx.Queue, _Shared, _std.SimpleQueue, Generic[Elem]):
    """An unbounded queue with ``put``, ``get``, ``empty`` and ``close``, a subclass of
    :class:`multiprocessing.queues.SimpleQueue`."""

    _style = _STYLE_SIMPLE

    def __init__(self, *, ctx=None):
        self._ctx = ctx if ctx is not None else MP_SPAWN_CTX
        self._create(0, self._style)
