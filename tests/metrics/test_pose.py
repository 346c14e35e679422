"""Keypoint OKS and AP on cases small enough to work out by hand, and properties of the evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sapiens2.keypoints.metadata import keypoints308
from sapiens2.metrics.oks import oks
from sapiens2.metrics.pose import KeypointAnnotations, KeypointDetections, evaluate_keypoints, keypoint_ap

# Precision is tp / (tp + fp + machine epsilon), as in COCO, so a perfect score is 1 - 2e-16.
ONE = pytest.approx(1.0, abs=1e-12)


def _gt(image_ids, keypoints, area, bbox=None, iscrowd=None, all_images=None) -> KeypointAnnotations:
    n = len(image_ids)
    return KeypointAnnotations(
        image_ids,
        keypoints,
        area,
        bbox if bbox is not None else np.zeros((n, 4)),
        iscrowd if iscrowd is not None else np.zeros(n, bool),
        all_images if all_images is not None else image_ids,
    )


def test_oks_by_hand():
    # sigma 0.1 -> variance factor (2 * 0.1)^2 = 0.04; area 100; offset (3, 4) -> d^2 = 25.
    gt = np.array([[[10.0, 10.0, 2], [20.0, 20.0, 2]]])
    pred = np.array([[[13.0, 14.0], [20.0, 20.0]]])
    value = oks(pred, gt, [100.0], np.zeros((1, 4)), np.array([0.1, 0.05]))
    assert value.shape == (1, 1)
    assert value[0, 0] == pytest.approx((math.exp(-25 / 0.04 / 100 / 2) + 1) / 2, abs=1e-12)


def test_oks_counts_only_labelled_points():
    gt = np.array([[[10.0, 10.0, 1], [0.0, 0.0, 0]]])
    pred = np.array([[[13.0, 14.0], [500.0, 500.0]]])
    value = oks(pred, gt, [100.0], np.zeros((1, 4)), np.array([0.1, 0.05]))
    assert value[0, 0] == pytest.approx(math.exp(-3.125), abs=1e-12)


def test_oks_without_labelled_points_uses_distance_outside_the_grown_box():
    # Box (10, 10, 10, 10) grows to [0, 30] x [0, 30]: point (35, 15) is 5 outside, point (15, 15) inside.
    gt = np.zeros((1, 2, 3))
    pred = np.array([[[35.0, 15.0], [15.0, 15.0]]])
    value = oks(pred, gt, [50.0], np.array([[10.0, 10.0, 10.0, 10.0]]), np.array([0.1, 0.1]))
    assert value[0, 0] == pytest.approx((math.exp(-25 / 0.04 / 50 / 2) + 1) / 2, abs=1e-12)


def test_oks_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="sigmas"):
        oks(np.zeros((1, 3, 2)), np.zeros((1, 2, 3)), [1.0], np.zeros((1, 4)), np.ones(2))


def _one_point_case(oks_value: float, area: float = 100.0 * 100.0, sigma: float = 0.05):
    """One image, one labelled single-point GT, one detection at the distance that gives `oks_value`."""
    d = math.sqrt(-math.log(oks_value) * 2 * (2 * sigma) ** 2 * area)
    gt = _gt([1], [[[100.0, 100.0, 2]]], [area])
    det = KeypointDetections([1], [[[100.0 + d, 100.0, 0.9]]], [0.8])
    return gt, det, np.array([sigma])


def test_ap_with_oks_between_070_and_075_matches_half_the_thresholds():
    gt, det, sigmas = _one_point_case(0.72)
    r = keypoint_ap(gt, det, sigmas)
    # Matched at 0.50 ... 0.70 (5 of 10 thresholds): precision 1 there, 0 elsewhere.
    assert r["AP"] == pytest.approx(0.5) and r["AR"] == pytest.approx(0.5)
    assert r["AP50"] == ONE and r["AP75"] == 0.0
    assert r["APl"] == pytest.approx(0.5) and r["APm"] == -1.0  # the GT (area 10^4) is large; no medium GT


def test_a_higher_scored_false_positive_halves_precision():
    gt = _gt([1], [[[100.0, 100.0, 2]]], [5000.0])
    det = KeypointDetections([1, 1], [[[100.0, 100.0, 1.0]], [[900.0, 900.0, 1.0]]], [0.5, 0.9])
    r = keypoint_ap(gt, det, np.array([0.05]))
    # Ranked: FP (p=0), then TP at recall 1 with precision 1/2; the envelope gives 1/2 at every recall point.
    assert r["AP"] == pytest.approx(0.5) and r["AR"] == ONE


def test_perfect_predictions_score_one_and_swapped_sides_do_not():
    sigmas = np.array([0.05, 0.05])
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(0, 500, (6, 2, 2)), np.full((6, 2, 1), 2.0)], axis=2)
    gt = _gt([1, 1, 2, 2, 3, 3], kp, np.full(6, 150.0**2))
    perfect = KeypointDetections(gt.image_ids, np.concatenate([kp[..., :2], np.ones((6, 2, 1))], 2), np.ones(6))
    r = keypoint_ap(gt, perfect, sigmas)
    assert r["AP"] == ONE and r["AR"] == ONE
    swapped = KeypointDetections(gt.image_ids, perfect.keypoints[:, ::-1], np.ones(6))
    assert keypoint_ap(gt, swapped, sigmas)["AP"] < 0.5


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.floats(10, 400), st.floats(0, 1000), st.floats(0, 1000)),
                min_size=1, max_size=12))
def test_perfect_predictions_always_score_one(people):
    """Whatever the people and their sizes, predicting the GT exactly gives AP = AR = 1 (or -1 if no GT)."""
    sigmas = np.full(3, 0.05)
    image_ids = [p[0] for p in people]
    kp = np.array([[[x, y, 2], [x + s, y, 2], [x, y + s, 2]] for _, s, x, y in people])
    gt = _gt(image_ids, kp, [s * s for _, s, _, _ in people])
    det = KeypointDetections(image_ids, kp * [1, 1, 0.5], np.linspace(1, 0.5, len(people)))
    r = keypoint_ap(gt, det, sigmas)
    assert r["AP"] == ONE and r["AR"] == ONE and r["AP75"] == ONE
    for key in ("APm", "APl", "ARm", "ARl"):
        assert r[key] == -1.0 or r[key] == ONE


def test_detections_without_scored_points_are_dropped():
    gt = _gt([1], [[[100.0, 100.0, 2]]], [5000.0])
    det = KeypointDetections([1, 1], [[[100.0, 100.0, 1.0]], [[900.0, 900.0, 0.0]]], [0.5, 0.9])
    assert keypoint_ap(gt, det, np.array([0.05]))["AP"] == ONE


def test_crowds_are_ignored_and_detections_on_them_are_not_false_positives():
    kp = [[[100.0, 100.0, 2]], [[600.0, 600.0, 2]]]
    gt = _gt([1, 1], kp, [5000.0, 5000.0], iscrowd=np.array([False, True]))
    det = KeypointDetections([1, 1, 1], [[[600.0, 600.0, 1]], [[600.0, 600.0, 1]], [[100.0, 100.0, 1]]],
                             [0.9, 0.8, 0.5])
    assert keypoint_ap(gt, det, np.array([0.05]))["AP"] == ONE


def test_only_crowds_means_undefined():
    gt = _gt([1], [[[100.0, 100.0, 2]]], [5000.0], iscrowd=np.array([True]))
    det = KeypointDetections([1], [[[100.0, 100.0, 1.0]]], [0.5])
    r = keypoint_ap(gt, det, np.array([0.05]))
    assert r["AP"] == -1.0 and r["AR"] == -1.0


def test_only_the_best_20_detections_per_image_count():
    gt = _gt([1], [[[100.0, 100.0, 2]]], [5000.0])
    fps = [[[900.0 + i, 900.0, 1.0]] for i in range(20)]
    det = KeypointDetections([1] * 21, fps + [[[100.0, 100.0, 1.0]]], [0.9] * 20 + [0.1])
    assert keypoint_ap(gt, det, np.array([0.05]))["AR"] == 0.0
    assert keypoint_ap(gt, det, np.array([0.05]), max_dets=21)["AR"] == ONE


def test_predictions_on_unknown_images_are_an_error():
    gt = _gt([1], [[[100.0, 100.0, 2]]], [5000.0])
    det = KeypointDetections([7], [[[100.0, 100.0, 1.0]]], [0.5])
    with pytest.raises(ValueError, match=r"\[7\]"):
        keypoint_ap(gt, det, np.array([0.05]))


def test_images_without_people_still_count_false_positives():
    gt = _gt([1], [[[100.0, 100.0, 2]]], [5000.0], all_images=[1, 2])
    det = KeypointDetections([1, 2], [[[100.0, 100.0, 1.0]], [[5.0, 5.0, 1.0]]], [0.5, 0.9])
    assert keypoint_ap(gt, det, np.array([0.05]))["AP"] == pytest.approx(0.5)


def test_308_detections_are_sized_by_their_body_points():
    """A false positive whose body points span a medium box but whose face points spread wide is outside
    the large range (as in the reference), so it does not lower APl."""
    body = np.asarray(keypoints308().subsets["body"])
    gt_kp = np.zeros((1, 308, 3))
    gt_kp[0, :, :2] = np.random.default_rng(0).uniform(100, 400, (308, 2))
    gt_kp[0, :, 2] = 2
    gt = _gt([1], gt_kp, [300.0**2])
    fp = np.zeros((308, 3))
    fp[:, :2] = 1500.0
    fp[:, 2] = 1.0
    fp[body, :2] += np.random.default_rng(1).uniform(0, 50, (17, 2))  # body box < 96^2
    fp[300, :2] = [3000.0, 3000.0]  # the whole-point box is huge
    good = np.concatenate([gt_kp[0, :, :2], np.ones((308, 1))], axis=1)
    det = KeypointDetections([1, 1], [fp, good], [0.9, 0.5])
    r = evaluate_keypoints(gt, det)["wholebody"]
    assert r["APl"] == ONE
    assert r["AP"] == pytest.approx(0.5)


def test_keypoint_count_mismatch_is_an_error():
    gt = _gt([1], np.zeros((1, 308, 3)), [5000.0])
    det = KeypointDetections([1], np.ones((1, 133, 3)), [0.5])
    with pytest.raises(ValueError, match="308.*133"):
        evaluate_keypoints(gt, det)


def test_308_gt_with_17_point_predictions_scores_the_body():
    body = np.asarray(keypoints308().subsets["body"])
    gt_kp = np.zeros((1, 308, 3))
    gt_kp[0, body] = [[200.0 + 10 * i, 300.0 + 7 * i, 2] for i in range(17)]
    gt = _gt([1], gt_kp, [200.0**2])
    det = KeypointDetections([1], np.concatenate([gt_kp[:, body, :2], np.ones((1, 17, 1))], 2), [0.7])
    r = evaluate_keypoints(gt, det)
    assert list(r) == ["coco17"] and r["coco17"]["AP"] == ONE


def test_no_predictions_scores_zero_and_no_people_is_undefined():
    gt = _gt([1], np.ones((1, 308, 3)) * [100.0, 100.0, 2], [5000.0])
    none = KeypointDetections(np.zeros(0), np.zeros((0, 0, 3)), np.zeros(0))
    r = evaluate_keypoints(gt, none)
    assert r["wholebody"]["AP"] == 0.0 and r["face"]["AR"] == 0.0
    nobody = _gt(np.zeros(0), np.zeros((0, 0, 3)), np.zeros(0), all_images=[1])
    det = KeypointDetections([1], np.ones((1, 17, 3)), [0.5])
    assert evaluate_keypoints(nobody, det)["coco17"]["AP"] == -1.0
