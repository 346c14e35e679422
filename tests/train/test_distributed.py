"""`torchrun --standalone --nproc_per_node 2 -m sapiens2.train` on CPU (gloo): DDP, FSDP and HSDP (a 1 x 2 mesh,
with sharded checkpoints) train the same steps, and the checkpoint loads with `sapiens2.load`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sapiens2
from sapiens2.train.logger import read_csv_log
from sapiens2.training.config import dump_toml

from .conftest import make_data, tiny_config, tiny_v1_config

REPO = Path(__file__).resolve().parents[2]


def _torchrun(config: Path, *extra: str) -> subprocess.CompletedProcess:
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    cmd = [exe, "--standalone", "--nproc_per_node", "2", "-m", "sapiens2.train", str(config), "--no-progress", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    root = tmp_path_factory.mktemp("dist")
    data = make_data("seg", root / "data", n=4)
    out = {}
    for mode in ("ddp", "fsdp", "hsdp"):
        extra = {"shard_size": 2, "checkpoint": "sharded"} if mode == "hsdp" else {}
        cfg = tiny_config("seg", root / mode, data, num_iters=3, save_every=3, log_every=1, parallel=mode, **extra)
        path = root / f"{mode}.toml"
        path.write_text(dump_toml(cfg))
        proc = _torchrun(path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[mode] = (root / mode, proc)
    return out


@pytest.mark.parametrize("mode", ["ddp", "fsdp", "hsdp"])
def test_two_processes_train_and_checkpoint_loads(runs, mode):
    work, proc = runs[mode]
    assert f"2 process(es) on cpu, {mode}" in proc.stderr
    rows = read_csv_log(work / "train_log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    model = sapiens2.load(work / "model.safetensors")
    assert model.task == "seg"
    assert model(torch.randn(1, 3, 64, 48)).shape == (1, 4, 64, 48)


@pytest.mark.parametrize("mode", ["fsdp", "hsdp"])
def test_sharded_modes_agree_with_ddp(runs, mode):
    ddp = read_csv_log(runs["ddp"][0] / "train_log.csv")
    other = read_csv_log(runs[mode][0] / "train_log.csv")
    assert [r["loss"] for r in other] == pytest.approx([r["loss"] for r in ddp], rel=1e-4)
    a = sapiens2.load(runs["ddp"][0] / "model.safetensors").state_dict()
    b = sapiens2.load(runs[mode][0] / "model.safetensors").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    if mode == "hsdp":  # each process wrote its own shards of the checkpoint
        ckpt = runs[mode][0] / "checkpoints" / "iter_0000003"
        assert sorted(p.name for p in ckpt.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]


def test_fsdp_resumes(runs, tmp_path):
    work, _ = runs["fsdp"]
    config = work.parent / "fsdp.toml"
    proc = _torchrun(config, "--resume", "--set", "train.num_iters=4", "--set", "optim.warmup_iters=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr and "at step 3" in proc.stderr
    rows = read_csv_log(work / "train_log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]


def test_fsdp_shards_a_v1_model(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    data = make_data("normal", tmp_path / "data", n=4)
    cfg = tiny_v1_config("normal", tmp_path / "v1", data, num_iters=2, save_every=2, parallel="fsdp")
    path = tmp_path / "v1.toml"
    path.write_text(dump_toml(cfg))
    proc = _torchrun(path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es) on cpu, fsdp" in proc.stderr
    model = sapiens2.load(tmp_path / "v1" / "model.safetensors")
    assert type(model).__name__ == "Sapiens1TaskModel" and model.task == "normal"
    assert model(torch.randn(1, 3, 64, 48)).shape[1] == 3


def test_accumulation_under_ddp_and_fsdp_agrees(tmp_path):
    """Micro-batches whose backward skips the gradient all-reduce (DDP no_sync, FSDP2 without gradient sync)
    still give both wrappings the same steps."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    data = make_data("seg", tmp_path / "data", n=4)
    logs = {}
    for mode in ("ddp", "fsdp"):
        cfg = tiny_config("seg", tmp_path / mode, data, num_iters=2, save_every=2, batch_size=1, accumulate_steps=2,
                          parallel=mode)
        path = tmp_path / f"{mode}.toml"
        path.write_text(dump_toml(cfg))
        proc = _torchrun(path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        logs[mode] = read_csv_log(tmp_path / mode / "train_log.csv")
    assert [r["loss"] for r in logs["fsdp"]] == pytest.approx([r["loss"] for r in logs["ddp"]], rel=1e-4)
    a = sapiens2.load(tmp_path / "ddp" / "model.safetensors").state_dict()
    b = sapiens2.load(tmp_path / "fsdp" / "model.safetensors").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
