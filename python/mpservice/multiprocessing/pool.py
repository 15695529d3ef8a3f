"""``Pool``: the standard process pool on the spawn context of mpservice."""

from __future__ import annotations

import multiprocessing.pool as _std

from .context import _SERVICE_CTX, MP_SPAWN_CTX

__all__ = ["Pool"]


class Pool(_std.Pool):
    """A subclass of the standard :class:`multiprocessing.pool.Pool` whose workers are
    :class:`~mpservice.multiprocessing.SpawnProcess` objects (so their logs are handled in
    the parent). `context` defaults to :data:`~mpservice.multiprocessing.MP_SPAWN_CTX`;
    every other argument is the standard one. The pool's own machinery joins its workers,
    so a worker that dies is replaced, as in the standard pool."""

    def __init__(self, *args, context=None, **kwargs) -> None:
        if context is None or context is MP_SPAWN_CTX:
            # Workers whose join() only waits: the pool joins and replaces dead workers
            # from its own thread, which an exception would kill.
            context = _SERVICE_CTX
        super().__init__(*args, context=context, **kwargs)
