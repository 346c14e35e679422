"""Dense pictures: the reference's colour formulas, backgrounds and blends."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sapiens2.body_parts import seg29
from sapiens2.vis.dense import (
    CHROMA_GREEN,
    depth_bounds,
    draw_albedo,
    draw_alpha,
    draw_depth,
    draw_matting,
    draw_normals,
    draw_segmentation,
    normals_from_depth,
    side_by_side,
    turbo,
)
from tests.conftest import random_photo


def test_segmentation_overlay_is_a_half_blend_with_the_palette():
    img = random_photo(4, 6)
    labels = np.arange(24).reshape(4, 6) % 29
    out = draw_segmentation(img, labels)
    expected = np.round(0.5 * img.astype(np.float64) + 0.5 * seg29().palette[labels]).astype(np.uint8)
    assert np.abs(out.astype(int) - expected).max() <= 1  # cv2.addWeighted rounding
    # The same blend in the reference's BGR order gives the same pixels, channels swapped.
    bgr = cv2.addWeighted(img[..., ::-1].copy(), 0.5, seg29().palette[labels][..., ::-1].copy(), 0.5, 0)
    np.testing.assert_array_equal(out, bgr[..., ::-1])
    with pytest.raises(ValueError, match="no palette colour"):
        draw_segmentation(img, np.full((4, 6), 40))


def test_normal_colours_and_black_background():
    n = np.array([[[1, 0, 0], [0, -1, 0]], [[0, 0, 1], [0.6, 0.8, 0]]], np.float32)
    mask = np.array([[True, True], [True, False]])
    out = draw_normals(n, mask)
    np.testing.assert_array_equal(out[0, 0], [255, 127, 127])  # R = x
    np.testing.assert_array_equal(out[0, 1], [127, 0, 127])  # G = y
    np.testing.assert_array_equal(out[1, 0], [127, 127, 255])  # B = z
    np.testing.assert_array_equal(out[1, 1], [0, 0, 0])
    img = random_photo(2, 2)
    np.testing.assert_array_equal(draw_normals(n, mask, img)[1, 1], img[1, 1])


def test_turbo_runs_from_dark_blue_to_dark_red():
    lo, hi = turbo(np.array([0.0, 1.0]))
    assert lo[2] > lo[0] and hi[0] > hi[2]  # blue end, red end (RGB)
    assert turbo(np.array([1.5]))[0].tolist() == hi.tolist()


def test_depth_picture_colours_near_red_and_far_blue_on_grey():
    depth = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    mask = np.ones_like(depth, bool)
    mask[1, 2] = False
    out = draw_depth(depth, mask, bounds=(1.0, 5.0))
    np.testing.assert_array_equal(out[1, 2], [100, 100, 100])
    np.testing.assert_array_equal(out[0, 0], turbo(np.array(1.0)))  # nearest: top of the inverse range
    np.testing.assert_array_equal(out[1, 1], turbo(np.array(0.0)))  # farthest
    assert depth_bounds(depth, mask) == pytest.approx((np.percentile([1, 2, 3, 4, 5], 1),
                                                       np.percentile([1, 2, 3, 4, 5], 99)))
    assert depth_bounds(depth, np.zeros_like(mask)) is None
    assert (draw_depth(depth, np.zeros_like(mask)) == 100).all()


def test_normals_from_depth_face_the_camera_on_a_flat_plane():
    n = normals_from_depth(np.full((20, 20), 2.0, np.float32), bounds=(1.0, 3.0))
    np.testing.assert_allclose(n[5:15, 5:15], np.broadcast_to([0, 0, -1], (10, 10, 3)), atol=1e-4)


def test_albedo_picture_truncates_and_greys_the_background():
    a = np.array([[[0.999, 0.5, 0.0], [1.2, -1, 0.25]]], np.float32)
    out = draw_albedo(a, np.array([[True, False]]))
    np.testing.assert_array_equal(out[0, 0], [254, 127, 0])
    np.testing.assert_array_equal(out[0, 1], [100, 100, 100])


def test_matting_composite_is_foreground_plus_the_uncovered_background():
    alpha = np.array([[0.0, 0.5, 1.0]], np.float32)
    fg = alpha[..., None] * np.array([1.0, 1.0, 1.0], np.float32)
    out = draw_matting(fg, alpha)
    np.testing.assert_array_equal(out[0, 0], CHROMA_GREEN)
    expected_mid = np.round((0.5 + 0.5 * np.array(CHROMA_GREEN) / 255) * 255)
    np.testing.assert_array_equal(out[0, 1], expected_mid)
    np.testing.assert_array_equal(out[0, 2], [255, 255, 255])
    np.testing.assert_array_equal(draw_alpha(alpha)[0, :, 0], [0, 128, 255])


def test_side_by_side_needs_equal_heights():
    assert side_by_side(random_photo(3, 2), random_photo(3, 5)).shape == (3, 7, 3)
    with pytest.raises(ValueError, match="differ in height"):
        side_by_side(random_photo(3, 2), random_photo(4, 2))
