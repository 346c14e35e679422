"""Albedo metrics by hand, and the masked SSIM against a direct scipy implementation of its definition."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sapiens2.metrics.albedo import AlbedoMetrics, albedo_metrics, masked_ssim


def test_hand_worked_errors():
    gt = np.zeros((1, 2, 3))
    pred = np.array([[[0.1, 0.1, 0.1], [0.3, 0.0, 0.0]]])
    r = albedo_metrics(pred, gt)
    assert r["mae"] == pytest.approx((0.1 + 0.1) / 2)
    mse = (0.01 + 0.09 / 3) / 2
    assert r["rmse"] == pytest.approx(math.sqrt(mse))
    assert r["psnr"] == pytest.approx(10 * math.log10(1 / mse))
    # One horizontal pair: forward differences of the error (0.2, -0.1, -0.1), channel mean of |.| = 0.4 / 3.
    assert r["grad_l1"] == pytest.approx(0.4 / 3)
    assert r["data_range"] == 1.0


def test_mask_restricts_pixels_and_pairs():
    gt = np.zeros((2, 2, 3))
    pred = np.zeros((2, 2, 3))
    pred[1, 1] = 0.9
    r = albedo_metrics(pred, gt, mask=np.array([[1, 1], [1, 0]]))
    assert r["mae"] == 0.0 and r["grad_l1"] == 0.0 and r["pixels"] == 3


def test_data_range_follows_the_first_gt_like_the_reference():
    gt = np.full((4, 4, 3), 200.0)
    r = albedo_metrics(gt + 10.0, gt)
    assert r["data_range"] == 255.0
    assert r["psnr"] == pytest.approx(10 * math.log10(255.0**2 / 100.0))


def test_ssim_of_constant_images_is_the_luminance_term():
    # No variance: SSIM = (2 a b + C1) / (a^2 + b^2 + C1) at every pixel, with the mask's help anywhere.
    a, b = 0.4, 0.6
    c1 = 0.01**2
    r = albedo_metrics(np.full((20, 20, 3), a), np.full((20, 20, 3), b))
    assert r["ssim"] == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))


def test_identical_images_have_ssim_one_and_perfect_scores():
    img = np.random.default_rng(0).uniform(0, 1, (24, 20, 3))
    mask = np.zeros((24, 20))
    mask[4:20, 3:15] = 1
    r = albedo_metrics(img, img.copy(), mask)
    assert r["ssim"] == pytest.approx(1.0) and r["mae"] == 0.0 and r["psnr"] == float("inf")


def test_background_does_not_leak_into_masked_ssim():
    rng = np.random.default_rng(1)
    gt = rng.uniform(0, 1, (20, 20, 3))
    mask = np.zeros((20, 20))
    mask[5:15, 5:15] = 1
    pred = gt.copy()
    pred[mask == 0] = rng.uniform(0, 1, (int((mask == 0).sum()), 3))  # garbage outside the mask
    assert albedo_metrics(pred, gt, mask)["ssim"] == pytest.approx(1.0)


def test_masked_ssim_matches_a_direct_implementation():
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(2)
    gt = rng.uniform(0, 1, (30, 26, 3))
    pred = np.clip(gt + rng.normal(0, 0.1, gt.shape), 0, 1)
    mask = (rng.random((30, 26)) < 0.8).astype(float)
    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()

    def conv(a):
        return scipy_ndimage.correlate(a, window, mode="constant", cval=0.0)

    wm = conv(mask)
    c1, c2 = 0.01**2, 0.03**2
    per_channel = []
    for c in range(3):
        p, t = pred[..., c], gt[..., c]
        mp, mt = conv(mask * p) / wm, conv(mask * t) / wm
        vp = conv(mask * p * p) / wm - mp**2
        vt = conv(mask * t * t) / wm - mt**2
        cov = conv(mask * p * t) / wm - mp * mt
        per_channel.append(((2 * mp * mt + c1) * (2 * cov + c2)) / ((mp**2 + mt**2 + c1) * (vp + vt + c2)))
    expected_map = np.mean(per_channel, axis=0)
    counted = wm > 0.5
    total, n = masked_ssim(pred, gt, mask > 0, 1.0)
    assert n == counted.sum()
    assert total / n == pytest.approx(expected_map[counted].mean(), rel=1e-9)


def test_pooled_over_images():
    acc = AlbedoMetrics()
    acc.update(np.full((1, 1, 3), 0.5), np.zeros((1, 1, 3)))
    acc.update(np.zeros((1, 3, 3)), np.zeros((1, 3, 3)))
    assert acc.compute()["mae"] == pytest.approx(0.5 / 4)


def test_errors():
    with pytest.raises(ValueError, match="shape"):
        albedo_metrics(np.zeros((2, 2, 3)), np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="no valid pixels"):
        albedo_metrics(np.zeros((2, 2, 3)), np.zeros((2, 2, 3)), mask=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="H x W x C"):
        albedo_metrics(np.zeros((2, 2)), np.zeros((2, 2)))
