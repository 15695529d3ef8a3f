"""The Python examples of the tour run and print what they promise."""

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "python"


def run_example(name: str) -> str:
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_queue_pipeline_example():
    out = run_example("queue_pipeline.py").splitlines()
    assert out[0] == "doubled: [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]"
    assert out[1] == "array: (2000000,) float64 correct: True"
    assert out[2].startswith("unpicklable item refused: ")
    assert out[2].endswith("| items queued: 0")
    assert out[3] == "worker exit code: 0"


def test_sync_recovery_example():
    out = run_example("sync_recovery.py").splitlines()
    assert out == [
        "all three arrived",
        "results in order: [0, 1, 4]",
        "acquire raised OwnerDiedError; the dead holder was the worker: True",
        "the lock works again: True",
    ]


def run_example_raising(name: str) -> tuple[str, str]:
    """Runs an example that ends with an uncaught exception by design (exit status 1)."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    return proc.stdout, proc.stderr


LOG_LINE = (
    r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,(\d{3})\.\d{2,3}; (\w+); ([\w.]+); (\w+), (\d+)\] "
    r"\[([\w-]+)\]  (.*)"
)


def test_log_example():
    import re

    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "log.py")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    parsed = []
    for line in lines:
        m = re.fullmatch(LOG_LINE, line)
        assert m, line
        parsed.append(m.groups()[1:])
    # Every worker line has the parent's format, the worker's function, line and process
    # name, all four levels (the parent's DEBUG applies), in order, between the parent's
    # lines before start() and after join().
    assert parsed == [
        ("ERROR", "main.error", "main", "17", "MainProcess", "main error"),
        ("INFO", "main.info", "main", "18", "MainProcess", "main info"),
        ("ERROR", "worker.error", "worker", "11", "SpawnProcess-1", "worker error"),
        ("WARNING", "worker.warn", "worker", "12", "SpawnProcess-1", "worker warning"),
        ("INFO", "worker.info", "worker", "13", "SpawnProcess-1", "worker info"),
        ("DEBUG", "worker.debug", "worker", "14", "SpawnProcess-1", "worker debug"),
        ("WARNING", "main.warn", "main", "22", "MainProcess", "main warning"),
        ("DEBUG", "main.debug", "main", "23", "MainProcess", "main debug"),
    ]


def _check_error_output(
    name: str, raise_line: int, main_line: int, origin: str, child_lines: list[str],
    absent: tuple[str, ...] = (),
):
    out, err = run_example_raising(name)
    assert out.splitlines() == ["(1, 2)", "(3, 4)"]
    remote, sep, local = err.partition(
        "\n\nThe above exception was the direct cause of the following exception:\n\n"
    )
    assert sep, err
    # The remote part: the child's traceback, starting with its process name, naming the
    # line that failed.
    first = remote.splitlines()[0]
    assert first == (
        "mpservice.multiprocessing.remote_exception.RemoteTraceback: "
        f"[{origin}] Traceback (most recent call last):"
    )
    for line in child_lines:
        assert line in remote, remote
    for text in absent:
        assert text not in remote, remote
    assert remote.rstrip().endswith('TypeError: can only concatenate str (not "int") to str')
    # The local part: where the parent raised it.
    assert f'line {main_line}, in <module>' in local
    assert f'line {raise_line}, in main\n    raise y[1]' in local
    assert local.rstrip().endswith('TypeError: can only concatenate str (not "int") to str')


def test_error_example_one_hop():
    _check_error_output(
        "error.py",
        raise_line=35,
        main_line=39,
        origin="SpawnProcess-1",
        child_lines=['error.py", line 15, in increment\n    qout.put((x, x + 1))'],
    )


def test_error_example_two_hops():
    _check_error_output(
        "error_two_hops.py",
        raise_line=52,
        main_line=56,
        origin="SpawnProcess-1:1",  # the grandchild: the exception crossed two processes
        child_lines=['error_two_hops.py", line 16, in increment\n    qout.put((x, x + 1))'],
        # worker() passed it on, wrapped again without raising it: nothing of it is added.
        absent=("in worker",),
    )
