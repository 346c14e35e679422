"""Tar shards: writing, listing, and the stream's split, shuffle and exact resume."""

from __future__ import annotations

import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from sapiens2.training.shards import (
    ShardError,
    ShardLoader,
    ShardStream,
    ShardWriter,
    expand_shards,
    is_shard_spec,
    iter_shard,
    materialize,
    shard_members,
    shuffled,
    write_index,
    write_shard,
)

N = 45  # samples; shards of 4 -> 12 shards, the last one short


def _decode(key: str, sample: dict, rng: np.random.Generator) -> dict:
    return {"id": int(sample["id.txt"].decode()), "noise": float(rng.random())}


def _collate(items: list[dict]) -> dict:
    return {"id": torch.tensor([x["id"] for x in items]), "noise": torch.tensor([x["noise"] for x in items])}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    with ShardWriter(folder, max_count=4, metadata={"kind": "test"}) as w:
        for i in range(N):
            w.write(f"s{i:04d}", {"id.txt": str(i).encode(), "bin": bytes([i % 256]) * (i + 1)})
    return folder


def test_writer_makes_webdataset_tars_and_an_index(shards):
    index = json.loads((shards / "index.json").read_text())
    assert index["samples"] == N and index["kind"] == "test"
    assert [s["samples"] for s in index["shards"]] == [4] * 11 + [1]
    with tarfile.open(shards / "shard-000000.tar") as tar:
        assert tar.getnames()[:4] == ["s0000.id.txt", "s0000.bin", "s0001.id.txt", "s0001.bin"]
    key, files = next(iter_shard(str(shards / "shard-000002.tar")))
    assert key == "s0008" and materialize(files) == {"id.txt": b"8", "bin": bytes([8]) * 9}
    with pytest.raises(FileExistsError):
        ShardWriter(shards)
    w = ShardWriter(shards / "other")
    with pytest.raises(ValueError, match="key"):
        w.write("a.b", {"x": b""})


def test_shard_lists(shards):
    names, meta = expand_shards(shards)
    assert len(names) == 12 and meta["kind"] == "test"
    assert expand_shards(str(shards / "shard-{000000..000002}.tar"))[0] == names[:3]
    assert expand_shards(str(shards / "shard-00000[01].tar"))[0] == names[:2]
    assert is_shard_spec(shards) and is_shard_spec("https://host/x-{0..9}.tar") and not is_shard_spec(shards / "s")
    with pytest.raises(ShardError, match="missing"):
        expand_shards(str(shards / "shard-{000010..000013}.tar"))
    bad = shards.parent / "bad_index"
    bad.mkdir(exist_ok=True)
    (bad / "index.json").write_text("[1, 2]")
    with pytest.raises(ShardError, match="not a shard index"):
        expand_shards(bad)
    (bad / "broken.tar").write_bytes(b"not a tar" * 100)
    with pytest.raises(ShardError, match="broken.tar"):
        list(iter_shard(str(bad / "broken.tar")))


def test_buffer_shuffle_is_a_permutation():
    out = list(shuffled(range(100), 10, np.random.default_rng(0)))
    assert sorted(out) == list(range(100)) and out != list(range(100))
    assert list(shuffled(range(5), 1, np.random.default_rng(0))) == list(range(5))


def _epoch_ids(stream: ShardStream, workers: int, epoch: int) -> list[int]:
    """The ids each worker's stream reads in `epoch` (no DataLoader needed: a stream is a pure function)."""
    return [int(materialize(f)["id.txt"]) for w in range(workers)
            for _, f in stream.samples(stream.stream_of(w), epoch)]


def test_every_sample_once_per_epoch_across_ranks_and_workers(shards):
    names, _ = expand_shards(shards)
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            stream = ShardStream(names, _decode, rank, 2, num_workers=2, seed=3, buffer=5)
            seen += _epoch_ids(stream, 2, epoch)
        assert Counter(seen) == Counter(range(N)), epoch
    a = ShardStream(names, _decode, 0, 2, 2, seed=3, buffer=5)
    assert _epoch_ids(a, 2, 0) != _epoch_ids(a, 2, 1)  # a new order each epoch
    with pytest.raises(ShardError, match="at least one shard per stream"):
        ShardStream(names, _decode, 0, 4, num_workers=4)


def test_loader_with_workers_visits_every_sample_once_per_epoch(shards):
    """Real DataLoader workers on both ranks: the samples tagged epoch 0 are the dataset, once each."""
    names, _ = expand_shards(shards)
    seen = []
    for rank in (0, 1):
        loader = ShardLoader(names, _decode, 3, _collate, rank=rank, world_size=2, num_workers=2, seed=1, buffer=4)
        got = []
        for batch in loader:
            got += batch["id"].tolist()
            if all(p.epoch >= 1 for p in loader.positions.values()) and len(loader.positions) == 2:
                break
        ds = loader.dataset
        # the epoch-0 part of what each stream handed out is its epoch-0 samples, in order
        for w in range(2):
            s = ds.stream_of(w)
            first = [int(materialize(f)["id.txt"]) for _, f in ds.samples(s, 0)]
            assert set(first) <= set(got)
            seen += first
    assert Counter(seen) == Counter(range(N))


def test_resume_mid_epoch_continues_exactly(shards):
    names, _ = expand_shards(shards)
    kw = dict(batch_size=2, collate=_collate, rank=1, world_size=2, num_workers=2, seed=7, buffer=6)
    straight = []
    loader = ShardLoader(names, _decode, **kw)
    for batch in loader:
        straight.append((batch["id"].tolist(), batch["noise"].tolist()))
        if len(straight) == 14:  # past the end of some streams' first epoch
            break
    first = ShardLoader(names, _decode, **kw)
    it = iter(first)
    head = [next(it) for _ in range(5)]
    state = json.loads(json.dumps(first.state_dict()))  # plain values, as a checkpoint holds them
    resumed = ShardLoader(names, _decode, state=state, **kw)
    rest = []
    for batch in resumed:
        rest.append((batch["id"].tolist(), batch["noise"].tolist()))
        if len(rest) == 9:
            break
    assert [(b["id"].tolist(), b["noise"].tolist()) for b in head] + rest == straight
    assert resumed.state_dict()["batches"] == 14


def test_resume_with_another_layout_warns_and_restarts_the_epoch(shards, caplog):
    names, _ = expand_shards(shards)
    state = {"layout": [2, 2], "batches": 3, "positions": {"0": [1, 5], "1": [0, 9]}}
    loader = ShardLoader(names, _decode, 2, _collate, num_workers=0, state=state)
    assert "restarts" in caplog.text
    assert loader.positions == {0: loader.positions[0]} and loader.positions[0].epoch == 1
    assert loader.positions[0].ordinal == 0


def test_rejected_samples_are_skipped_and_counted(shards):
    names, _ = expand_shards(shards)

    def odd_only(key, sample, rng):
        i = int(sample["id.txt"])
        return None if i % 2 == 0 else {"id": i, "noise": 0.0}

    ids = []
    loader = ShardLoader(names, odd_only, 5, _collate, num_workers=0, buffer=1)
    for batch in loader:
        ids += batch["id"].tolist()
        if len(ids) >= 20:
            break
    assert all(i % 2 for i in ids) and len(set(ids)) == 20


def test_a_stream_with_no_usable_sample_is_an_error_not_a_hang(shards):
    names, _ = expand_shards(shards)
    loader = ShardLoader(names, lambda key, sample, rng: None, 2, _collate, num_workers=0)
    with pytest.raises(ShardError, match="no usable samples"):
        next(iter(loader))


def test_file_urls_read_like_paths(shards):
    names, _ = expand_shards(shards)
    assert [k for k, _ in iter_shard("file://" + names[0])] == [k for k, _ in iter_shard(names[0])]


def test_write_shard_is_one_atomic_shard_and_write_index_lists_it(tmp_path):
    path = tmp_path / "shard-000000.tar"
    assert write_shard(path, [("a", {"jpg": b"1", "json": b"{}"}), ("b", {"jpg": b"2"})]) == 2
    assert shard_members(path) == ["a.jpg", "a.json", "b.jpg"] and shard_members(tmp_path / "none.tar") is None
    for bad, words in (([("a", {"x": b""}), ("a", {"x": b""})], "twice"), ([("c.d", {"x": b""})], "key"),
                       ([("e", {})], "no files")):
        with pytest.raises(ValueError, match=words):
            write_shard(tmp_path / "bad.tar", bad)
        assert not list(tmp_path.glob("*bad*"))  # nothing half-written is left
    write_index(tmp_path, [{"name": path.name, "samples": 2}], {"kind": "test"})
    shards, meta = expand_shards(tmp_path)
    assert shards == [str(path)] and meta == {"samples": 2, "kind": "test"}


def test_a_curate_output_folder_is_read_through_its_shards_folder(tmp_path, shards):
    shutil.copytree(shards, tmp_path / "curated" / "shards")
    (tmp_path / "curated" / "manifest.parquet").write_bytes(b"")
    assert is_shard_spec(tmp_path / "curated")
    copied = [str(tmp_path / "curated" / "shards" / Path(p).name) for p in expand_shards(shards)[0]]
    assert expand_shards(tmp_path / "curated")[0] == copied == expand_shards(tmp_path / "curated" / "shards")[0]
    assert not is_shard_spec(tmp_path)  # a folder two levels above is not
