"""The "spawn" context of mpservice."""

from __future__ import annotations

import multiprocessing
import multiprocessing.context as _std

__all__ = ["SpawnContext", "MP_SPAWN_CTX"]


class SpawnContext(_std.SpawnContext):
    """A subclass of the standard :class:`multiprocessing.context.SpawnContext`.

    ``get_context(None)`` and ``get_context('spawn')`` return this context itself; other
    start methods are served by the standard library.
    """

    def get_context(self, method: str | None = None):
        if method is None or method == "spawn":
            return self
        return multiprocessing.get_context(method)


MP_SPAWN_CTX = SpawnContext()
"""The single instance of :class:`SpawnContext`."""
