"""`sapiens2 shard` and fine-tuning from shards: lossless packing of every task's samples, streaming training that
resumes exactly (with sharded checkpoints), and the errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import sapiens2
from sapiens2.cli import main
from sapiens2.train.config import config_from_dict
from sapiens2.train.datasets.shards import ShardSource, decode_sample, pack_source
from sapiens2.train.loop import Trainer
from sapiens2.train.schema import DatasetConfig
from sapiens2.train.specs import TASK_SPECS
from sapiens2.training.checkpoint import is_sharded, resolve_checkpoint
from sapiens2.training.config import ConfigError, from_dict
from sapiens2.training.shards import expand_shards, iter_shard, materialize

from .conftest import make_data, tiny_config


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, (np.generic, float, int)):
        return float(a) == float(b)
    return a == b


@pytest.mark.parametrize("task", ["pose", "seg", "pointmap"])
def test_packed_samples_decode_to_what_the_source_loads(tmp_path, task):
    entry = make_data(task, tmp_path / "data", n=3)
    source = TASK_SPECS[task].source(from_dict(DatasetConfig, entry, "d"), "d")
    index = pack_source(task, source, tmp_path / "shards", max_count=2)
    meta = json.loads(index.read_text())
    assert meta["samples"] == len(source) and meta["task"] == task
    names, _ = expand_shards(tmp_path / "shards")
    decoded = [decode_sample(k, materialize(f)) for url in names for k, f in iter_shard(url)]
    assert len(decoded) == len(source)
    for i, got in enumerate(decoded):
        want = source.load(i)
        assert got.keys() == want.keys()
        for k in want:
            assert _same(want[k], got[k]), (i, k)
    if task == "pose":
        shard_source = ShardSource("pose", DatasetConfig(root=str(tmp_path / "shards")))
        assert shard_source.layout() == source.layout() and shard_source.num_keypoints == source.num_keypoints


def test_shard_command_packs_images_and_datasets(tmp_path, capsys):
    entry = make_data("seg", tmp_path / "seg", n=3)
    assert main(["shard", entry["root"], "--out", str(tmp_path / "s1"), "--task", "seg", "--max-count", "2"]) == 0
    assert "wrote 3 samples in 2 shard(s)" in capsys.readouterr().out
    images = tmp_path / "seg" / "images"
    assert main(["shard", str(images), "--out", str(tmp_path / "s2")]) == 0
    names, meta = expand_shards(tmp_path / "s2")
    first = materialize(next(iter_shard(names[0]))[1])
    src = sorted(images.iterdir())[0]
    assert first[src.suffix.lstrip(".")] == src.read_bytes() and json.loads(first["json"])["name"] == str(src)
    # errors: a folder with shards already, fields without --task, no images, a bad dataset field
    assert main(["shard", str(images), "--out", str(tmp_path / "s2")]) == 1
    assert "already holds shards" in capsys.readouterr().err
    assert main(["shard", str(images), "--out", str(tmp_path / "s3"), "--set", "labels=x"]) == 2
    assert main(["shard", str(tmp_path / "nothing"), "--out", str(tmp_path / "s4")]) == 1
    assert main(["shard", entry["root"], "--out", str(tmp_path / "s5"), "--task", "seg", "--set", "colour=1"]) == 2
    assert "dataset.colour" in capsys.readouterr().err
    assert main(["shard", str(images), "--out", str(tmp_path / "s6"), "--max-count", "0"]) == 2


def _shard_config(tmp_path, name: str, **train):
    entry = make_data("pose", tmp_path / "data", n=3)
    shards = tmp_path / "shards"
    if not shards.exists():
        source = TASK_SPECS["pose"].source(from_dict(DatasetConfig, entry, "d"), "d")
        pack_source("pose", source, shards, max_count=1)
    data = {"root": str(shards)}
    cfg = tiny_config("pose", tmp_path / name, data, **train)
    cfg["data"]["shuffle_buffer"] = 2
    cfg["data"]["augment"] = True
    return config_from_dict(cfg), entry


def test_fine_tuning_streams_shards_and_resumes_exactly(tmp_path):
    cfg, _ = _shard_config(tmp_path, "straight", num_iters=6, save_every=3, checkpoint="sharded")
    straight = Trainer(cfg, progress=False).fit()
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, work_dir=str(tmp_path / "other")))
    first = Trainer(other, progress=False).fit(stop_at=5)  # stopped after step 5; the last save is step 3
    assert len(first) == 5
    ckpt = resolve_checkpoint("auto", other.train.work_dir)
    assert ckpt.name == "iter_0000003" and is_sharded(ckpt)
    resumed = Trainer(other, resume="auto", progress=False)
    assert resumed.step == 3 and resumed.data_state["batches"] == 3
    rest = resumed.fit()
    assert [r["loss"] for r in rest] == [r["loss"] for r in straight[3:]]
    a = sapiens2.load(tmp_path / "straight" / "model.safetensors").state_dict()
    b = sapiens2.load(tmp_path / "other" / "model.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_shards_in_validation_or_mixed_with_folders_are_config_errors(tmp_path):
    cfg, entry = _shard_config(tmp_path, "bad", num_iters=2)
    with pytest.raises(ConfigError, match=r"data.val\[0\].root"):
        Trainer(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val=[cfg.data.train[0]])), progress=False)
    mixed = [cfg.data.train[0], from_dict(DatasetConfig, entry, "d")]
    with pytest.raises(ConfigError, match="mixes tar shards with folders"):
        Trainer(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train=mixed)), progress=False)
    with pytest.raises(ConfigError, match="holds pose samples, not seg"):
        ShardSource("seg", DatasetConfig(root=cfg.data.train[0].root))
