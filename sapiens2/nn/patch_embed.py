"""Non-overlapping 16x16 patch embedding."""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Conv with kernel = stride = patch and no padding: sizes that are not a multiple of the patch are
    floor-cropped, as in the reference. Returns tokens (B, H*W, C) in row-major order and the grid (H, W)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int = 16) -> None:
        super().__init__()
        self.projection = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.projection(x)
        grid = (x.shape[-2], x.shape[-1])
        return x.flatten(2).transpose(1, 2), grid
