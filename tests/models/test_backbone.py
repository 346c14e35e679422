"""Backbone behaviours beyond the fixtures: GQA rule, sizes, errors, checkpointing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sapiens2.models import ARCHS, BackboneConfig, build_model
from sapiens2.nn.attention import GroupedQueryAttention
from sapiens2.nn.rope import apply_rope

TINY = BackboneConfig(embed_dim=32, depth=4, num_heads=2, full_attention_first=1, full_attention_last=1)


def test_gqa_rule_of_the_official_archs():
    cfg = ARCHS["0.4b"]
    assert [cfg.kv_heads(i) for i in range(cfg.depth)] == [16] * 8 + [8] * 8 + [16] * 8
    assert all(ARCHS["0.1b"].kv_heads(i) == 12 for i in range(12))
    assert ARCHS["5b"].kv_heads(47) == 16 and ARCHS["5b"].kv_heads(48) == 32


def test_grouped_attention_equals_interleaved_repeat():
    torch.manual_seed(0)
    attn = GroupedQueryAttention(32, num_heads=4, num_kv_heads=2, layer_scale=0.5).eval()
    x = torch.randn(2, 5 + 6, 32)
    sin, cos = torch.randn(6, 8), torch.randn(6, 8)
    with torch.no_grad():
        ours = attn(x, (sin, cos))
        b, n, _ = x.shape
        q = attn.q_norm(attn.wq(x).view(b, n, 4, 8).transpose(1, 2))
        k = attn.k_norm(attn.wk(x).view(b, n, 2, 8).transpose(1, 2)).repeat_interleave(2, dim=1)
        v = attn.wv(x).view(b, n, 2, 8).transpose(1, 2).repeat_interleave(2, dim=1)
        q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
        plain = attn.gamma(attn.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, 32)))
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-6)


def test_tokens_and_featmap_shapes_follow_the_input():
    model = build_model(TINY, "pretrain").eval()
    with torch.no_grad():
        tokens = model(torch.randn(2, 3, 70, 50))  # floor-cropped to a 4 x 3 grid
        fmap = model.forward_featmap(torch.randn(1, 3, 64, 48))
    assert tokens.shape == (2, 9 + 4 * 3, 32)
    assert fmap.shape == (1, 32, 4, 3)


def test_featmap_is_the_patch_tokens_row_major():
    model = build_model(TINY, "pretrain").eval()
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        tokens = model(x)
        fmap = model.forward_featmap(x)
    assert torch.equal(fmap[0, :, 1, 2], tokens[0, 9 + 1 * 3 + 2])


def test_tokenizer_needs_a_divisible_grid():
    model = build_model(BackboneConfig(embed_dim=32, depth=2, num_heads=2, use_tokenizer=True), "pretrain")
    with pytest.raises(ValueError, match="divisible by 4.*multiple of 64 px"):
        model(torch.randn(1, 3, 80, 64))


def test_bad_input_shapes_are_named():
    model = build_model(TINY, "pretrain")
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        model(torch.randn(3, 64, 48))
    with pytest.raises(ValueError, match="smaller than one 16x16 patch"):
        model(torch.randn(1, 3, 8, 48))


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = build_model(TINY, "pretrain").train()
    x = torch.randn(1, 3, 32, 32)
    model(x).square().mean().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.grad_checkpointing = True
    model(x).square().mean().backward()
    for a, p in zip(plain, model.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_pointmap_scale_branch_names_the_needed_input_size():
    from sapiens2.models import PointmapHeadConfig

    head = PointmapHeadConfig(
        32, (8, 8, 8, 8), (8, 8, 8), scale_conv_channels=(8, 8), scale_conv_kernels=(1, 1), scale_mlp=(8 * 2 * 2, 4, 1)
    )
    model = build_model(TINY, "pointmap", head).eval()
    with torch.no_grad():
        points, scale = model(torch.randn(1, 3, 128, 128))
    assert points.shape == (1, 3, 128, 128) and scale.shape == (1, 1)
    with pytest.raises(ValueError, match="training input size"):
        model(torch.randn(1, 3, 256, 128))


def test_keeping_every_patch_changes_nothing_and_a_subset_keeps_positions():
    torch.manual_seed(0)
    model = build_model(TINY, "pretrain").eval()
    x = torch.randn(2, 3, 64, 48)  # 4 x 3 grid
    with torch.no_grad():
        full = model(x)
        every = model(x, keep=torch.arange(12).expand(2, -1))
        part = model(x, keep=torch.tensor([[0, 5, 7], [11, 2, 3]]))
    torch.testing.assert_close(every, full)
    assert part.shape == (2, 9 + 3, 32)
    # Same kept set in another order: same tokens, permuted (positions travel with the tokens).
    with torch.no_grad():
        swapped = model(x, keep=torch.tensor([[7, 0, 5], [3, 11, 2]]))
    torch.testing.assert_close(swapped[0, 9:], part[0, 9:][[2, 0, 1]], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(swapped[1, 9:], part[1, 9:][[2, 0, 1]], rtol=1e-5, atol=1e-5)


def test_from_scratch_init_follows_the_reference():
    torch.manual_seed(0)
    model = build_model(BackboneConfig(embed_dim=64, depth=2, num_heads=2, use_tokenizer=True), "pretrain").init_weights()
    w = model.blocks[0].attn.wq.weight
    assert abs(w.std().item() - 0.02) < 0.003  # truncated at +-2 absolute, as the reference (so, in effect, not)
    assert model.blocks[0].attn.wq.bias.abs().sum() == 0
    assert model.cls_token.std() > 0 and model.tokenizer.w_cls.std() > 0
    assert torch.all(model.blocks[1].attn.gamma.weight == 1e-4)
