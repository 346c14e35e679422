"""LayerScale: a learned per-channel gain on a residual branch."""

from __future__ import annotations

import torch
from torch import nn


class LayerScale(nn.Module):
    """Multiplies channel-wise by `weight` (the official key is `<branch>.gamma.weight`)."""

    def __init__(self, dim: int, init_value: float = 1e-4) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight
