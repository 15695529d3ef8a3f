"""mpservice.multiprocessing.remote_exception: SPEC section 5 and the reference's
"Remote exception" session and error.py examples."""

from __future__ import annotations

import multiprocessing.reduction
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import traceback
from pathlib import Path

import pytest

import mpservice
from mpservice.multiprocessing.remote_exception import (
    RemoteException,
    RemoteExceptionStandIn,
    RemoteTraceback,
    get_remote_traceback,
    is_remote_exception,
)

MODULE = "mpservice.multiprocessing.remote_exception"
CAUSE_LINE = "The above exception was the direct cause of the following exception:"
PYTHONPATH = str(Path(mpservice.__file__).resolve().parent.parent)


def round_trip(obj, protocol=None):
    return pickle.loads(pickle.dumps(obj, protocol))


def foo():
    raise ValueError(38)


def gee():
    foo()


def caught(fn, *args):
    """The exception fn(*args) raises, with its traceback."""
    try:
        fn(*args)
    except BaseException as e:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too
        return e
    raise AssertionError(f"{fn.__name__} did not raise")


def raiser(exc):
    raise exc


def run_script(tmp_path: Path, source: str) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (PYTHONPATH, os.environ.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, env=env, cwd=tmp_path)


# ---------------------------------------------------------------------------------------------
# The reference session.
# ---------------------------------------------------------------------------------------------


def test_reference_session():
    err = caught(gee)
    assert repr(err) == "ValueError(38)"
    assert err.__traceback__ is not None
    assert err.__cause__ is None
    assert not is_remote_exception(err)

    e_remote = RemoteException(err)
    assert repr(e_remote) == "RemoteException(ValueError(38))"
    assert e_remote.exc is err
    e_unpickled = pickle.loads(pickle.dumps(e_remote))

    assert repr(e_unpickled) == "ValueError(38)"
    assert type(e_unpickled) is ValueError
    assert e_unpickled.args == (38,)
    assert e_unpickled.__traceback__ is None
    assert e_unpickled.__context__ is None
    cause = e_unpickled.__cause__
    assert type(cause) is RemoteTraceback

    # The text is what Python prints for err, behind the name of this process.
    text = "[MainProcess] " + "".join(traceback.format_exception(type(err), err,
                                                                  err.__traceback__))
    assert text.startswith("[MainProcess] Traceback (most recent call last):\n  File ")
    assert ", in gee\n" in text and ", in foo\n" in text
    assert text.endswith("\nValueError: 38\n")
    assert e_remote.tb == text
    assert cause.tb == text
    assert str(cause) == text
    assert cause.args == (text,)
    assert repr(cause) == f"RemoteTraceback('{text}')"

    assert is_remote_exception(e_unpickled)
    assert get_remote_traceback(e_unpickled) == text


def test_repr():
    assert repr(RemoteException(ValueError(38), "tb")) == "RemoteException(ValueError(38))"
    assert repr(RemoteException(caught(raiser, KeyError("k")))) == "RemoteException(KeyError('k'))"


def test_not_raisable():
    r = RemoteException(caught(gee))
    assert not isinstance(r, BaseException)
    with pytest.raises(TypeError, match="exceptions must derive from BaseException"):
        raise r


def test_no_traceback_is_a_value_error():
    with pytest.raises(ValueError, match="carries no traceback"):
        RemoteException(ValueError(38))
    e = ValueError(1)
    e.__cause__ = KeyError(2)  # a cause, but not a remote traceback
    with pytest.raises(ValueError, match="carries no traceback"):
        RemoteException(e)


def test_bad_arguments():
    with pytest.raises(TypeError):
        RemoteException("not an exception", "tb")
    with pytest.raises(TypeError, match="tb must be"):
        RemoteException(ValueError(1), 42)


# ---------------------------------------------------------------------------------------------
# tb given explicitly.
# ---------------------------------------------------------------------------------------------


def test_tb_as_string_is_kept_verbatim():
    r = RemoteException(ValueError(5), "my own\ntraceback text\n")
    assert r.tb == "my own\ntraceback text\n"
    out = round_trip(r)
    assert type(out) is ValueError and out.args == (5,)
    assert get_remote_traceback(out) == "my own\ntraceback text\n"


def test_tb_as_traceback_object():
    tb = caught(gee).__traceback__
    exc = ValueError("never raised")
    assert exc.__traceback__ is None
    r = RemoteException(exc, tb)
    expected = "[MainProcess] " + "".join(traceback.format_exception(ValueError, exc, tb))
    assert r.tb == expected
    assert ", in foo\n" in r.tb and r.tb.endswith("\nValueError: never raised\n")
    assert get_remote_traceback(round_trip(r)) == expected


def test_tb_object_overrides_the_exceptions_own():
    own = caught(raiser, ValueError("x"))
    other_tb = caught(gee).__traceback__
    r = RemoteException(own, other_tb)
    assert ", in foo\n" in r.tb
    assert ", in raiser\n" not in r.tb


def test_process_name_prefix(monkeypatch):
    from multiprocessing import current_process

    monkeypatch.setattr(current_process(), "name", "Worker-7")
    r = RemoteException(caught(gee))
    assert r.tb.startswith("[Worker-7] Traceback (most recent call last):\n")


def _with_cause():
    try:
        gee()
    except ValueError as e:
        raise KeyError("wrapped") from e


def _with_context():
    try:
        gee()
    except ValueError:
        raise KeyError("during")  # noqa: B904 - the context is what is tested


def _with_suppressed_context():
    try:
        gee()
    except ValueError:
        raise KeyError("from None") from None


def _with_both():
    try:
        _with_context()
    except KeyError as e:
        raise RuntimeError("outer") from e


def _with_notes():
    e = ValueError("noted")
    if hasattr(e, "add_note"):
        e.add_note("a note\non two lines")
    raise e


def _syntax_error():
    compile("x = (1,\n", "<snippet>", "exec")


def _recursion(n):
    if n == 0:
        raise ValueError("deep")
    _recursion(n - 1)


def _group():
    raise ExceptionGroup("group", [caught(gee), caught(raiser, KeyError(1))])  # noqa: F821


def _bad_str():
    raise BadStrError()


SHAPES = [gee, _with_cause, _with_context, _with_suppressed_context, _with_both, _with_notes,
          _syntax_error, lambda: _recursion(30), _bad_str]
if sys.version_info >= (3, 11):
    SHAPES.append(_group)


@pytest.mark.parametrize("fn", SHAPES, ids=lambda fn: fn.__name__)
def test_text_is_what_python_prints(fn):
    err = caught(fn)
    expected = "[MainProcess] " + "".join(traceback.format_exception(type(err), err,
                                                                      err.__traceback__))
    assert RemoteException(err).tb == expected
    out = round_trip(RemoteException(err))
    assert get_remote_traceback(out) == expected


# ---------------------------------------------------------------------------------------------
# Several hops.
# ---------------------------------------------------------------------------------------------


def test_rewrap_without_raising_keeps_the_text():
    first = round_trip(RemoteException(caught(gee)))
    text = get_remote_traceback(first)
    again = RemoteException(first)  # no __traceback__: the remote text is kept
    assert again.tb == text
    second = round_trip(again)
    assert type(second) is ValueError and second.__traceback__ is None
    assert get_remote_traceback(second) == text
    assert get_remote_traceback(round_trip(RemoteException(second))) == text


def test_raise_and_rewrap_nests_the_text():
    first = round_trip(RemoteException(caught(gee)))
    old = get_remote_traceback(first)
    e = caught(raiser, first)
    assert e is first and e.__traceback__ is not None and is_remote_exception(e)
    r = RemoteException(e)
    # Python's formatting of the chain: the older text as the cause, then this raise.
    assert r.tb.startswith(f"[MainProcess] {MODULE}.RemoteTraceback: {old}")
    assert r.tb.index(old) < r.tb.index(CAUSE_LINE) < r.tb.index(", in raiser\n")
    assert r.tb.endswith("\nValueError: 38\n")
    second = round_trip(r)
    assert get_remote_traceback(second) == r.tb
    # A third hop nests once more; the first text is still there, once.
    third = round_trip(RemoteException(caught(raiser, second)))
    text3 = get_remote_traceback(third)
    assert text3.count(old) == 1 and text3.count(CAUSE_LINE) == 2


def test_local_chain_is_part_of_the_text():
    def chained():
        try:
            gee()
        except ValueError as e:
            raise KeyError("wrapped") from e

    err = caught(chained)
    out = round_trip(RemoteException(err))
    assert type(out) is KeyError
    text = get_remote_traceback(out)
    assert text.index(", in foo\n") < text.index(CAUSE_LINE) < text.index("KeyError: 'wrapped'")
    assert isinstance(out.__cause__, RemoteTraceback)  # the local cause is replaced


# ---------------------------------------------------------------------------------------------
# Raising an unpickled exception prints the remote traceback first.
# ---------------------------------------------------------------------------------------------


def test_raise_prints_remote_then_local(tmp_path):
    r = run_script(tmp_path, """\
        import pickle
        from mpservice.multiprocessing.remote_exception import RemoteException

        def foo():
            raise ValueError(38)

        def gee():
            foo()

        try:
            gee()
        except Exception as e:
            err = e
        e_unpickled = pickle.loads(pickle.dumps(RemoteException(err)))
        raise e_unpickled
        """)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[0] == (f"{MODULE}.RemoteTraceback: [MainProcess] "
                        "Traceback (most recent call last):")
    assert lines[-1] == "ValueError: 38"
    k = lines.index(CAUSE_LINE)
    assert lines[k - 3:k] == ["ValueError: 38", "", ""]
    assert lines[k + 1:k + 3] == ["", "Traceback (most recent call last):"]
    remote, local = "\n".join(lines[:k]), "\n".join(lines[k:])
    assert "in gee" in remote and "in foo" in remote and "raise ValueError(38)" in remote
    assert "raise e_unpickled" in local and "in foo" not in local


# ---------------------------------------------------------------------------------------------
# Exceptions that cannot be rebuilt arrive as stand-ins.
# ---------------------------------------------------------------------------------------------


class TwoArgError(Exception):
    def __init__(self, code, detail):
        super().__init__(f"{code}: {detail}")


class Payload:
    pass


class GoneError(Exception):
    pass


class BadStrError(Exception):
    def __str__(self):
        raise RuntimeError("no str")


def check_stand_in(out, type_name: str, message: str, reason: str, text: str):
    assert type(out) is RemoteExceptionStandIn
    assert out.type_name == type_name
    assert out.message == message
    assert out.reason.startswith(reason), out.reason
    assert str(out) == f"{type_name}: {message}"
    assert out.__traceback__ is None and out.__context__ is None
    assert is_remote_exception(out)
    assert get_remote_traceback(out) == text


def test_stand_in_for_custom_init():
    err = caught(raiser, TwoArgError(7, "disk full"))
    with pytest.raises(TypeError):
        round_trip(err)  # what plain pickling does
    r = RemoteException(err)
    out = round_trip(r)
    check_stand_in(out, f"{__name__}.TwoArgError", "7: disk full",
                   "cannot unpickle: TypeError: ", r.tb)
    assert r.tb.endswith("TwoArgError: 7: disk full\n")


def test_stand_in_for_class_missing_on_the_receiving_side(monkeypatch):
    r = RemoteException(caught(raiser, GoneError("gone")))
    data = pickle.dumps(r)
    monkeypatch.delattr(sys.modules[__name__], "GoneError")
    out = pickle.loads(data)
    check_stand_in(out, f"{__name__}.GoneError", "gone", "cannot unpickle: AttributeError",
                   r.tb)


def test_stand_in_for_args_missing_on_the_receiving_side(monkeypatch):
    r = RemoteException(caught(raiser, ValueError(Payload())))
    data = pickle.dumps(r)
    monkeypatch.delattr(sys.modules[__name__], "Payload")
    out = pickle.loads(data)
    check_stand_in(out, "builtins.ValueError", str(r.exc), "cannot unpickle: AttributeError",
                   r.tb)


def test_stand_in_for_class_of_another_main(tmp_path):
    # A class defined in the __main__ of another process cannot be imported here.
    r = run_script(tmp_path, """\
        import pickle, sys
        from mpservice.multiprocessing.remote_exception import RemoteException

        class MainOnlyError(Exception):
            pass

        try:
            raise MainOnlyError("only in that main")
        except Exception as e:
            sys.stdout.write(pickle.dumps(RemoteException(e)).hex())
        """)
    assert r.returncode == 0, r.stderr
    out = pickle.loads(bytes.fromhex(r.stdout))
    assert out.type_name == "__main__.MainOnlyError"
    text = get_remote_traceback(out)
    assert text.startswith("[MainProcess] Traceback (most recent call last):\n")
    assert text.endswith("\nMainOnlyError: only in that main\n")
    check_stand_in(out, "__main__.MainOnlyError", "only in that main",
                   "cannot unpickle: AttributeError", text)


def test_stand_in_for_local_class():
    class LocalError(Exception):
        pass

    r = RemoteException(caught(raiser, LocalError("local")))
    out = round_trip(r)
    check_stand_in(out, f"{__name__}.test_stand_in_for_local_class.<locals>.LocalError",
                   "local", "cannot pickle: ", r.tb)


def test_stand_in_for_unpicklable_attribute():
    err = caught(raiser, ValueError("with a lock"))
    err.lock = threading.Lock()
    with pytest.raises(TypeError):
        pickle.dumps(err)
    r = RemoteException(err)
    out = round_trip(r)
    check_stand_in(out, "builtins.ValueError", "with a lock", "cannot pickle: TypeError", r.tb)


def test_stand_in_when_str_fails():
    err = caught(raiser, BadStrError())
    err.lock = threading.Lock()
    r = RemoteException(err)
    out = round_trip(r)
    check_stand_in(out, f"{__name__}.BadStrError", "<exception str() failed>",
                   "cannot pickle: ", r.tb)


def test_stand_in_travels_on():
    first = round_trip(RemoteException(caught(raiser, TwoArgError(1, "x"))))
    text = get_remote_traceback(first)
    again = round_trip(RemoteException(first))
    check_stand_in(again, first.type_name, first.message, first.reason, text)
    assert again.reason == first.reason
    assert repr(again) == f"RemoteExceptionStandIn('{first.type_name}', '1: x')"


def test_stand_in_without_message():
    e = RemoteExceptionStandIn("mymod.MyError", "")
    assert str(e) == "mymod.MyError"
    assert str(RemoteExceptionStandIn("mymod.MyError", "the message")) == (
        "mymod.MyError: the message")


# ---------------------------------------------------------------------------------------------
# Picklers, protocols, BaseException.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_protocol(protocol):
    r = RemoteException(caught(gee))
    out = round_trip(r, protocol)
    assert type(out) is ValueError and out.args == (38,)
    assert get_remote_traceback(out) == r.tb
    stand_in = round_trip(RemoteException(caught(raiser, TwoArgError(1, "x"))), protocol)
    assert type(stand_in) is RemoteExceptionStandIn


@pytest.mark.parametrize("protocol", [None, 2, pickle.HIGHEST_PROTOCOL])
def test_forking_pickler(protocol):
    dumps = multiprocessing.reduction.ForkingPickler.dumps
    r = RemoteException(caught(gee))
    out = pickle.loads(dumps((1, r, "x"), protocol))
    assert out[0] == 1 and out[2] == "x"
    assert type(out[1]) is ValueError and get_remote_traceback(out[1]) == r.tb
    stand_in = pickle.loads(dumps(RemoteException(caught(raiser, TwoArgError(1, "x"))),
                                  protocol))
    assert type(stand_in) is RemoteExceptionStandIn


@pytest.mark.parametrize("exc, last_line", [
    (SystemExit(3), "SystemExit: 3"),
    (KeyboardInterrupt(), "KeyboardInterrupt"),
    (GeneratorExit(), "GeneratorExit"),
])
def test_base_exceptions(exc, last_line):
    err = caught(raiser, exc)
    out = round_trip(RemoteException(err))
    assert type(out) is type(exc) and out.args == exc.args
    assert not isinstance(out, Exception)
    assert out.__traceback__ is None and out.__context__ is None
    assert get_remote_traceback(out).endswith(f"\n{last_line}\n")
    if isinstance(exc, SystemExit):
        assert out.code == 3


def test_attributes_survive():
    err = caught(raiser, OSError(2, "No such file", "/x"))
    err.extra = {"k": [1, 2]}
    out = round_trip(RemoteException(err))
    assert type(out) is FileNotFoundError  # OSError's constructor picks the subclass
    assert (out.errno, out.strerror, out.filename) == (2, "No such file", "/x")
    assert out.extra == {"k": [1, 2]}


# ---------------------------------------------------------------------------------------------
# is_remote_exception, get_remote_traceback, RemoteTraceback.
# ---------------------------------------------------------------------------------------------


def test_is_remote_exception_rule():
    assert not is_remote_exception(None)
    assert not is_remote_exception("text")
    assert not is_remote_exception(RemoteException(caught(gee)))
    assert not is_remote_exception(ValueError(1))
    e = ValueError(1)
    e.__cause__ = RemoteTraceback("text")  # the rule: a RemoteTraceback as __cause__
    assert is_remote_exception(e)
    e.__cause__ = KeyError(1)
    assert not is_remote_exception(e)
    raised = caught(raiser, round_trip(RemoteException(caught(gee))))
    assert raised.__traceback__ is not None and is_remote_exception(raised)


def test_get_remote_traceback_errors():
    with pytest.raises(ValueError, match="not a remote exception"):
        get_remote_traceback(caught(gee))
    with pytest.raises(TypeError, match="expected an exception"):
        get_remote_traceback("text")


def test_remote_traceback():
    t = RemoteTraceback("Traceback (most recent call last):\n  File x\nValueError: 1\n")
    assert isinstance(t, Exception)
    assert t.tb == str(t) == t.args[0]
    assert repr(t) == ("RemoteTraceback('Traceback (most recent call last):\n  File x\n"
                       "ValueError: 1\n')")
    back = pickle.loads(pickle.dumps(t))
    assert type(back) is RemoteTraceback and back.tb == t.tb
    with pytest.raises(TypeError):
        RemoteTraceback()


def test_public_names():
    from mpservice.multiprocessing import remote_exception

    assert sorted(remote_exception.__all__) == sorted([
        "RemoteException", "RemoteExceptionStandIn", "RemoteTraceback",
        "is_remote_exception", "get_remote_traceback"])


def test_import_does_not_load_traceback(tmp_path):
    # The module alone, without the package (whose other modules are not ours to judge):
    # traceback is imported only when a traceback is first formatted.
    from mpservice.multiprocessing import remote_exception

    r = run_script(tmp_path, f"""\
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("remote_exception_alone",
                                                      {remote_exception.__file__!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print("traceback" in sys.modules)
        """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
