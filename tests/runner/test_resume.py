"""Ctrl-C stops cleanly after the current batch; --resume finishes the job with every output exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.runner.conftest import DENSE_SIZE, cli, temp_leftovers, write_photo

EXPECTED = ("_seg.npy", "_seg.jpg")
SLOW_DRIVER = """
import sys, time
from sapiens2.tasks import Segmenter
real = Segmenter.run
def slow(self, prepared):
    time.sleep(0.25)
    return real(self, prepared)
Segmenter.run = slow
from sapiens2.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _photos(folder: Path, n: int) -> list[Path]:
    return [write_photo(folder / f"sub{i % 2}" / f"img{i:02d}.jpg", seed=i) for i in range(n)]


def _outputs(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name not in ("errors.json", ".sapiens2-outputs"))


def _expected(photos: list[Path], root: Path) -> list[str]:
    return sorted(f"{p.parent.relative_to(root).as_posix()}/{p.stem}{s}" for p in photos for s in EXPECTED)


def test_interrupted_run_resumes_with_every_output_once(tmp_path, checkpoints, monkeypatch, capsys):
    from sapiens2.tasks import Segmenter

    src, out = tmp_path / "in", tmp_path / "out"
    photos = _photos(src, 6)
    real_run, calls = Segmenter.run, []

    def interrupted_on_third_batch(self, prepared):
        calls.append(len(prepared))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_run(self, prepared)

    monkeypatch.setattr(Segmenter, "run", interrupted_on_third_batch)
    args = ["seg", src, "--model", checkpoints["seg"], "--input-size", DENSE_SIZE, "--out", out, "--batch-size", "2",
            "--save", "npz,vis"]
    assert cli(*args) == 130
    done = _outputs(out)
    assert len(done) == 4 * len(EXPECTED)  # the two batches before the interrupt, complete
    assert json.loads((out / "errors.json").read_text())["count"] == 0
    assert not temp_leftovers(out)
    assert "--resume" in capsys.readouterr().err
    first = {name: (out / name).stat().st_mtime_ns for name in done}

    monkeypatch.setattr(Segmenter, "run", real_run)
    assert cli(*args, "--resume") == 0
    assert _outputs(out) == _expected(photos, src)
    assert {name: (out / name).stat().st_mtime_ns for name in done} == first  # not redone
    assert "done: 2 image(s)" in (err := capsys.readouterr().err) and "skipped 4 already done" in err
    assert not temp_leftovers(out)


def test_resume_redoes_only_inputs_with_a_missing_output(tmp_path, checkpoints, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    photos = _photos(src, 4)
    args = ["seg", src, "--model", checkpoints["seg"], "--input-size", DENSE_SIZE, "--out", out, "--save", "npz,vis"]
    assert cli(*args) == 0
    (out / "sub1" / "img01_seg.jpg").unlink()
    stale = out / "sub0" / ".img00_seg.npy.x1y2.sapiens2-tmp"
    stale.write_bytes(b"half a file")
    capsys.readouterr()
    assert cli(*args, "--resume") == 0
    err = capsys.readouterr().err
    assert "done: 1 image(s)" in err and "skipped 3 already done" in err
    assert _outputs(out) == _expected(photos, src) and not stale.exists()


def test_sigint_in_a_subprocess_stops_after_the_batch_then_resume_finishes(tmp_path, checkpoints):
    src, out = tmp_path / "in", tmp_path / "out"
    photos = _photos(src, 12)
    args = ["seg", str(src), "--model", str(checkpoints["seg"]), "--input-size", DENSE_SIZE, "--out", str(out),
            "--batch-size", "1", "--save", "npz,vis", "--no-progress", "--readers", "1"]
    driver = tmp_path / "slow_cli.py"  # the real command, each forward pass slowed so the signal lands midway
    driver.write_text(SLOW_DRIVER)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, str(driver), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "sub0" / "img00_seg.jpg").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    partial = _outputs(out)
    assert 0 < len(partial) < len(photos) * len(EXPECTED) and len(partial) % len(EXPECTED) == 0, partial
    assert (out / "errors.json").is_file() and not temp_leftovers(out)
    assert cli(*args, "--resume") == 0
    assert _outputs(out) == _expected(photos, src)
