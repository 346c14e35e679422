"""Mixed blockwise / patchwise token masks with an exact masked count per image.

Each image draws, independently, either a *block* mask (rectangles of patches placed until the budget
is reached, then topped up at random, so the count is exact) with probability `block_prob`, or a
*patchwise* mask (a uniformly random subset). Exact counts keep every image's visible length equal, so
a batch of visible tokens is one dense tensor that `Sapiens2Backbone(x, keep=...)` accepts.

The grid is the token grid the encoder blocks see: the patch grid for 1K models, and the pooled grid
after the window tokenizer for the 4K model (masking happens after the local stage there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenMasks:
    """Masks for a batch, in row-major grid order.

    `keep` (B x n_keep) and `masked` (B x n_masked) are sorted token indices; `mask` (B x N) is True
    where a token is masked; `is_block` (B) says which images drew a block mask.
    """

    keep: torch.Tensor
    masked: torch.Tensor
    mask: torch.Tensor
    is_block: torch.Tensor

    def to(self, device: torch.device | str) -> TokenMasks:
        return TokenMasks(*(t.to(device, non_blocking=True) for t in (self.keep, self.masked, self.mask, self.is_block)))


class MaskGenerator:
    """Draws masks on a `grid` (H, W) of tokens: `round(ratio * H * W)` masked tokens per image, exactly.

    Block masks follow the BEiT recipe: a rectangle's area is uniform in [min_block, min(max_block,
    what is left)], its aspect ratio log-uniform in [min_aspect, 1 / min_aspect], its position uniform;
    it is kept when it adds between 1 and the remaining budget of new tokens (10 tries per rectangle).
    When no rectangle fits any more, uniformly random unmasked tokens complete the count.
    """

    def __init__(
        self,
        grid: tuple[int, int],
        ratio: float = 0.75,
        block_prob: float = 0.4,
        min_block: int = 4,
        max_block: int | None = None,
        min_aspect: float = 0.3,
    ) -> None:
        h, w = grid
        if h < 1 or w < 1:
            raise ValueError(f"grid must be positive, got {grid}")
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
        if not 0.0 <= block_prob <= 1.0:
            raise ValueError(f"block_prob must be in [0, 1], got {block_prob}")
        if not 0.0 < min_aspect <= 1.0:
            raise ValueError(f"min_aspect must be in (0, 1], got {min_aspect}")
        self.grid = (h, w)
        self.num_tokens = h * w
        self.num_masked = round(ratio * self.num_tokens)
        self.num_keep = self.num_tokens - self.num_masked
        if self.num_keep < 1:
            raise ValueError(f"ratio {ratio} leaves no visible token on a {h}x{w} grid")
        self.block_prob = block_prob
        self.min_block = max(1, min_block)
        self.max_block = max_block if max_block is not None else max(self.min_block, self.num_tokens // 2)
        self.log_aspect = (math.log(min_aspect), -math.log(min_aspect))

    def __repr__(self) -> str:
        h, w = self.grid
        return (f"MaskGenerator(grid={h}x{w}, masked={self.num_masked}/{self.num_tokens}, "
                f"block_prob={self.block_prob}, block={self.min_block}..{self.max_block})")

    def __call__(self, batch_size: int, generator: torch.Generator | None = None) -> TokenMasks:
        masks, blocks = [], []
        for _ in range(batch_size):
            use_block = self.num_masked > 0 and _uniform(generator) < self.block_prob
            masks.append(self.block_mask(generator) if use_block else self.random_mask(generator))
            blocks.append(use_block)
        mask = torch.stack(masks).flatten(1)
        # A stable sort puts the kept (False) tokens first, each group in ascending index order.
        order = torch.sort(mask.to(torch.uint8), dim=1, stable=True).indices
        return TokenMasks(
            keep=order[:, : self.num_keep].contiguous(),
            masked=order[:, self.num_keep :].contiguous(),
            mask=mask,
            is_block=torch.tensor(blocks, dtype=torch.bool),
        )

    def random_mask(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """H x W bool, exactly `num_masked` True, uniformly chosen."""
        mask = torch.zeros(self.num_tokens, dtype=torch.bool)
        mask[torch.randperm(self.num_tokens, generator=generator)[: self.num_masked]] = True
        return mask.view(self.grid)

    def block_mask(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """H x W bool, exactly `num_masked` True: rectangles first, random tokens to complete the count."""
        h, w = self.grid
        mask = torch.zeros(h, w, dtype=torch.bool)
        count = 0
        while count < self.num_masked:
            budget = min(self.num_masked - count, self.max_block)
            if budget < self.min_block:
                break
            added = self._add_block(mask, budget, generator)
            if added == 0:
                break
            count += added
        if count < self.num_masked:
            free = (~mask).flatten().nonzero().squeeze(1)
            pick = free[torch.randperm(free.numel(), generator=generator)[: self.num_masked - count]]
            mask.view(-1)[pick] = True
        return mask

    def _add_block(self, mask: torch.Tensor, budget: int, generator: torch.Generator | None) -> int:
        h, w = self.grid
        for _ in range(10):
            area = self.min_block + _uniform(generator) * (budget - self.min_block)
            aspect = math.exp(self.log_aspect[0] + _uniform(generator) * (self.log_aspect[1] - self.log_aspect[0]))
            bh = int(round(math.sqrt(area * aspect)))
            bw = int(round(math.sqrt(area / aspect)))
            if not (1 <= bh <= h and 1 <= bw <= w):
                continue
            top = _randint(h - bh + 1, generator)
            left = _randint(w - bw + 1, generator)
            region = mask[top : top + bh, left : left + bw]
            new = bh * bw - int(region.sum())
            if 0 < new <= budget:
                region.fill_(True)
                return new
        return 0


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def _randint(high: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(high, (), generator=generator))
