"""Customizations and enhancements of the standard :mod:`multiprocessing`.

The classes here are subclasses of their standard counterparts, take an optional ``ctx``
that defaults to :data:`MP_SPAWN_CTX`, and are implemented on libmpx shared memory.
"""

from .. import TimeoutError
from .context import MP_SPAWN_CTX, ProcessFailedError, SpawnContext, SpawnProcess

TYPE_CHECKING = False
if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers
    from ..threading import Thread, as_completed, wait
    from .managers import SyncManager
    from .managers import SyncManager as Manager
    from .pool import Pool
    from .queues import JoinableQueue, Queue, SimpleQueue
    from .remote_exception import RemoteException
    from .synchronize import (
        Barrier,
        BoundedSemaphore,
        Condition,
        Event,
        Lock,
        RLock,
        Semaphore,
    )

Process = SpawnProcess

RawValue = MP_SPAWN_CTX.RawValue
RawArray = MP_SPAWN_CTX.RawArray
Value = MP_SPAWN_CTX.Value
Array = MP_SPAWN_CTX.Array
cpu_count = MP_SPAWN_CTX.cpu_count

# Imported on first use: a spawned child imports this package, so importing it costs
# little more than importing the standard multiprocessing, and each module is loaded only
# when a program uses it.
_LAZY = {
    "Queue": (".queues", "Queue"),
    "JoinableQueue": (".queues", "JoinableQueue"),
    "SimpleQueue": (".queues", "SimpleQueue"),
    "Lock": (".synchronize", "Lock"),
    "RLock": (".synchronize", "RLock"),
    "Condition": (".synchronize", "Condition"),
    "Semaphore": (".synchronize", "Semaphore"),
    "BoundedSemaphore": (".synchronize", "BoundedSemaphore"),
    "Event": (".synchronize", "Event"),
    "Barrier": (".synchronize", "Barrier"),
    "Thread": ("mpservice.threading", "Thread"),
    "wait": ("mpservice.threading", "wait"),
    "as_completed": ("mpservice.threading", "as_completed"),
    "Pool": (".pool", "Pool"),
    "SyncManager": (".managers", "SyncManager"),
    "Manager": (".managers", "SyncManager"),
    "RemoteException": (".remote_exception", "RemoteException"),
}
_SUBMODULES = {"queues", "synchronize", "pool", "managers", "remote_exception"}

ALL_COMPLETED = "ALL_COMPLETED"
FIRST_COMPLETED = "FIRST_COMPLETED"
FIRST_EXCEPTION = "FIRST_EXCEPTION"


def __getattr__(name):
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module, __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)


__all__ = [
    "SpawnContext",
    "MP_SPAWN_CTX",
    "Process",
    "Manager",
    "SyncManager",
    "Queue",
    "JoinableQueue",
    "SimpleQueue",
    "Lock",
    "RLock",
    "Condition",
    "Semaphore",
    "BoundedSemaphore",
    "Event",
    "Barrier",
    "Pool",
    "RawValue",
    "RawArray",
    "Value",
    "Array",
    "cpu_count",
    "wait",
    "as_completed",
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
]
