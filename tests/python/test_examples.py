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
