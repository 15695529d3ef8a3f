"""Child-process targets and picklable helpers for the queue tests.

Everything here is module-level so that spawned and forkserver children can
import it (conftest puts this directory on PYTHONPATH). Keep imports light:
children pay for them.
"""

from __future__ import annotations

import os
import pickle
import queue
import time

# --------------------------------------------------------------------------
# picklable values
# --------------------------------------------------------------------------


class Point:
    """A plain user class (picklable by reference to this module)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)

    def __repr__(self):
        return f"Point({self.x!r}, {self.y!r})"


class Blob:
    """Zero-copy-aware class (pickle docs' ZeroCopyByteArray pattern): under
    protocol 5 its payload is a PickleBuffer, i.e. travels out-of-band when the
    pickler has a buffer_callback."""

    def __init__(self, data):
        self.data = bytearray(data)

    def __reduce_ex__(self, protocol):
        if protocol >= 5:
            return _rebuild_blob, (pickle.PickleBuffer(self.data),)
        return _rebuild_blob, (bytes(self.data),)

    def __eq__(self, other):
        return type(other) is Blob and self.data == other.data


def _rebuild_blob(obj):
    # obj may be bytes, bytearray, a PickleBuffer or a memoryview: copy it
    return Blob(memoryview(obj).tobytes())


def pattern(i: int, size: int) -> bytes:
    """A recognisable payload for item i."""
    head = i.to_bytes(8, "little")
    return head + bytes([i % 251]) * (size - 16) + head


def check_pattern(i: int, data: bytes, size: int) -> bool:
    return len(data) == size and data == pattern(i, size)


# --------------------------------------------------------------------------
# child targets
# --------------------------------------------------------------------------


def echo_worker(q_in, q_out):
    """Forward every item from q_in to q_out until a None sentinel."""
    while True:
        x = q_in.get()
        if x is None:
            break
        q_out.put(x)


def put_items(q, items):
    for x in items:
        q.put(x)


def put_items_then_report(q, items, out):
    for x in items:
        q.put(x)
    out.put(("qsize_in_child", q.qsize()))


def producer(q, pid, n, use_many=False, batch=10):
    """Put (pid, seq) for seq in range(n)."""
    if use_many:
        for start in range(0, n, batch):
            q.put_many([(pid, s) for s in range(start, min(n, start + batch))])
    else:
        for s in range(n):
            q.put((pid, s))


def batch_producer(q, pid, nbatches, bsize):
    """put_many batches [(pid, b, i) for i in range(bsize)]."""
    for b in range(nbatches):
        q.put_many([(pid, b, i) for i in range(bsize)])


def consumer(q, out, use_many=False):
    """Get until a None sentinel; send the list of received items to out."""
    got = []
    while True:
        if use_many:
            items = q.get_many(7)
        else:
            items = [q.get()]
        if None in items:
            k = items.index(None)
            got.extend(items[:k])
            rest = items[k + 1 :]
            if rest:  # other consumers' sentinels (get_many took several)
                q.put_many(rest)
            break
        got.extend(items)
    out.put(got)


def sleepy_get(q, delay, out):
    time.sleep(delay)
    out.put(q.get(timeout=30))


def sleepy_put(q, delay, item):
    time.sleep(delay)
    q.put(item)


def get_n(q, n, out):
    out.put([q.get(timeout=30) for _ in range(n)])


def joinable_worker(jq):
    while True:
        x = jq.get(timeout=60)
        jq.task_done()
        if x is None:
            break


def task_done_too_many(jq, out):
    x = jq.get(timeout=30)
    jq.task_done()
    try:
        jq.task_done()
    except ValueError as e:
        out.put(("ValueError", str(e), x))
    else:
        out.put(("no error", None, x))


def roundtrip_child(q, jq, sq, tag=None):
    """Exercise all three queue classes from a child."""
    x = q.get(timeout=30)
    sq.put(("sq", x, tag))
    jq.put(("jq", x, tag))
    jq.join()  # returns once the parent called task_done()
    q.put(("done", x, tag))


def block_in(q, op, ready):
    """Signal ready, then block forever in the given queue operation."""
    ready.set()
    if op == "get":
        q.get()
    elif op == "get_many":
        q.get_many(5)
    elif op == "put":
        q.put("never")
    elif op == "put_many":
        q.put_many(["never1", "never2"])
    elif op == "simple_get":
        q.get()
    elif op == "join":
        q.join()
    else:
        raise ValueError(op)
    time.sleep(3600)


def get_and_report(q, out, ready):
    ready.set()
    out.put(("got", q.get(timeout=60)))


def bulk_producer(q, start, n, size, use_many=False):
    if use_many:
        for i in range(start, start + n, 2):
            q.put_many([(i, pattern(i, size)), (i + 1, pattern(i + 1, size))])
    else:
        for i in range(start, start + n):
            q.put((i, pattern(i, size)))


def bulk_consumer(q, size):
    while True:
        i, data = q.get()
        if not check_pattern(i, data, size):
            os._exit(7)


def put_lots_then_exit(q, big_size, n_small):
    """Put a big message and many small ones, then exit without waiting for
    a reader (ours: must not wait on undelivered data)."""
    q.put(b"B" * big_size)
    for i in range(n_small):
        q.put(i)


def sum_numpy(q_in, q_out):
    """Receive numpy arrays, check writability, send back a summary."""
    while True:
        a = q_in.get()
        if a is None:
            break
        q_out.put((a.dtype.str, a.shape, bool(a.flags.writeable), float(a.sum())))


def get_with_timeout_report(q, timeout, out):
    t0 = time.monotonic()
    try:
        x = q.get(timeout=timeout)
        out.put(("ok", x, time.monotonic() - t0))
    except queue.Empty:
        out.put(("Empty", None, time.monotonic() - t0))


def put_then_close(q, items):
    """Put items, then close this process's handle of the queue."""
    for x in items:
        q.put(x)
    q.close()
    q.join_thread()


def _fail_rebuild(msg):
    raise ValueError(msg)


class BadUnpickle:
    """Pickles fine; unpickling raises ValueError."""

    def __reduce__(self):
        return (_fail_rebuild, ("cannot rebuild",))


def spawn_grandchild_put(q, item):
    """Pass the queue on to a grandchild (spawn) which puts item."""
    import multiprocessing as mp

    p = mp.get_context("spawn").Process(target=put_items, args=(q, [item]))
    p.start()
    p.join(60)
    if p.is_alive():
        p.kill()
        p.join()
        raise SystemExit(3)
    raise SystemExit(p.exitcode)


def join_and_report(jq, out, ready):
    ready.set()
    jq.join()
    out.put("joined")


def drain_and_report(q, n, out):
    out.put([q.get(timeout=30) for _ in range(n)])


def fault_op(q, point, op, payload):
    """Arm a libmpx fault point, then run one queue operation: the process
    SIGKILLs itself at that point. Exit status 5 = point never reached."""
    from mpservice import _mpx

    if op == "task_done":
        q.get(timeout=30)  # not armed yet
    _mpx._fault_arm(point, 0)
    if op in ("put", "simple_put"):
        q.put(payload)
    elif op == "put_many":
        q.put_many(payload)
    elif op in ("get", "simple_get"):
        q.get() if op == "simple_get" else q.get(timeout=30)
    elif op == "get_many":
        q.get_many(10, timeout=30)
    elif op == "task_done":
        q.task_done()
    elif op == "wait":
        q.get(timeout=30)
    os._exit(5)
