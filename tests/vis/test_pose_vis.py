"""Pose drawing: draws what passes the threshold, nothing else, and never in place."""

import numpy as np
import pytest

from sapiens2.keypoints import keypoints308
from sapiens2.vis.pose import draw_pose

META = keypoints308()
H, W = 240, 320


def blank():
    return np.full((H, W, 3), 40, np.uint8)


def patch(img, xy, r=6):
    x, y = xy
    return img[y - r : y + r + 1, x - r : x + r + 1]


def far_away(n=308):
    """All points outside the image (never drawn), so each test places only what it needs."""
    return np.full((n, 2), -1000.0)


def test_points_above_threshold_drawn_below_not_and_input_untouched():
    img = blank()
    before = img.copy()
    kp = far_away()
    sc = np.zeros(308)
    kp[0], sc[0] = (60, 60), 0.9  # nose, drawn
    kp[100], sc[100] = (200, 60), 0.1  # a face point below threshold
    out = draw_pose(img, kp, sc, kpt_thr=0.3, radius=4)
    np.testing.assert_array_equal(img, before)
    assert out is not img and out.shape == img.shape and out.dtype == img.dtype
    assert np.any(patch(out, (60, 60)) != patch(before, (60, 60)))
    np.testing.assert_array_equal(patch(out, (200, 60)), patch(before, (200, 60)))
    # the point colour is the official one, reversed for BGR
    rgb = META.keypoint_colors[0]
    assert out[60, 60].tolist() == list(rgb[::-1])
    # nothing else changed
    changed = np.argwhere(np.any(out != before, axis=2))
    assert changed[:, 0].min() >= 60 - 5 and changed[:, 1].max() <= 60 + 5


def test_link_needs_both_ends_above_threshold():
    a, b = META.skeleton_links[0]  # left ankle - left knee
    kp = far_away()
    sc = np.zeros(308)
    kp[a], kp[b] = (50, 200), (250, 200)
    sc[a] = sc[b] = 0.8
    out = draw_pose(blank(), kp, sc, radius=2, thickness=3)
    mid = out[200, 150]
    assert mid.tolist() == list(META.skeleton_link_colors[0][::-1])
    sc[b] = 0.2
    out = draw_pose(blank(), kp, sc, radius=2, thickness=3)
    assert out[200, 150].tolist() == [40, 40, 40]  # no link
    assert out[200, 50].tolist() != [40, 40, 40]  # the end above threshold is still drawn
    assert out[200, 250].tolist() == [40, 40, 40]


def test_out_of_bounds_and_nan_points_are_skipped():
    kp = far_away()
    kp[5] = (W + 3, 10)
    kp[6] = (np.nan, np.nan)
    kp[7] = (-2, 10)
    out = draw_pose(blank(), kp, np.ones(308))
    np.testing.assert_array_equal(out, blank())


def test_rgb_order_boxes_and_batches():
    kp = np.stack([far_away(), far_away()])
    kp[0, 0] = (40, 40)
    kp[1, 0] = (200, 150)
    out = draw_pose(blank(), kp, np.ones((2, 308)), channel_order="rgb", radius=3)
    assert out[40, 40].tolist() == list(META.keypoint_colors[0])
    assert out[150, 200].tolist() == list(META.keypoint_colors[0])
    boxed = draw_pose(blank(), kp, np.zeros((2, 308)), boxes=[[10, 20, 100, 120]], box_color=(255, 0, 0))
    assert boxed[20, 50].tolist() == [0, 0, 255]  # red in BGR
    assert boxed[60, 50].tolist() == [40, 40, 40]


def test_coco17_points_use_coco_metadata():
    kp = np.full((17, 2), -100.0)
    kp[9] = (100, 100)  # left wrist: green in COCO's colours
    out = draw_pose(blank(), kp)
    assert out[100, 100].tolist() == [0, 255, 0]


def test_bad_inputs():
    with pytest.raises(ValueError):
        draw_pose(np.zeros((H, W), np.uint8), far_away())
    with pytest.raises(ValueError):
        draw_pose(blank(), np.zeros((5, 2)))
