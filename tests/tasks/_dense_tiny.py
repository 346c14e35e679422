"""Tiny dense networks and stand-in modules whose outputs are known functions of their inputs."""

from __future__ import annotations

import torch
from torch import nn

from sapiens2.models import BackboneConfig, DenseHeadConfig, PointmapHeadConfig, SegHeadConfig, build_model

TINY = BackboneConfig(embed_dim=32, depth=2, num_heads=2)
SMALL_INPUT = (64, 48)  # H, W fed to the tiny networks: a 4 x 3 patch grid
POINTMAP_INPUT = (128, 96)  # the tiny scale branch needs 8 x 6 patches


def tiny_model(task: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    dense = DenseHeadConfig(32, (16, 16, 16, 16), (8, 8, 8))
    if task == "seg":
        return build_model(TINY, "seg", SegHeadConfig(32, (16, 16, 16, 16), conv_channels=(16, 16))).eval()
    if task in ("normal", "albedo"):
        return build_model(TINY, task, dense).eval()
    if task == "pointmap":
        head = PointmapHeadConfig(32, (16, 16, 16, 16), (8, 8, 8), scale_conv_channels=(16, 8),
                                  scale_conv_kernels=(1, 1), scale_mlp=(32, 16, 8, 1))
        return build_model(TINY, "pointmap", head).eval()
    if task == "matting":
        return build_model(TINY, "matting", DenseHeadConfig(32, (16, 16, 16, 16), (8, 8, 8), out_channels=4)).eval()
    raise ValueError(task)


class Identity(nn.Module):
    """Returns its (normalised) input: a 3-channel map equal to the network input."""

    def __init__(self, task: str) -> None:
        super().__init__()
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Coordinates(nn.Module):
    """Pointmap stand-in: points = (row, column, 1 + batch index) of the network input pixel, scale given."""

    task = "pointmap"

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        rows = torch.arange(h, dtype=torch.float32).view(1, h, 1).expand(b, h, w)
        cols = torch.arange(w, dtype=torch.float32).view(1, 1, w).expand(b, h, w)
        ones = (1 + torch.arange(b, dtype=torch.float32)).view(b, 1, 1).expand(b, h, w)
        return torch.stack([rows, cols, ones], 1) * self.scale, torch.full((b, 1), self.scale)


class HalvesLogits(nn.Module):
    """Seg stand-in: class `left` wins on the left half of the network input, class `right` on the right half."""

    task = "seg"

    def __init__(self, left: int, right: int, classes: int = 29) -> None:
        super().__init__()
        self.left, self.right, self.classes = left, right, classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        out = torch.zeros(b, self.classes, h, w)
        out[:, self.left, :, : w // 2] = 5.0
        out[:, self.right, :, w // 2:] = 5.0
        return out


class ConstantMatte(nn.Module):
    """Matting stand-in: foreground (0.2, 0.4, 0.6) premultiplied by alpha 0.5 everywhere."""

    task = "matting"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        values = torch.tensor([0.1, 0.2, 0.3, 0.5]).view(1, 4, 1, 1)
        return values.expand(b, 4, h, w).clone()
