"""Runnees for test_runner.py; module level so that spawned children can import them."""

import os
import time

from mpservice.multiprocessing.runner import ProcessRunnee


class Scaler(ProcessRunnee):
    """Multiplies by `k`; tracks its context-manager state and how many calls it served."""

    def __init__(self, k=2, *, offset=0):
        self.k = k
        self.offset = offset
        self.entered = False
        self.calls = 0

    def __enter__(self):
        self.entered = True
        return self

    def __call__(self, x=None, *, action=None):
        self.calls += 1
        if action == "state":
            return (self.entered, self.calls, os.getpid())
        if action == "raise":
            raise ValueError(f"bad input {x!r}")
        if action == "return_exception":
            return KeyError("returned, not raised")
        if action == "exit":
            os._exit(5)
        if action == "sleep":
            time.sleep(x)
            return "slept"
        return x * self.k + self.offset


class FailingInit(ProcessRunnee):
    def __init__(self):
        raise RuntimeError("cannot build the runnee")

    def __call__(self):
        return None


class Abstract(ProcessRunnee):
    """Does not implement __call__."""
