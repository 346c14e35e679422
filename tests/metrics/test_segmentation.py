"""Segmentation metrics on hand-worked label maps, and their properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sapiens2.metrics.segmentation import SegmentationMetrics, segmentation_metrics


def test_hand_worked_three_classes():
    gt = np.array([[0, 0, 1], [1, 1, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 2]])
    r = segmentation_metrics(pred, gt, num_classes=3)
    # Valid pixels: 5 (the 255 is dropped). Class 0: I=1, GT=2, P=1, U=2. Class 1: I=2, GT=3, P=3, U=4.
    # Class 2: I=0, GT=0, P=1, U=1 -> IoU 0, Acc NaN -> 0.
    assert r["aAcc"] == pytest.approx(100 * 3 / 5)
    assert r["IoU"] == pytest.approx({"0": 50.0, "1": 50.0, "2": 0.0})
    assert r["Acc"] == pytest.approx({"0": 50.0, "1": 100 * 2 / 3, "2": 0.0})
    assert r["mIoU"] == pytest.approx(100 / 3)
    assert r["mAcc"] == pytest.approx((50 + 200 / 3) / 3)
    assert r["pixels"] == 5


def test_classes_absent_everywhere_count_as_zero_in_the_reference_mean():
    gt = np.array([[0, 1]])
    acc = SegmentationMetrics(num_classes=29)
    acc.update(gt, gt)
    r = acc.compute()
    assert r["IoU"]["Background"] == 100.0 and r["IoU"]["Apparel"] == 100.0 and r["IoU"]["Tongue"] == 0.0
    assert r["mIoU"] == pytest.approx(100 * 2 / 29)
    assert acc.compute(absent="ignore")["mIoU"] == pytest.approx(100.0)


def test_pixels_are_pooled_over_images_not_averaged():
    acc = SegmentationMetrics(num_classes=2)
    acc.update(np.zeros((1, 1), int), np.zeros((1, 1), int))  # image 1: class 0, right
    acc.update(np.zeros((1, 3), int), np.ones((1, 3), int))  # image 2: three class-1 pixels, all wrong
    r = acc.compute()
    assert r["aAcc"] == pytest.approx(25.0)
    assert r["IoU"]["0"] == pytest.approx(25.0)  # I=1, U=1+4-1


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.int64, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 5)))
def test_perfect_prediction_is_perfect_on_present_classes(gt):
    r = segmentation_metrics(gt, gt, num_classes=6)
    present = {str(c) for c in np.unique(gt)}
    assert r["aAcc"] == 100.0
    assert all(v == 100.0 for k, v in r["IoU"].items() if k in present)
    assert r["mIoU"] == pytest.approx(100.0 * len(present) / 6)


@settings(max_examples=30, deadline=None)
@given(
    hnp.arrays(np.int64, st.tuples(st.integers(2, 10), st.integers(2, 10)), elements=st.integers(0, 4)),
    st.permutations(range(5)),
)
def test_permuted_labels_are_not_perfect(gt, perm):
    perm = np.asarray(perm)
    moved = perm[np.unique(gt)] != np.unique(gt)
    r = segmentation_metrics(perm[gt], gt, num_classes=5)
    if moved.any():
        assert r["aAcc"] < 100.0 and r["mIoU"] < 100.0 * len(np.unique(gt)) / 5
    else:
        assert r["aAcc"] == 100.0


def test_against_a_plain_loop():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 6, (40, 30))
    gt[rng.random(gt.shape) < 0.1] = 255
    pred = np.where(rng.random(gt.shape) < 0.6, np.where(gt == 255, 0, gt), rng.integers(0, 6, gt.shape))
    r = segmentation_metrics(pred, gt, num_classes=6)
    valid = gt != 255
    for c in range(6):
        inter = np.sum((pred == c) & (gt == c) & valid)
        union = np.sum(((pred == c) | (gt == c)) & valid)
        assert r["IoU"][str(c)] == pytest.approx(100 * inter / union)
        assert r["Acc"][str(c)] == pytest.approx(100 * inter / np.sum((gt == c) & valid))
    assert r["aAcc"] == pytest.approx(100 * np.sum((pred == gt) & valid) / valid.sum())


def test_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        segmentation_metrics(np.zeros((2, 3), int), np.zeros((3, 2), int))


def test_labels_out_of_range():
    with pytest.raises(ValueError, match=r"predicted labels .* \[29\]"):
        segmentation_metrics(np.full((2, 2), 29), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="GT labels"):
        segmentation_metrics(np.zeros((2, 2), int), np.full((2, 2), 40))


def test_float_labels_are_rejected():
    with pytest.raises(ValueError, match="integers"):
        segmentation_metrics(np.zeros((2, 2)), np.zeros((2, 2), int))


def test_everything_ignored_gives_undefined_accuracy():
    r = segmentation_metrics(np.zeros((2, 2), int), np.full((2, 2), 255))
    assert np.isnan(r["aAcc"]) and r["mIoU"] == 0.0 and r["pixels"] == 0
