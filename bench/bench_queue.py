#!/usr/bin/env python3
"""Queue benchmarks: mpservice.multiprocessing.Queue against the stdlib's, in one run.

Every Queue row of the project's performance targets (PERF.md; see bench/README.md) is
measured for both implementations in the same run, repetitions interleaved (ours, stdlib, stdlib, ours,
...) so that drift on a noisy machine hits both alike. Each figure is the median of the
repetitions. Processes come from the spawn context; their start-up is excluded: each child
waits on a barrier after start-up, and the clock starts when the first child passes it
(the stamps come from CLOCK_MONOTONIC, which all processes share).

The C floors (bench/c: futex ping-pong, memcpy bandwidth, libmpx queue throughput without
Python) are run in the same run and printed beside the rows they bound.

Every row checks what it received (counts, order, lengths, checksums), so a broken queue
fails loudly instead of producing a fast number.

    python3 bench/bench_queue.py [--quick] [--json FILE] [--markdown] [--build-dir DIR]
"""
from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import queue as queue_mod
import resource
import statistics
import subprocess
import sys
import threading
import time
import traceback
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CTX = multiprocessing.get_context("spawn")

SYNC_TIMEOUT = 60.0  # seconds a child waits at the start barrier
JOIN_TIMEOUT = 30.0  # seconds to wait for a child to exit after its work
ROW_TIMEOUT = 180.0  # a repetition taking longer than this is a hang: kill everything
STALL_TIMEOUT = 15.0  # the parent still waiting this long after all children exited: a hang

OUR_QUEUE = None  # mpservice.multiprocessing.Queue once imported
OUR_IMPORT_ERROR = None
OUR_LOCATION = None  # the directory the package was imported from


def import_ours(pythonpath: str | None) -> None:
    """Imports our Queue: from --pythonpath if given, else from the in-tree python/ directory
    when the extension has been built there, else from wherever sys.path finds it."""
    global OUR_QUEUE, OUR_IMPORT_ERROR, OUR_LOCATION
    if pythonpath:
        attempts = [pythonpath]
    else:
        tree = REPO / "python"
        attempts = [str(tree)] if list(tree.glob("mpservice/_mpx*.so")) else []
        attempts.append(None)
    err = None
    saved = list(sys.path)
    for attempt in attempts:
        sys.path[:] = saved if attempt is None else [attempt] + saved
        try:
            # Spawned children inherit sys.path (it is part of the spawn preparation data).
            import mpservice  # noqa: PLC0415
            from mpservice.multiprocessing import Queue  # noqa: PLC0415
        except Exception as e:  # ImportError, or a half-built package failing at import
            err = f"{type(e).__name__}: {e}"
            for name in [m for m in sys.modules if m == "mpservice" or m.startswith("mpservice.")]:
                del sys.modules[name]
            continue
        OUR_QUEUE = Queue
        OUR_LOCATION = str(Path(mpservice.__file__).resolve().parent)
        return
    sys.path[:] = saved
    OUR_IMPORT_ERROR = err


def make_queue(impl: str, maxsize: int = 0):
    if impl == "ours":
        return OUR_QUEUE(maxsize=maxsize)
    return track_semaphores(CTX.Queue(maxsize))


# Names of the POSIX semaphores created by the stdlib objects of this run (spawn-context
# semaphores stay in /dev/shm until their owner's finalizer unlinks them). The end of the run
# checks that none of them is left.
OWN_SEMAPHORES: set[str] = set()


def track_semaphores(obj, depth: int = 0):
    semlock = getattr(obj, "_semlock", None)
    name = getattr(semlock, "name", None)
    if name:
        OWN_SEMAPHORES.add(name)
    if depth < 3:
        for v in list(getattr(obj, "__dict__", {}).values()):
            if hasattr(v, "_semlock") or (hasattr(v, "__dict__") and not isinstance(v, type)):
                track_semaphores(v, depth + 1)
    return obj


def leaked_semaphores() -> list[str]:
    return sorted(n for n in OWN_SEMAPHORES if os.path.exists("/dev/shm/sem." + n.lstrip("/")))


def cpu_snapshot():
    """(wall s, CPU s busy on the whole machine, CPU s used by this process and its reaped
    children), or None where /proc/stat is unreadable."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    return time.monotonic(), busy, own


def foreign_load(a, b) -> float:
    """Share of the machine's CPUs used by processes other than this benchmark between two
    snapshots (children count as ours once reaped), or -1 if unknown."""
    if a is None or b is None or b[0] <= a[0]:
        return -1.0
    return max(0.0, (b[1] - a[1]) - (b[2] - a[2])) / ((b[0] - a[0]) * (os.cpu_count() or 1))


def machine_busy(seconds: float = 0.5) -> float:
    """Share of the machine's CPUs used by other processes during `seconds`, or -1."""
    a = cpu_snapshot()
    time.sleep(seconds)
    return foreign_load(a, cpu_snapshot())


# Other processes' share of the CPUs: above QUIET_LIMIT before a repetition, wait; above
# BUSY_LIMIT during one, mark its row. The second is looser because /proc/stat counts in
# 10 ms ticks, and kernel threads working for us (page zeroing, DAMON) count as others.
QUIET_LIMIT = 0.10
BUSY_LIMIT = 0.20


QUIET_BUDGET = [0.0]  # seconds left for waiting, over the whole run


def wait_quiet(max_wait: float) -> float:
    """Waits up to max_wait seconds (and within what is left of the run's budget) for other
    processes to leave the CPUs; returns the foreign load last seen."""
    load = machine_busy(0.3)
    if load <= QUIET_LIMIT or QUIET_BUDGET[0] <= 0:
        return load
    t0 = time.monotonic()
    t_end = t0 + min(max_wait, QUIET_BUDGET[0])
    print(f"  (other processes use {load:.0%} of the CPUs; waiting up to "
          f"{t_end - t0:.0f} s for quiet)", file=sys.stderr)
    while load > QUIET_LIMIT and time.monotonic() < t_end:
        load = machine_busy(1.0)
    QUIET_BUDGET[0] -= time.monotonic() - t0
    if QUIET_BUDGET[0] <= 0:
        print("  (the run's budget for waiting is spent: measuring regardless from now on)",
              file=sys.stderr)
    return load


def close_queue(q) -> None:
    q.close()
    q.join_thread()


# ---------------------------------------------------------------------------------------------
# Children. Each one prepares its payload, puts its warm-up messages (drained by the parent
# before the barrier, so that both queues start the timed part warm: the stdlib's feeder
# thread running, our ring grown to the message size), waits at the barrier, records its
# start stamp, does its part, then sends ("ok", start_ns, extra) or ("err", traceback) on
# its result pipe.
# ---------------------------------------------------------------------------------------------


def _child(fn, conn, barrier, *args):
    try:
        prepared = fn("prepare", *args)
        fn("warmup", *args, prepared=prepared)
        barrier.wait(SYNC_TIMEOUT)
        t0 = time.monotonic_ns()
        extra = fn("run", *args, prepared=prepared)
        conn.send(("ok", t0, extra))
    except BaseException:  # noqa: BLE001 - report everything, including KeyboardInterrupt
        try:
            conn.send(("err", traceback.format_exc(), None))
        except Exception:  # noqa: BLE001
            pass
        raise
    finally:
        conn.close()


def w_small_producer(phase, q, n, tag, batch, warmup, prepared=None):
    """Puts n tuples (seq, tag, 2, 3, 4); in batches through put_many when batch > 1."""
    if phase == "prepare":
        return None
    if phase == "warmup":
        if batch > 1:
            q.put_many([(-1, tag, 2, 3, 4)] * warmup)
        else:
            for _ in range(warmup):
                q.put((-1, tag, 2, 3, 4))
        return None
    if batch > 1:
        put_many = q.put_many
        for b in range(0, n, batch):
            put_many([(i, tag, 2, 3, 4) for i in range(b, min(n, b + batch))])
    else:
        put = q.put
        for i in range(n):
            put((i, tag, 2, 3, 4))
    return None


def w_bytes_producer(phase, q, size, n, warmup, prepared=None):
    """Puts the same bytes object of `size` bytes n times; reports its crc32."""
    if phase == "prepare":
        payload = os.urandom(size)
        return payload, zlib.crc32(payload)
    payload, crc = prepared
    if phase == "warmup":
        for _ in range(warmup):
            q.put(payload)
        return None
    put = q.put
    for _ in range(n):
        put(payload)
    return crc


def w_numpy_producer(phase, q, nbytes, n, warmup, prepared=None):
    """Puts a float64 array of nbytes n times; reports its checksum."""
    import numpy as np  # noqa: PLC0415 - only this row needs numpy

    if phase == "prepare":
        a = np.random.default_rng(1234).standard_normal(nbytes // 8)
        return a, float(a.sum())
    a, total = prepared
    if phase == "warmup":
        for _ in range(warmup):
            q.put(a)
        return None
    put = q.put
    for _ in range(n):
        put(a)
    return total


def w_echo(phase, qin, qout, prepared=None):
    """Sends back everything it gets, until it gets None."""
    if phase != "run":
        return None  # the parent's first round trips are the warm-up
    get, put = qin.get, qout.put
    while True:
        x = get()
        if x is None:
            return None
        put(x)


# ---------------------------------------------------------------------------------------------
# Process handling.
# ---------------------------------------------------------------------------------------------


class Children:
    """Starts spawn children that meet the parent at a barrier; always reaps them."""

    def __init__(self, specs):
        self.specs = specs  # [(fn, args)]
        self.procs = []
        self.conns = []
        self.barrier = track_semaphores(CTX.Barrier(len(specs) + 1))

    def __enter__(self):
        for fn, args in self.specs:
            r, w = CTX.Pipe(duplex=False)
            p = CTX.Process(target=_child, args=(fn, w, self.barrier, *args), daemon=True)
            p.start()
            w.close()
            self.procs.append(p)
            self.conns.append(r)
        return self

    def go(self) -> None:
        """Waits until every child is ready and releases them all."""
        try:
            self.barrier.wait(SYNC_TIMEOUT)
        except threading.BrokenBarrierError:
            raise RuntimeError("children did not start: " + self._errors()) from None

    def results(self):
        """Start stamps and extras from every child; raises if any child failed."""
        out = []
        for p, c in zip(self.procs, self.conns):
            if not c.poll(JOIN_TIMEOUT):
                raise RuntimeError(f"child {p.pid} sent no result (exitcode {p.exitcode})")
            status, a, b = c.recv()
            if status != "ok":
                raise RuntimeError(f"child {p.pid} failed:\n{a}")
            out.append((a, b))
        return out

    def _errors(self) -> str:
        msgs = []
        for p, c in zip(self.procs, self.conns):
            try:
                if c.poll(0):
                    msgs.append(c.recv()[1])
            except (EOFError, OSError):
                pass
            msgs.append(f"pid {p.pid} exitcode {p.exitcode}")
        return "; ".join(str(m) for m in msgs)

    def __exit__(self, et, ev, tb):
        if et is not None:
            self.barrier.abort()
        failed = []
        for p in self.procs:
            p.join(JOIN_TIMEOUT if et is None else 2.0)
            if p.is_alive():
                p.terminate()
                p.join(5.0)
            if p.is_alive():
                p.kill()
                p.join(5.0)
            if p.exitcode != 0:
                failed.append(f"pid {p.pid} exitcode {p.exitcode}")
        for c in self.conns:
            c.close()
        if failed and et is None:
            raise RuntimeError("children failed: " + ", ".join(failed))
        return False


class Watchdog:
    """Kills every child and exits if one repetition hangs: it lasts over ROW_TIMEOUT, or
    the parent is still waiting STALL_TIMEOUT after every child has exited (a lost message:
    the parent blocks in get() with nothing left to come). The parent's gets carry no
    timeout, since a timeout changes the stdlib's code path."""

    def __init__(self, what: str, children: Children):
        self.what = what
        self.children = children
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        t0 = time.monotonic()
        all_exited_at = None
        while not self.done.wait(0.25):
            now = time.monotonic()
            if all(p.exitcode is not None for p in self.children.procs):
                all_exited_at = all_exited_at or now
            if now - t0 > ROW_TIMEOUT:
                self._fire(f"took over {ROW_TIMEOUT:.0f} s")
            if all_exited_at and now - all_exited_at > STALL_TIMEOUT:
                codes = [p.exitcode for p in self.children.procs]
                self._fire(f"still waits {STALL_TIMEOUT:.0f} s after every child exited "
                           f"(exit codes {codes}): a message was lost or never sent")

    def _fire(self, why):
        sys.stderr.write(f"\nbench_queue: '{self.what}' {why}; killing the children and "
                         "exiting\n")
        sys.stderr.flush()
        for p in CTX.active_children():
            p.kill()
        os._exit(3)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        return False


def drain_warmup(q, count: int, check, ch: Children) -> None:
    """Gets the children's warm-up messages (untimed, so a timeout is harmless here)."""
    for _ in range(count):
        try:
            x = q.get(timeout=SYNC_TIMEOUT)
        except queue_mod.Empty:
            raise RuntimeError("no warm-up message from the children: " + ch._errors()) from None
        if not check(x):
            raise AssertionError(f"unexpected warm-up message {x!r:.80}")


def ensure_empty(q, what: str) -> None:
    try:
        extra = q.get(timeout=0.05)
    except queue_mod.Empty:
        return
    raise AssertionError(f"{what}: an extra message arrived: {extra!r:.80}")


# ---------------------------------------------------------------------------------------------
# The measurements. Each returns one figure for one repetition of one implementation.
# ---------------------------------------------------------------------------------------------


WARMUP_SMALL = 100  # warm-up messages per producer, small rows
WARMUP_BYTES = 8  # warm-up messages, 64 KiB and 1 MiB rows
WARMUP_NUMPY = 2  # warm-up arrays


def run_small(impl: str, producers: int, n_per: int, batch: int) -> float:
    """msg/s for `producers` children putting n_per 5-tuples each to the parent."""
    q = make_queue(impl)
    batch = batch if impl == "ours" else 1  # the stdlib has no batch API
    try:
        specs = [(w_small_producer, (q, n_per, k, batch, WARMUP_SMALL))
                 for k in range(producers)]
        total = producers * n_per
        with Children(specs) as ch, Watchdog(f"small {impl}", ch):
            drain_warmup(q, producers * WARMUP_SMALL, lambda x: x[0] == -1, ch)
            ch.go()
            if batch > 1:
                if producers != 1:
                    raise ValueError("batches are measured with one producer")
                get_many = q.get_many
                got = 0
                while got < total:
                    items = get_many(batch)
                    got += len(items)
                    # FIFO and completeness: with one producer, the last item of every batch
                    # received carries the sequence number got - 1.
                    if len(items) > batch or items[-1][0] != got - 1:
                        raise AssertionError(f"get_many({batch}): {len(items)} items, last "
                                             f"{items[-1]!r} after {got} received")
                t1 = time.monotonic_ns()
            else:
                get = q.get
                s = 0
                x = None
                for _ in range(total):
                    x = get()
                    s += x[0]
                t1 = time.monotonic_ns()
                if s != producers * n_per * (n_per - 1) // 2:
                    raise AssertionError(f"small: wrong sequence sum {s}")
                if producers == 1 and x != (n_per - 1, 0, 2, 3, 4):
                    raise AssertionError(f"small: last message {x!r}, FIFO broken")
            t0 = min(t for t, _ in ch.results())
            ensure_empty(q, "small")
        return total / ((t1 - t0) / 1e9)
    finally:
        close_queue(q)


def run_bytes(impl: str, size: int, n: int, maxsize: int = 0, warmup: int = WARMUP_BYTES) -> float:
    """GB/s for n messages of `size` bytes, one child producer to the parent."""
    q = make_queue(impl, maxsize)
    try:
        specs = [(w_bytes_producer, (q, size, n, warmup))]
        with Children(specs) as ch, Watchdog(f"bytes {impl}", ch):
            drain_warmup(q, warmup, lambda m: len(m) == size, ch)
            ch.go()
            get = q.get
            m = None
            for i in range(n):
                m = get()
                if len(m) != size:
                    raise AssertionError(f"message {i}: {len(m)} bytes, expected {size}")
            t1 = time.monotonic_ns()
            ((t0, crc),) = ch.results()
            # Only the last message is kept: holding on to more would change how the
            # consumer's allocator recycles big buffers, and so the figure.
            if zlib.crc32(m) != crc:
                raise AssertionError("bytes: checksum mismatch")
            ensure_empty(q, "bytes")
        return size * n / (t1 - t0)  # bytes per ns = GB/s
    finally:
        close_queue(q)


def run_numpy(impl: str, nbytes: int, n: int) -> float:
    """GB/s for n float64 arrays of nbytes, one child producer to the parent."""
    import numpy as np  # noqa: PLC0415

    q = make_queue(impl)
    try:
        specs = [(w_numpy_producer, (q, nbytes, n, WARMUP_NUMPY))]
        with Children(specs) as ch, Watchdog(f"numpy {impl}", ch):
            drain_warmup(q, WARMUP_NUMPY, lambda a: a.nbytes == nbytes, ch)
            ch.go()
            get = q.get
            a = None
            for i in range(n):
                a = get()
                if not isinstance(a, np.ndarray) or a.dtype != np.float64 or a.nbytes != nbytes:
                    raise AssertionError(f"array {i}: {type(a)} {getattr(a, 'dtype', None)}")
            t1 = time.monotonic_ns()
            ((t0, total),) = ch.results()
            if float(a.sum()) != total:  # the last array only, as for bytes
                raise AssertionError("numpy: checksum mismatch")
            ensure_empty(q, "numpy")
        return nbytes * n / (t1 - t0)
    finally:
        close_queue(q)


def run_pingpong(impl: str, n: int, warmup: int) -> float:
    """p50 round trip in µs: parent -> child -> parent through two queues."""
    qin, qout = make_queue(impl), make_queue(impl)
    try:
        with Children([(w_echo, (qin, qout))]) as ch, Watchdog(f"ping-pong {impl}", ch):
            ch.go()
            put, get = qin.put, qout.get
            clock = time.perf_counter_ns
            rtts = []
            for i in range(warmup + n):
                msg = (i, 1, 2, 3, 4)
                t0 = clock()
                put(msg)
                back = get()
                t1 = clock()
                if back != msg:
                    raise AssertionError(f"ping-pong: sent {msg}, got back {back!r}")
                rtts.append(t1 - t0)
            put(None)
            ch.results()
        rtts = sorted(rtts[warmup:])
        return rtts[len(rtts) // 2] / 1000.0
    finally:
        close_queue(qin)
        close_queue(qout)


# ---------------------------------------------------------------------------------------------
# C floors.
# ---------------------------------------------------------------------------------------------

C_HELPERS = ("futex_pingpong", "memcpy_bw", "queue_tput")


def find_c_helpers(build_dir: Path, allow_build: bool):
    """Paths of the compiled helpers, building them if needed; (None, reason) if impossible."""
    exe = {name: build_dir / "bench" / "c" / name for name in C_HELPERS}
    if allow_build:
        try:
            if not (build_dir / "CMakeCache.txt").exists():
                subprocess.run(
                    ["cmake", "-S", str(REPO), "-B", str(build_dir), "-DMPX_BUILD_BENCH=ON",
                     "-DMPX_BUILD_PYTHON=OFF", "-DMPX_BUILD_TESTS=OFF",
                     "-DMPX_BUILD_EXAMPLES=OFF"],
                    check=True, capture_output=True, text=True, timeout=300)
            subprocess.run(["cmake", "--build", str(build_dir), "--target", *C_HELPERS],
                           check=True, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as e:
            out = getattr(e, "stderr", "") or getattr(e, "stdout", "") or ""
            if not all(p.exists() for p in exe.values()):
                return None, f"could not build the C helpers in {build_dir}: {e} {out[-400:]}"
            print(f"note: rebuilding the C helpers failed, using the existing binaries ({e})",
                  file=sys.stderr)
    missing = [n for n, p in exe.items() if not p.exists()]
    if missing:
        return None, f"C helpers {missing} not found under {build_dir}/bench/c"
    return exe, None


def run_json(cmd) -> dict:
    r = subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True,
                       timeout=120)
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Rows, repetitions, report.
# ---------------------------------------------------------------------------------------------


def median(xs):
    return statistics.median(xs) if xs else None


class Row:
    """One line of the table. `target` is the ratio ours/stdlib to reach (a minimum when
    higher is better, else a maximum), "works" for a row that only has to succeed, or
    None for an informational row."""

    def __init__(self, key, title, unit, target, higher_is_better=True, note=""):
        self.key, self.title, self.unit, self.target = key, title, unit, target
        self.higher = higher_is_better
        self.note = note
        self.reps = {"ours": [], "stdlib": []}
        self.foreign = {"ours": [], "stdlib": []}  # CPU share of other processes, per rep
        self.errors = {}
        self.floor = None  # (label, value, unit)
        self.floor_ratio = None

    def disturbed(self) -> bool:
        """Whether other processes took over BUSY_LIMIT of the CPUs in some repetition."""
        return any(x > BUSY_LIMIT for xs in self.foreign.values() for x in xs)

    def value(self, impl):
        return median(self.reps[impl])

    def ratio(self):
        o, s = self.value("ours"), self.value("stdlib")
        if o is None or s is None or s == 0:
            return None
        return o / s

    def met(self):
        if self.target == "works":
            if "ours" in self.errors:
                return False
            return True if self.reps["ours"] else None
        r = self.ratio()
        if r is None or self.target is None:
            return None
        return r >= self.target if self.higher else r <= self.target

    def to_dict(self):
        return {
            "key": self.key, "title": self.title, "unit": self.unit,
            "ours": self.value("ours"), "stdlib": self.value("stdlib"),
            "ratio": self.ratio(), "target": self.target,
            "target_kind": ">=" if self.higher else "<=", "met": self.met(),
            "ours_reps": self.reps["ours"], "stdlib_reps": self.reps["stdlib"],
            "foreign_load": self.foreign, "disturbed": self.disturbed(),
            "floor": self.floor, "ours_vs_floor": self.floor_ratio,
            "errors": self.errors, "note": self.note,
        }


def measure_row(row: Row, fn, reps: int, impls, verbose: bool, quiet_wait: float):
    """Runs fn(impl) reps times per implementation, alternating which goes first, and
    records how much CPU other processes took during each repetition."""
    for rep in range(reps):
        order = impls if rep % 2 == 0 else tuple(reversed(impls))
        for impl in order:
            if impl in row.errors:
                continue
            if quiet_wait > 0:
                wait_quiet(quiet_wait)
            snap = cpu_snapshot()
            try:
                v = fn(impl)
            except Exception as e:  # noqa: BLE001 - one broken row must not stop the others
                row.errors[impl] = f"{type(e).__name__}: {e}"
                gc.collect()
                print(f"  {row.key} [{impl}] FAILED: {row.errors[impl]}", file=sys.stderr)
                if verbose:
                    traceback.print_exc()
                continue
            # Drop this repetition's queues and barrier now: the stdlib's finalizers unlink
            # their semaphores from /dev/shm when the objects die.
            gc.collect()
            load = foreign_load(snap, cpu_snapshot())
            row.reps[impl].append(v)
            row.foreign[impl].append(load)
            if verbose:
                print(f"  {row.key} [{impl}] rep {rep + 1}: {fmt(v, row.unit)} {row.unit}"
                      f"  (other processes: {load:.0%} CPU)", file=sys.stderr)


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "msg/s":
        return f"{v / 1e6:.3f}M" if v >= 1e6 else f"{v / 1e3:.1f}K"
    if unit == "GB/s":
        return f"{v:.3f}"
    if unit == "µs":
        return f"{v:.1f}"
    return f"{v:.3g}"


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}×"


def target_str(row):
    if row.target is None:
        return "(info)"
    if row.target == "works":
        return "works"
    return f"{'≥' if row.higher else '≤'} {row.target:g}×"


def table_rows(rows, floors):
    out = []
    for row in rows:
        status = {True: "yes", False: "NO", None: "-" if row.target is None else "n/a"}[row.met()]
        if row.disturbed():
            status += " (busy!)"
        if row.errors:
            status += " (error: " + ", ".join(sorted(row.errors)) + ")"
        floor = "-"
        if row.floor is not None:
            label, value, unit = row.floor
            floor = f"{label} {fmt(value, unit)} {unit}"
            if row.floor_ratio is not None:
                floor += f" (ours {row.floor_ratio:.2f}×)"
        out.append([row.title, row.unit, fmt(row.value("ours"), row.unit),
                    fmt(row.value("stdlib"), row.unit), fmt_ratio(row.ratio()),
                    target_str(row), status, floor])
    return out


HEADER = ["row", "unit", "ours", "stdlib", "ratio", "target", "met", "C floor (same run)"]


def print_text_table(rows, floors):
    data = [HEADER] + table_rows(rows, floors)
    widths = [max(len(r[i]) for r in data) for i in range(len(HEADER))]
    for k, r in enumerate(data):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


def print_markdown_table(rows, floors):
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "|".join(" --- " for _ in HEADER) + "|")
    for r in table_rows(rows, floors):
        print("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")


def print_floors(floors):
    if "error" in floors:
        print(f"C floors: skipped ({floors['error']})")
        return
    parts = []
    if floors.get("futex_p50_us") is not None:
        parts.append(f"futex ping-pong p50 {floors['futex_p50_us']:.1f} µs")
    for k, label in (("memcpy_64k", "64 KiB"), ("memcpy_1m", "1 MiB"), ("memcpy_16m", "16 MiB")):
        if floors.get(k) is not None:
            parts.append(f"memcpy {label} {floors[k]:.1f} GB/s")
    if floors.get("cq_small") is not None:
        parts.append(f"libmpx C queue 28 B {floors['cq_small'] / 1e6:.2f}M msg/s")
    if floors.get("cq_batch") is not None:
        parts.append(f"batch 100 {floors['cq_batch'] / 1e6:.2f}M msg/s")
    if floors.get("cq_64k") is not None:
        parts.append(f"64 KiB unbounded {floors['cq_64k']:.2f} GB/s")
    if floors.get("cq_1m") is not None:
        parts.append(f"1 MiB unbounded {floors['cq_1m']:.2f} GB/s")
    if floors.get("cq_1m_bounded") is not None:
        parts.append(f"1 MiB maxsize=4 {floors['cq_1m_bounded']:.2f} GB/s")
    if parts:
        print("C floors (median of reps): " + "; ".join(parts))


def shm_names():
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and messages")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per figure (default 5)")
    ap.add_argument("--json", metavar="FILE", help="write machine-readable results to FILE")
    ap.add_argument("--markdown", action="store_true", help="also print a GitHub table")
    ap.add_argument("--build-dir", default=str(REPO / "build"),
                    help="CMake build dir holding bench/c helpers (default: <repo>/build)")
    ap.add_argument("--no-build", action="store_true",
                    help="do not run cmake to build the C helpers; skip floors if absent")
    ap.add_argument("--pythonpath", default=None,
                    help="directory holding mpservice (default: installed, then <repo>/python)")
    ap.add_argument("--only", default=None,
                    help="comma-separated row keys to run (small,batch,p4,b64k,b1m,bounded,"
                         "msg64m,numpy,pingpong,floor)")
    ap.add_argument("--impls", default="ours,stdlib",
                    help="implementations to measure, comma-separated (default: ours,stdlib)")
    ap.add_argument("--stdlib-only", action="store_true", help="same as --impls stdlib")
    ap.add_argument("--wait-quiet", type=float, default=30.0, metavar="SECONDS",
                    help="before each repetition, wait up to SECONDS for other processes to "
                         "leave the CPUs (default 30; 0: never wait); at most 8 times that "
                         "over the whole run")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every repetition")
    args = ap.parse_args(argv)

    quick = args.quick
    reps = args.reps or (3 if quick else 5)
    only = set(args.only.split(",")) if args.only else None

    def want(key):
        return only is None or key in only

    QUIET_BUDGET[0] = 8 * args.wait_quiet
    shm_before = shm_names()
    busy_before = machine_busy()
    if busy_before > QUIET_LIMIT:
        print(f"WARNING: the machine is {busy_before:.0%} busy before the benchmark starts: "
              "other processes are running and the figures will be unreliable.",
              file=sys.stderr)
    t_start = time.monotonic()

    wanted = ["stdlib"] if args.stdlib_only else [i for i in args.impls.split(",") if i]
    if any(i not in ("ours", "stdlib") for i in wanted) or not wanted:
        ap.error("--impls takes ours, stdlib or both")
    if "ours" in wanted:
        import_ours(args.pythonpath)
        if OUR_QUEUE is None:
            wanted.remove("ours")
    impls = tuple(wanted)
    if OUR_QUEUE is None and "ours" in args.impls and not args.stdlib_only:
        print("*** mpservice.multiprocessing.Queue is NOT importable: "
              f"{OUR_IMPORT_ERROR}\n*** measuring the stdlib only. Build it with\n"
              f"***   cmake -S {REPO} -B {REPO}/build-py -G Ninja -DMPX_BUILD_TESTS=OFF "
              f"-DMPX_BUILD_EXAMPLES=OFF && cmake --build {REPO}/build-py\n"
              f"*** (it copies the extension into {REPO}/python/mpservice/).",
              file=sys.stderr)

    # Sizes: a full run stays within a few minutes on a 2-core VM.
    n_small = 50_000 if quick else 200_000
    n_p4 = 20_000 if quick else 50_000  # per producer
    n_64k = 1024 if quick else 4096  # 64 MiB / 256 MiB
    n_1m = 64 if quick else 256
    n_np = 3 if quick else 8
    n_pp, w_pp = (500, 50) if quick else (2000, 200)

    rows = []
    floors = {}
    exe = None
    if want("floor") or want("pingpong") or only is None:
        exe, why = find_c_helpers(Path(args.build_dir), not args.no_build)
        if exe is None:
            floors["error"] = why
            print(f"note: C floor rows skipped: {why}", file=sys.stderr)

    def c_reps(cmd, key):
        vals = [run_json(cmd)[key] for _ in range(reps)]
        floors.setdefault("reps", {})[" ".join([Path(cmd[0]).name, *map(str, cmd[1:])])] = vals
        return median(vals)

    if exe is not None and want("floor"):
        try:
            mem = run_json([exe["memcpy_bw"], "-r", str(max(reps, 5))])
            by = {r["bytes"]: r["gbps"] for r in mem["results"]}
            floors["memcpy_64k"] = by.get(65536)
            floors["memcpy_1m"] = by.get(1 << 20)
            floors["memcpy_16m"] = by.get(16 << 20)
            qt = exe["queue_tput"]
            floors["cq_small"] = c_reps([qt, "-n", str(n_small * 5), "-s", "28"], "msgs_per_s")
            floors["cq_batch"] = c_reps([qt, "-n", str(n_small * 5), "-s", "28", "-b", "100"],
                                        "msgs_per_s")
            floors["cq_64k"] = c_reps([qt, "-n", str(n_64k), "-s", "65536"], "gbps")
            floors["cq_1m"] = c_reps([qt, "-n", str(n_1m), "-s", str(1 << 20)], "gbps")
            floors["cq_1m_bounded"] = c_reps([qt, "-n", str(n_1m), "-s", str(1 << 20), "-m", "4"],
                                             "gbps")
            if not want("pingpong"):  # else measured between the ping-pong repetitions
                floors["futex_p50_us"] = c_reps([exe["futex_pingpong"], "-n", str(n_pp * 2)],
                                                "p50_us")
        except (OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
            floors["error"] = f"a C helper failed: {e}"

    def add(row, fn, floor=None):
        rows.append(row)
        print(f"[{time.monotonic() - t_start:6.1f}s] {row.title} ...", file=sys.stderr)
        measure_row(row, fn, reps, impls, args.verbose, args.wait_quiet)
        if floor is not None and floors.get(floor[1]) is not None:
            label, key, unit = floor
            row.floor = (label, floors[key], unit)
            o = row.value("ours")
            if o is not None and floors[key]:
                row.floor_ratio = o / floors[key]

    if want("small"):
        add(Row("small", "small msgs (5-tuple) 1→1", "msg/s", 5),
            lambda impl: run_small(impl, 1, n_small, 1), ("C queue", "cq_small", "msg/s"))
    if want("batch"):
        add(Row("batch", "put_many/get_many ×100 1→1 (stdlib: put/get)", "msg/s", 10),
            lambda impl: run_small(impl, 1, n_small, 100), ("C queue ×100", "cq_batch", "msg/s"))
    if want("p4"):
        add(Row("p4", "small msgs 4 producers→1", "msg/s", 3),
            lambda impl: run_small(impl, 4, n_p4, 1), ("C queue 1→1", "cq_small", "msg/s"))
    if want("b64k"):
        add(Row("b64k", "64 KiB bytes msgs", "GB/s", 3),
            lambda impl: run_bytes(impl, 64 << 10, n_64k), ("memcpy", "memcpy_64k", "GB/s"))
    if want("b1m"):
        add(Row("b1m", "1 MiB bytes msgs", "GB/s", 6),
            lambda impl: run_bytes(impl, 1 << 20, n_1m), ("memcpy", "memcpy_1m", "GB/s"))
    if want("bounded"):
        # Not PERF.md rows: the same transfers through queues of maxsize 8 (both sides), which
        # keeps our ring from growing into fresh pages while the producer runs ahead.
        add(Row("b64k_bounded", "64 KiB bytes msgs, maxsize=8 both", "GB/s", None),
            lambda impl: run_bytes(impl, 64 << 10, n_64k, maxsize=8),
            ("memcpy", "memcpy_64k", "GB/s"))
        add(Row("b1m_bounded", "1 MiB bytes msgs, maxsize=8 both", "GB/s", None),
            lambda impl: run_bytes(impl, 1 << 20, n_1m, maxsize=8), ("memcpy", "memcpy_1m", "GB/s"))
    if want("msg64m"):
        # Cold on purpose: one message through a fresh queue, as a one-off transfer would be.
        add(Row("msg64m", "one 64 MiB bytes msg, cold queue (works)", "GB/s", "works"),
            lambda impl: run_bytes(impl, 64 << 20, 1, warmup=0),
            ("memcpy 16M", "memcpy_16m", "GB/s"))
    if want("numpy"):
        try:
            import numpy  # noqa: F401, PLC0415
        except ImportError:
            print("note: numpy is not installed; the numpy row is skipped", file=sys.stderr)
        else:
            add(Row("numpy", "16 MiB numpy float64 array", "GB/s", 10),
                lambda impl: run_numpy(impl, 16 << 20, n_np), ("memcpy", "memcpy_16m", "GB/s"))
    if want("pingpong"):
        pp = Row("pingpong", "ping-pong round trip p50", "µs", 0.5, higher_is_better=False)
        futex = []

        def pingpong(impl):
            # The futex floor is measured between the repetitions, under the same conditions.
            if exe is not None and impl == impls[0]:
                try:
                    futex.append(run_json([exe["futex_pingpong"], "-n", str(n_pp * 2)])["p50_us"])
                except (OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
                    floors["futex_error"] = str(e)
            return run_pingpong(impl, n_pp, w_pp)

        add(pp, pingpong)
        if futex:
            floors["futex_p50_us"] = median(futex)
            floors["futex_reps"] = futex
            pp.floor = ("futex p50", floors["futex_p50_us"], "µs")
            if pp.value("ours") is not None:
                pp.floor_ratio = pp.value("ours") / floors["futex_p50_us"]
                fr = Row("pingpong_floor", "ping-pong p50 vs C futex floor", "µs", 1.5,
                         higher_is_better=False)
                fr.reps["ours"] = pp.reps["ours"]
                fr.reps["stdlib"] = futex  # the "stdlib" column of this row is the C floor
                fr.foreign = pp.foreign
                fr.note = "stdlib column = C futex_pingpong p50"
                rows.append(fr)

    elapsed = time.monotonic() - t_start
    gc.collect()
    leaked = leaked_semaphores()
    others = sorted(shm_names() - shm_before - {"sem." + n.lstrip("/") for n in OWN_SEMAPHORES})
    busy_after = machine_busy()

    print()
    print(f"Queue benchmarks: ours = mpservice.multiprocessing.Queue, stdlib = spawn-context "
          f"multiprocessing.Queue; median of {reps} reps; {os.cpu_count()} CPUs; "
          f"Python {platform.python_version()}; {elapsed:.0f} s"
          + (" (QUICK)" if quick else ""))
    if OUR_QUEUE is not None:
        print(f"ours imported from {OUR_LOCATION}")
    if OUR_QUEUE is None:
        print(f"ours NOT MEASURED: {OUR_IMPORT_ERROR or 'not requested (--impls)'}")
    print_text_table(rows, floors)
    if any(r.key == "pingpong_floor" for r in rows):
        print("(row 'ping-pong p50 vs C futex floor': its stdlib column is the C futex floor)")
    print_floors(floors)
    print(f"/dev/shm leftovers from this run: {leaked if leaked else 'none'} "
          f"({len(OWN_SEMAPHORES)} stdlib semaphores created and checked)"
          + (f"; new entries from other processes: {others}" if others else ""))
    disturbed = [r.key for r in rows if r.disturbed()]
    print(f"CPU used by other processes: {busy_before:.0%} before the run, {busy_after:.0%} "
          "after" + (f"; over {BUSY_LIMIT:.0%} during rows {disturbed} (marked busy!): "
                     "those figures are unreliable" if disturbed else
                     f"; under {BUSY_LIMIT:.0%} during every repetition"))
    if args.markdown:
        print()
        print_markdown_table(rows, floors)

    if args.json:
        doc = {
            "bench": "queue", "quick": quick, "reps": reps, "elapsed_s": elapsed,
            "python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "ours_available": OUR_QUEUE is not None,
            "ours_location": OUR_LOCATION,
            "ours_import_error": OUR_IMPORT_ERROR, "floors": floors,
            "rows": [r.to_dict() for r in rows], "dev_shm_leftovers": leaked,
            "dev_shm_other_new_entries": others,
            "machine_busy_before": busy_before, "machine_busy_after": busy_after,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        Path(args.json).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")

    if any(r.errors for r in rows) or leaked:
        return 1
    if OUR_QUEUE is None and not args.stdlib_only and "ours" in args.impls:
        return 2  # ours was asked for and could not be measured
    return 0


if __name__ == "__main__":
    sys.exit(main())
