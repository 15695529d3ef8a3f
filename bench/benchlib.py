"""What bench_queue.py and bench_sync.py share: importing "ours", spawn children that meet
the parent at a barrier, how busy the machine is, the C helpers in bench/c, the rows of
the table and their repetitions, the report, and the end-of-run checks.

The benchmarks run as scripts (``python3 bench/bench_queue.py``), so this module is
imported from the scripts' own directory; spawned children import it from there too,
since they inherit the parent's sys.path.
"""
from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CTX = multiprocessing.get_context("spawn")

SYNC_TIMEOUT = 60.0  # seconds a child waits at the start barrier
JOIN_TIMEOUT = 30.0  # seconds to wait for a child to exit after its work
STALL_TIMEOUT = 15.0  # the parent still waiting this long after all children exited: a hang


def import_ours(pythonpath: str | None, load):
    """Imports mpservice: from `pythonpath` if given, else from the in-tree python/
    directory when the extension has been built there, else from wherever sys.path finds
    it. Once mpservice has imported, load() fetches what the benchmark needs from it; if
    either raises, the next place is tried.

    Returns (what load() returned, the directory mpservice was imported from, None), or
    (None, None, why the last attempt failed). On success the directory stays at the
    front of sys.path, so that spawned children import the same package."""
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

            loaded = load()
        except Exception as e:  # ImportError, or a half-built package failing at import
            err = f"{type(e).__name__}: {e}"
            for name in [m for m in sys.modules if m == "mpservice" or m.startswith("mpservice.")]:
                del sys.modules[name]
            continue
        return loaded, str(Path(mpservice.__file__).resolve().parent), None
    sys.path[:] = saved
    return None, None, err


# ---------------------------------------------------------------------------------------------
# Semaphores left in /dev/shm.
# ---------------------------------------------------------------------------------------------

# Names of the POSIX semaphores created by the stdlib objects of this run (spawn-context
# semaphores stay in /dev/shm until their owner's finalizer unlinks them). The end of the run
# checks that none of them is left.
OWN_SEMAPHORES: set[str] = set()


def track_semaphores(obj, depth: int = 0):
    """Records the semaphores of a stdlib object (and of the objects it holds, three levels
    down) in OWN_SEMAPHORES; returns obj."""
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
    """The semaphores of OWN_SEMAPHORES still in /dev/shm."""
    return sorted(n for n in OWN_SEMAPHORES if os.path.exists("/dev/shm/sem." + n.lstrip("/")))


def shm_names() -> set[str]:
    """The entries of /dev/shm (empty if it cannot be read)."""
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


# ---------------------------------------------------------------------------------------------
# How busy the machine is.
# ---------------------------------------------------------------------------------------------


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


class RunChecks:
    """What a run checks about its surroundings: how busy the machine is before and after
    it, and which entries it leaves in /dev/shm. Created at the start of the run (it sets
    the budget for wait_quiet() and warns if the machine is busy); finish() at the end."""

    def __init__(self, quiet_wait: float):
        QUIET_BUDGET[0] = 8 * quiet_wait
        self.shm_before = shm_names()
        self.busy_before = machine_busy()
        if self.busy_before > QUIET_LIMIT:
            print(f"WARNING: the machine is {self.busy_before:.0%} busy before the benchmark "
                  "starts: other processes are running and the figures will be unreliable.",
                  file=sys.stderr)
        self.leaked = []  # our semaphores left in /dev/shm
        self.others = []  # other new entries in /dev/shm
        self.busy_after = None

    def finish(self) -> None:
        """Collects the last objects, then looks at /dev/shm and the machine's load."""
        gc.collect()
        self.leaked = leaked_semaphores()
        self.others = sorted(shm_names() - self.shm_before
                             - {"sem." + n.lstrip("/") for n in OWN_SEMAPHORES})
        self.busy_after = machine_busy()

    def print_report(self, rows) -> None:
        """The two lines under the table: /dev/shm leftovers and other processes' CPU."""
        print(f"/dev/shm leftovers from this run: {self.leaked if self.leaked else 'none'} "
              f"({len(OWN_SEMAPHORES)} stdlib semaphores created and checked)"
              + (f"; new entries from other processes: {self.others}" if self.others else ""))
        disturbed = [r.key for r in rows if r.disturbed()]
        print(f"CPU used by other processes: {self.busy_before:.0%} before the run, "
              f"{self.busy_after:.0%} after"
              + (f"; over {BUSY_LIMIT:.0%} during rows {disturbed} (marked busy!): "
                 "those figures are unreliable" if disturbed else
                 f"; under {BUSY_LIMIT:.0%} during every repetition"))

    def json_fields(self) -> dict:
        """The checks for the end of the --json document."""
        return {
            "dev_shm_leftovers": self.leaked, "dev_shm_other_new_entries": self.others,
            "machine_busy_before": self.busy_before, "machine_busy_after": self.busy_after,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


# ---------------------------------------------------------------------------------------------
# Child processes.
# ---------------------------------------------------------------------------------------------


def send_result(conn, body) -> None:
    """Runs body() in a child and sends ("ok", what it returned) or ("err", traceback) on
    the result pipe conn, which it then closes. An exception is re-raised after it is sent,
    so that the child also exits with an error."""
    try:
        conn.send(("ok", body()))
    except BaseException:  # noqa: BLE001 - report everything, including KeyboardInterrupt
        try:
            conn.send(("err", traceback.format_exc()))
        except Exception:  # noqa: BLE001
            pass
        raise
    finally:
        conn.close()


def run_child(fn, conn, barrier, *args) -> None:
    """The body of a child: meets the parent at the start barrier (so that process start is
    not timed), then runs fn(*args) and sends its result on conn (see send_result())."""

    def body():
        barrier.wait(SYNC_TIMEOUT)
        return fn(*args)

    send_result(conn, body)


class Children:
    """Starts spawn children that meet the parent at a barrier; always reaps them.

    Each child runs child_main(fn, conn, barrier, *args) for one (fn, args) of the specs:
    it waits at the barrier and sends ("ok", result) or ("err", traceback) on its result
    pipe, conn (see send_result()). A subclass may give another child_main (a module-level
    function, so that it can be pickled)."""

    child_main = staticmethod(run_child)

    def __init__(self, specs):
        self.specs = specs  # [(fn, args)]
        self.procs = []
        self.conns = []
        self.barrier = track_semaphores(CTX.Barrier(len(specs) + 1))

    def __enter__(self):
        for fn, args in self.specs:
            r, w = CTX.Pipe(duplex=False)
            p = CTX.Process(target=self.child_main, args=(fn, w, self.barrier, *args),
                            daemon=True)
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
        """The result of every child; raises if any child failed."""
        out = []
        for p, c in zip(self.procs, self.conns):
            if not c.poll(JOIN_TIMEOUT):
                raise RuntimeError(f"child {p.pid} sent no result (exitcode {p.exitcode})")
            status, a = c.recv()
            if status != "ok":
                raise RuntimeError(f"child {p.pid} failed:\n{a}")
            out.append(a)
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
    """Kills every child and exits if one repetition hangs: it lasts over row_timeout, or
    the parent is still waiting STALL_TIMEOUT after every child has exited (what the parent
    waits for was lost or never sent). The parent's waits carry no timeout, since a
    timeout changes the stdlib's code path.

    A subclass names the program (for the message), its row_timeout, and what may be lost."""

    program = "bench"
    row_timeout = 120.0  # seconds
    lost = "a message"

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
            if now - t0 > self.row_timeout:
                self._fire(f"took over {self.row_timeout:.0f} s")
            if all_exited_at and now - all_exited_at > STALL_TIMEOUT:
                codes = [p.exitcode for p in self.children.procs]
                self._fire(f"still waits {STALL_TIMEOUT:.0f} s after every child exited "
                           f"(exit codes {codes}): {self.lost} was lost or never sent")

    def _fire(self, why):
        sys.stderr.write(f"\n{self.program}: '{self.what}' {why}; killing the children and "
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


# ---------------------------------------------------------------------------------------------
# C helpers (bench/c).
# ---------------------------------------------------------------------------------------------


def build_c_helpers(build_dir: Path, names, allow_build: bool):
    """The paths of the C helpers `names` under build_dir, built (or brought up to date)
    with cmake unless allow_build is False; the build dir is configured first if it has no
    CMakeCache.txt. Returns ({name: path}, None), or (None, reason) if the build failed and
    not every helper exists; if it failed and they all exist, they are used as they are.
    Whether they exist is left to the caller when there was no build."""
    exe = {name: build_dir / "bench" / "c" / name for name in names}
    what = names[0] if len(names) == 1 else "the C helpers"
    if allow_build:
        try:
            if not (build_dir / "CMakeCache.txt").exists():
                subprocess.run(
                    ["cmake", "-S", str(REPO), "-B", str(build_dir), "-DMPX_BUILD_BENCH=ON",
                     "-DMPX_BUILD_PYTHON=OFF", "-DMPX_BUILD_TESTS=OFF",
                     "-DMPX_BUILD_EXAMPLES=OFF"],
                    check=True, capture_output=True, text=True, timeout=300)
            subprocess.run(["cmake", "--build", str(build_dir), "--target", *names],
                           check=True, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as e:
            out = getattr(e, "stderr", "") or getattr(e, "stdout", "") or ""
            if not all(p.exists() for p in exe.values()):
                return None, f"could not build {what} in {build_dir}: {e} {out[-400:]}"
            binaries = "binary" if len(names) == 1 else "binaries"
            print(f"note: rebuilding {what} failed, using the existing {binaries} ({e})",
                  file=sys.stderr)
    return exe, None


def run_json(cmd) -> dict:
    """Runs a C helper and returns the JSON object on the last line of its output."""
    r = subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True,
                       timeout=120)
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Rows, repetitions, report.
# ---------------------------------------------------------------------------------------------


def median(xs):
    """The median of xs, or None if there are none."""
    return statistics.median(xs) if xs else None


def fmt(v, unit: str) -> str:
    """A figure in `unit` as the table prints it ("-" for none)."""
    if v is None:
        return "-"
    if unit in ("msg/s", "records/s"):
        return f"{v / 1e6:.3f}M" if v >= 1e6 else f"{v / 1e3:.1f}K"
    if unit == "GB/s":
        return f"{v:.3f}"
    if unit in ("µs", "ns"):
        return f"{v:.1f}"
    if unit == "ms CPU":
        return f"{v:.3f}"
    return f"{v:.3g}"


def fmt_ratio(r) -> str:
    return "-" if r is None else f"{r:.2f}×"


class Row:
    """One line of the table: the figures of every repetition of ours and the stdlib, how
    much CPU other processes took during each, the failures, and the C floor beside it.
    A subclass says what its `target` means: met(), target_str() and to_dict()."""

    def __init__(self, key, title, unit, target, note="", paired=False):
        self.key, self.title, self.unit, self.target = key, title, unit, target
        self.note = note
        # paired: ours and the stdlib are timed side by side within each repetition, so the
        # ratio is the median of the per-repetition ratios rather than a ratio of medians.
        self.paired = paired
        self.reps = {"ours": [], "stdlib": []}
        self.foreign = {"ours": [], "stdlib": []}  # CPU share of other processes, per rep
        self.extra = {"ours": [], "stdlib": []}  # per-repetition details
        self.errors = {}
        self.floor = None  # (label, value, unit)
        self.floor_ratio = None
        self.floor_reps = []

    def disturbed(self) -> bool:
        """Whether other processes took over BUSY_LIMIT of the CPUs in some repetition."""
        return any(x > BUSY_LIMIT for xs in self.foreign.values() for x in xs)

    def value(self, impl):
        return median(self.reps[impl])

    def ratio(self):
        """Ours over the stdlib: the ratio of the medians (of the per-repetition ratios
        for a paired row), or None."""
        if self.paired and self.reps["ours"] and len(self.reps["ours"]) == len(self.reps["stdlib"]):
            return median([o / s for o, s in zip(self.reps["ours"], self.reps["stdlib"]) if s > 0])
        o, s = self.value("ours"), self.value("stdlib")
        if o is None or s is None or s == 0:
            return None
        return o / s

    def set_floor_value(self, label, value, unit) -> None:
        """Sets the floor printed beside the row, and ours as a fraction of it."""
        self.floor = (label, value, unit)
        o = self.value("ours")
        if o is not None and value:
            self.floor_ratio = o / value

    def set_floor_reps(self, label, reps, unit):
        """Sets the floor from its repetitions (their median), if there are any."""
        self.floor_reps = list(reps)
        if reps:
            self.set_floor_value(label, median(reps), unit)

    def met(self):
        """True or False once the target can be judged, else None."""
        raise NotImplementedError

    def target_str(self) -> str:
        raise NotImplementedError

    def ratio_str(self) -> str:
        return fmt_ratio(self.ratio())

    def cells(self) -> list[str]:
        """The row as the table prints it, one string per column of a header."""
        status = {True: "yes", False: "NO", None: "-" if self.target is None else "n/a"}[
            self.met()]
        if self.disturbed():
            status += " (busy!)"
        if self.errors:
            status += " (error: " + ", ".join(sorted(self.errors)) + ")"
        floor = "-"
        if self.floor is not None:
            label, value, unit = self.floor
            floor = f"{label} {fmt(value, unit)} {unit}"
            if self.floor_ratio is not None:
                floor += f" (ours {self.floor_ratio:.2f}×)"
        return [self.title, self.unit, fmt(self.value("ours"), self.unit),
                fmt(self.value("stdlib"), self.unit), self.ratio_str(), self.target_str(),
                status, floor]



class RatioRow(Row):
    """A row whose `target` is the ratio ours/stdlib to reach: a minimum when higher is
    better, else a maximum; None for an informational row."""

    def __init__(self, key, title, unit, target, higher_is_better=True, note="", paired=False):
        super().__init__(key, title, unit, target, note, paired)
        self.higher = higher_is_better

    def met(self):
        r = self.ratio()
        if r is None or self.target is None:
            return None
        return r >= self.target if self.higher else r <= self.target

    def target_str(self):
        if self.target is None:
            return "(info)"
        return f"{'≥' if self.higher else '≤'} {self.target:g}×"

def table_header(floor_column: str) -> list[str]:
    return ["row", "unit", "ours", "stdlib", "ratio", "target", "met", floor_column]


def print_text_table(header, rows) -> None:
    data = [header] + [r.cells() for r in rows]
    widths = [max(len(r[i]) for r in data) for i in range(len(header))]
    for k, r in enumerate(data):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


def print_markdown_table(header, rows) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(c.replace("|", "\\|") for c in row.cells()) + " |")


def measure_row(row: Row, fn, reps: int, impls, verbose: bool, quiet_wait: float,
                before_rep=None) -> None:
    """Runs fn(impl) reps times per implementation, alternating which goes first, and
    records how much CPU other processes took during each repetition. before_rep(rep), if
    given, runs at the start of every repetition (a C floor)."""
    for rep in range(reps):
        order = impls if rep % 2 == 0 else tuple(reversed(impls))
        if before_rep is not None:
            before_rep(rep)
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
            # Drop this repetition's objects now: the stdlib's finalizers unlink their
            # semaphores from /dev/shm when the objects die.
            gc.collect()
            load = foreign_load(snap, cpu_snapshot())
            row.reps[impl].append(v)
            row.foreign[impl].append(load)
            if verbose:
                print(f"  {row.key} [{impl}] rep {rep + 1}: {fmt(v, row.unit)} {row.unit}"
                      f"  (other processes: {load:.0%} CPU)", file=sys.stderr)


def run_summary(reps: int, elapsed: float, quick: bool) -> str:
    """The end of the table's title line: repetitions, machine, time taken."""
    return (f"median of {reps} reps; {os.cpu_count()} CPUs; Python {platform.python_version()}; "
            f"{elapsed:.0f} s" + (" (QUICK)" if quick else ""))


def run_info(bench: str, quick: bool, reps: int, elapsed: float) -> dict:
    """The start of the --json document."""
    return {
        "bench": bench, "quick": quick, "reps": reps, "elapsed_s": elapsed,
        "python": platform.python_version(), "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def end_report(args, header, rows, checks: RunChecks, doc: dict) -> None:
    """The end of a run's report, after the table and the script's notes: the checks, the
    markdown table (--markdown), and the --json file: `doc` (what the script adds to
    run_info()), then the rows and the checks."""
    checks.print_report(rows)
    if args.markdown:
        print()
        print_markdown_table(header, rows)
    if args.json:
        doc = {**doc, "rows": [r.to_dict() for r in rows], **checks.json_fields()}
        Path(args.json).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def exit_status(rows, checks: RunChecks, ours_missing: bool) -> int:
    """1 if a row failed or the run left a semaphore in /dev/shm, else 2 if ours was asked
    for and could not be measured, else 0."""
    if any(r.errors for r in rows) or checks.leaked:
        return 1
    if ours_missing:
        return 2
    return 0


# ---------------------------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------------------------


def argument_parser(doc: str, *, quick_help: str, build_help: str, no_build_help: str,
                    pythonpath_help: str, only_help: str) -> argparse.ArgumentParser:
    """The options both benchmarks take; the help of the ones whose meaning differs comes
    from the script. The description is the first paragraph of `doc`."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--reps", type=int, default=None, help="repetitions per figure (default 5)")
    ap.add_argument("--json", metavar="FILE", help="write machine-readable results to FILE")
    ap.add_argument("--markdown", action="store_true", help="also print a GitHub table")
    ap.add_argument("--build-dir", default=str(REPO / "build"), help=build_help)
    ap.add_argument("--no-build", action="store_true", help=no_build_help)
    ap.add_argument("--pythonpath", default=None, help=pythonpath_help)
    ap.add_argument("--only", default=None, help=only_help)
    ap.add_argument("--impls", default="ours,stdlib",
                    help="implementations to measure, comma-separated (default: ours,stdlib)")
    ap.add_argument("--stdlib-only", action="store_true", help="same as --impls stdlib")
    ap.add_argument("--wait-quiet", type=float, default=30.0, metavar="SECONDS",
                    help="before each repetition, wait up to SECONDS for other processes to "
                         "leave the CPUs (default 30; 0: never wait); at most 8 times that "
                         "over the whole run")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every repetition")
    return ap


def wanted_impls(ap: argparse.ArgumentParser, args) -> list[str]:
    """The implementations --impls / --stdlib-only ask for; a usage error for others."""
    wanted = ["stdlib"] if args.stdlib_only else [i for i in args.impls.split(",") if i]
    if any(i not in ("ours", "stdlib") for i in wanted) or not wanted:
        ap.error("--impls takes ours, stdlib or both")
    return wanted
