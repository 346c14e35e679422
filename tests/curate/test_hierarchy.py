"""Hierarchical k-means and top-down balanced sampling (Vo et al. 2024), yaw bins, and their settings."""

import dataclasses
import json

import numpy as np
import pytest

from sapiens2.curate.cluster import (
    check_levels, hierarchical_kmeans, hierarchical_sample, leaf_quotas, yaw_bins,
)
from sapiens2.curate.config import ClipConfig, ClusterConfig, CurateConfig, DedupConfig, HeadConfig, load_config
from sapiens2.curate.engine import curate
from sapiens2.curate.sources import collect_items
from tests.curate.conftest import colour_detector, thumb_embedder

DIM = 16


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def blobs(centres, sizes, spread=0.03, seed=0):
    """Gaussian blobs on the unit sphere around `centres`, and each row's blob."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + spread * rng.standard_normal((n, DIM)) for c, n in zip(centres, sizes)])
    return _unit(x), np.repeat(np.arange(len(sizes)), sizes)


def test_balancing_evens_planted_blobs_better_than_random():
    """3 big + 5 small blobs: the balanced sample takes about as many from each; a random one follows size.
    (k-means may split a big blob and merge two small ones, so the test asks for evenness, not for the blobs.)"""
    sizes = [300, 250, 200, 12, 15, 20, 25, 30]
    x, truth = blobs(np.eye(DIM)[:8], sizes)
    rand = np.zeros(len(x), bool)
    rand[np.random.default_rng(0).choice(len(x), 120, replace=False)] = True
    chance = np.bincount(truth[rand], minlength=8)
    assert chance[3:].sum() < 20  # the small blobs' share of a random sample: ~ 12%
    for levels in ([8], [8, 3]):
        tree = hierarchical_kmeans(x, levels, seed=0)
        keep = hierarchical_sample(tree.labels, 120, seed=0)
        assert keep.sum() == 120
        ours = np.bincount(truth[keep], minlength=8)
        assert ours.std() < chance.std() / 2, (levels, ours, chance)
        assert ours[3:].sum() >= 40 and ours.min() >= 5  # a fair share for every small blob


def test_the_hierarchy_balances_concepts_that_flat_kmeans_does_not():
    """Concept A holds six sub-blobs, concept B two: flat k-means balances the eight leaves, so A takes 3/4 of
    the sample; the second level sees two concepts and gives each half."""
    eye = np.eye(DIM)
    subs = [eye[0] + 0.5 * eye[2 + j] for j in range(6)] + [eye[1] + 0.5 * eye[8 + j] for j in range(2)]
    x, truth = blobs(_unit(np.array(subs)), [40] * 6 + [40] * 2, spread=0.02)
    concept = (truth >= 6).astype(int)
    flat = hierarchical_kmeans(x, [8], seed=0)
    deep = hierarchical_kmeans(x, [8, 2], seed=0)
    assert len(set(deep.labels[1][concept == 0])) == len(set(deep.labels[1][concept == 1])) == 1
    by_flat = np.bincount(concept[hierarchical_sample(flat.labels, 64, seed=0)])
    by_deep = np.bincount(concept[hierarchical_sample(deep.labels, 64, seed=0)])
    assert by_flat.tolist() == [48, 16] and by_deep.tolist() == [32, 32]
    leaves_b = deep.labels[0][concept == 1]
    kept_b = np.bincount(leaves_b[hierarchical_sample(deep.labels, 64, seed=0)[concept == 1]])
    assert sorted(kept_b[kept_b > 0].tolist()) == [16, 16]  # and evenly inside B


def test_leaf_quotas_split_top_down_and_redistribute():
    leaf = np.repeat([0, 1, 2, 3], [50, 2, 10, 10])
    top = np.repeat([0, 0, 1, 1], [50, 2, 10, 10])
    assert leaf_quotas([leaf, top], 20).tolist() == [8, 2, 5, 5]  # 10 | 10, then 8 + 2 (capped) | 5 + 5
    assert leaf_quotas([leaf, top], 8).tolist() == [2, 2, 2, 2]
    assert leaf_quotas([leaf, top], 1000).tolist() == [50, 2, 10, 10]
    with pytest.raises(ValueError, match="not nested"):
        leaf_quotas([np.array([0, 0, 1]), np.array([0, 1, 1])], 2)


def test_sampling_is_deterministic_and_keeps_all_at_a_large_target():
    x, _ = blobs(np.eye(DIM)[:5], [40, 30, 20, 10, 5])
    a, b = hierarchical_kmeans(x, [5, 2], seed=3), hierarchical_kmeans(x, [5, 2], seed=3)
    assert all((p == q).all() for p, q in zip(a.labels, b.labels))
    once, twice = hierarchical_sample(a.labels, 30, seed=7), hierarchical_sample(a.labels, 30, seed=7)
    assert (once == twice).all() and once.sum() == 30
    assert not (hierarchical_sample(a.labels, 30, seed=8) == once).all()
    assert hierarchical_sample(a.labels, len(x), seed=0).all() and hierarchical_sample(a.labels, 10**6).all()
    assert hierarchical_sample(a.labels, 0).all()  # 0: no sampling


def test_centroid_sampling_takes_the_closest_first():
    x, _ = blobs(np.eye(DIM)[:2], [50, 50], spread=0.1)
    tree = hierarchical_kmeans(x, [2], seed=0)
    close = tree.closeness(x)
    keep = hierarchical_sample(tree.labels, 20, closeness=close)
    for c in (0, 1):
        mine = tree.labels[0] == c
        assert keep[mine].sum() == 10 and close[mine & keep].min() >= close[mine & ~keep].max()


def test_yaw_bins_and_round_robin_within_a_leaf():
    assert yaw_bins(np.array([-90, -31, 0, 29.9, 30, 90, 170, -200, np.nan]), 3).tolist() == [0, 0, 1, 1, 2, 2, 2, 0, 3]
    yaw = np.concatenate([np.zeros(80), np.full(10, -70.0), np.full(10, 70.0), np.full(5, np.nan)])
    leaf = np.zeros(len(yaw), np.int64)
    keep = hierarchical_sample([leaf], 20, seed=0, groups=yaw_bins(yaw, 3))
    assert np.bincount(yaw_bins(yaw, 3)[keep]).tolist() == [5, 5, 5, 5]
    keep = hierarchical_sample([leaf], 40, seed=0, groups=yaw_bins(yaw, 3))  # small bins run out, frontal fills
    assert np.bincount(yaw_bins(yaw, 3)[keep]).tolist() == [10, 15, 10, 5]


def test_bad_levels_are_clear_errors(tmp_path):
    for levels, words in [([], "at least one level"), ([10, 10], "strictly decreasing"), ([5, 10], "strictly"),
                          ([0], ">= 1")]:
        with pytest.raises(ValueError, match=words):
            check_levels(levels)
        with pytest.raises(ValueError, match=f"cluster.levels must.*{words}"):
            CurateConfig(cluster=ClusterConfig(levels=tuple(levels)))
    p = tmp_path / "c.toml"
    for text, words in [("levels = 100", "cluster.levels must be a list of integers"),
                        ("levels = [100, 1.5]", "cluster.levels must be a list of integers"),
                        ("levels = [10, 20]", "strictly decreasing"),
                        ("sampling = 'best'", "cluster.sampling must be one of random, centroid"),
                        ("balance_yaw_bins = 4", "needs the head stage"),
                        ("clusters = 100", "unknown key cluster.clusters")]:
        p.write_text(f"[cluster]\n{text}\n")
        with pytest.raises(ValueError, match=words) as err:
            load_config(p)
        assert "c.toml" in str(err.value)
    p.write_text("[cluster]\nlevels = [50, 5]\nsampling = 'centroid'\nbalance_yaw_bins = 4\n[head]\nenabled = true\n")
    cluster = load_config(p).cluster
    assert (cluster.levels, cluster.sampling, cluster.balance_yaw_bins) == ((50, 5), "centroid", 4)


def test_the_engine_records_leaf_and_top_clusters_and_sizes_per_level(corpus, tmp_path):
    from tests.curate.test_headpose import FacePredictor

    config = CurateConfig(head=HeadConfig(enabled=True), dedup=DedupConfig(), clip=ClipConfig(enabled=False),
                          cluster=ClusterConfig(levels=(4, 2), target=6, balance_yaw_bins=3))
    items = collect_items([str(p) for p in corpus.originals])
    result = curate(items, tmp_path, config, detector=colour_detector,
                    embedder=thumb_embedder, head=FacePredictor(), shards=False)
    rows = [r for r in result.table.to_pylist() if r["cluster"] is not None]
    assert len(rows) == len(items) and result.kept == 6
    parent = {}
    for r in rows:  # each leaf lies in one top-level cluster
        assert parent.setdefault(r["cluster"], r["cluster_top"]) == r["cluster_top"]
    assert len(result.level_sizes) == 2 and result.cluster_sizes == result.level_sizes[0]
    top = result.level_sizes[1]
    assert sum(b for b, _ in top.values()) == len(rows) and sum(a for _, a in top.values()) == 6
    leaf = np.array([r["cluster"] for r in rows])
    quota = leaf_quotas([np.unique(leaf, return_inverse=True)[1],
                         np.unique([r["cluster_top"] for r in rows], return_inverse=True)[1]], 6)
    assert [a for _, (_, a) in sorted(result.cluster_sizes.items())] == quota.tolist()
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert len(report["cluster_levels"]) == 2
    html = (tmp_path / "report" / "index.html").read_text()
    assert "level 2 of 2" in html and "level 1 of 2" in html
    again = curate(items, tmp_path, config, detector=colour_detector,
                   embedder=thumb_embedder, head=FacePredictor(), shards=False, resume=True)
    assert again.reused["cluster"] == 1 and again.level_sizes == result.level_sizes
    flat = dataclasses.replace(config, cluster=ClusterConfig(levels=(4,), target=6))
    single = curate(items, tmp_path / "flat", flat, detector=colour_detector,
                    embedder=thumb_embedder, head=FacePredictor(), shards=False, report=False)
    assert all(r["cluster_top"] == r["cluster"] for r in single.table.to_pylist())
