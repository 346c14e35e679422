"""Matting errors by hand, and the gradient error against a direct scipy implementation of its definition."""

from __future__ import annotations

import numpy as np
import pytest

from sapiens2.metrics.matting import MattingMetrics, connectivity_levels, matting_errors


def test_sad_and_mse_by_hand():
    gt = np.array([[0.0, 1.0], [0.5, 0.5]])
    pred = np.array([[0.2, 1.0], [0.5, 0.0]])
    r = matting_errors(pred, gt)
    assert r["sad"] == pytest.approx(0.7 / 1000)
    assert r["mse"] == pytest.approx((0.04 + 0.25) / 4)


def test_trimap_restricts_to_unknown_pixels():
    gt = np.array([[0.0, 1.0], [0.5, 0.5]])
    pred = np.array([[0.2, 1.0], [0.5, 0.0]])
    trimap = np.array([[0, 255], [128, 128]])
    r = matting_errors(pred, gt, trimap)
    assert r["sad"] == pytest.approx(0.5 / 1000) and r["mse"] == pytest.approx(0.25 / 2)


def test_connectivity_by_hand():
    # Thresholds 0.1 .. 0.5: pixels 0 and 1 form the shared component; pixel 2 (alpha 0) is never in it -> 0.
    # At 0.6 the prediction's 0.5 drops out -> pixel 1 gets 0.5. Pixel 0 stays to the end -> 1.
    gt = np.array([[1.0, 1.0, 0.0]])
    pred = np.array([[1.0, 0.5, 0.0]])
    np.testing.assert_allclose(connectivity_levels(pred, gt), [[1.0, 0.5, 0.0]])
    # phi = 1 - d * (d >= 0.15): pred d = (0, 0, 0) -> 1, 1, 1; gt d = (0, 0.5, 0) -> 1, 0.5, 1.
    assert matting_errors(pred, gt)["conn"] == pytest.approx(0.5 / 1000)


def test_connectivity_keeps_only_the_largest_component():
    gt = np.array([[1.0, 0.0, 1.0, 1.0]])
    levels = connectivity_levels(gt, gt)
    np.testing.assert_allclose(levels, [[0.0, 0.0, 1.0, 1.0]])  # the lone pixel is cut off at 0.1


def test_gradient_error_matches_a_direct_implementation():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    gt = np.clip(ndimage.gaussian_filter(rng.uniform(0, 1, (40, 36)), 2) * 3 - 1, 0, 1)
    pred = np.clip(gt + rng.normal(0, 0.05, gt.shape), 0, 1)
    sigma = 1.4
    half = int(np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * 0.01))))
    assert half == 4
    u = np.arange(-half, half + 1)
    gauss = np.exp(-(u**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    hx = gauss[:, None] * (-u * gauss / sigma**2)[None, :]
    hx /= np.sqrt((hx**2).sum())

    def magnitude(a):
        return np.hypot(ndimage.convolve(a, hx, mode="nearest"), ndimage.convolve(a, hx.T, mode="nearest"))

    expected = np.sum((magnitude(pred) - magnitude(gt)) ** 2) / 1000
    assert matting_errors(pred, gt)["grad"] == pytest.approx(expected, rel=1e-9)


def test_perfect_prediction_scores_zero():
    gt = np.random.default_rng(1).uniform(0, 1, (16, 16))
    r = matting_errors(gt.copy(), gt)
    assert r == {"sad": 0.0, "mse": 0.0, "grad": 0.0, "conn": 0.0}


def test_inverted_matte_is_not_perfect():
    gt = np.random.default_rng(1).uniform(0, 1, (16, 16))
    r = matting_errors(1.0 - gt, gt)
    assert min(r.values()) > 0


def test_average_over_images():
    acc = MattingMetrics()
    acc.update(np.ones((2, 2)), np.zeros((2, 2)))
    acc.update(np.zeros((2, 2)), np.zeros((2, 2)))
    r = acc.compute()
    assert r["sad"] == pytest.approx(2 / 1000) and r["images"] == 2


def test_errors():
    with pytest.raises(ValueError, match="shape"):
        matting_errors(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        matting_errors(np.full((2, 2), 255.0), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="empty"):
        matting_errors(np.zeros((2, 2)), np.zeros((2, 2)), trimap=np.zeros((2, 2)))
