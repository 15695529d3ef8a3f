"""Synchronization primitives in shared memory: ``Lock``, ``RLock``, ``Semaphore``,
``BoundedSemaphore``, ``Condition``, ``Event`` and ``Barrier``.

Each class subclasses its counterpart in :mod:`multiprocessing.synchronize` (``isinstance``
holds) and behaves like it, but runs on libmpx: the objects live in a memfd arena shared by
the processes, nothing is created in ``/dev/shm`` and nothing is registered with the
resource tracker, so nothing can be left behind however the processes end.

A process that dies while holding a :class:`Lock` or :class:`RLock` does not hang the
others: the next process to wait for the lock gets :class:`OwnerDiedError` (naming the dead
process), and the lock is usable again. A :class:`Barrier` party that dies while waiting
breaks the barrier (:class:`threading.BrokenBarrierError` for the others). See
``docs/sync.md``.

The objects travel to child processes as arguments of ``Process`` under the spawn, fork and
forkserver start methods; pickling them anywhere else raises the standard RuntimeError.
"""

from __future__ import annotations

import operator
import os
import threading
import time
import weakref
from multiprocessing import context as _context
from multiprocessing import reduction as _reduction
from multiprocessing import synchronize as _std
from typing import Any, Callable

from .. import _mpx
from .context import MP_SPAWN_CTX

__all__ = [
    "Lock",
    "RLock",
    "Semaphore",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "Barrier",
    "OwnerDiedError",
]

OwnerDiedError = _mpx.OwnerDiedError
"""Raised when the process holding a :class:`Lock` or :class:`RLock` died while holding it.
A subclass of :class:`OSError` with ``errno.EOWNERDEAD``; ``pid`` is the dead process.

From ``acquire()`` (and ``with lock:``) it means the lock was *not* acquired; it is free
again. From :meth:`Condition.wait` it means the lock is held again by the caller, as after
any return from ``wait``."""

_KIND_LOCK = 0
_KIND_RLOCK = 1
_KIND_SEM = 2

_SEM_VALUE_MAX = 2147483647


# Many objects share one arena (one descriptor), and a Process's arguments may hold several
# of them. Each arena's descriptor is passed once per child, so every object of it names
# the same inherited descriptor there; the first one unpickled attaches through it and
# closes it, and the others find the arena already mapped (by its identity, the memfd's
# device and inode).
_arenas: "weakref.WeakValueDictionary[tuple[int, int], Any]" = weakref.WeakValueDictionary()
_consumed: dict[int, tuple[int, int]] = {}  # inherited descriptors already used and closed


def _share(handle) -> tuple:
    """The picklable place of a handle: (DupFd, arena identity, offset)."""
    _context.assert_spawning(handle)
    fd = handle._fd()
    st = os.fstat(fd)
    popen = _context.get_spawning_popen()
    if popen is None or not hasattr(popen, "duplicate_for_child"):
        return (_reduction.DupFd(fd), (st.st_dev, st.st_ino), handle._offset())
    # Pass each arena once per child: spawn accepts a descriptor only once, and the
    # forkserver sends at most a few hundred.
    tokens = popen.__dict__.setdefault("_mpx_arena_tokens", {})
    if fd not in tokens:
        tokens[fd] = popen.duplicate_for_child(fd)
    return (popen.DupFd(tokens[fd]), (st.st_dev, st.st_ino), handle._offset())


def _unshare(handle, place: tuple, *extra) -> None:
    dupfd, key, offset = place
    fd = dupfd.detach()
    known = _arenas.get(key)
    if known is not None:
        handle._attach(known._fd(), offset, *extra)
        if _consumed.get(fd) != key:
            os.close(fd)
    else:
        try:
            handle._attach(fd, offset, *extra)
        finally:
            os.close(fd)
        _consumed[fd] = key
        _arenas[key] = handle


class _Shared:
    """Pickling of a handle: its arena's descriptor (once per child) and its offset."""

    def __getstate__(self):
        return _share(self)

    def __setstate__(self, state):
        _unshare(self, state)


class _SemLock(_mpx.SemLock, _Shared):
    _kind = _KIND_SEM

    def __setstate__(self, state):
        _unshare(self, state, self._kind)


class Lock(_SemLock, _std.Lock):
    """A process-shared non-recursive lock, a subclass of
    :class:`multiprocessing.synchronize.Lock`. Any thread of any process may release it."""

    _kind = _KIND_LOCK

    def __init__(self, *, ctx=None):
        self._ctx = ctx if ctx is not None else MP_SPAWN_CTX
        self._create(_KIND_LOCK, 1, 1)


class RLock(_SemLock, _std.RLock):
    """A process-shared recursive lock, a subclass of
    :class:`multiprocessing.synchronize.RLock`. Only the owning thread may release it."""

    _kind = _KIND_RLOCK

    def __init__(self, *, ctx=None):
        self._ctx = ctx if ctx is not None else MP_SPAWN_CTX
        self._create(_KIND_RLOCK, 1, 1)


def _check_value(value: int) -> int:
    value = operator.index(value)
    if value < 0:
        raise ValueError("semaphore initial value must be >= 0")
    if value > _SEM_VALUE_MAX:
        raise OverflowError("semaphore initial value is too large")
    return value


class Semaphore(_SemLock, _std.Semaphore):
    """A process-shared counting semaphore, a subclass of
    :class:`multiprocessing.synchronize.Semaphore`."""

    def __init__(self, value: int = 1, *, ctx=None):
        self._ctx = ctx if ctx is not None else MP_SPAWN_CTX
        self._create(_KIND_SEM, _check_value(value), _SEM_VALUE_MAX)


class BoundedSemaphore(Semaphore, _std.BoundedSemaphore):
    """A semaphore that cannot be released above its initial value (ValueError), a
    subclass of :class:`multiprocessing.synchronize.BoundedSemaphore`."""

    def __init__(self, value: int = 1, *, ctx=None):
        self._ctx = ctx if ctx is not None else MP_SPAWN_CTX
        value = _check_value(value)
        self._create(_KIND_SEM, value, value)


class _CondVar(_mpx.CondVar):
    """A condition variable handle (a subclass only to be weakly referenced)."""


class Condition(_std.Condition):
    """A process-shared condition variable, a subclass of
    :class:`multiprocessing.synchronize.Condition`.

    ``lock`` is a :class:`Lock` or :class:`RLock` of this module (a new :class:`RLock` when
    omitted). ``notify(n)`` wakes at most ``n`` waiters, and a waiter whose process died is
    never counted among them."""

    def __init__(self, lock: Lock | RLock | None = None, *, ctx=None):
        self._ctx = ctx if ctx is not None else MP_SPAWN_CTX
        if lock is None:
            lock = RLock(ctx=self._ctx)
        elif not isinstance(lock, (Lock, RLock)):
            raise TypeError(
                "the lock of a Condition must be a Lock or RLock of "
                f"mpservice.multiprocessing, not {type(lock).__name__}"
            )
        self._lock = lock
        self._cv = _CondVar()
        self._cv._create()
        self._make_methods()

    def __getstate__(self):
        _context.assert_spawning(self)
        return (self._lock, _share(self._cv))

    def __setstate__(self, state):
        self._lock = state[0]
        self._cv = _CondVar()
        _unshare(self._cv, state[1])
        self._make_methods()

    def __repr__(self) -> str:
        try:
            num_waiters = self._cv._waiters()
        except Exception:
            num_waiters = "unknown"
        return "<%s(%s, %s)>" % (self.__class__.__name__, self._lock, num_waiters)

    def wait(self, timeout: float | None = None) -> bool:
        assert self._lock._semlock._is_mine(), "must acquire() condition before using wait()"
        return self._cv._wait(self._lock, timeout)

    def notify(self, n: int = 1) -> None:
        assert self._lock._semlock._is_mine(), "lock is not owned"
        self._cv._notify(self._lock, n)

    def notify_all(self) -> None:
        assert self._lock._semlock._is_mine(), "lock is not owned"
        self._cv._notify(self._lock, _SEM_VALUE_MAX)

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        result = predicate()
        if result:
            return result
        endtime = None if timeout is None else time.monotonic() + timeout
        waittime = None
        while not result:
            if endtime is not None:
                waittime = endtime - time.monotonic()
                if waittime <= 0:
                    break
            self.wait(waittime)
            result = predicate()
        return result


class Event(_mpx.Event, _Shared, _std.Event):
    """A process-shared event, a subclass of :class:`multiprocessing.synchronize.Event`.
    ``wait`` returns True also when the event was set and cleared again while waiting."""

    def __init__(self, *, ctx=None):
        self._ctx = ctx if ctx is not None else MP_SPAWN_CTX
        self._create()

    def __repr__(self) -> str:
        set_status = "set" if self.is_set() else "unset"
        return f"<{type(self).__qualname__} at {id(self):#x} {set_status}>"


class Barrier(_mpx.Barrier, _Shared, _std.Barrier):
    """A process-shared barrier, a subclass of :class:`multiprocessing.synchronize.Barrier`
    with the semantics of :class:`threading.Barrier`: ``wait`` returns the arrival index,
    the last arrival runs ``action`` before the others are released, and a timeout, an
    exception in ``action``, ``abort()``, ``reset()`` during a wait or the death of a
    waiting party break it (:class:`threading.BrokenBarrierError`)."""

    def __init__(
        self,
        parties: int,
        action: Callable[[], Any] | None = None,
        timeout: float | None = None,
        *,
        ctx=None,
    ):
        self._ctx = ctx if ctx is not None else MP_SPAWN_CTX
        parties = int(parties)
        if parties < 1:
            raise ValueError("parties must be > 0")
        self._create(parties)
        self._action = action
        self._timeout = timeout

    def __getstate__(self):
        return (_share(self), self._action, self._timeout)

    def __setstate__(self, state):
        _unshare(self, state[0])
        self._action, self._timeout = state[1], state[2]

    def wait(self, timeout: float | None = None) -> int:
        """Wait until all parties have called wait(); return the arrival index."""
        if timeout is None:
            timeout = self._timeout
        return self._wait(self._action, timeout)


BrokenBarrierError = threading.BrokenBarrierError
