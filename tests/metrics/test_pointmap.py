"""Pointmap errors, normals from points, and the optional alignments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sapiens2.metrics.pointmap import align_points, normals_from_points, pointmap_metrics


def _plane(h: int = 12, w: int = 10, slope: float = 0.0, depth: float = 2.0) -> np.ndarray:
    """Points of the plane z = depth + slope * x over a pixel grid (x, y in units of 0.01)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64) * 0.01
    return np.stack([x, y, depth + slope * x], axis=-1)


def test_hand_worked_distances():
    gt = np.zeros((1, 3, 3))
    pred = np.array([[[0.006, 0.008, 0.0], [0.0, 0.0, 0.12], [0.0, -0.3, 0.0]]])  # distances 0.01, 0.12, 0.3
    r = pointmap_metrics(pred, gt)
    assert r["l2_mean"] == pytest.approx((0.01 + 0.12 + 0.3) / 3)
    assert r["rmse"] == pytest.approx(math.sqrt((0.0001 + 0.0144 + 0.09) / 3))
    assert r["x_mae"] == pytest.approx(0.002)
    assert r["y_mae"] == pytest.approx(0.308 / 3)
    assert r["z_mae"] == pytest.approx(0.04)
    assert r["within_05_cm"] == pytest.approx(1 / 3)
    assert r["within_10_cm"] == pytest.approx(1 / 3)
    assert r["within_20_cm"] == pytest.approx(2 / 3)
    assert r["alignment"] == "none"


def test_plane_normals_point_along_z():
    n = normals_from_points(_plane())
    np.testing.assert_allclose(np.abs(n[2:-2, 2:-2, 2]), 1.0, atol=1e-4)  # away from the 2-pixel border
    assert np.abs(n[0, :, 2]).max() < 1e-6  # the reflected border has no y-derivative: no normal


def test_tilted_plane_gives_the_tilt_angle():
    # z = x tan(30 deg) tilts the normal by 30 degrees. Sobel derivatives are exact on a linear map away from
    # the border (the reflected border is not linear), so only the interior is scored.
    flat, tilted = _plane(), _plane(slope=math.tan(math.radians(30)))
    mask = np.zeros(flat.shape[:2], bool)
    mask[3:-3, 3:-3] = True
    r = pointmap_metrics(tilted, flat, mask)
    assert r["normal_mae"] == pytest.approx(30.0, abs=1e-6)
    assert r["within_22_5_deg"] == 0.0 and r["within_5_0_deg"] == 0.0


def test_perfect_prediction():
    gt = _plane(slope=0.3) + np.random.default_rng(0).normal(0, 0.001, (12, 10, 3))
    r = pointmap_metrics(gt.copy(), gt)
    assert r["l2_mean"] == 0.0 and r["normal_mae"] < 1e-3 and r["within_05_cm"] == 1.0
    assert r["pixels"] == 120
    assert r["within_5_0_deg"] == 1.0  # fractions, not percent


def test_scale_and_shift_alignment_is_opt_in():
    gt = _plane(slope=0.2)
    pred = 0.5 * gt + np.array([0.1, -0.2, 0.3])
    assert pointmap_metrics(pred, gt)["l2_mean"] > 0.5
    r = pointmap_metrics(pred, gt, align="scale_shift")
    assert r["l2_mean"] < 1e-9 and r["alignment"] == "scale_shift"
    r = pointmap_metrics(0.5 * gt, gt, align="scale")
    assert r["l2_mean"] < 1e-9 and r["alignment"] == "scale"


def test_scale_alignment_by_hand():
    # pred = (1, 0, 0), gt = (2, 0, 0) and (0, 1, 0): s = <p, g> / <p, p> = 2 / 2 (two pixels of p)
    pred = np.array([[[1.0, 0, 0], [1.0, 0, 0]]])
    gt = np.array([[[2.0, 0, 0], [0.0, 1.0, 0]]])
    _, s, t = align_points(pred, gt, np.ones((1, 2), bool), "scale")
    assert s == pytest.approx(1.0) and np.all(t == 0)


def test_mask_and_errors():
    gt = _plane()
    with pytest.raises(ValueError, match="no valid pixels"):
        pointmap_metrics(gt, gt, mask=np.zeros(gt.shape[:2]))
    with pytest.raises(ValueError, match="shape"):
        pointmap_metrics(gt[:5], gt)
    with pytest.raises(ValueError, match="alignment"):
        pointmap_metrics(gt, gt, align="similarity")
