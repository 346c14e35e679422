"""The pre-norm transformer block shared by the Sapiens2 backbone and its 4K window tokenizer."""

from __future__ import annotations

import torch
from torch import nn

from sapiens2.nn.attention import GroupedQueryAttention
from sapiens2.nn.swiglu import SwiGLUFFN


class TransformerBlock(nn.Module):
    """x + attn(ln1(x)), then x + ffn(ln2(x)); LayerScale (when on) sits on the attention branch only."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_hidden: int,
        num_kv_heads: int | None = None,
        qkv_bias: bool = True,
        qk_norm: bool = True,
        layer_scale: float | None = 1e-4,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.ln1 = nn.RMSNorm(dim, eps=1e-6)
        self.attn = GroupedQueryAttention(
            dim, num_heads, num_kv_heads, qkv_bias=qkv_bias, qk_norm=qk_norm, layer_scale=layer_scale,
            proj_drop=proj_drop,
        )
        self.ln2 = nn.RMSNorm(dim, eps=1e-6)
        self.ffn = SwiGLUFFN(dim, ffn_hidden)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), rope)
        return x + self.ffn(self.ln2(x))
