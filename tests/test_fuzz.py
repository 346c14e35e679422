"""The fuzzing harness: a short plain-Python run of every target finds no crash, and a crash is caught."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.mutate import mutate
from fuzz.run import fuzz_random
from fuzz.targets import TARGETS, Target

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["images", "checkpoint", "detections", "coco"])
def test_a_short_run_of_each_target_crashes_nothing(name, tmp_path):
    report = fuzz_random(TARGETS[name], runs=300, seconds=None, seed=0, crash_dir=tmp_path)
    assert report.execs == 300 and report.clean > 0 and report.accepted > 0
    assert report.crashes == []


def test_a_crash_is_recorded_once_per_kind_with_its_input(tmp_path):
    def run(data: bytes) -> None:
        if data.startswith(b"{"):
            raise KeyError("boom")
        raise ValueError("a clean refusal")

    target = Target("toy", lambda: [b"{}", b"[]"], run, lambda: (ValueError,))
    report = fuzz_random(target, runs=200, seconds=None, seed=1, crash_dir=tmp_path)
    assert [c["kind"].split(" at ")[0] for c in report.crashes] == ["KeyError"]
    assert Path(report.crashes[0]["input"]).read_bytes().startswith(b"{")
    assert report.clean > 0


def test_the_mutator_is_deterministic_and_changes_json_values():
    seed = b'{"bbox": [1, 2, 3, 4], "score": 0.5}'
    assert mutate(seed, random.Random(7), [seed]) == mutate(seed, random.Random(7), [seed])
    outputs = {mutate(seed, random.Random(k), [seed]) for k in range(200)}
    assert len(outputs) > 100
    parsed = [json.loads(o) for o in outputs if _is_json(o)]
    assert any(isinstance(p, dict) and "score" not in p for p in parsed)  # a field removed


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except (ValueError, RecursionError):
        return False
    return True


def test_the_documented_command_runs(tmp_path):
    run = subprocess.run([sys.executable, "-m", "fuzz.run", "--target", "checkpoint", "--runs", "50",
                          "--engine", "random", "--crash-dir", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["target"] == "checkpoint" and summary["engine"] == "random" and summary["execs"] == 50
