"""Masked reconstruction: L2 on per-patch-normalized pixels, over masked tokens only."""

from __future__ import annotations

import torch
from torch import nn


def patchify(images: torch.Tensor, size: int) -> torch.Tensor:
    """B x C x H x W -> B x (H/size * W/size) x (size * size * C), tokens in row-major grid order.

    Within a token the values run over (row, column, channel). H and W are floor-cropped to multiples
    of `size`, as the patch embedding crops them.
    """
    b, c, h, w = images.shape
    gh, gw = h // size, w // size
    x = images[:, :, : gh * size, : gw * size].reshape(b, c, gh, size, gw, size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, size * size * c)


def normalize_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each token's values to zero mean and unit variance (MAE's `norm_pix_loss` target)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


class MAELoss(nn.Module):
    """Mean over masked tokens of the per-token mean squared error.

    `pred` and `target` are B x N x D (target as raw patch pixels; normalized per patch here when
    `norm_pix`), `mask` is B x N, True where a token was hidden from the encoder. Visible tokens do not
    contribute, whatever the decoder predicts for them.
    """

    def __init__(self, norm_pix: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm_pix = norm_pix
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        target = target.float()
        if self.norm_pix:
            target = normalize_patches(target, self.eps)
        per_token = (pred.float() - target).pow(2).mean(dim=-1)
        weight = mask.to(per_token.dtype)
        return (per_token * weight).sum() / weight.sum().clamp_min(1.0)
