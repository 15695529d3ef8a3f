#!/usr/bin/env python3
"""Synchronization benchmarks: mpservice.multiprocessing's Lock, RLock, Semaphore, Event,
Condition and Barrier against the stdlib's (spawn context), in one run.

The sync rows of the project's performance targets (PERF.md; see bench/README.md):

* lock       uncontended Lock.acquire()+release() pair, ns (target <= 1.2x stdlib); also
             `with lock:`, RLock and Semaphore(1) pairs for information. Timed in this
             process with bound methods in a tight loop, the empty loop subtracted; the
             "floor" is the same loop calling a no-op C method ([].clear) twice, i.e.
             what any lock driven from Python pays for the two calls alone.
* event      cross-process wake-up round trip p50, us (target <= 0.4x stdlib)
* condition  "         "         "         "
* barrier    "         "         "         "
             Parent and one spawn child ping-pong; the parent times every round trip
             with time.perf_counter_ns. The C futex ping-pong floor (bench/c) runs once per
             repetition, between the Python ones.
* blocked    CPU used by a process blocked for ~1 s in Event.wait() (target: about 0,
             < 20 ms); also Lock.acquire(), Condition.wait() and Barrier.wait() for
             information.

Repetitions are interleaved (ours, stdlib, stdlib, ours, ...) so that drift on a noisy
machine hits both alike; each figure is the median of the repetitions. Process start is
excluded: each child meets the parent at a start barrier first. Every round trip checks a
counter in shared memory, so a primitive that does not wait fails instead of looking fast.

    python3 bench/bench_sync.py [--quick] [--json FILE] [--markdown] [--only KEYS]
"""
from __future__ import annotations

import gc
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

# bench/benchlib.py, next to this script (whose directory is sys.path[0] when run as one).
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
from benchlib import (  # noqa: E402
    CTX, Children, RunChecks, cpu_snapshot, foreign_load, measure_row, median,
    print_text_table, run_json, table_header, track_semaphores, wait_quiet,
)

CLASSES = ("Lock", "RLock", "Semaphore", "Condition", "Event", "Barrier")
OURS: dict = {}  # class name -> our class, for those that imported
OUR_IMPORT_ERROR = None  # why some or all of ours are missing
OUR_LOCATION = None  # the directory the package was imported from

ROW_KEYS = ("lock", "event", "condition", "barrier", "blocked")


def import_ours(pythonpath: str | None) -> None:
    """Imports our classes: from --pythonpath if given, else from the in-tree python/
    directory when the extension has been built there, else from wherever sys.path finds
    it. Classes that are missing are reported; the rows using them fail for ours only."""
    global OUR_IMPORT_ERROR, OUR_LOCATION
    mpm, OUR_LOCATION, OUR_IMPORT_ERROR = benchlib.import_ours(
        pythonpath, lambda: importlib.import_module("mpservice.multiprocessing"))
    if mpm is None:
        return
    missing = []
    for name in CLASSES:
        cls = getattr(mpm, name, None)
        if isinstance(cls, type):
            OURS[name] = cls
        else:
            missing.append(name)
    if missing:
        OUR_IMPORT_ERROR = ("mpservice.multiprocessing has no " + ", ".join(missing)
                            + f" (imported from {OUR_LOCATION})")


def make(impl: str, name: str, *args):
    """A fresh synchronization object of class `name` (Lock, Event, ...)."""
    if impl == "ours":
        if name not in OURS:
            raise RuntimeError(f"our {name} is not importable: {OUR_IMPORT_ERROR}")
        return OURS[name](*args)
    return track_semaphores(getattr(CTX, name)(*args))


class Watchdog(benchlib.Watchdog):
    """Kills every child and exits if one repetition hangs (see benchlib.Watchdog)."""

    program = "bench_sync"
    row_timeout = 120.0  # seconds; a repetition taking longer is a hang
    lost = "a wake-up"


# ---------------------------------------------------------------------------------------------
# Uncontended lock pairs, timed in this process.
# ---------------------------------------------------------------------------------------------

# Each repetition of a lock row times LOCK_ROUNDS short loops of every contender - ours,
# the stdlib's, the no-op floor and the empty loop - interleaved (the order alternating from
# round to round), and keeps each contender's fastest loop, as timeit does. On this VM the
# speed of a tight loop changes by up to 2x within a second (other processes, and a vCPU
# coming back from idle runs slow for a while), so two figures are only comparable when
# taken in the same fraction of a second.
LOCK_ROUNDS = 10


def _loop_empty(n):
    rng = range(n)
    clock = time.perf_counter_ns
    t0 = clock()
    for _ in rng:
        pass
    return clock() - t0


def _loop_pair(acq, rel, n):
    rng = range(n)
    clock = time.perf_counter_ns
    t0 = clock()
    for _ in rng:
        acq()
        rel()
    return clock() - t0


def _loop_with(lock, n):
    rng = range(n)
    clock = time.perf_counter_ns
    t0 = clock()
    for _ in rng:
        with lock:
            pass
    return clock() - t0


def measure_lock_row(row, name: str, style: str, n: int, reps: int, impls, verbose: bool,
                     quiet_wait: float) -> None:
    """ns per uncontended acquire+release (or `with lock: pass`) of `name`, per
    implementation, the empty loop subtracted. The floor (pair rows only) is the same loop
    calling [].clear twice: what any lock driven from Python pays for the two calls."""
    for rep in range(reps):
        objs = {}
        for impl in impls:
            if impl in row.errors:
                continue
            try:
                objs[impl] = make(impl, name, 1) if name == "Semaphore" else make(impl, name)
                objs[impl].acquire()  # first use outside the clock (lazy set-up, if any)
                objs[impl].release()
            except Exception as e:  # noqa: BLE001
                row.errors[impl] = f"{type(e).__name__}: {e}"
                print(f"  {row.key} [{impl}] FAILED: {row.errors[impl]}", file=sys.stderr)
        if not objs:
            return
        if quiet_wait > 0:
            wait_quiet(quiet_wait)
        noop = [].clear
        loops = {}
        for impl, o in objs.items():
            if style == "with":
                loops[impl] = lambda o=o: _loop_with(o, n)
            else:
                loops[impl] = lambda a=o.acquire, r=o.release: _loop_pair(a, r, n)
        if style == "pair":
            loops["floor"] = lambda: _loop_pair(noop, noop, n)
        loops["empty"] = lambda: _loop_empty(n)
        best = {k: None for k in loops}
        snap = cpu_snapshot()
        gc_was = gc.isenabled()
        gc.disable()
        try:
            t_end = time.perf_counter() + 0.05  # bring the vCPU out of idle first
            while time.perf_counter() < t_end:
                _loop_empty(1000)
            keys = list(loops)
            for r in range(LOCK_ROUNDS):
                for k in (keys if (r + rep) % 2 == 0 else reversed(keys)):
                    t = loops[k]()
                    best[k] = t if best[k] is None else min(best[k], t)
        finally:
            if gc_was:
                gc.enable()
        load = foreign_load(snap, cpu_snapshot())
        for impl, o in objs.items():
            if o.acquire(False) is not True:
                row.errors[impl] = f"AssertionError: {name} not free after the timed loops"
                continue
            o.release()
            v = (best[impl] - best["empty"]) / n
            row.reps[impl].append(v)
            row.foreign[impl].append(load)
            row.extra[impl].append({"ns_per_pair": v, "empty_loop_ns": best["empty"] / n})
            if verbose:
                print(f"  {row.key} [{impl}] rep {rep + 1}: {v:.1f} ns"
                      f"  (other processes: {load:.0%} CPU)", file=sys.stderr)
        if "floor" in best:
            row.floor_reps.append((best["floor"] - best["empty"]) / n)
        del objs
        gc.collect()  # the stdlib's finalizers unlink this repetition's semaphores


# ---------------------------------------------------------------------------------------------
# Cross-process wake-up round trips. In every case the child runs a fixed number of rounds
# (warm-up + timed) and bumps a shared counter; the parent checks the counter after every
# round, so a wait that returns without its wake-up fails the row.
# ---------------------------------------------------------------------------------------------


def c_event(e1, e2, counter, total):
    """Child: waits for e1, clears it, bumps the counter, sets e2."""
    w, c, s = e1.wait, e1.clear, e2.set
    for i in range(total):
        w()
        c()
        counter.value = i + 1
        s()
    return total


def c_condition(cond, turn, total):
    """Child: waits until turn == 2i+1, sets it to 2i+2, notifies."""
    wait, notify = cond.wait, cond.notify
    waits = 0
    with cond:
        for i in range(total):
            while turn.value != 2 * i + 1:
                wait()
                waits += 1
            turn.value = 2 * i + 2
            notify()
    return waits


def c_barrier(bar, counter, gens):
    """Child: passes the barrier `gens` times, bumping the counter after each generation."""
    w = bar.wait
    idx = 0
    for g in range(gens):
        idx += w()
        counter.value = g + 1
    return idx


def _p50(rtts, warmup):
    xs = sorted(rtts[warmup:])
    n = len(xs)
    return {
        "p50_us": xs[n // 2] / 1000.0, "p90_us": xs[int(n * 0.9)] / 1000.0,
        "p99_us": xs[min(n - 1, int(n * 0.99))] / 1000.0, "min_us": xs[0] / 1000.0,
        "mean_us": sum(xs) / n / 1000.0,
    }


def run_event(impl: str, n: int, warmup: int, extra: list) -> float:
    """p50 round trip (us): the parent sets e1 and waits for e2 (then clears it); the child
    waits for e1, clears it and sets e2. Two wake-ups per round trip, one each way."""
    e1, e2 = make(impl, "Event"), make(impl, "Event")
    counter = CTX.RawValue("q", 0)
    total = warmup + n
    with Children([(c_event, (e1, e2, counter, total))]) as ch, Watchdog(f"event {impl}", ch):
        ch.go()
        s, w, c = e1.set, e2.wait, e2.clear
        clock = time.perf_counter_ns
        rtts = []
        for i in range(total):
            t0 = clock()
            s()
            w()
            c()
            t1 = clock()
            if counter.value != i + 1:
                raise AssertionError(f"event: round {i}: e2.wait() returned but the child's "
                                     f"counter is {counter.value}")
            rtts.append(t1 - t0)
        ch.results()
    if e1.is_set() or e2.is_set():
        raise AssertionError("event: an event is still set after the last round")
    extra.append(_p50(rtts, warmup))
    return extra[-1]["p50_us"]


SLEEP_GAP_NS = 300_000  # how long the waker waits before set(): 6x our 50 us spin


def c_event_sleep(e1, e2, stamp, total):
    """Child: waits for e1 (asleep by then), stamps CLOCK_MONOTONIC, clears e1, sets e2."""
    w, c, s, now = e1.wait, e1.clear, e2.set, time.monotonic_ns
    for _ in range(total):
        w()
        stamp.value = now()
        c()
        s()
    return total


def run_event_sleep(impl: str, n: int, warmup: int, extra: list) -> float:
    """p50 one-way wake-up latency (us) of a waiter that is asleep: the parent waits
    SLEEP_GAP_NS (busy, so that it is not itself waking up) after the child's last reply,
    stamps CLOCK_MONOTONIC and sets e1; the child stamps when its e1.wait() returns."""
    e1, e2 = make(impl, "Event"), make(impl, "Event")
    stamp = CTX.RawValue("q", 0)
    total = warmup + n
    with Children([(c_event_sleep, (e1, e2, stamp, total))]) as ch, \
            Watchdog(f"event sleep {impl}", ch):
        ch.go()
        s, w, c, now = e1.set, e2.wait, e2.clear, time.monotonic_ns
        lat = []
        t_reply = now()
        for i in range(total):
            while now() - t_reply < SLEEP_GAP_NS:
                pass
            t0 = now()
            s()
            w()
            c()
            t_reply = now()
            t1 = stamp.value
            if not t0 < t1 <= t_reply:
                raise AssertionError(f"event sleep: round {i}: the child's stamp {t1} is not "
                                     f"within [{t0}, {t_reply}]")
            lat.append(t1 - t0)
        ch.results()
    extra.append(_p50(lat, warmup))
    return extra[-1]["p50_us"]


def run_condition(impl: str, n: int, warmup: int, extra: list) -> float:
    """p50 round trip (us) through one shared Condition and a shared turn counter. The
    parent, holding the lock: sets turn = 2i+1, notify(), wait()s until turn == 2i+2. The
    child, holding the lock: wait()s until turn == 2i+1, sets 2i+2, notify()."""
    cond = make(impl, "Condition")
    turn = CTX.RawValue("q", 0)
    total = warmup + n
    with Children([(c_condition, (cond, turn, total))]) as ch, \
            Watchdog(f"condition {impl}", ch):
        ch.go()
        wait, notify = cond.wait, cond.notify
        clock = time.perf_counter_ns
        rtts = []
        waits = 0
        with cond:
            for i in range(total):
                t0 = clock()
                turn.value = 2 * i + 1
                notify()
                while turn.value != 2 * i + 2:
                    wait()
                    waits += 1
                rtts.append(clock() - t0)
        (child_waits,) = ch.results()
    extra.append(_p50(rtts, warmup))
    # More than one wait() per round means spurious or stolen wake-ups.
    extra[-1]["parent_waits_per_round"] = waits / total
    extra[-1]["child_waits_per_round"] = child_waits / total
    return extra[-1]["p50_us"]


def run_barrier(impl: str, n: int, warmup: int, extra: list) -> float:
    """p50 round trip (us) through Barrier(2). One round trip = two generations: the time
    from one return of the parent's wait() to its return two wait()s later. In steady state
    each process releases the other once in those two generations (two wake-ups, one each
    way, as in the other rows)."""
    bar = make(impl, "Barrier", 2)
    counter = CTX.RawValue("q", 0)
    total = warmup + n
    gens = 1 + 2 * total
    with Children([(c_barrier, (bar, counter, gens))]) as ch, Watchdog(f"barrier {impl}", ch):
        ch.go()
        w = bar.wait
        clock = time.perf_counter_ns
        rtts = []
        idx = w()  # generation 0: both arrive once before the clock starts
        t_prev = clock()
        for i in range(total):
            idx += w()
            idx += w()
            t = clock()
            rtts.append(t - t_prev)
            t_prev = t
            g = 2 * i + 2  # the generation the parent just passed
            # The child has passed generation g-1 (else g could not complete) and cannot have
            # passed g+1 (that needs the parent).
            if counter.value not in (g, g + 1):
                raise AssertionError(f"barrier: after generation {g} the child's counter is "
                                     f"{counter.value}")
        (child_idx,) = ch.results()
    # Each generation hands out the indices 0 and 1 once.
    if idx + child_idx != gens:
        raise AssertionError(f"barrier: wait() indices sum to {idx + child_idx}, "
                             f"expected {gens}")
    if bar.n_waiting != 0 or bar.broken:
        raise AssertionError("barrier: not reset after the last generation")
    extra.append(_p50(rtts, warmup))
    return extra[-1]["p50_us"]


# ---------------------------------------------------------------------------------------------
# CPU of a blocked waiter.
# ---------------------------------------------------------------------------------------------


def c_blocked(kind, obj, flag):
    """Child: blocks once in `kind` until the parent releases it. Returns its own CPU time
    (all threads, CLOCK_PROCESS_CPUTIME_ID) and wall time across the blocking call."""
    cpu, wall = time.process_time_ns, time.monotonic_ns
    if kind == "event":
        c0, w0 = cpu(), wall()
        obj.wait()
        c1, w1 = cpu(), wall()
        ok = obj.is_set()
    elif kind == "lock":
        c0, w0 = cpu(), wall()
        obj.acquire()
        c1, w1 = cpu(), wall()
        ok = flag.value == 1  # the parent sets it before releasing
        obj.release()
    elif kind == "condition":
        with obj:
            c0, w0 = cpu(), wall()
            while not flag.value:
                obj.wait()
            c1, w1 = cpu(), wall()
        ok = True
    elif kind == "barrier":
        c0, w0 = cpu(), wall()
        obj.wait()
        c1, w1 = cpu(), wall()
        ok = flag.value == 1
    else:
        raise ValueError(kind)
    return c1 - c0, w1 - w0, ok


def proc_cpu_s(pid: int):
    """utime + stime of a process from /proc/PID/stat (clock-tick resolution), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_blocked(impl: str, kind: str, seconds: float, extra: list) -> float:
    """ms of CPU the child used while blocked for `seconds` in one wait/acquire."""
    flag = CTX.RawValue("q", 0)
    if kind == "event":
        obj = make(impl, "Event")
    elif kind == "lock":
        obj = make(impl, "Lock")
        obj.acquire()  # held by the parent: the child's acquire() blocks
    elif kind == "condition":
        obj = make(impl, "Condition")
    else:
        obj = make(impl, "Barrier", 2)
    with Children([(c_blocked, (kind, obj, flag))]) as ch, Watchdog(f"blocked {impl}", ch):
        ch.go()
        time.sleep(0.1)  # the child is now in its wait; /proc counts from here
        pid = ch.procs[0].pid
        p0 = proc_cpu_s(pid)
        time.sleep(seconds - 0.1)
        p1 = proc_cpu_s(pid)
        flag.value = 1
        if kind == "event":
            obj.set()
        elif kind == "lock":
            obj.release()
        elif kind == "condition":
            with obj:
                obj.notify()
        else:
            obj.wait()
        ((cpu_ns, wall_ns, ok),) = ch.results()
    if not ok:
        raise AssertionError(f"blocked {kind}: the child's wait returned before the release")
    if wall_ns < 0.9 * seconds * 1e9:
        raise AssertionError(f"blocked {kind}: the child waited only {wall_ns / 1e9:.3f} s "
                             f"of {seconds} s")
    extra.append({"cpu_ms": cpu_ns / 1e6, "wall_s": wall_ns / 1e9,
                  "proc_stat_cpu_ms": None if p0 is None or p1 is None else (p1 - p0) * 1e3})
    return cpu_ns / 1e6


# ---------------------------------------------------------------------------------------------
# C floor.
# ---------------------------------------------------------------------------------------------


def find_futex_pingpong(build_dir: Path, allow_build: bool):
    """The futex_pingpong helper, built (or brought up to date) unless allow_build is
    False; (None, reason) if there is none. If the build fails, an existing binary is used."""
    exe, why = benchlib.build_c_helpers(build_dir, ("futex_pingpong",), allow_build)
    if exe is None:
        return None, why
    exe = exe["futex_pingpong"]
    if not exe.exists():
        return None, f"{exe} not found" + (" (--no-build)" if not allow_build else "")
    return exe, None


# ---------------------------------------------------------------------------------------------
# Rows and report.
# ---------------------------------------------------------------------------------------------


class Row(benchlib.Row):
    """One line of the table. `target` is the ratio ours/stdlib to reach (a maximum: every
    figure here is better when lower), ("abs", X) for an absolute bound on ours, or None
    for an informational row."""

    def __init__(self, key, title, unit, target, note="", paired=False, show_ratio=True):
        super().__init__(key, title, unit, target, note, paired)
        self.show_ratio = show_ratio

    def absolute(self):
        return isinstance(self.target, tuple)

    def met(self):
        if self.target is None:
            return None
        if self.absolute():
            o = self.value("ours")
            return None if o is None else o < self.target[1]
        r = self.ratio()
        return None if r is None else r <= self.target

    def target_str(self):
        if self.target is None:
            return "(info)"
        if self.absolute():
            return f"ours < {self.target[1]:g} ms"
        return f"≤ {self.target:g}×"

    def ratio_str(self):
        # A ratio of two near-zero CPU figures means nothing: absolute rows show none.
        return "-" if self.absolute() or not self.show_ratio else super().ratio_str()

    def to_dict(self):
        return {
            "key": self.key, "title": self.title, "unit": self.unit,
            "ours": self.value("ours"), "stdlib": self.value("stdlib"),
            "ratio": self.ratio(), "ratio_kind": ("median of per-rep ratios" if self.paired
                                                  else "ratio of medians"),
            "target": list(self.target) if self.absolute() else self.target,
            "target_kind": "ours <" if self.absolute() else "ratio <=", "met": self.met(),
            "ours_reps": self.reps["ours"], "stdlib_reps": self.reps["stdlib"],
            "ours_details": self.extra["ours"], "stdlib_details": self.extra["stdlib"],
            "foreign_load": self.foreign, "disturbed": self.disturbed(),
            "floor": self.floor, "floor_reps": self.floor_reps,
            "ours_vs_floor": self.floor_ratio, "errors": self.errors, "note": self.note,
        }


HEADER = table_header("floor (same run)")


def main(argv=None) -> int:
    ap = benchlib.argument_parser(
        __doc__, quick_help="fewer repetitions and rounds",
        build_help="CMake build dir holding bench/c/futex_pingpong (default: <repo>/build)",
        no_build_help="do not run cmake to build futex_pingpong; skip the floor if absent",
        pythonpath_help="directory holding mpservice (default: <repo>/python if built there, "
                        "else sys.path)",
        only_help="comma-separated row keys to run (" + ",".join(ROW_KEYS) + ")")
    args = ap.parse_args(argv)

    quick = args.quick
    reps = args.reps or (3 if quick else 5)
    only = set(args.only.split(",")) if args.only else None
    if only is not None and not only <= set(ROW_KEYS):
        ap.error(f"--only takes {','.join(ROW_KEYS)}; unknown: {','.join(sorted(only - set(ROW_KEYS)))}")

    def want(key):
        return only is None or key in only

    wanted = benchlib.wanted_impls(ap, args)
    ours_requested = "ours" in wanted
    if ours_requested:
        import_ours(args.pythonpath)
        if not OURS:
            wanted.remove("ours")
            print("*** mpservice.multiprocessing is NOT importable: "
                  f"{OUR_IMPORT_ERROR}\n*** measuring the stdlib only.", file=sys.stderr)
        elif OUR_IMPORT_ERROR:
            print(f"*** {OUR_IMPORT_ERROR}: the rows needing them fail for ours.",
                  file=sys.stderr)
    impls = tuple(wanted)
    if not impls:
        ap.error("nothing to measure")

    checks = RunChecks(args.wait_quiet)
    t_start = time.monotonic()

    # Sizes: a full run stays around two minutes on a 2-core VM.
    n_lock = 20_000 if quick else 50_000  # pairs per timed loop (LOCK_ROUNDS loops per rep)
    n_rt, w_rt = (500, 50) if quick else (2000, 200)  # round trips, warm-up round trips
    n_sleep = 300 if quick else 1000  # one-way wake-ups of a sleeping waiter, 0.3 ms apart
    blocked_s = 0.5 if quick else 1.0
    futex_n = 2 * n_rt

    floor_error = None
    futex_exe = None
    if any(want(k) for k in ("event", "condition", "barrier")):
        futex_exe, floor_error = find_futex_pingpong(Path(args.build_dir), not args.no_build)
        if futex_exe is None:
            print(f"note: the C futex floor is skipped: {floor_error}", file=sys.stderr)

    rows = []

    def add(row, fn, before_rep=None):
        rows.append(row)
        print(f"[{time.monotonic() - t_start:6.1f}s] {row.title} ...", file=sys.stderr)
        # fn(impl, extra) appends the repetition's details to the row's extra[impl].
        measure_row(row, lambda impl: fn(impl, row.extra[impl]), reps, impls, args.verbose,
                    args.wait_quiet, before_rep)

    if want("lock"):
        for key, title, cls, style, target in (
            ("lock", "Lock acquire()+release(), uncontended", "Lock", "pair", 1.2),
            ("lock_with", "Lock `with lock: pass`, uncontended", "Lock", "with", None),
            ("rlock", "RLock acquire()+release(), uncontended", "RLock", "pair", None),
            ("semaphore", "Semaphore(1) acquire()+release(), uncontended", "Semaphore",
             "pair", None),
        ):
            row = Row(key, title, "ns", target, paired=True)
            rows.append(row)
            print(f"[{time.monotonic() - t_start:6.1f}s] {row.title} ...", file=sys.stderr)
            measure_lock_row(row, cls, style, n_lock, reps, impls, args.verbose,
                             args.wait_quiet)
            if style == "pair":
                row.set_floor_reps("2 no-op C calls", row.floor_reps, "ns")

    def futex_floor(store, extra_args=(), key="p50_us"):
        def before(rep):
            if futex_exe is None:
                return
            try:
                store.append(run_json([futex_exe, "-n", str(futex_n), *extra_args])[key])
            except (OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
                print(f"  futex_pingpong {' '.join(extra_args)} failed: {e}", file=sys.stderr)
        return before

    for key, title, fn in (
        ("event", "Event ping-pong round trip p50", run_event),
        ("condition", "Condition ping-pong round trip p50", run_condition),
        ("barrier", "Barrier(2) round trip (2 generations) p50", run_barrier),
    ):
        if want(key):
            futex = []
            row = Row(key, title, "µs", 0.4)
            add(row, lambda impl, ex, fn=fn: fn(impl, n_rt, w_rt, ex), futex_floor(futex))
            row.set_floor_reps("C futex p50", futex, "µs")
            if key == "event":
                # Not a PERF.md row: the wake-up of a waiter that has surely gone to sleep
                # (our waiters spin 50 us first, so the ping-pong above may never sleep).
                # Its floor: the same one-way wake-up in C (futex_pingpong -g).
                futex_s = []
                row = Row("event_sleep", "Event wake-up of a sleeping waiter, one way p50",
                          "µs", None)
                add(row, lambda impl, ex: run_event_sleep(impl, n_sleep, w_rt // 2, ex),
                    futex_floor(futex_s, ("-g", str(SLEEP_GAP_NS // 1000), "-w", "50"),
                                "wake_p50_us"))
                row.set_floor_reps("C futex wake p50", futex_s, "µs")

    proc_stat = {}
    if want("blocked"):
        for key, kind, title, target in (
            ("blocked", "event", "CPU while blocked {s:g} s in Event.wait()", ("abs", 20.0)),
            ("blocked_lock", "lock", "CPU while blocked {s:g} s in Lock.acquire()", None),
            ("blocked_condition", "condition", "CPU while blocked {s:g} s in Condition.wait()",
             None),
            ("blocked_barrier", "barrier", "CPU while blocked {s:g} s in Barrier.wait()", None),
        ):
            row = Row(key, title.format(s=blocked_s), "ms CPU", target, show_ratio=False)
            add(row, lambda impl, ex, kind=kind: run_blocked(impl, kind, blocked_s, ex))
            proc_stat[key] = {
                impl: median([d["proc_stat_cpu_ms"] for d in row.extra[impl]
                              if d["proc_stat_cpu_ms"] is not None])
                for impl in impls}

    elapsed = time.monotonic() - t_start
    checks.finish()

    print()
    print("Sync benchmarks: ours = mpservice.multiprocessing.{Lock,RLock,Semaphore,Event,"
          "Condition,Barrier}, stdlib = spawn context; "
          + benchlib.run_summary(reps, elapsed, quick))
    if OURS:
        print(f"ours imported from {OUR_LOCATION}"
              + (f" ({OUR_IMPORT_ERROR})" if OUR_IMPORT_ERROR else ""))
    else:
        print(f"ours NOT MEASURED: {OUR_IMPORT_ERROR or 'not requested (--impls)'}")
    print_text_table(HEADER, rows)
    if any(r.key.startswith("lock") or r.key in ("rlock", "semaphore") for r in rows):
        print(f"(lock rows: ns per pair in tight loops of {n_lock} with bound methods, the "
              f"empty loop subtracted; per rep the fastest of {LOCK_ROUNDS} loops, interleaved "
              "with the other side's; ratio = median of the per-rep ratios; floor = the "
              "same loop calling [].clear twice, the interpreter's cost of two calls)")
    if any(r.unit == "µs" for r in rows):
        print(f"(round trips: {n_rt} timed after {w_rt} warm-up, parent <-> 1 spawn child; "
              "floor = bench/c/futex_pingpong p50, run once per repetition; "
              "Barrier: one round trip = two generations)")
    if any(r.key == "event_sleep" for r in rows):
        print(f"(Event wake-up of a sleeping waiter: {n_sleep} set()s, each "
              f"{SLEEP_GAP_NS // 1000} µs after the last reply, so the waiter sleeps; parent's "
              "CLOCK_MONOTONIC before set() to the child's after wait() returns; floor = "
              "futex_pingpong -g, the same in C)")
    if futex_exe is None and floor_error and any(r.unit == "µs" for r in rows):
        print(f"C futex floor: skipped ({floor_error})")
    if proc_stat:
        parts = []
        for key, by_impl in proc_stat.items():
            parts.append(key + " " + ", ".join(
                f"{impl} {'-' if v is None else f'{v:.0f}'}" for impl, v in by_impl.items()))
        print("(blocked rows: the child's own CPU clock across the call; cross-check from "
              "/proc/PID/stat over the blocked interval, 10 ms ticks, median ms: "
              + "; ".join(parts) + ")")
    benchlib.end_report(args, HEADER, rows, checks, {
        **benchlib.run_info("sync", quick, reps, elapsed), "ours_available": sorted(OURS),
        "ours_location": OUR_LOCATION, "ours_import_error": OUR_IMPORT_ERROR,
        "sizes": {"lock_pairs_per_loop": n_lock, "lock_loops_per_rep": LOCK_ROUNDS,
                  "round_trips": n_rt, "warmup_round_trips": w_rt,
                  "sleeping_wakeups": n_sleep, "sleep_gap_ns": SLEEP_GAP_NS,
                  "blocked_s": blocked_s, "futex_round_trips": futex_n},
        "floor_error": floor_error,
    })

    return benchlib.exit_status(rows, checks, ours_missing=ours_requested and not OURS)


if __name__ == "__main__":
    sys.exit(main())
