"""Box ops and NMS against brute-force references written independently here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sapiens2.detect.boxes import batched_nms, box_area, box_iou, clip_boxes, distance_to_box, nms


def _iou_scalar(a, b, offset=0.0) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + offset)
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + offset)
    inter = w * h
    union = (a[2] - a[0] + offset) * (a[3] - a[1] + offset) + (b[2] - b[0] + offset) * (b[3] - b[1] + offset) - inter
    return inter / union if union > 0 else 0.0


def _nms_reference(boxes: np.ndarray, scores: np.ndarray, thr: float, offset: float = 0.0) -> list[int]:
    """Textbook greedy NMS in float64: visit by score (ties: lower index first), drop IoU > thr."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep: list[int] = []
    for i in order:
        if all(_iou_scalar(boxes[i], boxes[k], offset) <= thr for k in keep):
            keep.append(i)
    return keep


def _random_boxes(rng: np.random.Generator, n: int, extent: float = 100.0) -> np.ndarray:
    xy = rng.uniform(0, extent, (n, 2))
    wh = rng.uniform(1, extent / 3, (n, 2))
    # Coordinates on a 1/8 pixel grid, so the float32 and float64 IoUs never straddle a threshold by rounding.
    return (np.round(np.concatenate([xy, xy + wh], 1) * 8) / 8).astype(np.float32)


def test_iou_of_known_boxes():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[50 / 150, 0.0, 1.0]]))
    # Pixel-inclusive convention: [0, 9] covers 10 pixels.
    torch.testing.assert_close(box_area(torch.tensor([[0.0, 0, 9, 9]]), offset=1), torch.tensor([100.0]))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 12), offset=st.sampled_from([0.0, 1.0]))
def test_iou_matches_brute_force(seed, n, offset):
    rng = np.random.default_rng(seed)
    a, b = _random_boxes(rng, n), _random_boxes(rng, n + 1)
    ours = box_iou(torch.from_numpy(a), torch.from_numpy(b), offset).numpy()
    ref = np.array([[_iou_scalar(x.astype(float), y.astype(float), offset) for y in b] for x in a])
    np.testing.assert_allclose(ours, ref, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 60), thr=st.sampled_from([0.0, 0.3, 0.5, 0.65, 0.9]),
       offset=st.sampled_from([0.0, 1.0]))
def test_nms_matches_brute_force(seed, n, thr, offset):
    rng = np.random.default_rng(seed)
    boxes = _random_boxes(rng, n, extent=60.0)  # crowded, so plenty of suppression
    scores = rng.choice(np.linspace(0.05, 1.0, 7), n).astype(np.float32)  # with many ties
    keep = nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr, offset)
    assert keep.tolist() == _nms_reference(boxes, scores, thr, offset)


def test_nms_threshold_is_strict_greater_than():
    boxes = torch.tensor([[0.0, 0, 10, 10], [5.0, 0, 15, 10]])  # IoU exactly 1/3
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 1 / 3 + 1e-6).tolist() == [0, 1]
    assert nms(boxes, scores, 0.3).tolist() == [0]


def test_nms_pixel_inclusive_convention_changes_the_overlap():
    # [0, 9] and [9, 18] touch in one pixel column: offset 0 sees no overlap, offset 1 sees 1/19.
    boxes = torch.tensor([[0.0, 0, 9, 9], [9.0, 0, 18, 9]])
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.0, offset=0.0).tolist() == [0, 1]
    assert nms(boxes, scores, 0.0, offset=1.0).tolist() == [0]


def test_batched_nms_only_suppresses_within_a_class():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0.5, 0, 10, 10], [0.0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([0, 0, 1])
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == [0, 2]
    assert batched_nms(boxes, scores, labels, None).tolist() == [0, 1, 2]  # nms=None: sort only


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 40))
def test_batched_nms_equals_per_class_brute_force(seed, n):
    rng = np.random.default_rng(seed)
    boxes = _random_boxes(rng, n, extent=50.0)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    labels = rng.integers(0, 3, n)
    keep = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), 0.5).tolist()
    ref = [i for c in range(3) for i in np.flatnonzero(labels == c)[
        _nms_reference(boxes[labels == c], scores[labels == c], 0.5)]]
    assert keep == sorted(ref, key=lambda i: (-scores[i], i))


def test_nms_rejects_bad_shapes_and_handles_empty_input():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
    with pytest.raises(ValueError, match="nms expects"):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)


def test_distance_decode_and_clip():
    points = torch.tensor([[16.0, 8.0]])
    boxes = distance_to_box(points, torch.tensor([[6.0, 4.0, 10.0, 2.0]]))
    torch.testing.assert_close(boxes, torch.tensor([[10.0, 4.0, 26.0, 10.0]]))
    clipped = clip_boxes(torch.tensor([[-5.0, -1.0, 700.0, 300.0]]), height=320, width=640)
    torch.testing.assert_close(clipped, torch.tensor([[0.0, 0.0, 640.0, 300.0]]))
