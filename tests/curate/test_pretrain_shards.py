"""The curate output is a pretraining source as it is: one shard layout (`sapiens2.training.shards`), streamed by
the pretrain data loader and trained on for a step; shards already written are kept on a rerun."""

import json

import numpy as np
import pytest
import torch

from sapiens2.curate.config import ClipConfig, ClusterConfig, CurateConfig, OutputConfig
from sapiens2.curate.engine import curate
from sapiens2.curate.shards import write_shards
from sapiens2.curate.sources import collect_items
from sapiens2.pretrain.augment import MultiCrop
from sapiens2.pretrain.data import ShardViews, collate_views
from sapiens2.pretrain.runtime import Runtime
from sapiens2.pretrain.trainer import Pretrainer
from sapiens2.training.shards import ShardLoader, ShardStream, expand_shards, is_shard_spec
from tests.curate.conftest import colour_detector, thumb_embedder
from tests.pretrain.conftest import tiny_config

CONFIG = CurateConfig(cluster=ClusterConfig(levels=(3,), target=6), output=OutputConfig(shard_size=2, max_side=96),
                      clip=ClipConfig(enabled=False))


@pytest.fixture(scope="module")
def curated(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("curated")
    items = collect_items([str(corpus.root)])
    result = curate(items, out, CONFIG, detector=colour_detector, embedder=thumb_embedder, report=False)
    return out, result, items


def test_the_curate_folder_and_its_shards_folder_are_shard_sources(curated):
    out, result, _ = curated
    for spec in (out, out / "shards"):
        assert is_shard_spec(spec)
        shards, meta = expand_shards(spec)
        assert shards == [str(out / "shards" / f"shard-{n:06d}.tar") for n in range(3)]
        assert meta["source"] == "sapiens2 curate" and meta["samples"] == result.kept == 6
        assert (meta["image"], meta["metadata"]) == ("jpg", "json")
    stream = ShardStream(shards, lambda key, sample, rng: (key, json.loads(sample["json"])), buffer=1,
                         shuffle_shards=False)
    kept = [r["key"] for r in result.table.to_pylist() if r["kept"]]
    seen = [item for (item, _), _ in zip(stream, range(6))]
    assert [key for key, _ in seen] == kept  # manifest order, one sample per kept row, with its row
    assert all(row["kept"] and row["key"] == key for key, row in seen)


def test_the_pretrain_loader_streams_them_and_a_step_trains(curated, tmp_path, one_thread):
    out = curated[0]
    cfg = tiny_config(tmp_path, out, train={"num_iters": 1, "batch_size": 2})
    shards, _ = expand_shards(cfg.data.source)
    loader = ShardLoader(shards, ShardViews(MultiCrop(cfg.crops)), 2, collate_views, buffer=4)
    global_views, local_views = next(iter(loader))
    assert global_views.shape[1:] == (2, 3, 64, 48) and local_views.shape[1:] == (2, 3, 32, 32)
    trainer = Pretrainer(cfg, Runtime(0, 1, 0, torch.device("cpu"), "none"), printer=None)
    assert trainer.streaming
    metrics = trainer.train_step(*next(iter(trainer.batches())))
    assert np.isfinite(float(metrics["loss"])) and trainer.step == 1


def test_a_rerun_keeps_the_shards_already_written_and_rewrites_stale_ones(curated):
    out, result, items = curated
    folder = out / "shards"
    calls = []

    def run(fn, jobs):
        calls.append(wrote := [fn(j) for j in jobs])
        return wrote

    write_shards(items, result.table, folder, CONFIG.output, run=run)
    assert calls[-1] == [False, False, False]
    (folder / "shard-000001.tar").write_bytes(b"half a tar")
    (folder / "shard-000007.tar").write_bytes(b"from an earlier run")
    write_shards(items, result.table, folder, CONFIG.output, run=run)
    assert calls[-1] == [False, True, False]
    assert sorted(p.name for p in folder.glob("*.tar")) == [f"shard-{n:06d}.tar" for n in range(3)]
    assert expand_shards(out)[1]["samples"] == 6
