"""Ctrl-C (SIGINT) interrupts a blocked queue operation with
KeyboardInterrupt, as with the stdlib, and the interpreter then exits
promptly. Each case runs a small Python script in a subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import CHILD_ENV_PYTHONPATH, load_ours

PRELUDE = {
    "stdlib": """
        import multiprocessing as mp
        _ctx = mp.get_context("spawn")
        Q, JQ, SQ = _ctx.Queue, _ctx.JoinableQueue, _ctx.SimpleQueue
    """,
    "ours": """
        from mpservice.multiprocessing import Queue as Q, JoinableQueue as JQ, SimpleQueue as SQ
    """,
}

# setup; then 'ready' is printed; then the blocking call
OPS = {
    "get": ("q = Q()", "q.get()"),
    "get-timeout": ("q = Q()", "q.get(timeout=120)"),
    "put-full": ("q = Q(1); q.put(0)", "q.put(1)"),
    "put-full-timeout": ("q = Q(1); q.put(0)", "q.put(1, timeout=120)"),
    "join": ("q = JQ(); q.put(0)", "q.join()"),
    "simple-get": ("q = SQ()", "q.get()"),
    "get_many": ("q = Q()", "q.get_many(10)"),
    "get_many-timeout": ("q = Q()", "q.get_many(10, timeout=120)"),
    "put_many-full": ("q = Q(2); q.put_many([0, 1])", "q.put_many([2])"),
}
OURS_ONLY = {"get_many", "get_many-timeout", "put_many-full"}


def _cases():
    for op in OPS:
        for name in ("stdlib", "ours"):
            if name == "stdlib" and op in OURS_ONLY:
                continue
            yield pytest.param(name, op, id=f"{name}-{op}")


def _run_script(body: str):
    env = dict(os.environ, PYTHONPATH=CHILD_ENV_PYTHONPATH, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-c", body],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_ready(proc, timeout=60):
    line = proc.stdout.readline()  # the script prints 'ready' or dies
    if line.strip() != "ready":
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"script did not get ready: {line!r} {out!r} {err!r}")


def _finish(proc, timeout):
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"process did not exit within {timeout}s after SIGINT; stderr: {err!r}")


@pytest.mark.parametrize("name,op", list(_cases()))
def test_sigint_interrupts_blocked_call(name, op):
    if name == "ours":
        load_ours()
    setup, call = OPS[op]
    body = textwrap.dedent(PRELUDE[name]) + f"\n{setup}\nprint('ready', flush=True)\n{call}\n"
    body += "print('UNEXPECTED RETURN', flush=True)\n"
    proc = _run_script(body)
    try:
        _wait_ready(proc)
        time.sleep(0.3)  # let it block
        assert proc.poll() is None, "script did not block"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = _finish(proc, 20)
        dt = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "KeyboardInterrupt" in err, err
    assert "UNEXPECTED RETURN" not in out
    assert proc.returncode != 0
    assert dt < 15, f"exit took {dt:.1f}s after SIGINT"


@pytest.mark.parametrize("name", ["stdlib", "ours"])
def test_sigint_caught_queue_still_usable(name):
    """KeyboardInterrupt raised from a blocked get() can be caught and the
    queue keeps working in the same process."""
    if name == "ours":
        load_ours()
    body = textwrap.dedent(PRELUDE[name]) + textwrap.dedent(
        """
        import time
        q = Q(2)
        print('ready', flush=True)
        try:
            q.get()
        except KeyboardInterrupt:
            print('caught', flush=True)
        q.put('a'); q.put('b')
        print(q.get(timeout=10), q.get(timeout=10), q.qsize(), flush=True)
        q.close(); q.join_thread()
        """
    )
    proc = _run_script(body)
    try:
        _wait_ready(proc)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = _finish(proc, 20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.split("\n")[:2] == ["caught", "a b 0"], (out, err)
