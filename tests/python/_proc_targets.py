"""Child-process targets for test_process.py (SpawnProcess outcomes, the future API and log
forwarding).

Everything here is module-level so that spawned children can import it (conftest puts this
directory on PYTHONPATH and on sys.path, which spawn passes on). Keep imports light and
configure nothing at import time: children pay for it, and a child whose root logger got a
handler at import would turn log forwarding off.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from mpservice.multiprocessing import SpawnProcess

# --------------------------------------------------------------------------
# plain outcomes
# --------------------------------------------------------------------------


def return_value(value):
    return value


def echo_args(*args, **kwargs):
    return args, kwargs


def raise_value_error(msg):
    raise ValueError(msg)  # <- the failing line (test_process checks its text)


def raise_keyboard_interrupt():
    raise KeyboardInterrupt


def system_exit(code):
    sys.exit(code)


def sleep_then_return(seconds, value=None):
    time.sleep(seconds)
    return value


def sleep_forever():
    time.sleep(3600)


def segfault_here():
    import ctypes

    ctypes.string_at(0)  # reads address 0: SIGSEGV


def abort_here():
    os.abort()


def kill_self(sig):
    os.kill(os.getpid(), sig)
    time.sleep(30)


def os_exit(code):
    os._exit(code)


def return_lambda():
    return lambda: 1


def return_lock():
    return threading.Lock()


def _fail_rebuild(msg):
    raise ValueError(msg)


class BadUnpickle:
    """Pickles fine; unpickling raises ValueError."""

    def __reduce__(self):
        return _fail_rebuild, ("cannot rebuild me",)


def return_bad_unpickle():
    return BadUnpickle()


def _child_only_module():
    """A module that exists only in the calling process (never importable elsewhere)."""
    import types

    name = "mpx_child_only_module"
    mod = sys.modules.get(name)
    if mod is None:
        mod = types.ModuleType(name)
        exec(
            "class Thing:\n"
            "    def __init__(self, x):\n"
            "        self.x = x\n"
            "class ChildOnlyError(Exception):\n"
            "    pass\n",
            mod.__dict__,
        )
        sys.modules[name] = mod
    return mod


def return_child_only_object():
    return _child_only_module().Thing(5)


def raise_child_only_error(msg):
    raise _child_only_module().ChildOnlyError(msg)


class LockedError(Exception):
    """An exception with an attribute that cannot be pickled."""

    def __init__(self, msg):
        super().__init__(msg)
        self.lock = threading.Lock()


def raise_locked_error(msg):
    raise LockedError(msg)


class CustomInitError(Exception):
    """Its __init__ needs two arguments but its args hold one: it cannot be rebuilt by
    unpickling (TypeError: missing argument)."""

    def __init__(self, msg, code):
        super().__init__(msg)
        self.code = code


def raise_custom_init_error(msg, code):
    raise CustomInitError(msg, code)


def _slow_rebuild(value, delay):
    time.sleep(delay)
    return value


class SlowUnpickle:
    """Unpickling it takes `delay` seconds (during which the GIL is released)."""

    def __init__(self, value, delay):
        self.value, self.delay = value, delay

    def __reduce__(self):
        return _slow_rebuild, (self.value, self.delay)


def return_slow_unpickle(value, delay):
    return SlowUnpickle(value, delay)


def return_len(data, *more):
    return len(data) + sum(len(m) for m in more)


# --------------------------------------------------------------------------
# handle_exception overrides
# --------------------------------------------------------------------------


class RaisingHandlerProcess(SpawnProcess):
    @staticmethod
    def handle_exception(exc):
        raise RuntimeError("handle_exception failed")


class CustomHandlerProcess(SpawnProcess):
    @staticmethod
    def handle_exception(exc):
        print(f"custom handler got {type(exc).__name__}: {exc}", flush=True)


# --------------------------------------------------------------------------
# logging
# --------------------------------------------------------------------------


def log_sequence(name, n, tag="seq"):
    """Log n INFO records '<tag> <i>' on logger `name`; return n."""
    import logging

    logger = logging.getLogger(name)
    for i in range(n):
        logger.info("%s %d", tag, i)
    return n


def log_levels(names):
    """On each logger: debug, info, warning, error ('<level> <name>'); return the child's
    view: {name: (effective level, isEnabledFor(DEBUG))} and the root's handler count."""
    import logging

    view = {}
    for name in names:
        lg = logging.getLogger(name)
        lg.debug("debug %s", name)
        lg.info("info %s", name)
        lg.warning("warning %s", name)
        lg.error("error %s", name)
        view[name] = (lg.getEffectiveLevel(), lg.isEnabledFor(logging.DEBUG))
    return view, logging.root.manager.disable


def log_with_identity(name):
    """One record; return what the child knows of itself, for comparison."""
    import logging
    import multiprocessing as mp

    t0 = time.time()
    logging.getLogger(name).warning("identity")
    t1 = time.time()
    return {
        "processName": mp.current_process().name,
        "process": os.getpid(),
        "threadName": threading.current_thread().name,
        "t0": t0,
        "t1": t1,
    }


def log_from_thread(name):
    import logging

    def work():
        logging.getLogger(name).warning("from the second thread")

    t = threading.Thread(target=work, name="child-worker-thread")
    t.start()
    t.join()
    logging.getLogger(name).warning("from the main thread")


def warn_in_child(text):
    import warnings

    warnings.warn(text, UserWarning)


def log_exception(name):
    import logging

    try:
        {}["missing-key-xyz"]
    except KeyError:
        logging.getLogger(name).exception("caught it")


def log_then_kill(name, n):
    """Log n records, then SIGKILL itself."""
    log_sequence(name, n, tag="pre-kill")
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(30)


def log_then_raise(name, n):
    log_sequence(name, n, tag="pre-raise")
    raise ValueError("after logging")


def log_and_return(name, idx, n):
    """Log n records '<idx> <i>' then return (idx, pid)."""
    log_sequence(name, n, tag=f"child{idx}")
    return idx, os.getpid()


def logging_state(name):
    """Log an ERROR on `name`; return (number of root handlers, their class names)."""
    import logging

    logging.getLogger(name).error("configured-child record")
    hs = logging.getLogger().handlers
    return len(hs), [type(h).__name__ for h in hs]


# --------------------------------------------------------------------------
# readiness and introspection
# --------------------------------------------------------------------------


def touch_then_sleep(path, seconds=3600):
    """Create `path` (the parent waits for it: the target is running), then sleep."""
    with open(path, "w"):
        pass
    time.sleep(seconds)


def own_fds():
    """{fd: what it refers to} of this process."""
    import _helpers

    return _helpers.fd_table()


def log_message(name, level, msg):
    import logging

    logging.getLogger(name).log(level, msg)


def nested_spawn(name, n):
    """Start a grandchild (our SpawnProcess) that logs n records and fails; return what
    its join raised (type name, message) and its name."""
    gc_proc = SpawnProcess(target=log_then_raise, args=(name, n))
    gc_proc.start()
    try:
        gc_proc.join(60)
    except ValueError as e:
        return "ValueError", str(e), gc_proc.name
    return "no error", None, gc_proc.name


def log_forever(name):
    import logging

    logger = logging.getLogger(name)
    i = 0
    while True:
        logger.warning("chatter %d", i)
        i += 1


class RunOverride(SpawnProcess):
    """The stdlib pattern: a subclass overriding run() instead of passing a target."""

    def __init__(self, value, *, fail=False, name_=None):
        super().__init__()
        self.value = value
        self.fail = fail
        self.name_ = name_

    def run(self):
        if self.name_:
            logging.getLogger(self.name_).warning("from run %s", self.value)
        if self.fail:
            raise LookupError(f"run failed {self.value}")
        return self.value * 3


class RunOverrideCallingSuper(SpawnProcess):
    def run(self):
        return ("super gave", super().run())


def return_then_slow_exit(value, seconds, code=None):
    """Return `value`; then the interpreter's shutdown takes `seconds` (an atexit
    handler), and ends with os._exit(code) if a code is given."""
    import atexit

    def slow():
        time.sleep(seconds)
        if code is not None:
            os._exit(code)

    atexit.register(slow)
    return value


class _NoPickle:
    def __reduce__(self):
        raise TypeError("not picklable")

    def __repr__(self):
        return "<NoPickle>"


def log_with_extra(name):
    """Records with extra=... attributes: plain values, an unpicklable one, and with an
    exception."""
    import logging

    log = logging.getLogger(name)
    log.info("plain")
    log.info("with extra", extra={"user": "ann", "n": 7, "tags": ["a", "b"]})
    log.info("unpicklable", extra={"user": _NoPickle(), "n": 1})
    try:
        raise KeyError("k")
    except KeyError:
        log.exception("failed", extra={"user": "bob", "n": 2})
