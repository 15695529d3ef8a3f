"""Customizations and enhancements of the standard :mod:`multiprocessing`.

The classes here are subclasses of their standard counterparts, take an optional ``ctx``
that defaults to :data:`MP_SPAWN_CTX`, and are implemented on libmpx shared memory.
"""

from .context import MP_SPAWN_CTX, SpawnContext
from .queues import JoinableQueue, Queue, SimpleQueue
from .synchronize import (
    Barrier,
    BoundedSemaphore,
    Condition,
    Event,
    Lock,
    RLock,
    Semaphore,
)

__all__ = [
    "SpawnContext",
    "MP_SPAWN_CTX",
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
]
