"""The MAE pixel decoder: visible encoder tokens + [MASK] tokens at their grid positions -> pixels.

Positions: the Sapiens2 encoder is RoPE-only, and the paper adds a positional embedding to every
decoder token (visible and masked). We use MAE's fixed 2-D sin-cos embedding for that, computed for any
grid size, so the decoder has no size-bound parameters. The decoder blocks are the backbone's own block
type (RMSNorm, SwiGLU, QK-norm), without LayerScale.
"""

from __future__ import annotations

import torch
from torch import nn

from sapiens2.nn.block import TransformerBlock


def sincos_2d(grid: tuple[int, int], dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """(H*W) x dim fixed position embedding, row-major: half the channels encode the row, half the column."""
    if dim % 4:
        raise ValueError(f"sin-cos 2-D embedding needs dim divisible by 4, got {dim}")
    h, w = grid
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")
    out = [f(pos.flatten()[:, None] * omega[None]) for pos in (rows, cols) for f in (torch.sin, torch.cos)]
    return torch.cat(out, dim=1).float()


class MAEDecoder(nn.Module):
    """B x (prefix + n_keep) x C encoder tokens (after the final norm) -> B x N x `out_dim` predictions,
    one per grid token (N = H * W), in row-major order. Prefix tokens ([cls] + storage) go through the
    decoder blocks as context and are dropped at the output."""

    def __init__(
        self,
        embed_dim: int,
        out_dim: int,
        dim: int = 512,
        depth: int = 8,
        num_heads: int = 16,
        num_prefix_tokens: int = 9,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        self.embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, int(dim * mlp_ratio), qk_norm=True, layer_scale=None)
            for _ in range(depth)
        )
        self.norm = nn.RMSNorm(dim, eps=1e-6)
        self.pred = nn.Linear(dim, out_dim)
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        nn.init.normal_(self.mask_token, std=0.02)

    def position_embedding(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        key = (*grid, device)
        if key not in self._pos_cache:
            self._pos_cache = {key: sincos_2d(grid, self.mask_token.shape[-1]).to(device)}
        return self._pos_cache[key]

    def forward(self, tokens: torch.Tensor, keep: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b = tokens.shape[0]
        n = grid[0] * grid[1]
        p = self.num_prefix_tokens
        if tokens.shape[1] != p + keep.shape[1]:
            raise ValueError(f"{tokens.shape[1]} tokens for {p} prefix + {keep.shape[1]} kept")
        x = self.embed(tokens)
        prefix, visible = x[:, :p], x[:, p:]
        full = self.mask_token.to(x.dtype).expand(b, n, -1)
        full = full.scatter(1, keep[..., None].expand(-1, -1, x.shape[-1]), visible)
        full = full + self.position_embedding(grid, x.device).to(x.dtype)
        x = torch.cat((prefix, full), dim=1)
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x[:, p:]))
