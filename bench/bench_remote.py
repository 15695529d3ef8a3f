#!/usr/bin/env python3
"""RemoteException benchmark: a pickle round trip of mpservice's RemoteException against
the same in pure Python, in one run.

The row of the project's performance targets (PERF.md; see bench/README.md):

* remote     pickle.loads(pickle.dumps(RemoteException(e))) for a ValueError raised five
             frames deep, µs (target <= 1.0x the pure-Python baseline). Wrapping is timed
             too, since that is where the traceback is formatted.
* remote_text  (information) the same with the traceback given as text, so that nothing
             is formatted: what is left is the pickling alone, where the two designs
             differ (ours sends the exception as bytes of its own, so that the receiver
             can fall back to a stand-in).

The baseline (BaselineRemoteException below) is the straightforward design: the text is
''.join(traceback.format_exception(...)) with the same "[<process name>] " prefix as ours,
__reduce__ returns (rebuild, (exc, text)), and rebuild sets exc.__cause__ to a
RemoteTraceback(text). It produces the same text as ours; the script checks that before it
measures, and checks every repetition's last result. Formatting is most of a round trip;
ours formats the same text for less (it walks the chain itself instead of calling
TracebackException.format(), which passes every line through textwrap.indent()), and its
pickling costs about the baseline's although the exception travels as bytes of its own.

Each repetition times ROUNDS short loops of every contender (ours, the baseline, and the
floor) interleaved, the order alternating, and keeps each one's fastest loop, as timeit
does: on this VM the speed of a loop changes within a second, so two figures are only
comparable when taken close together. The ratio is the median of the per-repetition
ratios. The floor of the first row is the stdlib's formatting alone
(traceback.format_exception joined), what the baseline pays for its text; that of the
second is pickle.loads(pickle.dumps(e)) of the bare exception.

    python3 bench/bench_remote.py [--quick] [--reps N] [--json FILE] [--markdown]
"""
from __future__ import annotations

import argparse
import gc
import importlib
import pickle
import sys
import time
import traceback
from multiprocessing import current_process
from pathlib import Path

# bench/benchlib.py, next to this script (whose directory is sys.path[0] when run as one).
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
from benchlib import RunChecks, cpu_snapshot, foreign_load, median, wait_quiet  # noqa: E402

ROUNDS = 10  # loops per contender per repetition; the fastest is kept
DEPTH = 5  # frames between the `try` and the `raise`

OURS = None  # mpservice.multiprocessing.remote_exception, once imported
OUR_IMPORT_ERROR = None
OUR_LOCATION = None


# ---------------------------------------------------------------------------------------------
# The pure-Python baseline.
# ---------------------------------------------------------------------------------------------


class BaselineRemoteTraceback(Exception):
    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def baseline_rebuild(exc: BaseException, tb: str) -> BaseException:
    exc.__cause__ = BaselineRemoteTraceback(tb)
    return exc


class BaselineRemoteException:
    def __init__(self, exc: BaseException, tb=None) -> None:
        if tb is None:
            tb = exc.__traceback__
        if not isinstance(tb, str):
            tb = f"[{current_process().name}] " + "".join(
                traceback.format_exception(type(exc), exc, tb))
        self.exc = exc
        self.tb = tb

    def __reduce__(self):
        return baseline_rebuild, (self.exc, self.tb)


# ---------------------------------------------------------------------------------------------
# Timed loops.
# ---------------------------------------------------------------------------------------------


def _raise(depth: int) -> None:
    if depth <= 1:
        raise ValueError("bad value: 38")
    _raise(depth - 1)


def make_error() -> ValueError:
    """A ValueError raised DEPTH frames below the `try` (its traceback has DEPTH + 1)."""
    try:
        _raise(DEPTH)
    except ValueError as e:
        return e
    raise AssertionError("not raised")


def _loop_round_trip(cls, exc, tb, n: int):
    dumps, loads = pickle.dumps, pickle.loads
    clock = time.perf_counter_ns
    t0 = clock()
    for _ in range(n):
        out = loads(dumps(cls(exc, tb)))
    return clock() - t0, out


def _loop_format(exc, tb, n: int):
    fmt = traceback.format_exception
    clock = time.perf_counter_ns
    t0 = clock()
    for _ in range(n):
        out = "".join(fmt(type(exc), exc, tb))
    return clock() - t0, out


def _loop_plain(exc, tb, n: int):
    dumps, loads = pickle.dumps, pickle.loads
    clock = time.perf_counter_ns
    t0 = clock()
    for _ in range(n):
        out = loads(dumps(exc))
    return clock() - t0, out


def check_result(impl: str, out, text: str) -> None:
    """A round trip gave a ValueError whose cause carries `text`."""
    if type(out) is not ValueError or out.args != ("bad value: 38",):
        raise AssertionError(f"{impl}: round trip gave {out!r}")
    if out.__traceback__ is not None or str(out.__cause__) != text:
        raise AssertionError(f"{impl}: round trip lost the traceback text")


class Row(benchlib.Row):
    """One line of the table: µs per round trip, ours against the baseline (in the
    "stdlib" slot of benchlib.Row); `target` is the ratio to reach (a maximum), or None for
    an informational row."""

    def __init__(self, key, title, target, text_tb: bool):
        super().__init__(key, title, "µs", target)
        self.text_tb = text_tb  # the traceback is given as text: nothing is formatted
        self.floor_reps = []

    def ratio(self):
        pairs = list(zip(self.reps["ours"], self.reps["stdlib"]))
        if not pairs or len(self.reps["ours"]) != len(self.reps["stdlib"]):
            return super().ratio()
        return median([o / s for o, s in pairs if s > 0])

    def met(self):
        r = self.ratio()
        return None if self.target is None or r is None else r <= self.target

    def target_str(self):
        return "(info)" if self.target is None else f"≤ {self.target:g}×"

    def to_dict(self):
        return {
            "key": self.key, "title": self.title, "unit": self.unit,
            "ours": self.value("ours"), "baseline": self.value("stdlib"),
            "ratio": self.ratio(), "ratio_kind": "median of per-rep ratios",
            "target": self.target, "met": self.met(),
            "ours_reps": self.reps["ours"], "baseline_reps": self.reps["stdlib"],
            "foreign_load": self.foreign, "disturbed": self.disturbed(),
            "floor": self.floor, "floor_reps": self.floor_reps,
            "ours_vs_floor": self.floor_ratio, "errors": self.errors,
        }


def measure(row: Row, n: int, reps: int, verbose: bool, quiet_wait: float) -> None:
    """Fills the row: per repetition, the fastest of ROUNDS interleaved loops of n round
    trips of each contender, in µs per round trip."""
    exc = make_error()
    text = BaselineRemoteException(exc).tb
    if OURS is not None:
        ours_text = OURS.RemoteException(exc).tb
        if ours_text != text:
            raise AssertionError(f"ours and the baseline format differently:\n{ours_text}\n"
                                 f"---\n{text}")
    tb = text if row.text_tb else None
    loops = {"stdlib": lambda: _loop_round_trip(BaselineRemoteException, exc, tb, n)}
    if OURS is not None:
        loops["ours"] = lambda: _loop_round_trip(OURS.RemoteException, exc, tb, n)
    if row.text_tb:
        loops["floor"] = lambda: _loop_plain(exc, None, n)
    else:
        loops["floor"] = lambda: _loop_format(exc, exc.__traceback__, n)
    keys = list(loops)
    for rep in range(reps):
        if quiet_wait > 0:
            wait_quiet(quiet_wait)
        best = dict.fromkeys(keys)
        last = {}
        snap = cpu_snapshot()
        gc_was = gc.isenabled()
        gc.disable()
        try:
            t_end = time.perf_counter() + 0.05  # bring the vCPU out of idle first
            while time.perf_counter() < t_end:
                pass
            for r in range(ROUNDS):
                for k in (keys if (r + rep) % 2 == 0 else reversed(keys)):
                    t, last[k] = loops[k]()
                    best[k] = t if best[k] is None else min(best[k], t)
        finally:
            if gc_was:
                gc.enable()
        load = foreign_load(snap, cpu_snapshot())
        for impl in ("ours", "stdlib"):
            if impl not in loops:
                continue
            check_result(impl, last[impl], text)
            v = best[impl] / n / 1e3
            row.reps[impl].append(v)
            row.foreign[impl].append(load)
            if verbose:
                print(f"  {row.key} [{impl}] rep {rep + 1}: {v:.2f} µs"
                      f"  (other processes: {load:.0%} CPU)", file=sys.stderr)
        row.floor_reps.append(best["floor"] / n / 1e3)
        gc.collect()
    row.set_floor_value("format_exception" if not row.text_tb else "pickle(e) alone",
                        median(row.floor_reps), "µs")


HEADER = ["row", "unit", "ours", "pure Python", "ratio", "target", "met", "floor (same run)"]


def main(argv=None) -> int:
    global OURS, OUR_LOCATION, OUR_IMPORT_ERROR
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 repetitions of shorter loops")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per figure (default 5)")
    ap.add_argument("--json", metavar="FILE", help="write machine-readable results to FILE")
    ap.add_argument("--markdown", action="store_true", help="also print a GitHub table")
    ap.add_argument("--pythonpath", default=None,
                    help="directory holding mpservice (default: <repo>/python if built there, "
                         "else sys.path)")
    ap.add_argument("--wait-quiet", type=float, default=30.0, metavar="SECONDS",
                    help="before each repetition, wait up to SECONDS for other processes to "
                         "leave the CPUs (default 30; 0: never wait)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every repetition")
    args = ap.parse_args(argv)

    quick = args.quick
    reps = args.reps or (3 if quick else 5)
    n = 50 if quick else 200  # round trips per timed loop

    OURS, OUR_LOCATION, OUR_IMPORT_ERROR = benchlib.import_ours(
        args.pythonpath,
        lambda: importlib.import_module("mpservice.multiprocessing.remote_exception"))
    if OURS is None:
        print("*** mpservice.multiprocessing.remote_exception is NOT importable: "
              f"{OUR_IMPORT_ERROR}\n*** measuring the baseline only.", file=sys.stderr)

    checks = RunChecks(args.wait_quiet)
    t_start = time.monotonic()
    rows = [
        Row("remote", f"RemoteException round trip, traceback {DEPTH + 1} frames", 1.0,
            text_tb=False),
        Row("remote_text", "the same, traceback given as text (pickling only)", None,
            text_tb=True),
    ]
    for row in rows:
        print(f"[{time.monotonic() - t_start:6.1f}s] {row.title} ...", file=sys.stderr)
        try:
            measure(row, n, reps, args.verbose, args.wait_quiet)
        except Exception as e:  # noqa: BLE001 - report it in the table
            row.errors["ours"] = f"{type(e).__name__}: {e}"
            print(f"  {row.key} FAILED: {row.errors['ours']}", file=sys.stderr)
    elapsed = time.monotonic() - t_start
    checks.finish()

    print()
    print("RemoteException benchmark: ours = mpservice.multiprocessing.remote_exception."
          "RemoteException, pure Python = the straightforward design in this script; "
          + benchlib.run_summary(reps, elapsed, quick))
    print(f"ours imported from {OUR_LOCATION}" if OURS is not None
          else f"ours NOT MEASURED: {OUR_IMPORT_ERROR}")
    benchlib.print_text_table(HEADER, rows)
    print(f"(µs per pickle.loads(pickle.dumps(RemoteException(e))), wrapping included; per "
          f"rep the fastest of {ROUNDS} loops of {n}, interleaved with the other side's; "
          "ratio = median of the per-rep ratios)")
    benchlib.end_report(args, HEADER, rows, checks, {
        **benchlib.run_info("remote", quick, reps, elapsed),
        "ours_location": OUR_LOCATION, "ours_import_error": OUR_IMPORT_ERROR,
        "sizes": {"round_trips_per_loop": n, "loops_per_rep": ROUNDS,
                  "traceback_frames": DEPTH + 1},
    })
    return benchlib.exit_status(rows, checks, ours_missing=OURS is None)


if __name__ == "__main__":
    sys.exit(main())
