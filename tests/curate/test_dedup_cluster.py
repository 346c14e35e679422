import numpy as np
import pytest

from sapiens2.curate.cluster import balanced_quota, balanced_sample, kmeans_labels
from sapiens2.curate.dedup import duplicate_groups, embedding_pairs, phash_pairs
from sapiens2.curate.phash import hamming, hashes_to_bytes, phash
from tests.curate.conftest import scene

import cv2  # noqa: E402


def _jpeg(img, q):
    return cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_UNCHANGED)


def test_phash_survives_copies_and_separates_scenes():
    rng = np.random.default_rng(1)
    scenes = [scene(rng, 480, 560) for _ in range(20)]
    h, w = scenes[0].shape[:2]
    for img in scenes[:5]:
        base = phash(img)
        copies = [cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA), _jpeg(img, 25),
                  img[15:-15, 17:-17]]  # 3% off each side
        assert all(hamming(base, phash(c)) <= 10 for c in copies)
    hashes = [phash(s) for s in scenes]
    assert min(hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:]) > 10


def test_phash_ignores_brightness_but_not_a_mirror():
    img = scene(np.random.default_rng(0), 300, 360)
    brighter = np.clip(img.astype(np.int16) + 25, 0, 255).astype(np.uint8)
    assert hamming(phash(img), phash(brighter)) <= 2
    assert hamming(phash(img), phash(np.ascontiguousarray(img[:, ::-1]))) > 10  # a flip is another image
    assert phash(img) == phash(img.copy()) and 0 <= phash(img) < 2**64


def test_phash_pairs_include_the_radius():
    codes = hashes_to_bytes(["0000000000000000", "00000000000000ff", "ffffffffffffffff"])
    assert sorted(phash_pairs(codes, 8)) == [(0, 1), (1, 0)]
    assert phash_pairs(codes, 7) == []
    assert phash_pairs(hashes_to_bytes([]), 8) == []


def test_embedding_pairs_threshold_is_inclusive():
    x = np.array([[1, 0], [0.95, np.sqrt(1 - 0.95**2)], [0, 1]], np.float32)
    assert (0, 1) in embedding_pairs(x, 0.95)
    assert embedding_pairs(x, 0.951) == []


def test_groups_are_transitive_and_keep_the_best():
    group, keep = duplicate_groups(5, [(0, 1), (1, 2)], rank=np.array([1.0, 5.0, 2.0, 0.0, 0.0]))
    assert group.tolist() == [1, 1, 1, 3, 4]
    assert keep.tolist() == [False, True, False, True, True]


def test_quota_evens_clusters():
    assert balanced_quota(np.array([30, 5, 5]), 15).tolist() == [5, 5, 5]
    assert balanced_quota(np.array([30, 10, 2]), 20).tolist() == [9, 9, 2]
    assert balanced_quota(np.array([3, 4]), 100).tolist() == [3, 4]
    assert balanced_quota(np.array([10, 10, 10]), 10).sum() == 10


def test_kmeans_finds_planted_clusters_and_sampling_balances_them():
    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)[:3]
    sizes = [40, 8, 6]
    x = np.concatenate([c + 0.05 * rng.standard_normal((n, 8)).astype(np.float32) for c, n in zip(centres, sizes)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = kmeans_labels(x, 3, seed=0)
    truth = np.repeat(np.arange(3), sizes)
    for t in range(3):  # each planted cluster is one label, and distinct
        assert len(set(labels[truth == t])) == 1
    assert len(set(labels)) == 3
    keep = balanced_sample(labels, 18, seed=0)
    after = [int(keep[labels == k].sum()) for k in np.unique(labels)]
    assert sorted(after) == [6, 6, 6]
    assert kmeans_labels(x[:2], 100).shape == (2,)  # k capped at the row count


def test_no_sampling_keeps_all():
    assert balanced_sample(np.array([0, 0, 1]), 0).all()
    with pytest.raises(ValueError):
        balanced_sample(np.array([0, 0, 1]), 2, seed=-1)  # numpy refuses a negative seed
