"""``SyncManager`` (alias ``Manager``): the standard manager on the spawn context of
mpservice. Its server runs as a :class:`~mpservice.multiprocessing.SpawnProcess`."""

from __future__ import annotations

import multiprocessing.managers as _std

from .context import _SERVICE_CTX, MP_SPAWN_CTX

__all__ = ["SyncManager"]


class SyncManager(_std.SyncManager):
    """A subclass of the standard :class:`multiprocessing.managers.SyncManager` with
    `ctx` defaulting to :data:`~mpservice.multiprocessing.MP_SPAWN_CTX`. As the standard
    class, it is not started until :meth:`start` is called or it is used in a ``with``
    statement."""

    def __init__(self, *args, ctx=None, **kwargs) -> None:
        if ctx is None or ctx is MP_SPAWN_CTX:
            # The server's join() only waits: the manager's finalizer joins it, and an
            # exception there would break shutdown().
            ctx = _SERVICE_CTX
        super().__init__(*args, ctx=ctx, **kwargs)
