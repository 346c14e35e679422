"""Relative-depth metrics: hand-computed values, alignment invariances, masks and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from sapiens2.metrics.depth import DepthMetrics, align_depth, depth_errors
from sapiens2.metrics.report import evaluate, format_table


def test_errors_by_hand():
    gt = np.array([1.0, 2.0, 4.0, 8.0])
    pred = np.array([1.0, 2.0, 5.0, 4.0])
    e = depth_errors(pred, gt)
    assert e["abs_rel"] == pytest.approx((0 + 0 + 0.25 + 0.5) / 4)
    assert e["sq_rel"] == pytest.approx((1 / 4 + 16 / 8) / 4)
    assert e["rmse"] == pytest.approx(np.sqrt((1 + 16) / 4))
    d = np.log(pred) - np.log(gt)
    assert e["rmse_log"] == pytest.approx(np.sqrt(np.mean(d**2)))
    assert e["silog"] == pytest.approx(100 * np.sqrt(np.mean(d**2) - np.mean(d) ** 2))
    # ratios 1, 1, 1.25, 2: below 1.25 strictly are two; below 1.5625 three; below 1.953 three
    assert (e["delta1"], e["delta2"], e["delta3"]) == (0.5, 0.75, 0.75)


@pytest.mark.parametrize("align, transform", [("median", lambda d: 7.5 * d), ("scale_shift", lambda d: 0.3 * d + 2.0)])
def test_alignment_removes_what_relative_depth_cannot_know(align, transform):
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 10, (12, 9))
    m = DepthMetrics(align)
    m.update(transform(gt), gt)
    out = m.compute()
    assert out["abs_rel"] == pytest.approx(0, abs=1e-9) and out["delta1"] == 1.0 and out["alignment"] == align
    raw = DepthMetrics("none")
    raw.update(transform(gt), gt)
    assert raw.compute()["abs_rel"] > 0.1


def test_mask_zero_depth_and_per_image_mean():
    gt = np.full((4, 4), 2.0)
    gt[0, 0] = 0  # no GT there
    pred = np.full((4, 4), 2.0)
    pred[0, 0] = 100.0
    pred[3, 3] = 3.0
    mask = np.ones((4, 4), np.uint8)
    mask[3, 3] = 0
    m = DepthMetrics("none")
    m.update(pred, gt, mask)  # only exact pixels left
    m.update(np.full((2, 2), 4.0), np.full((2, 2), 2.0))  # abs_rel 1.0
    out = m.compute()
    assert out["abs_rel"] == pytest.approx(0.5) and out["pixels"] == 14 + 4


def test_scale_shift_is_least_squares():
    p = np.array([1.0, 2.0, 3.0, 4.0])
    g = np.array([2.0, 2.5, 4.5, 5.0])
    a = np.stack([p, np.ones(4)], 1)
    want = a @ np.linalg.lstsq(a, g, rcond=None)[0]
    assert np.allclose(align_depth(p, g, "scale_shift"), want)


def test_bad_input():
    m = DepthMetrics()
    with pytest.raises(ValueError, match="differs from GT shape"):
        m.update(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="must be H x W"):
        m.update(np.ones((2, 3, 3)), np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        m.update(np.array([[np.nan, 1.0]]), np.ones((1, 2)))
    with pytest.raises(ValueError, match="no valid pixels"):
        m.update(np.ones((2, 2)), np.zeros((2, 2)))
        m.compute()
    with pytest.raises(ValueError, match="alignment must be one of"):
        DepthMetrics("scale")


def test_evaluate_depth_folders(tmp_path):
    """The predictor's `<stem>_reldepth.npy` files against a reference layout (`depth/` + `mask/`)."""
    import cv2

    (tmp_path / "pred").mkdir()
    (tmp_path / "gt" / "depth").mkdir(parents=True)
    (tmp_path / "gt" / "mask").mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        gt = rng.uniform(1, 5, (8, 6)).astype(np.float32)
        np.save(tmp_path / "gt" / "depth" / f"im{i}.npy", gt)
        np.save(tmp_path / "pred" / f"im{i}_reldepth.npy", 3 * gt)
        mask = np.zeros((8, 6), np.uint8)
        mask[2:6] = 255
        cv2.imwrite(str(tmp_path / "gt" / "mask" / f"im{i}.png"), mask)
    res = evaluate("depth", tmp_path / "pred", tmp_path / "gt")
    assert res["images"] == 3 and res["pixels"] == 3 * 4 * 6 and res["alignment"] == "median"
    assert res["metrics"]["abs_rel"] == pytest.approx(0, abs=1e-6)
    assert "delta1" in format_table(res)
    res = evaluate("depth", tmp_path / "pred", tmp_path / "gt", align="none")
    assert res["metrics"]["abs_rel"] == pytest.approx(2.0, rel=1e-5)
