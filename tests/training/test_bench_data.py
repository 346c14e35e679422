"""The data-loading benchmark runs at a tiny size and prints its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_data.py"


def test_bench_data_tiny():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SCRIPT.parents[1])}
    proc = subprocess.run([sys.executable, str(SCRIPT), "data", "--n", "32", "--size", "64x48", "--workers", "0",
                           "--repeats", "1"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in proc.stdout.splitlines()[3:]]
    assert [r[:2] for r in rows] == [["folder", "0"], ["shards", "0"]] and all(float(r[2]) > 0 for r in rows)
