"""Each loss on small cases worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from sapiens2.train import losses as L


def test_keypoint_mse_uses_keypoint_weights():
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.ones(1, 2, 2, 2)
    w = torch.tensor([[1.0, 0.0]])
    # mean over B*K*H*W = 8 of w_k (p - t)^2 = 4 / 8, times the weight 10
    assert float(L.KeypointMSELoss(10.0)(pred, target, w)) == pytest.approx(5.0)


def test_ohkm_keeps_the_hardest_keypoints():
    pred = torch.zeros(1, 3, 1, 2)
    target = torch.tensor([1.0, 2.0, 3.0])[None, :, None, None].expand(1, 3, 1, 2)
    w = torch.ones(1, 3)
    # per-keypoint losses 1, 4, 9; top-2 mean = 6.5
    assert float(L.KeypointOHKMMSELoss(1.0, topk=2)(pred, target, w)) == pytest.approx(6.5)


def test_weighted_cross_entropy_averages_over_all_pixels():
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3), 0.0]]]])  # 1 x 2 classes x 1 x 2
    labels = torch.tensor([[[1, 255]]])
    # pixel 0: -log(3/4) x class weight 2; pixel 1 ignored counts as 0; mean over 2 pixels
    loss = L.WeightedCrossEntropyLoss(1.0, (1.0, 2.0))(logits, labels)
    assert float(loss) == pytest.approx(2 * -math.log(0.75) / 2)


def test_dice_perfect_and_empty_samples():
    labels = torch.tensor([[[0, 1], [2, 2]], [[0, 0], [255, 0]]])
    logits = torch.nn.functional.one_hot(labels.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 50
    # sample 0 is perfect (loss 0); sample 1 has no non-background class, so it weighs 0
    assert float(L.DiceLoss()(logits, labels)) == pytest.approx(0.0, abs=1e-6)
    wrong = logits.roll(1, dims=1)
    # sample 0 entirely wrong: each present class has dice eps / (count + eps) ~ 0; mean over the batch of 2
    assert float(L.DiceLoss()(wrong, labels)) == pytest.approx(0.5, abs=1e-3)


def test_normal_cosine_loss():
    gt = torch.nn.functional.normalize(torch.randn(2, 3, 4, 5), dim=1)
    mask = torch.ones(2, 4, 5, dtype=torch.bool)
    assert float(L.NormalCosineLoss(10.0)(gt * 3, gt, mask)) == pytest.approx(0.0, abs=1e-5)
    assert float(L.NormalCosineLoss(10.0)(-gt, gt, mask)) == pytest.approx(20.0, abs=1e-4)


def test_masked_l1_sums_channels_over_valid_pixels():
    pred = torch.zeros(1, 3, 1, 2)
    target = torch.ones(1, 3, 1, 2)
    target[0, :, 0, 1] = 100  # masked out
    mask = torch.tensor([[[True, False]]])
    assert float(L.MaskedL1Loss(1.0)(pred, target, mask)) == pytest.approx(3.0)


def test_gradient_loss_is_squared_and_albedo_averages():
    pred = torch.tensor([0.0, 1.0, 3.0]).view(1, 1, 1, 3)
    target = torch.zeros(1, 1, 1, 3)
    mask = torch.ones(1, 1, 3, dtype=torch.bool)
    # forward differences 1 and 2: (1 + 4) / 2 pairs; no vertical pairs
    assert float(L.GradientLoss(1.0)(pred, target, mask)) == pytest.approx(2.5)
    assert float(L.GradientLoss(1.0, average=True)(pred, target, mask)) == pytest.approx(1.25)
    mask[0, 0, 2] = False  # only the first pair is valid
    assert float(L.GradientLoss(1.0)(pred, target, mask)) == pytest.approx(1.0)


def test_chromaticity_ignores_brightness():
    gt = torch.rand(1, 3, 4, 4) * 0.4 + 0.05
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    assert float(L.ChromaticityL1Loss()(gt * 2, gt, mask)) == pytest.approx(0.0, abs=1e-5)
    assert float(L.ChromaticityL1Loss()(gt.flip(1), gt, mask)) > 0.01


def test_silog_of_a_scaled_prediction():
    gt = torch.rand(2, 4, 4) + 1
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    # d = -log 2 everywhere: sqrt(d^2 - 0.5 d^2) = log 2 / sqrt 2
    assert float(L.SiLogLoss()(gt * 2, gt, mask)) == pytest.approx(math.log(2) / math.sqrt(2), rel=1e-5)


def _pinhole(z: torch.Tensor, fx: float, fy: float, cx: float, cy: float) -> torch.Tensor:
    h, w = z.shape[-2:]
    v, u = torch.meshgrid(torch.arange(h, dtype=z.dtype), torch.arange(w, dtype=z.dtype), indexing="ij")
    return torch.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], dim=1)


def test_intrinsics_consistency_is_zero_for_a_pinhole_map():
    z = torch.rand(1, 6, 5) + 1
    K = torch.tensor([[50.0, 40.0, 2.5, 3.0]])
    pts = _pinhole(z, 50, 40, 2.5, 3.0)
    mask = torch.ones(1, 6, 5, dtype=torch.bool)
    assert float(L.IntrinsicsConsistencyLoss()(pts, mask, K)) == pytest.approx(0.0, abs=1e-6)
    pts[:, 0] += 0.5
    assert float(L.IntrinsicsConsistencyLoss()(pts, mask, K)) == pytest.approx(0.5, rel=1e-5)


def test_pointmap_l1_normalizes_by_depth_and_clamps():
    gt = _pinhole(torch.full((1, 4, 4), 2.0), 10, 10, 2, 2)
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    md = torch.tensor([2.0])
    pred = gt.clone()
    pred[:, 2] += 0.2  # |dz| / M = 0.1 per pixel
    assert float(L.ClampedL1Loss(2.0)(pred, gt, mask, md)) == pytest.approx(0.2, rel=1e-5)
    assert float(L.ClampedL1Loss(2.0)(pred + 100, gt, mask, md)) == pytest.approx(4.0)
    # a constant shift is invisible to the shift-invariant variant
    assert float(L.ClampedL1Loss(1.0, shift_invariant=True)(gt + 3, gt, mask, md)) == pytest.approx(0.0, abs=1e-6)
    # the x2 multiscale term of a uniform error equals the plain one
    assert float(L.ClampedL1Loss(2.0, upsample=2)(pred, gt, mask, md)) == pytest.approx(0.2, rel=1e-5)


def test_pointmap_normal_loss():
    z = 2 + 0.1 * torch.arange(5.0)[None, None, :].expand(1, 5, 5)
    gt = _pinhole(z, 10, 10, 2, 2)
    mask = torch.ones(1, 5, 5, dtype=torch.bool)
    s = torch.tensor([1.5])
    assert float(L.PointmapNormalLoss()(gt, gt, mask, s)) == pytest.approx(0.0, abs=1e-5)
    assert float(L.PointmapNormalLoss()(gt * torch.tensor([1.0, 1.0, -1.0]).view(1, 3, 1, 1), gt, mask, s)) > 0.1


def test_scale_l1():
    assert float(L.ScaleL1Loss()(torch.tensor([[2.0], [1.0]]), torch.tensor([1.0, 1.0]))) == pytest.approx(2.0)


def test_matting_losses_vanish_on_the_target():
    alpha = torch.rand(2, 1, 16, 12)
    mask = torch.ones(2, 16, 12, dtype=torch.bool)
    for loss in (L.MaskedL1Loss(), L.AlphaGradientL1Loss(), L.LaplacianPyramidLoss()):
        assert float(loss(alpha, alpha, mask)) == pytest.approx(0.0, abs=1e-6)
        assert float(loss(1 - alpha, alpha, mask)) > 0.01


def test_prediction_is_resized_to_the_target():
    gt = torch.ones(1, 3, 8, 8)
    mask = torch.ones(1, 8, 8, dtype=torch.bool)
    assert float(L.MaskedL1Loss()(torch.ones(1, 3, 4, 4), gt, mask)) == pytest.approx(0.0)
