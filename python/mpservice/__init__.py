"""mpservice: multiprocessing utilities on libmpx, a C engine.

The Python face of the project lives in :mod:`mpservice.multiprocessing`; the engine it is
built on, libmpx, can also be used directly from C (see docs/ and include/mpx/).
"""

import builtins

__all__ = ["TimeoutError"]
__version__ = "0.1.0"


class TimeoutError(builtins.TimeoutError):
    """Raised, without arguments, when ``result()`` or ``exception()`` times out."""
