"""Layer-wise LR decay, weight-decay exclusions, the schedule, and clipping."""

from __future__ import annotations

import math

import pytest
import torch

from sapiens2.models import BackboneConfig, DenseHeadConfig, build_model
from sapiens2.training.optim import (
    Schedule,
    build_optimizer,
    build_scheduler,
    clip_gradients,
    layer_id,
    param_groups,
    pretrain_no_decay,
)

TINY = BackboneConfig(embed_dim=32, depth=3, num_heads=2, ffn_hidden=64, n_storage_tokens=2)


def _model():
    return build_model(TINY, "normal", DenseHeadConfig(32, (8, 8, 8, 8), (8,), (3,)))


def _rate_of(groups: list[dict]) -> dict[str, float]:
    return {n: g["lr"] for g in groups for n in g["param_names"]}


def test_layer_ids_follow_the_reference_rule():
    d = 3
    assert layer_id("backbone.patch_embed.projection.weight", d) == 0
    assert layer_id("backbone.cls_token", d) == 0
    assert layer_id("backbone.storage_tokens", d) == 0
    assert layer_id("backbone.tokenizer.blocks.0.attn.wq.weight", d) == 0
    assert layer_id("backbone.blocks.0.attn.wq.weight", d) == 1
    assert layer_id("backbone.blocks.2.ffn.w3.weight", d) == 3
    assert layer_id("backbone.ln1.weight", d) == 4
    assert layer_id("decode_head.conv_normal.weight", d) == 4
    # a bare backbone (pretraining) and a decoder's own blocks
    assert layer_id("blocks.1.attn.wq.weight", d, backbone_prefix="") == 2
    assert layer_id("decoder.blocks.0.weight", d, backbone_prefix="encoder.") == 4


def test_layer_decay_rates():
    base, r = 1e-3, 0.5
    rates = _rate_of(param_groups(_model().named_parameters(), base, 0.1, r, depth=3))
    # L = depth + 2 = 5: head and final norm base, block i base r^(3 - i), embeddings base r^4
    assert rates["decode_head.conv_normal.weight"] == pytest.approx(base)
    assert rates["backbone.ln1.weight"] == pytest.approx(base)
    assert rates["backbone.blocks.2.attn.wq.weight"] == pytest.approx(base * r)
    assert rates["backbone.blocks.1.attn.wq.weight"] == pytest.approx(base * r**2)
    assert rates["backbone.blocks.0.attn.wq.weight"] == pytest.approx(base * r**3)
    assert rates["backbone.patch_embed.projection.weight"] == pytest.approx(base * r**4)
    assert rates["backbone.cls_token"] == pytest.approx(base * r**4)
    off = _rate_of(param_groups(_model().named_parameters(), base, 0.1, 1.0, depth=3))
    assert set(off.values()) == {base}


def test_fine_tuning_weight_decay_exempts_what_the_reference_exempts():
    """Reference rule (TASKS §6.3): no decay for 1-D tensors, `.bias` names and `pos_embed` names only; the
    learned tokens are decayed like any other matrix."""
    groups = param_groups(_model().named_parameters(), 1e-3, 0.1, 0.8, depth=3)
    wd = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    for name in ("backbone.ln1.weight", "backbone.blocks.0.attn.wq.bias", "backbone.blocks.0.attn.q_norm.weight",
                 "decode_head.conv_normal.bias"):
        assert wd[name] == 0.0, name
    for name in ("backbone.cls_token", "backbone.storage_tokens", "backbone.blocks.0.attn.wq.weight",
                 "backbone.patch_embed.projection.weight", "decode_head.conv_normal.weight"):
        assert wd[name] == 0.1, name
    v1_style = [("backbone.pos_embed", torch.nn.Parameter(torch.zeros(1, 12, 32))),
                ("backbone.tokenizer.local_pos_embed", torch.nn.Parameter(torch.zeros(1, 17, 32))),
                ("backbone.mask_token", torch.nn.Parameter(torch.zeros(1, 32))),
                ("backbone.tokenizer.w_cls", torch.nn.Parameter(torch.zeros(1, 1, 32)))]
    wd = {n: g["weight_decay"] for g in param_groups(v1_style, 1e-3, 0.1) for n in g["param_names"]}
    assert wd == {"backbone.pos_embed": 0.0, "backbone.tokenizer.local_pos_embed": 0.0,
                  "backbone.mask_token": 0.1, "backbone.tokenizer.w_cls": 0.1}
    wd = {n: g["weight_decay"] for g in param_groups(v1_style, 1e-3, 0.1, no_decay=pretrain_no_decay)
          for n in g["param_names"]}
    assert set(wd.values()) == {0.0}  # pretraining also exempts the learned tokens


def test_frozen_parameters_are_left_out():
    model = _model()
    model.backbone.requires_grad_(False)
    names = {n for g in param_groups(model.named_parameters(), 1e-3, 0.1, 0.8, 3) for n in g["param_names"]}
    assert names and all(n.startswith("decode_head.") for n in names)


def test_schedule_warmup_then_linear_decay():
    s = Schedule(total_iters=100, warmup_iters=10, start_factor=1e-3)
    assert s(0) == pytest.approx(1e-3)
    assert s(5) == pytest.approx(1e-3 + (1 - 1e-3) * 0.5)
    assert s(10) == pytest.approx(1.0)
    assert s(55) == pytest.approx(0.5)
    assert s(100) == pytest.approx(0.0)
    c = Schedule(total_iters=110, warmup_iters=10, kind="cosine", min_factor=0.1)
    assert c(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert c(110) == pytest.approx(0.1)


def test_scheduler_scales_every_group_and_resumes():
    model = _model()
    opt = build_optimizer(param_groups(model.named_parameters(), 1.0, 0.0, 0.5, 3))
    sched = build_scheduler(opt, Schedule(20, 4, 0.25))
    heads = [g for g in opt.param_groups if g["lr_scale"] == 1.0]
    assert heads[0]["lr"] == pytest.approx(0.25)
    for _ in range(6):
        opt.step()
        sched.step()
    state = sched.state_dict()
    assert heads[0]["lr"] == pytest.approx(Schedule(20, 4, 0.25)(6))
    emb = min(g["lr"] for g in opt.param_groups)
    assert emb == pytest.approx(Schedule(20, 4, 0.25)(6) * 0.5**4)
    opt2 = build_optimizer(param_groups(model.named_parameters(), 1.0, 0.0, 0.5, 3))
    sched2 = build_scheduler(opt2, Schedule(20, 4, 0.25))
    sched2.load_state_dict(state)
    sched.step()
    sched2.step()
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in opt2.param_groups]


def test_clip_gradients():
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    norm = clip_gradients([p], 1.0)
    assert float(norm) == pytest.approx(5.0)
    assert float(p.grad.norm()) == pytest.approx(1.0, rel=1e-5)
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    assert float(clip_gradients([p], None)) == pytest.approx(5.0)
    assert float(p.grad.norm()) == pytest.approx(5.0)
