"""Pickling exceptions together with their traceback text.

``pickle.dumps`` on an exception object loses its ``__traceback__`` (a traceback cannot be
pickled) and its ``__cause__``. Wrap the exception in :class:`RemoteException` before it
crosses a process boundary (a queue, a pipe, a manager call): the traceback is kept as
formatted text, and the object out of unpickling is of the original exception type again,
with that text attached as its ``__cause__``, a :class:`RemoteTraceback`.

If the exception cannot be rebuilt on the receiving side (its class cannot be imported
there, its ``__init__`` does not accept its own ``args``, an attribute cannot be pickled),
a :class:`RemoteExceptionStandIn` arrives in its place, naming the original type and
message and carrying the same remote traceback.
"""

from __future__ import annotations

import pickle
from multiprocessing.process import current_process
from types import TracebackType
from typing import Any, Callable, SupportsIndex

__all__ = [
    "RemoteException",
    "RemoteExceptionStandIn",
    "RemoteTraceback",
    "is_remote_exception",
    "get_remote_traceback",
]


class RemoteTraceback(Exception):
    """
    The traceback text of an exception that happened in another process.

    This class is used by :class:`RemoteException`: an exception out of unpickling a
    ``RemoteException`` has a ``RemoteTraceback`` as its ``__cause__``, so that raising the
    exception prints the remote traceback, then "The above exception was the direct cause
    of the following exception:", then the local one.
    End-user does not use this class directly.
    """

    def __init__(self, tb: str) -> None:
        # Nothing to do: BaseException.__new__ has set self.args to (tb,). _rebuild() relies
        # on this and calls only __new__, which is cheaper than a call to the class.
        pass

    @property
    def tb(self) -> str:
        """The formatted traceback, with proper line breaks."""
        return self.args[0]

    def __str__(self) -> str:
        return self.tb

    def __repr__(self) -> str:
        # The text as it reads, line breaks included, rather than one escaped line.
        return f"{type(self).__name__}('{self.tb}')"


class RemoteExceptionStandIn(Exception):
    """
    Stands in for a remote exception that could not be rebuilt.

    Unpickling a :class:`RemoteException` gives this exception instead of the original one
    when the original cannot be pickled in the sending process (say, it holds a lock or
    a lambda, or its class is defined inside a function), or cannot be unpickled in the
    receiving one (its class cannot be imported there, or its ``__init__`` does not accept
    the exception's own ``args``). Like any exception out of a ``RemoteException``, it has
    the remote traceback as its ``__cause__``, and :func:`is_remote_exception` is ``True``
    for it.

    >>> e = RemoteExceptionStandIn('mymod.MyError', 'the message')
    >>> str(e)
    'mymod.MyError: the message'
    """

    def __init__(self, type_name: str, message: str, reason: str = "") -> None:
        super().__init__(type_name, message)
        self.type_name = type_name
        """The original exception's type, module-qualified: ``'mymod.MyError'``."""
        self.message = message
        """``str()`` of the original exception."""
        self.reason = reason
        """Why the original could not be rebuilt, e.g. ``"cannot unpickle: TypeError:
        MyError.__init__() missing 1 required positional argument: 'code'"``."""

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name


def is_remote_exception(e: object) -> bool:
    """
    Return ``True`` if the exception ``e`` was created by :class:`RemoteException`, and
    ``False`` otherwise.

    The rule: ``e`` is a ``BaseException`` whose ``__cause__`` is a
    :class:`RemoteTraceback`. This holds for every exception out of unpickling a
    ``RemoteException`` (stand-ins included), and it still holds after such an exception has
    been raised again in this process; it stops holding if its ``__cause__`` is replaced.
    """
    return isinstance(e, BaseException) and isinstance(e.__cause__, RemoteTraceback)


def get_remote_traceback(e: BaseException) -> str:
    """
    ``e`` must have checked ``True`` by :func:`is_remote_exception`.
    Suppose an Exception object is wrapped by :class:`RemoteException` and sent to another
    process through a queue. Taken out of the queue in the other process, the object will
    check ``True`` by :func:`is_remote_exception`. Then this function applied on the object
    will return the traceback info as a string.

    Raises ``TypeError`` if ``e`` is not an exception, and ``ValueError`` if it is not a
    remote one.
    """
    if not isinstance(e, BaseException):
        raise TypeError(f"expected an exception, got {type(e).__name__!r}")
    cause = e.__cause__
    if not isinstance(cause, RemoteTraceback):
        raise ValueError(
            f"{e!r} is not a remote exception: its __cause__ is not a RemoteTraceback"
        )
    return cause.tb


class RemoteException:
    """
    This class is a pickle helper for Exception objects to preserve some traceback info.
    This is needed because directly calling ``pickle.dumps`` on an Exception object will
    lose its ``__traceback__`` and ``__cause__`` attributes.

    This is designed to be used to send an exception object to another process.
    It can also be used to pickle-persist an Exception object for some time.

    This class preserves some traceback info simply by keeping it as a formatted string
    during pickling. Once unpickled, the object obtained, say ``obj``, is **not** an
    instance of ``RemoteException``, but rather of the original Exception type. ``obj``
    does not have the ``__traceback__`` attribute, which is impossible to reconstruct, but
    rather has the ``__cause__`` attribute, which is a custom Exception object
    (:class:`RemoteTraceback`) that contains the string-form traceback info, with proper
    line breaks. Its ``__context__`` is ``None``.

    .. note:: ``type(pickle.loads(pickle.dumps(RemoteException(e))))`` is not
       ``RemoteException``, but rather ``type(e)``; or :class:`RemoteExceptionStandIn` when
       ``e`` cannot be rebuilt from its pickled state.

    .. note:: ``RemoteException`` does not subclass ``BaseException``, hence you can't
       *raise* an instance of this class.

    The text starts with the name of the process that wrapped the exception, e.g.
    ``[SpawnProcess-1] Traceback (most recent call last):``. An exception out of
    unpickling, wrapped again without being raised, keeps its remote text; one raised
    again is formatted afresh, and Python's formatting of its cause chain then includes the
    older text, so the text of every hop is kept.

    Before putting any ``Exception`` object in a multiprocessing Queue, wrap it by
    ``RemoteException``.
    """

    __slots__ = ("exc", "tb")

    exc: BaseException
    """
    This is still the original Exception object with traceback and everything. When you
    get a RemoteException object, it must have not gone through pickling (because a
    RemoteException object would not survive pickling!), hence you can use its ``exc``
    attribute directly.
    """

    tb: str
    """The traceback text that unpickling attaches as a :class:`RemoteTraceback`."""

    def __init__(self, exc: BaseException, tb: TracebackType | str | None = None) -> None:
        """
        Parameters
        ----------
        exc
            A BaseException object.
        tb
            Optional traceback info, if not already carried by ``exc``: a traceback object,
            formatted together with ``exc`` as Python prints it, or a string, used as is.
            By default ``exc.__traceback__``; if that is ``None`` and ``exc`` is a remote
            exception (see :func:`is_remote_exception`), its remote text. Otherwise there
            is no traceback to keep, and ``ValueError`` is raised.
        """
        if not isinstance(exc, BaseException):
            raise TypeError(f"expected an exception, got {type(exc).__name__!r}")
        if tb is None:
            tb = exc.__traceback__
            if tb is None:
                cause = exc.__cause__
                if not isinstance(cause, RemoteTraceback):
                    raise ValueError(
                        f"{exc!r} carries no traceback: it has not been raised, and no "
                        "tb was given; pickle it directly instead"
                    )
                tb = cause.tb
        if not isinstance(tb, str):
            if not isinstance(tb, TracebackType):
                raise TypeError(
                    f"tb must be a traceback, a str or None, not {type(tb).__name__!r}"
                )
            tb = _format(exc, tb)
        self.exc = exc
        self.tb = tb

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.exc!r})"

    def __reduce_ex__(
        self, protocol: SupportsIndex
    ) -> tuple[Callable[..., BaseException], tuple[Any, ...]]:
        # The exception travels as pickle bytes of its own, so that the receiver unpickles
        # it inside _rebuild() and can fall back to a stand-in; the type name and message
        # travel for that stand-in. This costs one more (small) pickler and unpickler than
        # pickling the exception inline, well under 1% of a round trip that formats a
        # traceback (bench/bench_remote.py).
        exc = self.exc
        cls = type(exc)
        type_name = f"{cls.__module__}.{cls.__qualname__}"
        try:
            message = str(exc)
        except Exception:  # noqa: BLE001 - as the traceback module shows such an exception
            message = "<exception str() failed>"
        try:
            data = pickle.dumps(exc, protocol)
        except Exception as e:  # noqa: BLE001 - whatever pickle raises, send a stand-in
            reason = f"cannot pickle: {type(e).__name__}: {e}"
            return _stand_in, (type_name, message, reason, self.tb)
        return _rebuild, (data, self.tb, type_name, message)


# What Python prints between the blocks of a chain of exceptions.
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def _format(exc: BaseException, tb: TracebackType) -> str:
    """``exc`` as ``traceback.format_exception(type(exc), exc, tb)`` formats it, joined,
    with ``[<current process name>] `` in front."""
    import traceback  # importing it costs more than the rest of this module; defer it

    # The source lines are looked up once, while formatting, rather than also when the
    # frames are extracted.
    te = traceback.TracebackException(type(exc), exc, tb, compact=True, lookup_lines=False)
    parts = [f"[{current_process().name}] "]
    # te.format() would give the same lines, walking the chain as below, but it passes
    # every line through textwrap.indent() for the margins of exception groups: a tenth
    # of the whole cost. Exception groups (Python 3.11+) are left to it.
    chain = []  # (what is printed before the block, the block), outermost first
    t = te
    while t is not None:
        if getattr(t, "exceptions", None) is not None:
            parts.extend(te.format())
            return "".join(parts)
        if t.__cause__ is not None:
            chain.append((_CAUSE, t))
            t = t.__cause__
        elif t.__context__ is not None and not t.__suppress_context__:
            chain.append((_CONTEXT, t))
            t = t.__context__
        else:
            chain.append(("", t))
            t = None
    for before, t in reversed(chain):
        parts.append(before)
        if t.stack:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(t.stack.format())
        parts.extend(t.format_exception_only())
    return "".join(parts)


def _rebuild(data: bytes, tb: str, type_name: str, message: str) -> BaseException:
    """Unpickles the exception sent by ``RemoteException.__reduce_ex__()`` and attaches
    ``tb`` as its cause; a stand-in if it cannot be unpickled here."""
    try:
        exc = pickle.loads(data)
    except Exception as e:  # noqa: BLE001 - whatever unpickling raises, give a stand-in
        return _stand_in(type_name, message, f"cannot unpickle: {type(e).__name__}: {e}", tb)
    exc.__cause__ = _new_remote_traceback(RemoteTraceback, tb)
    return exc


_new_remote_traceback = RemoteTraceback.__new__


def _stand_in(type_name: str, message: str, reason: str, tb: str) -> RemoteExceptionStandIn:
    exc = RemoteExceptionStandIn(type_name, message, reason)
    exc.__cause__ = RemoteTraceback(tb)
    return exc
