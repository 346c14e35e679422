"""The mask generator: exact counts, block statistics, index formats the backbone accepts."""

from __future__ import annotations

import pytest
import torch

from sapiens2.models import BackboneConfig, build_model
from sapiens2.pretrain.masking import MaskGenerator


def _components(mask: torch.Tensor) -> int:
    """4-connected components of True cells in an H x W bool grid."""
    h, w = mask.shape
    seen = torch.zeros_like(mask)
    count = 0
    for r in range(h):
        for c in range(w):
            if mask[r, c] and not seen[r, c]:
                count += 1
                stack = [(r, c)]
                seen[r, c] = True
                while stack:
                    y, x = stack.pop()
                    for yy, xx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                        if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                            seen[yy, xx] = True
                            stack.append((yy, xx))
    return count


def test_exact_masked_count_and_consistent_indices():
    gen = MaskGenerator((16, 12), ratio=0.75)
    m = gen(64, torch.Generator().manual_seed(0))
    assert gen.num_masked == 144 and gen.num_keep == 48
    assert m.mask.shape == (64, 192) and m.keep.shape == (64, 48) and m.masked.shape == (64, 144)
    assert (m.mask.sum(1) == 144).all()
    assert (m.keep.diff(dim=1) > 0).all() and (m.masked.diff(dim=1) > 0).all()  # sorted, distinct
    assert not m.mask.gather(1, m.keep).any() and m.mask.gather(1, m.masked).all()
    assert (torch.cat((m.keep, m.masked), 1).sort(1).values == torch.arange(192)).all()


def test_block_probability_and_block_structure():
    gen = MaskGenerator((16, 12), ratio=0.75, block_prob=0.4)
    m = gen(400, torch.Generator().manual_seed(1))
    frac = m.is_block.float().mean().item()
    assert 0.33 < frac < 0.47  # 0.4 +- ~3 sigma
    grids = m.mask.view(-1, 16, 12)
    # Block masks are a few large rectangles; random masks of the same size shatter into many pieces.
    # (Count the *visible* regions too: 25 % random survivors are mostly isolated cells.)
    block_vis = [_components(~g) for g in grids[m.is_block][:20]]
    random_vis = [_components(~g) for g in grids[~m.is_block][:20]]
    assert sum(block_vis) / len(block_vis) < 0.5 * sum(random_vis) / len(random_vis)


def test_block_only_and_patch_only_modes_are_exact_too():
    for p in (0.0, 1.0):
        gen = MaskGenerator((8, 6), ratio=0.75, block_prob=p)
        m = gen(50, torch.Generator().manual_seed(2))
        assert (m.mask.sum(1) == 36).all()
        assert bool(m.is_block.all()) == (p == 1.0)


def test_reproducible_from_the_generator():
    gen = MaskGenerator((8, 6))
    a, b = gen(8, torch.Generator().manual_seed(5)), gen(8, torch.Generator().manual_seed(5))
    assert torch.equal(a.mask, b.mask)


def test_rejects_ratios_that_leave_nothing():
    with pytest.raises(ValueError):
        MaskGenerator((2, 2), ratio=0.9)
    with pytest.raises(ValueError):
        MaskGenerator((4, 4), ratio=1.0)


def test_keep_indices_run_the_masked_encoder():
    torch.manual_seed(0)
    bb = build_model(BackboneConfig(embed_dim=32, depth=1, num_heads=2), "pretrain").eval()
    gen = MaskGenerator((4, 3))
    m = gen(2, torch.Generator().manual_seed(0))
    out = bb(torch.randn(2, 3, 64, 48), keep=m.keep)
    assert out.shape == (2, 9 + gen.num_keep, 32)
