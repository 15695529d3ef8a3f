"""Child-process targets and picklable helpers for the queue and sync tests,
and, at the end, helpers that only the test process uses.

Everything here is module-level so that spawned and forkserver children can
import it (conftest puts this directory on PYTHONPATH). Keep imports light:
children pay for them.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import threading
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


# --------------------------------------------------------------------------
# synchronization primitives (test_sync_api.py, test_sync_processes.py)
# --------------------------------------------------------------------------


class SyncImpl:
    """Factory of the synchronization primitives of one implementation:
    'stdlib' (``multiprocessing.get_context('spawn')``'s) or 'ours'
    (``module`` is ``mpservice.multiprocessing``)."""

    def __init__(self, name, module=None):
        import multiprocessing as mp

        self.name = name
        self.m = module
        self.ctx = mp.get_context("spawn") if name == "stdlib" else module.MP_SPAWN_CTX

    def __repr__(self):
        return f"SyncImpl({self.name})"

    @property
    def ours(self) -> bool:
        return self.name == "ours"

    def cls(self, name):
        """The class (stdlib: multiprocessing.synchronize's)."""
        if self.ours:
            return getattr(self.m, name)
        import multiprocessing.synchronize as ms

        return getattr(ms, name)

    def make(self, name, *args, ctx=None, **kwargs):
        if self.ours:
            if ctx is not None:
                kwargs["ctx"] = ctx
            return getattr(self.m, name)(*args, **kwargs)
        return getattr(ctx or self.ctx, name)(*args, **kwargs)

    def Lock(self, **kw):
        return self.make("Lock", **kw)

    def RLock(self, **kw):
        return self.make("RLock", **kw)

    def Semaphore(self, *a, **kw):
        return self.make("Semaphore", *a, **kw)

    def BoundedSemaphore(self, *a, **kw):
        return self.make("BoundedSemaphore", *a, **kw)

    def Condition(self, *a, **kw):
        return self.make("Condition", *a, **kw)

    def Event(self, **kw):
        return self.make("Event", **kw)

    def Barrier(self, *a, **kw):
        return self.make("Barrier", *a, **kw)


def _outcome(fn, *args, **kwargs):
    """('ok', result) or ('raise', type name, str(exc)); picklable."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as e:  # noqa: BLE001
        return ("raise", type(e).__name__, str(e))


def sync_travel_child(out, lock, rlock, sem, *, bsem, cond, clock, event, barrier):
    """Exercise every primitive received as a Process argument. The parent
    holds lock and rlock, took one permit of sem = Semaphore(3) and both of
    bsem = BoundedSemaphore(2), and set event; cond is built on clock."""
    import multiprocessing as mp

    name = mp.current_process().name
    r = {"name": name}
    r["lock_busy"] = lock.acquire(timeout=0.05)
    r["lock_repr_other"] = repr(lock)
    r["lock_release_other"] = _outcome(lock.release)  # a plain lock: allowed
    r["lock_acquire"] = lock.acquire(timeout=10)
    lock.release()
    # (not `lock`: after a foreign release the stdlib's per-process count is off)
    with clock:
        r["lock_repr_mine"] = repr(clock)
    r["rlock_busy"] = rlock.acquire(timeout=0.05)
    r["rlock_repr_other"] = repr(rlock)
    r["rlock_release_other"] = _outcome(rlock.release)
    r["sem_value"] = sem.get_value()
    r["sem_acquire"] = sem.acquire(timeout=10)
    r["sem_repr"] = repr(sem)
    r["bsem_busy"] = bsem.acquire(False)
    r["bsem_release1"] = _outcome(bsem.release)
    r["bsem_release2"] = _outcome(bsem.release)
    r["bsem_release3"] = _outcome(bsem.release)
    r["bsem_repr"] = repr(bsem)
    r["event_is_set"] = event.is_set()
    r["event_wait"] = event.wait(5)
    event.clear()
    with cond:
        r["clock_held_via_cond"] = not clock.acquire(False)
        r["cond_wait"] = cond.wait(0.05)
        cond.notify_all()
    r["barrier_parties"] = barrier.parties
    r["barrier_index"] = barrier.wait(timeout=60)
    out.put(r)


def sync_log_critical(lock, out, tag, n, hold, start):
    """Report ready, wait for `start` (an Event), then n times: acquire lock
    (any primitive with acquire/release) and log the interval spent inside
    as (tag, t_enter, t_exit)."""
    out.put(("ready", tag))
    if not start.wait(60):
        raise SystemExit(3)
    spans = []
    for _ in range(n):
        lock.acquire()
        try:
            t0 = time.monotonic()
            time.sleep(hold)
            t1 = time.monotonic()
        finally:
            lock.release()
        spans.append((tag, t0, t1))
    out.put(("spans", spans))


def sync_set_later(event, delay):
    time.sleep(delay)
    event.set()


def sync_event_waiter(event, out, tag, timeout):
    out.put(("ready", tag))
    out.put(("waited", tag, event.wait(timeout)))


def sync_cond_waiter(cond, out, tag, timeout):
    with cond:
        out.put(("waiting", tag))  # the lock is held: wait() registers before others get it
        r = cond.wait(timeout)
        out.put(("woken", tag, r))


def sync_set_and_notify(cond, event, delay):
    """After delay: under cond's lock, set event and notify all waiters."""
    time.sleep(delay)
    with cond:
        event.set()
        cond.notify_all()


def sync_barrier_action(out):
    out.put(("action", os.getpid()))


def sync_failing_action():
    raise ZeroDivisionError("action failed in " + str(os.getpid()))


def sync_barrier_worker(barrier, out, rounds, timeout):
    for g in range(rounds):
        try:
            idx = barrier.wait(timeout)
        except Exception as e:  # noqa: BLE001
            out.put(("raise", g, type(e).__name__, os.getpid()))
            return
        out.put(("index", g, idx, os.getpid()))


def sync_hold_forever(lock, out, times=1):
    """Acquire lock `times` times (recursively for an RLock) and keep it until killed."""
    for _ in range(times):
        lock.acquire()
    out.put(("held", os.getpid()))
    time.sleep(3600)


def _free_in_other_thread(lock):
    """Whether another thread can take lock at once (released again)."""
    import threading

    res = []

    def attempt():
        ok = lock.acquire(False)
        if ok:
            lock.release()
        res.append(ok)

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(10)
    return res[0] if res else None


def sync_acquire_report(lock, out, timeout):
    """Acquire lock; report ('ok', acquired) or ('died', pid, errno, msg,
    free_after) for an OwnerDiedError (free_after: acquire(False) then
    succeeded), or ('raise', type name, msg)."""
    from mpservice.multiprocessing.synchronize import OwnerDiedError

    out.put(("ready", os.getpid()))
    try:
        r = lock.acquire(timeout=timeout)
    except OwnerDiedError as e:
        out.put(("died", e.pid, e.errno, str(e), _free_in_other_thread(lock)))
        return
    except Exception as e:  # noqa: BLE001
        out.put(("raise", type(e).__name__, str(e)))
        return
    if r:
        lock.release()
    out.put(("ok", r))


def sync_notify_and_hold(cond, out):
    """Notify one waiter, then keep the condition's lock until killed."""
    cond.acquire()
    cond.notify()
    out.put(("notified", os.getpid()))
    time.sleep(3600)


def sync_block_in(obj, op, out):
    """Report ('ready', op, pid), then block forever in the given call."""
    out.put(("ready", op, os.getpid()))
    if op in ("lock", "semaphore"):
        obj.acquire()
    elif op == "event":
        obj.wait()
    elif op == "condition":
        with obj:
            obj.wait()
    elif op == "barrier":
        obj.wait()
    else:
        raise ValueError(op)
    time.sleep(3600)


def sync_touch_many(locks, events, out):
    """Release the odd-numbered locks (held by the parent; plain locks allow
    it) and set every third event."""
    res = [_outcome(locks[i].release) for i in range(1, len(locks), 2)]
    for i in range(0, len(events), 3):
        events[i].set()
    out.put(res)


def shm_refs(pid="self"):
    """Paths under /dev/shm that process `pid` maps or holds open."""
    refs = set()
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                i = line.find("/dev/shm/")
                if i >= 0:
                    refs.add(line[i:].strip())
    except OSError:
        pass
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                t = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if t.startswith("/dev/shm/"):
                refs.add(t)
    except OSError:
        pass
    return sorted(refs)


def sync_shm_report(conn, lock, sem, event):
    """Use the primitives, then send the /dev/shm paths this process refers to."""
    ok = lock.acquire(timeout=10)
    lock.release()
    sem.release()
    event.set()
    conn.send((ok, shm_refs()))
    conn.close()


# --------------------------------------------------------------------------
# in the test process
# --------------------------------------------------------------------------


class SignalStorm:
    """Send SIGUSR1 to the main thread every `period` seconds; the handler
    only counts (raises nothing)."""

    def __init__(self, period=0.03):
        self.period = period
        self.count = 0
        self._stop = threading.Event()
        self._main = threading.main_thread().ident

    def _handler(self, signum, frame):
        self.count += 1

    def _run(self):
        while not self._stop.wait(self.period):
            signal.pthread_kill(self._main, signal.SIGUSR1)

    def __enter__(self):
        self._old = signal.signal(signal.SIGUSR1, self._handler)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        time.sleep(0.05)
        signal.signal(signal.SIGUSR1, self._old)


def reap_process(p, grace: float = 2.0, timeout: float = 5.0) -> None:
    """Give a started process `grace` seconds to end, then kill it; join it (bounded,
    ignoring what it raised) and close() it to release its descriptors at once."""
    if getattr(p, "_popen", None) is None:
        return
    try:
        if p.is_alive() and grace > 0:
            p.join(grace)
        if p.is_alive():
            p.kill()
        p.join(timeout)
    except BaseException:  # noqa: BLE001 - our join raises the child's exception, any kind
        pass
    try:
        if not p.is_alive():
            p.close()
    except Exception:  # noqa: BLE001 - already closed
        pass


def fd_table() -> dict:
    """{fd: what it refers to} of this process."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return out
