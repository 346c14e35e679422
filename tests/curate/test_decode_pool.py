"""The local engine's decode threads: the same manifest as one thread (tar members read safely from several
threads), the next batch decoded while this one's stages run, and nothing decoded for a fully written batch."""

from __future__ import annotations

import dataclasses
import tarfile
import threading
import time

import pytest

from sapiens2.curate import stages
from sapiens2.curate.config import ClipConfig, ClusterConfig, CurateConfig, DedupConfig, EngineConfig, load_config
from sapiens2.curate.engine import curate
from sapiens2.curate.sources import collect_items
from tests.curate.conftest import colour_detector

CONFIG = CurateConfig(clip=ClipConfig(enabled=False), dedup=DedupConfig(deep=False),
                      cluster=ClusterConfig(enabled=False), engine=EngineConfig(batch_size=8, decode_workers=3))


@pytest.fixture
def decodes(monkeypatch):
    """Every decode, as the name of the thread that ran it."""
    seen: list[str] = []
    real = stages.decode_image

    def counted(*args, **kwargs):
        seen.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(stages, "decode_image", counted)
    return seen


def test_threads_give_the_one_thread_manifest_from_files_and_tar_members(corpus, tmp_path, decodes):
    shard = tmp_path / "corpus.tar"
    with tarfile.open(shard, "w") as tar:
        for p in sorted(corpus.root.iterdir()):
            tar.add(p, arcname=p.name)
    items = collect_items([str(corpus.root), str(shard)])
    one = dataclasses.replace(CONFIG, engine=EngineConfig(batch_size=8, decode_workers=1))
    a = curate(items, tmp_path / "one", one, detector=colour_detector, shards=False, report=False)
    decodes.clear()
    b = curate(items, tmp_path / "three", CONFIG, detector=colour_detector, shards=False, report=False)
    assert b.table.equals(a.table) and "decode" in set(b.table["reason"].to_pylist())
    assert len(decodes) == len(items) and {t.rsplit("_", 1)[0] for t in decodes} == {"curate-decode"}
    assert len(set(decodes)) > 1  # several threads did decode


def test_the_next_batch_decodes_while_this_ones_stages_run(corpus, tmp_path, decodes):
    items = collect_items([str(p) for p in corpus.originals])[:16]  # two batches of 8 that all decode
    waited = []

    def detector(image):
        if not waited:  # the first batch's first image: wait for the second batch's decodes to start
            deadline = time.monotonic() + 10
            while len(decodes) <= 8 and time.monotonic() < deadline:
                time.sleep(0.01)
            waited.append(len(decodes))
        return colour_detector(image)

    curate(items, tmp_path, CONFIG, detector=detector, shards=False, report=False)
    assert waited[0] > 8


def test_a_resumed_run_with_every_part_written_decodes_nothing(corpus, tmp_path, decodes):
    items = collect_items([str(corpus.root)])
    first = curate(items, tmp_path, CONFIG, detector=colour_detector, shards=False, report=False)
    decodes.clear()
    again = curate(items, tmp_path, CONFIG, detector=colour_detector, resume=True, shards=False, report=False)
    assert decodes == [] and again.computed == {} and again.table.equals(first.table)


def test_decode_workers_must_not_be_negative(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[engine]\ndecode_workers = -1\n")
    with pytest.raises(ValueError, match=r"engine.decode_workers must be >= 0"):
        load_config(p)
