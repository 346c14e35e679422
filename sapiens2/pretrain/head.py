"""The DINO projection head on the [cls] token: MLP -> L2-normalized bottleneck -> K prototype logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DINOHead(nn.Module):
    """`in_dim` -> hidden (GELU) x (layers - 1) -> `bottleneck_dim`, L2-normalized, then a bias-free
    Linear to `out_dim` logits (DINOv3's plain last layer; no weight norm)."""

    def __init__(
        self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256, layers: int = 3
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"the head needs at least one MLP layer, got {layers}")
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [bottleneck_dim]
        mlp: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            mlp.append(nn.Linear(a, b))
            if i < layers - 1:
                mlp.append(nn.GELU())
        self.mlp = nn.Sequential(*mlp)
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        self.apply(_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, eps=1e-6 if x.dtype == torch.float16 else 1e-12)
        return self.last_layer(x)


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
