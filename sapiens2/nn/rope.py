"""2-D rotary position embedding, numerically identical to the Sapiens2 reference.

The reference computes the tables and applies the rotation in bfloat16 (every official model does);
that rounding is part of what the weights were trained with, so it is the default here. Float32 RoPE is
an explicit option (`dtype=torch.float32`): smoother, but not what the checkpoints expect.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def rope_periods(head_dim: int, base: float = 100.0, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The `periods` buffer: base ** (2j / (d/2)) for j < d/4, every step in `dtype` as the reference does."""
    if head_dim % 4:
        raise ValueError(f"RoPE needs a head dim divisible by 4, got {head_dim}")
    j = torch.arange(head_dim // 4, dtype=dtype)
    return base ** (2 * j / (head_dim // 2))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[u | v] -> [-v | u]: channel i pairs with channel i + d/2."""
    u, v = x.chunk(2, dim=-1)
    return torch.cat((-v, u), dim=-1)


class RopePositionEmbedding(nn.Module):
    """Holds the `periods` buffer and a per-grid cache of (sin, cos) tables.

    The tables depend only on the patch grid, the dtype and the device, so they are computed once per grid
    size rather than once per forward (the reference recomputes them every call).
    """

    def __init__(self, head_dim: int, base: float = 100.0, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.dtype = dtype
        # Persistent: it is part of every official state dict, in bfloat16.
        self.register_buffer("periods", rope_periods(head_dim, base, torch.bfloat16), persistent=True)
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - nn.Module signature
        # A device or dtype move invalidates the cached tables.
        self._cache.clear()
        return super()._apply(fn, recurse)

    def forward(self, grid_h: int, grid_w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(sin, cos), each (grid_h * grid_w) x head_dim, row-major token order."""
        device = self.periods.device
        key = (grid_h, grid_w, device, self.periods.data_ptr(), self.periods._version)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        dtype = self.dtype
        # Whatever a whole-module cast did to the buffer, the angles are computed in the RoPE dtype
        # (bf16 periods are exact in fp32/fp16, so a cast and back loses nothing).
        periods = self.periods.to(dtype)
        coords_h = torch.arange(0.5, grid_h, device=device, dtype=dtype) / grid_h
        coords_w = torch.arange(0.5, grid_w, device=device, dtype=dtype) / grid_w
        coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1)
        coords = 2.0 * coords - 1.0
        angles = 2 * math.pi * coords[:, :, None] / periods[None, None, :]
        angles = angles.flatten(1, 2).tile(2)
        tables = (torch.sin(angles), torch.cos(angles))
        if len(self._cache) > 16:
            self._cache.clear()
        self._cache[key] = tables
        return tables


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate the last sin.shape[0] tokens of x (B, heads, N, d); the prefix tokens pass through unrotated.

    All tokens round-trip through the table dtype, prefix included: the reference does so and it shows
    in the outputs.
    """
    out_dtype = x.dtype
    x = x.to(sin.dtype)
    prefix = x.shape[-2] - sin.shape[-2]
    if prefix < 0:
        raise ValueError(f"{x.shape[-2]} tokens cannot carry a RoPE grid of {sin.shape[-2]} positions")
    head, body = x[..., :prefix, :], x[..., prefix:, :]
    body = body * cos + rotate_half(body) * sin
    return torch.cat((head, body), dim=-2).to(out_dtype)
