"""`sapiens2.runner.pipeline.run_jobs` with a stand-in job: isolation of failures, order, overlap."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from sapiens2.io.writers import write_npy
from sapiens2.runner import RunOptions, collect_sources, run_jobs
from sapiens2.runner.jobs import Job
from tests.runner.conftest import write_photo


class MeanJob(Job):
    """Writes each image's mean colour; the 'network' refuses images whose height is `poison`."""

    def __init__(self, poison: int | None = None, infer_delay: float = 0.0, save_delay: float = 0.0) -> None:
        super().__init__("mean", None, frozenset({"npz"}))
        self.poison, self.infer_delay, self.save_delay = poison, infer_delay, save_delay
        self.batches: list[int] = []
        self.infer_threads: set[str] = set()
        self.save_threads: set[str] = set()

    def prepare(self, image, source):
        return image

    def run(self, prepared):
        self.infer_threads.add(threading.current_thread().name)
        self.batches.append(len(prepared))
        time.sleep(self.infer_delay)
        if any(p.shape[0] == self.poison for p in prepared):
            raise RuntimeError("CUDA error: an illegal memory access (simulated)")
        return [p.reshape(-1, 3).mean(0) for p in prepared]

    def finish(self, raw, prepared):
        return raw

    def outputs(self, source, out_dir):
        return [source.out(out_dir, "_mean.npy")]

    def save(self, result, image, prefix, kinds=None):
        self.save_threads.add(threading.current_thread().name)
        time.sleep(self.save_delay)
        return [write_npy(prefix.parent / f"{prefix.name}_mean.npy", result)]


def test_a_failing_batch_is_retried_one_by_one(tmp_path):
    for i in range(5):
        write_photo(tmp_path / "in" / f"p{i}.png", 33 if i == 3 else 40, 30, seed=i)
    sources, missing = collect_sources([str(tmp_path / "in")])
    job = MeanJob(poison=33)
    summary = run_jobs([job], sources, RunOptions(tmp_path / "out", batch_size=4, progress=False,
                                                  handle_sigint=False, echo=lambda m: None), missing)
    assert summary.images_done == 4 and summary.exit_code == 1
    (failure,) = summary.failures
    assert failure["file"].endswith("p3.png") and failure["stage"] == "inference" and "CUDA" in failure["reason"]
    assert job.batches == [4, 1, 1, 1, 1, 1]  # the failed batch of 4 again one at a time, then the fifth image
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npy")) == [f"p{i}_mean.npy" for i in (0, 1, 2, 4)]


def test_network_on_the_main_thread_writing_elsewhere_and_overlapped(tmp_path):
    for i in range(8):
        write_photo(tmp_path / "in" / f"p{i}.png", seed=i)
    sources, _ = collect_sources([str(tmp_path / "in")])
    job = MeanJob(infer_delay=0.1, save_delay=0.1)
    start = time.perf_counter()
    summary = run_jobs([job], sources, RunOptions(tmp_path / "out", batch_size=1, writers=1, progress=False,
                                                  handle_sigint=False))
    elapsed = time.perf_counter() - start
    assert summary.exit_code == 0 and summary.images_done == 8
    assert job.infer_threads == {threading.main_thread().name}
    assert all(name.startswith("sapiens2-write") for name in job.save_threads)
    assert elapsed < 0.8 * 8 * 0.2  # forward passes and writes overlap
    means = [np.load(tmp_path / "out" / f"p{i}_mean.npy") for i in range(8)]
    assert len({tuple(np.round(m, 3)) for m in means}) == 8
    assert isinstance(summary.errors_path, Path) and summary.errors_path.is_file()
