import shutil
import tarfile

import pytest

from sapiens2.curate.config import ClipConfig, ClusterConfig, CurateConfig, DedupConfig, PersonConfig
from sapiens2.curate.engine import curate
from sapiens2.curate.sources import collect_items, item_key
from sapiens2.io.inputs import MissingInputsError


def test_folders_globs_and_lists_give_each_image_once(corpus, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{corpus.originals[0]}\n{corpus.small[0]}\n")
    items = collect_items([str(corpus.root / "orig_0*.jpg"), str(listing), str(corpus.originals[1])])
    paths = [it.path for it in items]
    assert len(paths) == len(set(paths)) == 11  # orig_00..09 and small_0
    assert all(it.key == item_key(it.path) and "." not in it.key and len(it.key) == 16 for it in items)


def test_missing_sources_videos_and_bad_shards_are_errors(tmp_path):
    with pytest.raises(MissingInputsError, match="nothing-here"):
        collect_items([str(tmp_path / "nothing-here")])
    (tmp_path / "clip.mp4").write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match="videos are not curated"):
        collect_items([str(tmp_path / "clip.mp4")])
    (tmp_path / "bad.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ValueError, match="bad.tar: cannot read the tar shard"):
        collect_items([str(tmp_path / "bad.tar")])


def test_a_file_gone_after_listing_is_a_row_not_a_crash(corpus, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for p in corpus.originals[:2]:
        shutil.copy(p, src / p.name)
    items = collect_items([str(src)])
    (src / corpus.originals[0].name).unlink()
    config = CurateConfig(person=PersonConfig(enabled=False), dedup=DedupConfig(deep=False),
                          cluster=ClusterConfig(enabled=False), clip=ClipConfig(enabled=False))
    rows = curate(items, tmp_path / "out", config).table.to_pylist()
    assert rows[0]["reason"] == "decode" and rows[0]["detail"].startswith("UnreadableImageError")
    assert rows[1]["kept"]


def test_a_member_missing_from_its_shard(corpus, tmp_path):
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        tar.add(corpus.originals[0], arcname="a.jpg")
    (item,) = collect_items([str(shard)])
    with tarfile.open(shard, "w") as tar:  # rewritten without it
        tar.add(corpus.originals[1], arcname="b.jpg")
    from sapiens2.io.images import UnreadableImageError

    with pytest.raises(UnreadableImageError, match="a.jpg: no such member"):
        item.read_bytes()


def test_members_of_one_shard_are_read_through_one_open_file(corpus, tmp_path, monkeypatch):
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        for p in corpus.originals[:5]:
            tar.add(p, arcname=p.name)
    items = collect_items([str(shard)])
    opened = []
    real_open = tarfile.open
    monkeypatch.setattr(tarfile, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    assert [it.read_bytes() for it in items] == [p.read_bytes() for p in corpus.originals[:5]]
    assert len(opened) == 1
