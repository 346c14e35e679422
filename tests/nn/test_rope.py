"""RoPE: the bf16 periods table of the spec, pairing, caching and cast-robustness."""

from __future__ import annotations

import torch

from sapiens2.nn.rope import RopePositionEmbedding, apply_rope, rope_periods, rotate_half

SPEC_PERIODS = {
    64: [1, 1.3359375, 1.78125, 2.375, 3.15625, 4.21875, 5.625, 7.5, 10, 13.3125, 17.75, 23.75, 31.625, 42.25, 56.25, 75],
    80: [1, 1.2578125, 1.5859375, 2, 2.515625, 3.15625, 4, 5, 6.3125, 7.90625, 10, 12.625, 15.9375, 19.75, 25, 31.625,
         40, 50.5, 62.75, 79],
    76: [1, 1.2734375, 1.625, 2.078125, 2.640625, 3.375, 4.28125, 5.46875, 6.96875, 8.875, 11.3125, 14.3125, 18.375,
         23.25, 30, 37.75, 48.75, 61.5, 79],
}


def test_periods_match_the_reference_bf16_table():
    for d, expected in SPEC_PERIODS.items():
        p = rope_periods(d)
        assert p.dtype == torch.bfloat16
        assert p.float().tolist() == expected


def test_rotate_half_pairs_i_with_i_plus_half():
    x = torch.arange(8.0)
    assert rotate_half(x).tolist() == [-4, -5, -6, -7, 0, 1, 2, 3]


def test_tables_layout_y_then_x_tiled():
    rope = RopePositionEmbedding(16, dtype=torch.float32)
    sin, cos = rope(2, 3)
    assert sin.shape == (6, 16)
    # Token 0 and token 1 share a row (y) and differ in column (x): only the x half of each quarter moves.
    same_y = (sin[0] == sin[1])
    assert same_y[:4].all() and not same_y[4:8].any() and same_y[8:12].all() and not same_y[12:].any()


def test_prefix_tokens_pass_unrotated_but_round_trip_bf16():
    rope = RopePositionEmbedding(16)
    sin, cos = rope(2, 2)
    x = torch.randn(1, 1, 3 + 4, 16)
    out = apply_rope(x, sin, cos)
    assert out.dtype == torch.float32
    assert torch.equal(out[..., :3, :], x[..., :3, :].bfloat16().float())
    assert not torch.equal(out[..., 3:, :], x[..., 3:, :].bfloat16().float())


def test_tables_are_cached_per_grid_and_dropped_on_move():
    rope = RopePositionEmbedding(16)
    a = rope(4, 3)
    assert rope(4, 3)[0] is a[0]
    assert rope(3, 4)[0] is not a[0]
    rope.to(torch.float64)
    assert rope._cache == {}


def test_whole_module_cast_keeps_reference_numerics():
    rope = RopePositionEmbedding(64)
    before = rope(8, 6)
    rope.double()
    after = rope(8, 6)
    assert after[0].dtype == torch.bfloat16 and torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
