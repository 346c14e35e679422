"""The local engine end to end on the planted corpus: reasons, dedup recall, schema, shards, report, resume."""

import dataclasses
import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from sapiens2.curate.cluster import balanced_quota
from sapiens2.curate.config import (
    ClipConfig, ClusterConfig, CurateConfig, DedupConfig, OutputConfig, PersonConfig,
)
from sapiens2.curate.engine import MANIFEST_SCHEMA, curate
from sapiens2.curate.sources import MEMBER_SEP, collect_items
from tests.curate.conftest import Counting, colour_detector, thumb_embedder

NO_CLIP = ClipConfig(enabled=False)  # the CLIP stage has its own tests (test_clip.py)
CONFIG = CurateConfig(cluster=ClusterConfig(levels=(3,), target=6), output=OutputConfig(shard_size=4, max_side=200),
                      clip=NO_CLIP)


def _run(corpus, out, config=CONFIG, **kw):
    detector, embedder = Counting(colour_detector), Counting(thumb_embedder)
    result = curate(collect_items([str(corpus.root)]), out, config, detector=detector, embedder=embedder, **kw)
    return result, detector, embedder


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("curated")
    result, detector, embedder = _run(corpus, out)
    return out, result, {Path(r["path"]): r for r in result.table.to_pylist()}


def test_every_planted_case_gets_its_reason(corpus, run):
    _, _, rows = run
    for p in corpus.corrupt:
        assert rows[p]["reason"] == "decode" and not rows[p]["kept"]
    assert "TruncatedImageError" in rows[corpus.root / "corrupt_truncated.jpg"]["detail"]
    assert "NotAnImageError" in rows[corpus.root / "corrupt_text.jpg"]["detail"]
    for p in corpus.small:
        assert rows[p]["reason"] == "too_small" and rows[p]["width"] == 380 and rows[p]["height"] == 300
    for p in corpus.no_person:
        assert rows[p]["reason"] == "no_person" and rows[p]["person_count"] == 0
    # everything else passed the size and person stages and was hashed
    rest = [r for r in rows.values() if r["reason"] not in ("decode", "too_small", "no_person")]
    assert len(rest) == len(corpus.originals) + len(corpus.copies)
    assert all(r["phash"] and r["person_score"] == pytest.approx(0.9) and r["person_area"] > 0.05 for r in rest)


def test_dedup_recall_and_no_false_merge(corpus, run):
    _, _, rows = run
    found = sum(rows[c]["dedup_group"] == rows[o]["dedup_group"] for c, o in corpus.copies.items())
    assert found / len(corpus.copies) >= 0.95
    groups = [rows[o]["dedup_group"] for o in corpus.originals]
    assert len(set(groups)) == len(corpus.originals)  # no two distinct scenes merged
    for o in corpus.originals:  # one survivor per group, and it is a full-size member
        members = [r for r in rows.values() if r["dedup_group"] == rows[o]["dedup_group"]]
        survivors = [r for r in members if r["reason"] != "duplicate"]
        assert len(survivors) == 1
        assert survivors[0]["width"] * survivors[0]["height"] == max(m["width"] * m["height"] for m in members)
        assert all(r["detail"] == f"duplicate of {survivors[0]['key']}" for r in members if r is not survivors[0])


def test_balancing_evens_clusters(run, corpus):
    out, result, rows = run
    before = {c: b for c, (b, _) in result.cluster_sizes.items()}
    after = {c: a for c, (_, a) in result.cluster_sizes.items()}
    assert sum(before.values()) == len(corpus.originals) and sum(after.values()) == 6
    ids = sorted(before)
    assert [after[c] for c in ids] == balanced_quota(np.array([before[c] for c in ids]), 6).tolist()
    full = [after[c] for c in ids if before[c] > min(after.values())]  # clusters cut down are cut evenly
    assert max(full) - min(full) <= 1
    assert result.kept == 6
    assert sum(r["reason"] == "balance" for r in rows.values()) == len(corpus.originals) - 6
    assert all(r["cluster"] is not None for r in rows.values() if r["kept"])


def test_manifest_schema_and_one_row_per_input(corpus, run):
    out, result, rows = run
    table = pq.read_table(out / "manifest.parquet")
    assert table.schema == MANIFEST_SCHEMA
    assert table.num_rows == len(list(corpus.root.iterdir()))
    assert len(set(table["key"].to_pylist())) == table.num_rows
    kept = table["kept"].to_pylist()
    assert kept == [r is None for r in table["reason"].to_pylist()]


def test_shards_hold_the_kept_images_and_their_rows(run):
    out, result, rows = run
    kept = {r["key"]: r for r in rows.values() if r["kept"]}
    shards = sorted((out / "shards").glob("shard-*.tar"))
    assert len(shards) == 2  # 6 kept, 4 per shard
    seen = {}
    for shard in shards:
        with tarfile.open(shard) as tar:
            names = tar.getnames()
            assert [n.rsplit(".", 1)[1] for n in names] == ["jpg", "json"] * (len(names) // 2)
            for name in names[::2]:
                key = name[:-4]
                img = cv2.imdecode(np.frombuffer(tar.extractfile(name).read(), np.uint8), cv2.IMREAD_COLOR)
                meta = json.loads(tar.extractfile(f"{key}.json").read())
                assert max(img.shape[:2]) == 200 and (meta["shard_height"], meta["shard_width"]) == img.shape[:2]
                seen[key] = meta
    assert set(seen) == set(kept)
    assert all(seen[k]["path"] == kept[k]["path"] and seen[k]["kept"] for k in kept)


def test_report_pages_and_sheets(run):
    out, result, rows = run
    report = json.loads((out / "report" / "report.json").read_text())
    stages = {s["reason"]: s for s in report["stages"]}
    assert stages["decode"]["dropped"] == 2 and stages["too_small"]["dropped"] == 3
    assert stages["no_person"]["dropped"] == 3 and stages["kept"]["in"] == 6
    assert stages["duplicate"]["in"] == stages["no_person"]["in"] - 3
    html = (out / "report" / "index.html").read_text()
    for reason in ("decode", "too_small", "no_person", "duplicate", "balance"):
        sheet = out / "report" / f"reason-{reason}.png"
        assert sheet.is_file() and f"reason-{reason}.png" in html
        assert cv2.imread(str(sheet)).shape[0] >= 96
    assert "<svg" in html and "before balancing" in html
    assert set(report["images_per_second"]) == set(result.computed) and "images/s" in html
    assert result.rows["decode"] == len(rows) and result.rows["person"] == len(rows) - 5
    assert report["cluster_sizes"] and sum(v["after"] for v in report["cluster_sizes"].values()) == 6


def test_resume_recomputes_nothing_and_a_new_threshold_only_what_follows(corpus, tmp_path):
    first, det1, emb1 = _run(corpus, tmp_path)
    assert det1.calls > 0 and emb1.calls > 0
    with pytest.raises(FileExistsError, match="--resume"):
        _run(corpus, tmp_path)
    again, det2, emb2 = _run(corpus, tmp_path, resume=True)
    assert (det2.calls, emb2.calls) == (0, 0) and again.computed == {}
    assert again.reused["decode"] == first.computed["decode"] and again.reused["dedup"] == 1
    assert again.table.equals(first.table)
    stricter = dataclasses.replace(CONFIG, person=PersonConfig(min_area_fraction=0.085))
    third, det3, emb3 = _run(corpus, tmp_path, stricter, resume=True)
    assert "decode" not in third.computed and third.computed["person"] >= 1
    assert det3.calls == sum(r["reason"] not in ("decode", "too_small") for r in first.table.to_pylist())
    assert any(r["reason"] == "no_person" and "covers" in r["detail"] for r in third.table.to_pylist())


def test_disabled_stages_leave_their_columns_null(corpus, tmp_path):
    config = CurateConfig(person=PersonConfig(enabled=False), dedup=DedupConfig(deep=False), clip=NO_CLIP,
                          cluster=ClusterConfig(enabled=False))
    result = curate(collect_items([str(corpus.root)]), tmp_path, config, shards=False, report=False)
    rows = result.table.to_pylist()
    assert result.table.schema == MANIFEST_SCHEMA
    assert all(r["person_score"] is None and r["cluster"] is None for r in rows)
    assert sum(r["reason"] == "no_person" for r in rows) == 0
    dup = sum(r["reason"] == "duplicate" for r in rows)
    assert dup >= 0.95 * len(corpus.copies) - 1  # pHash alone: the crops may escape it


def test_missing_models_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="needs a detector"):
        curate([], tmp_path, CurateConfig())
    with pytest.raises(ValueError, match="needs CLIP models"):
        curate([], tmp_path, CurateConfig(), detector=colour_detector)
    with pytest.raises(ValueError, match="need an embedder"):
        curate([], tmp_path, CurateConfig(clip=NO_CLIP), detector=colour_detector)


def test_tar_shard_members_are_sources(corpus, tmp_path):
    shard = tmp_path / "in.tar"
    picks = [corpus.originals[8], corpus.small[0], corpus.corrupt[1]]
    with tarfile.open(shard, "w") as tar:
        for p in picks:
            tar.add(p, arcname=f"x/{p.name}")
        tar.add(Path(__file__), arcname="x/readme.py")  # not an image: not an item
    items = collect_items([str(shard)])
    assert [it.path for it in items] == [f"{shard}{MEMBER_SEP}x/{p.name}" for p in picks]
    config = CurateConfig(dedup=DedupConfig(deep=False), cluster=ClusterConfig(enabled=False), clip=NO_CLIP)
    result = curate(items, tmp_path / "out", config, detector=colour_detector, report=False)
    assert [r["reason"] for r in result.table.to_pylist()] == [None, "too_small", "decode"]
    assert len(list((tmp_path / "out" / "shards").glob("*.tar"))) == 1


def test_a_batched_detector_gives_the_same_rows(corpus, tmp_path, run):
    _, first, _ = run
    batched = Counting(lambda images: [colour_detector(im) for im in images])
    result = curate(collect_items([str(corpus.root)]), tmp_path, CONFIG, detector=batched, embedder=thumb_embedder,
                    detector_batched=True, shards=False, report=False)
    assert batched.calls == result.computed["person"]  # one call per batch
    assert result.table.drop_columns(["detail"]).equals(first.table.drop_columns(["detail"]))
    with pytest.raises(ValueError, match="gave 1 results for"):
        curate(collect_items([str(corpus.root)]), tmp_path / "w", CONFIG, detector=lambda ims: [ims[0]],
               embedder=thumb_embedder, detector_batched=True)


def test_a_batch_holds_shrunk_pixels_but_measures_the_file(corpus):
    from sapiens2.curate.stages import Batch, DecodeStage

    items = [collect_items([str(p)])[0] for p in (corpus.originals[0], corpus.corrupt[0])]
    batch = Batch(items, work_side=256)
    h, w = cv2.imread(str(corpus.originals[0])).shape[:2]
    assert batch.size(0) == (h, w) and max(batch.image(0).shape[:2]) == 256
    out = DecodeStage()(batch)
    assert (out["height"][0], out["width"][0]) == (h, w) and out["reason"] == [None, "decode"]
