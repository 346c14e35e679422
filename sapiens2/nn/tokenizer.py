"""The 4K window tokenizer: pools each ws x ws window of patch tokens into one token."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from sapiens2.nn.block import TransformerBlock


class WindowTokenizer(nn.Module):
    """Per window: prepend a learned CLS, add a local position embedding, run plain blocks (no QK-norm,
    no LayerScale, no RoPE), keep the CLS. A (H, W) grid becomes (H/ws, W/ws).

    Windows run in chunks of `chunk_size` to bound memory (results do not depend on it); in training
    with grad each chunk is checkpointed, as in the reference. Windows are pooled independently, so with
    `keep` (B x n window indices: masked pretraining, which masks after the tokenizer) only the kept
    windows are computed, giving the same tokens as pooling all and gathering (a quarter of the work at
    a 75 % mask ratio).
    """

    def __init__(
        self, dim: int, num_heads: int, ffn_hidden: int, depth: int, window_size: int = 4, chunk_size: int = 1024
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.chunk_size = chunk_size
        self.w_cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.local_pos_embed = nn.Parameter(torch.zeros(1, window_size * window_size + 1, dim))
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, ffn_hidden, qkv_bias=True, qk_norm=False, layer_scale=None)
            for _ in range(depth)
        )

    def _pool(self, windows: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.w_cls.expand(windows.shape[0], -1, -1), windows), dim=1) + self.local_pos_embed
        for block in self.blocks:
            x = block(x)
        return x[:, 0]

    def forward(self, x: torch.Tensor, grid: tuple[int, int],
                keep: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        """B x (H*W) x C patch tokens -> B x (H/ws * W/ws) x C window tokens (B x n: the `keep` ones, in
        that order) and the window grid."""
        b, _, c = x.shape
        h, w = grid
        ws = self.window_size
        if h % ws or w % ws:
            raise ValueError(
                f"the 4K tokenizer needs a patch grid divisible by {ws}, got {h}x{w} "
                f"(input {h * 16}x{w * 16} px: use a multiple of {16 * ws} px per side)"
            )
        windows = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, -1, ws * ws, c)
        if keep is not None:
            windows = windows.gather(1, keep[..., None, None].expand(-1, -1, ws * ws, c))
        n = windows.shape[1]
        use_ckpt = self.training and torch.is_grad_enabled()
        pooled = []
        for chunk in windows.reshape(-1, ws * ws, c).split(self.chunk_size):
            pooled.append(checkpoint(self._pool, chunk, use_reentrant=False) if use_ckpt else self._pool(chunk))
        return torch.cat(pooled).view(b, n, c), (h // ws, w // ws)
