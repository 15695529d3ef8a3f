#!/usr/bin/env python3
"""Process benchmarks: mpservice.multiprocessing's SpawnProcess (start-up, log forwarding)
and the cost of importing the package, against the stdlib's spawn context, in one run.

The process rows of the project's performance targets (PERF.md; see bench/README.md):

* start    start() -> result() of a trivial target with SpawnProcess, ms per process,
           against the stdlib's spawn Process start() + join() (target <= 1.0x). Ours
           returns from result() as soon as the child's result was handled, before the
           child's interpreter shuts down; an untimed join() follows, so processes never
           overlap, and an information row gives start -> join() for both. The
           processes run one after the other, 5 per repetition (3 with --quick), after one
           untimed start of each kind (the first start launches the resource tracker, and
           ours also its service thread). The floor is a bare `python -c pass`, run as
           often in every repetition: the interpreter's own start and exit.
* logfwd   child -> parent log forwarding, records/s (target >= 2.5x). The child waits
           for a start signal (an Event passed as argument, so process start is not
           timed), then logs N records (20 000; 5 000 with --quick) with
           logging.getLogger('bench').info('record %d', i). The parent counts them in a
           handler that checks their order. Ours: SpawnProcess forwards the records to
           the parent's logger 'bench' (level INFO); timed from setting the signal until
           join() returns, which it does only after every record was handled. Stdlib: the
           standard recipe, a logging.handlers.QueueHandler over a spawn-context Queue in
           the child's root logger and a QueueListener in the parent feeding the same
           handler; timed from the signal until the handler counted the Nth record. The
           floor is a ceiling: the rate of the same info() loop in this process into a
           handler that does nothing, i.e. of making the records at all.
* import   `import mpservice.multiprocessing` against `import multiprocessing` in a fresh
           interpreter (sys.executable -c "...perf_counter()...; import X; ..."), ms
           (target <= 1.2x), with the same environment and sys.path for both. At least 7
           repetitions, each of 3 interpreters of each side back to back, alternating; the
           ratio is the median of the per-repetition ratios.

Byte-code. The environment may set PYTHONDONTWRITEBYTECODE, and the .pyc files in the
source tree may then be stale: every fresh interpreter would compile our modules again,
which an installed package (compiled by pip) never does, while the stdlib's .pyc files are
all there. So the script copies the package it imported (the directory printed, without its
__pycache__) into a temporary directory, compiles it there with compileall (timestamp
.pyc, as pip writes them), and puts that directory first on sys.path: the spawn children of
the start and logfwd rows and the interpreters of the import row load our modules from
compiled byte-code, as they load the stdlib's. --no-compiled-copy uses the package as it is instead.
Nothing is written into the source tree.

The children re-run this file as __mp_main__ (that is how spawn finds their targets), so its
top level imports nothing beyond what every interpreter has already loaded: benchlib,
logging and the rest are imported by the parent only. Otherwise each child would spend some
30 ms importing this script's helpers, and the start row would time those.

Repetitions are interleaved (ours, stdlib, stdlib, ours, ...) so that drift on a noisy
machine hits both alike; each figure is the median of the repetitions.

The RemoteException row of PERF.md is in bench/bench_remote.py.

    python3 bench/bench_proc.py [--quick] [--json FILE] [--markdown] [--only KEYS]
"""
# No `from __future__ import annotations`: it imports the module __future__, in every child
# too (the annotations here are valid at run time from Python 3.10).
import os
import sys
import time

ROW_KEYS = ("start", "logfwd", "import")

# ---------------------------------------------------------------------------------------------
# What the children run. Only what they need is imported, and only inside the functions.
# ---------------------------------------------------------------------------------------------


def trivial(x: int) -> int:
    """The target of the start row."""
    return x + 1


def log_child(n: int, ready, go, queue) -> int:
    """The target of the logfwd row: logs n records after the parent's start signal.

    Ours (queue is None): SpawnProcess forwards the child's records itself. The stdlib
    (queue is a spawn-context Queue): the standard recipe, a QueueHandler in the root
    logger, and the level of logger 'bench' set as in the parent."""
    import logging

    if queue is not None:
        import logging.handlers

        logging.getLogger().addHandler(logging.handlers.QueueHandler(queue))
        logging.getLogger("bench").setLevel(logging.INFO)
    info = logging.getLogger("bench").info
    ready.set()
    go.wait()
    for i in range(n):
        info("record %d", i)
    return n


# ---------------------------------------------------------------------------------------------
# The parent. Its imports are not run in the children (see the module's docstring).
# ---------------------------------------------------------------------------------------------

PARENT = __name__ != "__mp_main__"
if PARENT:
    import gc
    import importlib
    import json
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    # bench/benchlib.py, next to this script (whose directory is sys.path[0] when run as one).
    if str(Path(__file__).resolve().parent) not in sys.path:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
    import benchlib  # noqa: E402
    from benchlib import (  # noqa: E402
        CTX, RunChecks, median, print_text_table, track_semaphores,
    )

    _RowBase = benchlib.RatioRow
    _WatchdogBase = benchlib.Watchdog
else:  # a child: the classes below are defined but never used
    _RowBase = _WatchdogBase = object

OURS = None  # mpservice.multiprocessing, once imported
OUR_IMPORT_ERROR = None
OUR_LOCATION = None  # the directory of the package the parent imported
CHILD_PKG_ROOT = None  # the directory children import mpservice from (sys.path[0])

N_IMPORT_MIN = 7  # repetitions of the import row, at least
IMPORT_RUNS = 3  # interpreters of each side per repetition of the import row


def import_ours(pythonpath: str | None) -> None:
    global OURS, OUR_LOCATION, OUR_IMPORT_ERROR

    def load():
        mpm = importlib.import_module("mpservice.multiprocessing")
        for name in ("SpawnProcess", "Event"):
            getattr(mpm, name)  # raises if missing
        return mpm

    OURS, OUR_LOCATION, OUR_IMPORT_ERROR = benchlib.import_ours(pythonpath, load)


def compiled_copy(pkg_dir: str) -> str:
    """Copies the package directory pkg_dir (without __pycache__) into a new temporary
    directory and compiles it there; returns the temporary directory (to go on sys.path)."""
    import compileall
    import py_compile

    root = tempfile.mkdtemp(prefix="bench_proc-")
    dest = Path(root) / Path(pkg_dir).name
    shutil.copytree(pkg_dir, dest, ignore=shutil.ignore_patterns("__pycache__"))
    ok = compileall.compile_dir(str(dest), quiet=1,
                                invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    if not ok:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"compileall failed on the copy of {pkg_dir}")
    return root


class Procs:
    """What benchlib.Watchdog watches: a list of processes."""

    def __init__(self, procs):
        self.procs = procs


class Watchdog(_WatchdogBase):
    """Kills every child and exits if one repetition hangs (see benchlib.Watchdog)."""

    program = "bench_proc"
    row_timeout = 120.0
    lost = "a log record or a process's outcome"


# ---------------------------------------------------------------------------------------------
# start
# ---------------------------------------------------------------------------------------------


def start_one(impl: str, i: int) -> tuple[float, float]:
    """Seconds from start() to result() (ours) or join() (stdlib) of one process whose
    target returns i + 1, and from start() to join() returning for both; checks the result
    or the exit code. Ours returns from result() once the child's result was handled,
    before the child's interpreter has shut down; the join() after it waits for that and
    ends the process before the next one starts, so the processes never overlap."""
    clock = time.perf_counter
    if impl == "ours":
        p = OURS.SpawnProcess(target=trivial, args=(i,))
        with Watchdog(f"start {impl}", Procs([p])):
            t0 = clock()
            p.start()
            r = p.result()
            t1 = clock()
            p.join()
            t2 = clock()
        if r != i + 1:
            raise AssertionError(f"result() gave {r!r}, not {i + 1}")
    else:
        p = CTX.Process(target=trivial, args=(i,))
        with Watchdog(f"start {impl}", Procs([p])):
            t0 = clock()
            p.start()
            p.join()
            t1 = t2 = clock()
    if p.exitcode != 0:
        raise AssertionError(f"the child exited with {p.exitcode}")
    p.close()
    return t1 - t0, t2 - t0


def run_start(impl: str, n: int, extra: list) -> float:
    """ms per process over n processes started one after the other."""
    pairs = [start_one(impl, i) for i in range(n)]
    times = [a for a, _ in pairs]
    extra.append({"ms_each": [t * 1e3 for t in times],
                  "ms_to_join": sum(b for _, b in pairs) / n * 1e3})
    return sum(times) / n * 1e3


def bare_interpreter(n: int, store: list) -> None:
    """The start row's floor: ms per `python -c pass` (start, exit, reap), n of them."""
    clock = time.perf_counter
    t0 = clock()
    for _ in range(n):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    store.append((clock() - t0) / n * 1e3)


# ---------------------------------------------------------------------------------------------
# logfwd
# ---------------------------------------------------------------------------------------------


def counting_handler(n: int):
    """A logging handler that counts n records and checks that record i says 'record i'.
    It stamps time.perf_counter() when it counts the nth and sets .done."""
    import logging
    import threading

    class CountingHandler(logging.Handler):
        def __init__(self):
            super().__init__()
            self.count = 0
            self.bad = None  # (index, message) of the first record out of order
            self.t_last = None
            self.done = threading.Event()

        def emit(self, record):
            i = self.count
            msg = record.getMessage()
            if msg != "record %d" % i and self.bad is None:
                self.bad = (i, msg)
            self.count = i + 1
            if i + 1 == n:
                self.t_last = time.perf_counter()
                self.done.set()

    return CountingHandler()


def run_logfwd(impl: str, n: int, extra: list) -> float:
    """records/s of n records from a child to a handler in this process (see the module's
    docstring); checks that all n arrived, in order."""
    import logging

    clock = time.perf_counter
    counter = counting_handler(n)
    if impl == "ours":
        logger = logging.getLogger("bench")
        logger.addHandler(counter)
        try:
            ready, go = OURS.Event(), OURS.Event()
            p = OURS.SpawnProcess(target=log_child, args=(n, ready, go, None))
            with Watchdog(f"logfwd {impl}", Procs([p])):
                p.start()
                ready.wait()
                t0 = clock()
                go.set()
                p.join()
                t1 = clock()
            r = p.result()
            p.close()
        finally:
            logger.removeHandler(counter)
        if r != n:
            raise AssertionError(f"result() gave {r!r}, not {n}")
    else:
        from logging.handlers import QueueListener

        q = track_semaphores(CTX.Queue())
        ready, go = track_semaphores(CTX.Event()), track_semaphores(CTX.Event())
        listener = QueueListener(q, counter)
        listener.start()
        try:
            p = CTX.Process(target=log_child, args=(n, ready, go, q))
            with Watchdog(f"logfwd {impl}", Procs([p])):
                p.start()
                ready.wait()
                t0 = clock()
                go.set()
                counter.done.wait()
                t1 = counter.t_last
            listener.stop()
            listener = None
            p.join()
        finally:
            if listener is not None:
                listener.stop()
        if p.exitcode != 0:
            raise AssertionError(f"the child exited with {p.exitcode}")
        p.close()
        q.close()
        q.join_thread()
    if counter.count != n:
        raise AssertionError(f"{counter.count} records arrived, not {n}")
    if counter.bad is not None:
        raise AssertionError(f"record {counter.bad[0]} out of order: {counter.bad[1]!r}")
    extra.append({"seconds": t1 - t0, "last_record_s": counter.t_last - t0})
    return n / (t1 - t0)


def record_ceiling(n: int, store: list) -> None:
    """The logfwd row's floor (a ceiling): records/s of the child's loop, run in this
    process into a handler that does nothing - the cost of making the records."""
    import logging

    class Nothing(logging.Handler):
        def handle(self, record):
            return True

    logger = logging.getLogger("bench.ceiling")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    h = Nothing()
    logger.addHandler(h)
    try:
        info = logger.info
        t0 = time.perf_counter()
        for i in range(n):
            info("record %d", i)
        store.append(n / (time.perf_counter() - t0))
    finally:
        logger.removeHandler(h)


# ---------------------------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------------------------

IMPORT_MODULE = {"ours": "mpservice.multiprocessing", "stdlib": "multiprocessing"}


def import_env() -> dict:
    """The environment of the import row's interpreters: ours first on PYTHONPATH (for both,
    so that both see the same sys.path)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [CHILD_PKG_ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def run_import(impl: str, extra: list) -> float:
    """ms to import the module in a fresh interpreter; checks where it came from."""
    mod = IMPORT_MODULE[impl]
    code = (f"import time; t = time.perf_counter(); import {mod}; "
            f"d = time.perf_counter() - t; print(d); print({mod}.__file__)")
    r = subprocess.run([sys.executable, "-c", code], env=import_env(), cwd=CHILD_PKG_ROOT,
                       check=True, capture_output=True, text=True, timeout=60)
    seconds, where = r.stdout.split("\n")[:2]
    if impl == "ours" and not where.startswith(CHILD_PKG_ROOT + os.sep):
        raise AssertionError(f"{mod} came from {where}, not from {CHILD_PKG_ROOT}")
    v = float(seconds) * 1e3
    extra.append({"ms": v, "file": where})
    return v


def measure_import_row(row, reps: int, impls, verbose: bool, quiet_wait: float) -> None:
    """The import row. A single import in a fresh interpreter is noisy here, and a vCPU
    that has just come back from idle (the quiet-machine wait sleeps) runs slow for a
    while. So each repetition waits for quiet once, spins 50 ms, then runs IMPORT_RUNS
    interpreters of each side back to back, alternating ours and the stdlib; its figure is
    the median of its runs. The ratio is the median of the per-repetition ratios."""
    for rep in range(reps):
        if quiet_wait > 0:
            benchlib.wait_quiet(quiet_wait)
        snap = benchlib.cpu_snapshot()
        t_end = time.perf_counter() + 0.05  # bring the vCPU out of idle first
        while time.perf_counter() < t_end:
            pass
        runs = {impl: [] for impl in impls}
        for j in range(IMPORT_RUNS):
            for impl in (impls if (rep + j) % 2 == 0 else tuple(reversed(impls))):
                if impl in row.errors:
                    continue
                try:
                    runs[impl].append(run_import(impl, row.extra[impl]))
                except Exception as e:  # noqa: BLE001 - the row fails for this side only
                    row.errors[impl] = f"{type(e).__name__}: {e}"
                    print(f"  {row.key} [{impl}] FAILED: {row.errors[impl]}", file=sys.stderr)
        load = benchlib.foreign_load(snap, benchlib.cpu_snapshot())
        for impl in impls:
            if impl in row.errors or not runs[impl]:
                continue
            v = median(runs[impl])
            row.reps[impl].append(v)
            row.foreign[impl].append(load)
            if verbose:
                print(f"  {row.key} [{impl}] rep {rep + 1}: {v:.2f} ms (runs "
                      + ", ".join(f"{x:.2f}" for x in runs[impl])
                      + f")  (other processes: {load:.0%} CPU)", file=sys.stderr)


def import_breakdown() -> dict:
    """For the notes: the modules ours loads beyond the stdlib's, and the slowest of them
    by -X importtime (self time, µs), from one more run of each."""
    def modules(mod):
        code = (f"import sys; b = set(sys.modules); import {mod}; import json; "
                f"print(json.dumps(sorted(set(sys.modules) - b)))")
        r = subprocess.run([sys.executable, "-c", code], env=import_env(), cwd=CHILD_PKG_ROOT,
                           check=True, capture_output=True, text=True, timeout=60)
        return set(json.loads(r.stdout))

    extra_mods = sorted(modules(IMPORT_MODULE["ours"]) - modules(IMPORT_MODULE["stdlib"]))
    r = subprocess.run([sys.executable, "-X", "importtime", "-c",
                        f"import {IMPORT_MODULE['ours']}"], env=import_env(),
                       cwd=CHILD_PKG_ROOT, check=True, capture_output=True, text=True,
                       timeout=60)
    self_us = {}
    for line in r.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[0].startswith("import time:") and parts[1].strip().isdigit():
            self_us[parts[2].strip()] = int(parts[0].split(":")[1])
    return {"extra_modules": extra_mods,
            "extra_self_us": {m: self_us.get(m) for m in extra_mods}}


# ---------------------------------------------------------------------------------------------
# Rows and report.
# ---------------------------------------------------------------------------------------------


class Row(_RowBase):
    """One line of the table: a ratio target (benchlib.RatioRow)."""

    def to_dict(self):
        return {
            "key": self.key, "title": self.title, "unit": self.unit,
            "ours": self.value("ours"), "stdlib": self.value("stdlib"),
            "ratio": self.ratio(), "target": self.target,
            "ratio_kind": "median of per-rep ratios" if self.paired else "ratio of medians",
            "target_kind": ">=" if self.higher else "<=", "met": self.met(),
            "ours_reps": self.reps["ours"], "stdlib_reps": self.reps["stdlib"],
            "ours_details": self.extra["ours"], "stdlib_details": self.extra["stdlib"],
            "foreign_load": self.foreign, "disturbed": self.disturbed(),
            "floor": self.floor, "floor_reps": self.floor_reps,
            "ours_vs_floor": self.floor_ratio, "errors": self.errors, "note": self.note,
        }


HEADER = ["row", "unit", "ours", "stdlib", "ratio", "target", "met", "floor (same run)"]


def argument_parser():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="3 repetitions, 3 processes per start repetition, 5 000 records")
    ap.add_argument("--reps", type=int, default=None,
                    help=f"repetitions per figure (default 5; the import row does at least "
                         f"{N_IMPORT_MIN})")
    ap.add_argument("--json", metavar="FILE", help="write machine-readable results to FILE")
    ap.add_argument("--markdown", action="store_true", help="also print a GitHub table")
    ap.add_argument("--pythonpath", default=None,
                    help="directory holding mpservice (default: <repo>/python if built there, "
                         "else sys.path)")
    ap.add_argument("--only", default=None,
                    help="comma-separated row keys to run (" + ",".join(ROW_KEYS) + ")")
    ap.add_argument("--impls", default="ours,stdlib",
                    help="implementations to measure, comma-separated (default: ours,stdlib)")
    ap.add_argument("--stdlib-only", action="store_true", help="same as --impls stdlib")
    ap.add_argument("--no-compiled-copy", action="store_true",
                    help="children and the import row use the package where it is, with "
                         "whatever .pyc it has (default: a compiled copy in a temporary "
                         "directory)")
    ap.add_argument("--wait-quiet", type=float, default=30.0, metavar="SECONDS",
                    help="before each repetition, wait up to SECONDS for other processes to "
                         "leave the CPUs (default 30; 0: never wait); at most 8 times that "
                         "over the whole run")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every repetition")
    return ap


def main(argv=None) -> int:
    global CHILD_PKG_ROOT
    ap = argument_parser()
    args = ap.parse_args(argv)

    quick = args.quick
    reps = args.reps or (3 if quick else 5)
    reps_import = max(reps, N_IMPORT_MIN)
    n_start = 3 if quick else 5  # processes per repetition of the start row
    n_log = 5_000 if quick else 20_000  # records per repetition of the logfwd row
    only = set(args.only.split(",")) if args.only else None
    if only is not None and not only <= set(ROW_KEYS):
        ap.error(f"--only takes {','.join(ROW_KEYS)}; unknown: "
                 f"{','.join(sorted(only - set(ROW_KEYS)))}")

    def want(key):
        return only is None or key in only

    wanted = benchlib.wanted_impls(ap, args)
    ours_requested = "ours" in wanted
    if ours_requested:
        import_ours(args.pythonpath)
        if OURS is None:
            wanted.remove("ours")
            print("*** mpservice.multiprocessing is NOT importable: "
                  f"{OUR_IMPORT_ERROR}\n*** measuring the stdlib only.", file=sys.stderr)
    impls = tuple(wanted)
    if not impls:
        ap.error("nothing to measure")

    # Where the children (and the import row) load our modules from: see the docstring.
    tmp_root = None
    pkg_note = None
    if OURS is not None:
        if args.no_compiled_copy:
            CHILD_PKG_ROOT = str(Path(OUR_LOCATION).parent)
            pkg_note = f"children import ours from {CHILD_PKG_ROOT} as it is (--no-compiled-copy)"
        else:
            tmp_root = CHILD_PKG_ROOT = compiled_copy(OUR_LOCATION)
            pkg_note = (f"children and the import row import ours from a compiled copy of it "
                        f"in {CHILD_PKG_ROOT}")
        sys.path.insert(0, CHILD_PKG_ROOT)  # spawn children get this sys.path
    elif want("import"):
        CHILD_PKG_ROOT = tempfile.mkdtemp(prefix="bench_proc-")  # an empty, neutral cwd
        tmp_root = CHILD_PKG_ROOT

    try:
        return run(args, quick, reps, reps_import, n_start, n_log, want, impls,
                   ours_requested, pkg_note)
    finally:
        if tmp_root is not None:
            shutil.rmtree(tmp_root, ignore_errors=True)


def run(args, quick, reps, reps_import, n_start, n_log, want, impls, ours_requested,
        pkg_note) -> int:
    checks = RunChecks(args.wait_quiet)
    t_start = time.monotonic()
    rows = []

    def add(row, fn, n_reps, warm_up=None, before_rep=None):
        rows.append(row)
        print(f"[{time.monotonic() - t_start:6.1f}s] {row.title} ...", file=sys.stderr)
        if warm_up is not None:
            for impl in impls:
                try:
                    warm_up(impl)
                except Exception as e:  # noqa: BLE001 - the row fails for this side only
                    row.errors[impl] = f"warm-up: {type(e).__name__}: {e}"
                    print(f"  {row.key} [{impl}] FAILED: {row.errors[impl]}", file=sys.stderr)
            gc.collect()
        benchlib.measure_row(row, lambda impl: fn(impl, row.extra[impl]), n_reps, impls,
                             args.verbose, args.wait_quiet, before_rep)

    if want("start"):
        bare = []
        row = Row("start", "Process start -> result() (stdlib: start+join)", "ms", 1.0,
                  higher_is_better=False)
        add(row, lambda impl, ex: run_start(impl, n_start, ex), reps,
            warm_up=lambda impl: start_one(impl, 0),
            before_rep=lambda rep: bare_interpreter(n_start, bare))
        row.set_floor_reps("python -c pass", bare, "ms")
        # The same runs, to join() returning (ours: after the child's shutdown too).
        start_join = Row("start_join", "… the same, start -> join() returned", "ms", None,
                         higher_is_better=False)
        for impl in impls:
            start_join.reps[impl] = [d["ms_to_join"] for d in row.extra[impl]]
            start_join.foreign[impl] = list(row.foreign[impl])
        if row.errors:
            start_join.errors = dict(row.errors)
        rows.append(start_join)

    logfwd_last = None
    if want("logfwd"):
        import logging

        bench_logger = logging.getLogger("bench")
        bench_logger.setLevel(logging.INFO)  # the parent's level, which ours passes on
        bench_logger.propagate = False
        ceiling = []
        row = Row("logfwd", f"Log forwarding child -> parent, {n_log} records", "records/s",
                  2.5, higher_is_better=True)
        add(row, lambda impl, ex: run_logfwd(impl, n_log, ex), reps,
            warm_up=lambda impl: run_logfwd(impl, 200, []),
            before_rep=lambda rep: record_ceiling(n_log, ceiling))
        row.set_floor_reps("info() ceiling", ceiling, "records/s")
        # The same runs, to the last record handled (ours: before the child's exit).
        logfwd_last = Row("logfwd_last", "… the same, to the last record handled",
                          "records/s", None, higher_is_better=True)
        for impl in impls:
            logfwd_last.reps[impl] = [n_log / d["last_record_s"] for d in row.extra[impl]]
            logfwd_last.foreign[impl] = list(row.foreign[impl])
        if row.errors:
            logfwd_last.errors = dict(row.errors)
        rows.append(logfwd_last)

    breakdown = None
    if want("import"):
        row = Row("import", "import mpservice.multiprocessing (stdlib: multiprocessing)", "ms",
                  1.2, higher_is_better=False, paired=True)
        rows.append(row)
        print(f"[{time.monotonic() - t_start:6.1f}s] {row.title} ...", file=sys.stderr)
        for impl in impls:  # one untimed run of each: the files are in the page cache
            try:
                run_import(impl, [])
            except Exception as e:  # noqa: BLE001 - the row fails for this side only
                row.errors[impl] = f"warm-up: {type(e).__name__}: {e}"
                print(f"  {row.key} [{impl}] FAILED: {row.errors[impl]}", file=sys.stderr)
        measure_import_row(row, reps_import, impls, args.verbose, args.wait_quiet)
        if "ours" in impls and "ours" not in row.errors:
            try:
                breakdown = import_breakdown()
            except (OSError, subprocess.SubprocessError, ValueError) as e:
                print(f"  import breakdown failed: {e}", file=sys.stderr)

    elapsed = time.monotonic() - t_start
    checks.finish()

    print()
    print("Process benchmarks: ours = mpservice.multiprocessing.SpawnProcess and the package's "
          "import, stdlib = spawn context; " + benchlib.run_summary(reps, elapsed, quick))
    if OURS is not None:
        print(f"ours imported from {OUR_LOCATION}; {pkg_note}")
    else:
        print(f"ours NOT MEASURED: {OUR_IMPORT_ERROR or 'not requested (--impls)'}")
    print_text_table(HEADER, rows)
    if any(r.key == "start" for r in rows):
        print(f"(start: ms per process, {n_start} processes one after the other per rep, "
              "after an untimed one of each; ours start() -> result(), stdlib start() -> "
              f"join(); floor = `{Path(sys.executable).name} -c pass` started and reaped "
              f"{n_start} times per rep)")
    if any(r.key == "logfwd" for r in rows):
        print(f"(logfwd: {n_log} records of 'record %d' at INFO, all counted in order in the "
              "parent; ours: signal -> join() returned, stdlib: signal -> Nth record counted "
              "by the QueueListener's handler; '… to the last record handled' times ours to "
              "its Nth record too, i.e. without waiting for the child's exit; floor = the "
              "child's info() loop in this process into a no-op handler, an upper bound)")
    if any(r.key == "import" for r in rows):
        print(f"(import: ms in a fresh `{Path(sys.executable).name} -c`, same environment "
              f"and PYTHONPATH for both, byte-code compiled for both; {reps_import} reps of "
              f"{IMPORT_RUNS} interpreters of each side back to back, alternating; per rep "
              "the median of its runs; ratio = median of the per-rep ratios)")
        if breakdown is not None:
            slow = sorted(((us or 0, m) for m, us in breakdown["extra_self_us"].items()),
                          reverse=True)
            print(f"(import: ours loads {len(breakdown['extra_modules'])} modules beyond the "
                  "stdlib's; -X importtime self µs: "
                  + ", ".join(f"{m} {us}" for us, m in slow[:8]) + ")")
    print("(the RemoteException row of PERF.md is measured by bench/bench_remote.py)")
    benchlib.end_report(args, HEADER, rows, checks, {
        **benchlib.run_info("proc", quick, reps, elapsed),
        "ours_location": OUR_LOCATION, "ours_import_error": OUR_IMPORT_ERROR,
        "children_import_from": CHILD_PKG_ROOT, "compiled_copy": not args.no_compiled_copy,
        "sizes": {"processes_per_start_rep": n_start, "log_records": n_log,
                  "import_reps": reps_import, "import_runs_per_rep": IMPORT_RUNS},
        "import_breakdown": breakdown,
    })
    return benchlib.exit_status(rows, checks,
                                ours_missing=ours_requested and OURS is None)


if __name__ == "__main__":
    sys.exit(main())
