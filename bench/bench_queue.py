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

import os
import queue as queue_mod
import subprocess
import sys
import time
import zlib
from pathlib import Path

# bench/benchlib.py, next to this script (whose directory is sys.path[0] when run as one).
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
from benchlib import (  # noqa: E402
    CTX, REPO, SYNC_TIMEOUT, RunChecks, build_c_helpers, measure_row, median, print_text_table,
    run_json, table_header, track_semaphores,
)

OUR_QUEUE = None  # mpservice.multiprocessing.Queue once imported
OUR_IMPORT_ERROR = None
OUR_LOCATION = None  # the directory the package was imported from


def _load_queue():
    from mpservice.multiprocessing import Queue  # noqa: PLC0415

    return Queue


def import_ours(pythonpath: str | None) -> None:
    """Imports our Queue: from --pythonpath if given, else from the in-tree python/ directory
    when the extension has been built there, else from wherever sys.path finds it."""
    global OUR_QUEUE, OUR_IMPORT_ERROR, OUR_LOCATION
    OUR_QUEUE, OUR_LOCATION, OUR_IMPORT_ERROR = benchlib.import_ours(pythonpath, _load_queue)


def make_queue(impl: str, maxsize: int = 0):
    if impl == "ours":
        return OUR_QUEUE(maxsize=maxsize)
    return track_semaphores(CTX.Queue(maxsize))


def close_queue(q) -> None:
    q.close()
    q.join_thread()


# ---------------------------------------------------------------------------------------------
# Children. Each one prepares its payload, puts its warm-up messages (drained by the parent
# before the barrier, so that both queues start the timed part warm: the stdlib's feeder
# thread running, our ring grown to the message size), waits at the barrier, records its
# start stamp, does its part, then sends ("ok", (start_ns, extra)) or ("err", traceback) on
# its result pipe.
# ---------------------------------------------------------------------------------------------


def _child(fn, conn, barrier, *args):
    def body():
        prepared = fn("prepare", *args)
        fn("warmup", *args, prepared=prepared)
        barrier.wait(SYNC_TIMEOUT)
        t0 = time.monotonic_ns()
        return t0, fn("run", *args, prepared=prepared)

    benchlib.send_result(conn, body)


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


class Children(benchlib.Children):
    """Children that prepare and warm up before the start barrier (see _child); results()
    gives each one's (start_ns, extra)."""

    child_main = staticmethod(_child)


class Watchdog(benchlib.Watchdog):
    """Kills every child and exits if one repetition hangs: it lasts over row_timeout, or
    the parent is still waiting STALL_TIMEOUT after every child has exited (a lost message:
    the parent blocks in get() with nothing left to come). The parent's gets carry no
    timeout, since a timeout changes the stdlib's code path."""

    program = "bench_queue"
    row_timeout = 180.0  # seconds; a repetition taking longer is a hang
    lost = "a message"


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
    exe, why = build_c_helpers(build_dir, C_HELPERS, allow_build)
    if exe is None:
        return None, why
    missing = [n for n, p in exe.items() if not p.exists()]
    if missing:
        return None, f"C helpers {missing} not found under {build_dir}/bench/c"
    return exe, None


# ---------------------------------------------------------------------------------------------
# Rows and report.
# ---------------------------------------------------------------------------------------------


class Row(benchlib.RatioRow):
    """One line of the table: a ratio target (benchlib.RatioRow), or "works" for a row
    that only has to succeed."""

    def met(self):
        if self.target == "works":
            if "ours" in self.errors:
                return False
            return True if self.reps["ours"] else None
        return super().met()

    def target_str(self):
        return "works" if self.target == "works" else super().target_str()

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


HEADER = table_header("C floor (same run)")


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


def main(argv=None) -> int:
    ap = benchlib.argument_parser(
        __doc__, quick_help="fewer repetitions and messages",
        build_help="CMake build dir holding bench/c helpers (default: <repo>/build)",
        no_build_help="do not run cmake to build the C helpers; skip floors if absent",
        pythonpath_help="directory holding mpservice (default: installed, then <repo>/python)",
        only_help="comma-separated row keys to run (small,batch,p4,b64k,b1m,bounded,"
                  "msg64m,numpy,pingpong,floor)")
    args = ap.parse_args(argv)

    quick = args.quick
    reps = args.reps or (3 if quick else 5)
    only = set(args.only.split(",")) if args.only else None

    def want(key):
        return only is None or key in only

    checks = RunChecks(args.wait_quiet)
    t_start = time.monotonic()

    wanted = benchlib.wanted_impls(ap, args)
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
            row.set_floor_value(label, floors[key], unit)

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
    checks.finish()

    print()
    print("Queue benchmarks: ours = mpservice.multiprocessing.Queue, stdlib = spawn-context "
          "multiprocessing.Queue; " + benchlib.run_summary(reps, elapsed, quick))
    if OUR_QUEUE is not None:
        print(f"ours imported from {OUR_LOCATION}")
    if OUR_QUEUE is None:
        print(f"ours NOT MEASURED: {OUR_IMPORT_ERROR or 'not requested (--impls)'}")
    print_text_table(HEADER, rows)
    if any(r.key == "pingpong_floor" for r in rows):
        print("(row 'ping-pong p50 vs C futex floor': its stdlib column is the C futex floor)")
    print_floors(floors)
    benchlib.end_report(args, HEADER, rows, checks, {
        **benchlib.run_info("queue", quick, reps, elapsed),
        "ours_available": OUR_QUEUE is not None, "ours_location": OUR_LOCATION,
        "ours_import_error": OUR_IMPORT_ERROR, "floors": floors,
    })

    return benchlib.exit_status(rows, checks, ours_missing=(
        OUR_QUEUE is None and not args.stdlib_only and "ours" in args.impls))


if __name__ == "__main__":
    sys.exit(main())
