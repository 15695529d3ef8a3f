"""Module-level targets for the child processes of test_threading.py and
test_package.py (spawned children import them by name)."""

from __future__ import annotations

import os
import time


def return_value(value):
    return value


def raise_value_error(msg):
    raise ValueError(msg)


def exit_with(code):
    raise SystemExit(code)


def sleep_forever():
    while True:
        time.sleep(1)


def return_after_event(event, value, timeout=60.0):
    """Wait for `event` (one of our Events), then return `value`; exit 3 if it
    never comes."""
    if not event.wait(timeout):
        raise SystemExit(3)
    return value


def raise_after_event(event, msg, timeout=60.0):
    if not event.wait(timeout):
        raise SystemExit(3)
    raise ValueError(msg)


def whoami(_=None):
    """(is our SpawnProcess, process name, pid) of this process's process
    object: in a Pool worker, what the pool started."""
    import multiprocessing

    from mpservice.multiprocessing import SpawnProcess

    p = multiprocessing.current_process()
    return isinstance(p, SpawnProcess), p.name, os.getpid()


def loaded_modules(names):
    """Those of `names` that this process has imported."""
    import sys

    return sorted(n for n in names if n in sys.modules)


def log_and_square(x):
    """Log one INFO and one DEBUG record on 'mpx.test.pool', return x * x."""
    import logging

    log = logging.getLogger("mpx.test.pool")
    log.info("square %d in %d", x, os.getpid())
    log.debug("debug %d", x)
    return x * x


def shared_values_child(value, array, raw_value, raw_array, n):
    """Increment `value` n times under its lock, double each element of
    `array`, set raw_value to 42 and raw_array[i] = i * 10. Returns
    cpu_count() as the child sees it."""
    from mpservice.multiprocessing import cpu_count

    for _ in range(n):
        with value.get_lock():
            value.value += 1
    with array.get_lock():
        for i in range(len(array)):
            array[i] = array[i] * 2
    raw_value.value = 42
    for i in range(len(raw_array)):
        raw_array[i] = i * 10
    return cpu_count()


def manager_child(lst, dct, lock):
    """Use manager proxies from a child process."""
    with lock:
        lst.append("child")
        dct["child"] = os.getpid()
    return len(lst)
