"""The training benchmark runs at a tiny size and prints its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_train.py"


def test_bench_train_tiny():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SCRIPT.parents[1])}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--task", "seg", "--sizes", "tiny", "--input", "64x48",
                           "--steps", "1", "--warmup", "1", "--precisions", "fp32"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("| size | precision | params (M) | step (ms)")
    row = [c.strip() for c in lines[3].strip("|").split("|")]
    assert row[:2] == ["tiny", "fp32"] and float(row[3]) > 0 and row[-1] == ""
