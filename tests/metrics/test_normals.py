"""Normal angular errors on maps with known angles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sapiens2.metrics.normals import NormalMetrics, angular_error_deg, normal_metrics


def _tilted(angles_deg: np.ndarray) -> np.ndarray:
    """Unit vectors at the given angles from +z, in the x-z plane."""
    a = np.radians(angles_deg)
    return np.stack([np.sin(a), np.zeros_like(a), np.cos(a)], axis=-1)


def test_known_angles():
    angles = np.array([[0.0, 10.2], [20.0, 45.0]])
    gt = np.broadcast_to([0.0, 0.0, 1.0], (2, 2, 3))
    r = normal_metrics(_tilted(angles) * 3.0, gt)  # length does not matter
    assert r["normal_mae"] == pytest.approx(75.2 / 4)
    assert r["normal_rmse"] == pytest.approx(math.sqrt((10.2**2 + 400 + 2025) / 4))
    assert r["within_5_0_deg"] == 25.0
    assert r["within_11_25_deg"] == 50.0
    assert r["within_22_5_deg"] == 75.0
    assert r["within_30_0_deg"] == 75.0
    # Histogram median: 2 of 4 pixels are reached in the bin [10, 10.5) holding 10.2; its centre is 10.25.
    assert r["normal_median_deg"] == 10.25


def test_thresholds_are_strict():
    acc = NormalMetrics(thresholds_deg=(90.0, 90.5))
    acc.update(np.array([[[1.0, 0.0, 0.0]]]), np.array([[[0.0, 0.0, 1.0]]]))  # exactly 90 degrees
    r = acc.compute()
    assert r["within_90_0_deg"] == 0.0 and r["within_90_5_deg"] == 100.0


def test_mask_selects_pixels():
    angles = np.array([[0.0, 90.0]])
    gt = np.broadcast_to([0.0, 0.0, 1.0], (1, 2, 3))
    r = normal_metrics(_tilted(angles), gt, mask=np.array([[1, 0]]))
    assert r["normal_mae"] == 0.0 and r["pixels"] == 1


def test_opposite_normals_are_180_degrees():
    assert angular_error_deg(np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.0, -2.0])) == pytest.approx(180.0)


def test_perfect_prediction():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(8, 8, 3))
    r = normal_metrics(gt * 2.5, gt)
    assert r["normal_mae"] < 1e-5 and r["within_5_0_deg"] == 100.0 and r["normal_median_deg"] == 0.25


def test_pooled_over_images():
    acc = NormalMetrics()
    acc.update(_tilted(np.array([[10.0]])), np.array([[[0.0, 0.0, 1.0]]]))
    acc.update(_tilted(np.array([[0.0, 0.0, 0.0]])), np.broadcast_to([0.0, 0.0, 1.0], (1, 3, 3)))
    assert acc.compute()["normal_mae"] == pytest.approx(10 / 4)


def test_nan_or_zero_gt_pixels_are_not_valid():
    gt = np.array([[[0.0, 0.0, 1.0], [np.nan, 0.0, 1.0], [0.0, 0.0, 0.0]]])
    r = normal_metrics(_tilted(np.array([[20.0, 0.0, 0.0]])), gt)
    assert r["pixels"] == 1 and r["normal_mae"] == pytest.approx(20.0)


def test_empty_mask_is_an_error():
    with pytest.raises(ValueError, match="no valid pixels"):
        normal_metrics(np.ones((2, 2, 3)), np.ones((2, 2, 3)), mask=np.zeros((2, 2)))


def test_shape_errors():
    with pytest.raises(ValueError, match="shape"):
        normal_metrics(np.ones((2, 2, 3)), np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match="H x W x 3"):
        normal_metrics(np.ones((2, 2, 4)), np.ones((2, 2, 4)))
    with pytest.raises(ValueError, match="mask shape"):
        normal_metrics(np.ones((2, 2, 3)), np.ones((2, 2, 3)), mask=np.ones((3, 3)))


def test_nan_prediction_is_an_error():
    pred = np.ones((2, 2, 3))
    pred[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        normal_metrics(pred, np.ones((2, 2, 3)))
