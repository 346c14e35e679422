"""Multi-head attention with grouped KV heads, optional QK-norm, RoPE and LayerScale (Sapiens2 layout)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sapiens2.nn.layer_scale import LayerScale
from sapiens2.nn.rope import apply_rope


class GroupedQueryAttention(nn.Module):
    """Attention whose key/value heads may be fewer than its query heads.

    Query head j reads KV head j // (heads / kv_heads), as the reference's interleaved repeat does. RoPE runs
    on the KV heads before they are repeated (half the work); on CUDA in half precision they are handed to
    `scaled_dot_product_attention` un-repeated (`enable_gqa`), which saves the copy too.
    Key names follow the official checkpoints: wq, wk, wv, q_norm, k_norm, proj, gamma.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        qkv_bias: bool = True,
        qk_norm: bool = True,
        layer_scale: float | None = None,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        num_kv_heads = num_kv_heads or num_heads
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by {num_heads} heads")
        if num_heads % num_kv_heads:
            raise ValueError(f"{num_heads} heads cannot be grouped over {num_kv_heads} KV heads")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = dim // num_heads
        kv_dim = num_kv_heads * self.head_dim
        self.wq = nn.Linear(dim, dim, bias=qkv_bias)
        self.wk = nn.Linear(dim, kv_dim, bias=qkv_bias)
        self.wv = nn.Linear(dim, kv_dim, bias=qkv_bias)
        # One weight of size head_dim shared by every head.
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else None
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.gamma = LayerScale(dim, layer_scale) if layer_scale else None

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        b, n, c = x.shape
        q = self.wq(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            sin, cos = rope
            # Per-head and per-token, so rotating the un-repeated KV heads equals the reference's order.
            q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
        grouped = self.num_kv_heads != self.num_heads
        if grouped and not (q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)):
            # Only CUDA's half-precision kernels take grouped KV heads natively; elsewhere SDPA falls back
            # to its slow math path for them, so repeat them (after RoPE, which then runs on half the heads).
            rep = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
            grouped = False
        out = F.scaled_dot_product_attention(q, k, v, enable_gqa=grouped)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))
        return self.gamma(out) if self.gamma is not None else out
