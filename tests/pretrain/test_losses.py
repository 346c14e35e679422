"""MAE loss on masked tokens only, DINO cls loss + Sinkhorn-Knopp + EMA centring, KoLeo, EMA teacher."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sapiens2.models import BackboneConfig, build_model
from sapiens2.pretrain.loss import DINOClsTokenLoss, KoLeoLoss, MAELoss, normalize_patches, patchify, sinkhorn_knopp
from sapiens2.pretrain.schedules import teacher_momentum, teacher_temperature, warmup_cosine
from sapiens2.pretrain.ssl_meta_arch import ObjectiveConfig, SSLMetaArch

TINY = ObjectiveConfig(decoder_dim=32, decoder_depth=1, decoder_heads=2, head_out_dim=64, head_hidden_dim=32,
                       head_bottleneck_dim=16)


def test_patchify_is_row_major_patches():
    img = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    p = patchify(img, 2)
    assert p.shape == (2, 6, 12)
    # token 4 = patch row 1, column 1; its first value is pixel (2, 2) of channel 0
    assert p[0, 4, 0] == img[0, 0, 2, 2] and p[1, 5, 2] == img[1, 2, 2, 4]


def test_mae_loss_ignores_visible_tokens():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 6, 12), torch.randn(2, 6, 12)
    mask = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 1, 1, 1, 0, 0]], dtype=torch.bool)
    loss = MAELoss()(pred, target, mask)
    changed = target.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 12) * 100
    pred2 = pred.clone()
    pred2[~mask] = 7.0
    assert torch.equal(MAELoss()(pred2, changed, mask), loss)
    expect = (pred - normalize_patches(target)).pow(2).mean(-1)[mask].mean()
    assert torch.allclose(loss, expect)


def test_mae_loss_gradient_only_reaches_masked_predictions():
    pred = torch.randn(1, 4, 8, requires_grad=True)
    MAELoss()(pred, torch.randn(1, 4, 8), torch.tensor([[True, False, False, True]])).backward()
    assert (pred.grad[0, [1, 2]] == 0).all() and (pred.grad[0, [0, 3]] != 0).any()


def test_sinkhorn_rows_and_columns():
    torch.manual_seed(0)
    logits = torch.randn(32, 8) * 3
    q = sinkhorn_knopp(logits, 0.1, iterations=3)
    assert torch.allclose(q.sum(1), torch.ones(32), atol=1e-5)  # each sample: a distribution
    q = sinkhorn_knopp(logits, 0.5, iterations=200)
    assert torch.allclose(q.sum(1), torch.ones(32), atol=1e-5)
    assert torch.allclose(q.sum(0), torch.full((8,), 32 / 8), rtol=1e-3)  # each prototype: N / K


def test_sinkhorn_is_shift_invariant_and_stable_for_large_logits():
    logits = torch.randn(16, 8)
    a = sinkhorn_knopp(logits, 0.07)
    b = sinkhorn_knopp(logits + 50.0, 0.07)  # exp(50 / 0.07) overflows without the shift
    assert torch.isfinite(b).all() and torch.allclose(a, b, atol=1e-4)


def test_ema_centering_uses_old_centre_then_moves():
    loss = DINOClsTokenLoss(4, centering="ema", center_momentum=0.9)
    t = torch.tensor([[1.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 2.0]])
    p = loss.teacher_targets(t, 1.0)
    assert torch.allclose(p, F.softmax(t, -1))  # centre starts at 0
    assert torch.allclose(loss.center, 0.1 * t.mean(0, keepdim=True))
    p2 = loss.teacher_targets(t, 1.0)
    assert torch.allclose(p2, F.softmax(t - 0.1 * t.mean(0), -1))


def test_dino_loss_pairs_skip_same_view_and_local_local():
    torch.manual_seed(0)
    k, b = 5, 3
    sg, sl = torch.randn(2, b, k), torch.randn(4, b, k)
    t = F.softmax(torch.randn(2, b, k), -1)
    loss = DINOClsTokenLoss(k, student_temp=0.1)(sg, sl, t)

    def h(tv, sv):
        return -(tv * F.log_softmax(sv / 0.1, -1)).sum(-1).mean()

    pairs = [h(t[0], sg[1]), h(t[1], sg[0])] + [h(t[j], sl[i]) for i in range(4) for j in range(2)]
    assert torch.allclose(loss, torch.stack(pairs).mean())


def test_koleo_prefers_spread_points():
    spread = torch.eye(4)
    bunched = torch.eye(4) * 0.01 + torch.tensor([1.0, 0, 0, 0])
    k = KoLeoLoss()
    assert k(spread) < k(bunched)
    assert torch.allclose(k(spread), torch.tensor(-math.log(math.sqrt(2))))


def test_ema_update_math():
    torch.manual_seed(0)
    bb = build_model(BackboneConfig(embed_dim=32, depth=1, num_heads=2), "pretrain")
    meta = SSLMetaArch(bb, TINY)
    with torch.no_grad():
        for p in meta.student.parameters():
            p.add_(torch.randn_like(p))
    t0 = [p.clone() for p in meta.teacher.parameters()]
    s = [p.clone() for p in (*meta.student.backbone.parameters(), *meta.student.head.parameters())]
    meta.update_teacher(0.9)
    for new, old, st in zip(meta.teacher.parameters(), t0, s, strict=True):
        assert torch.allclose(new, 0.9 * old + 0.1 * st, atol=1e-6)
    assert not any(p.requires_grad for p in meta.teacher.parameters())


def test_schedules():
    assert teacher_temperature(0) == 0.065 and teacher_temperature(500) == pytest.approx(0.0675)
    assert teacher_temperature(1000) == teacher_temperature(10**6) == 0.07
    assert teacher_momentum(123, 1000) == 0.992
    assert teacher_momentum(0, 100, 0.992, 1.0) == pytest.approx(0.992)
    assert teacher_momentum(100, 100, 0.992, 1.0) == pytest.approx(1.0)
    assert warmup_cosine(0, 100, 1e-4, 10, 1e-7) == pytest.approx(1e-5)
    assert warmup_cosine(9, 100, 1e-4, 10, 1e-7) == pytest.approx(1e-4)
    assert warmup_cosine(100, 100, 1e-4, 10, 1e-7) == pytest.approx(1e-7)
