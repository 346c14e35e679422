"""The Sapiens2 task heads: pose heatmaps, body-part logits, normals, albedo, pointmap + scale, matting.

Each head reads the backbone's B x C x H x W feature map. Module names and Sequential indices follow the
official checkpoints (`decode_head.*`), so their state dicts load with no renaming. Widths come from a
plain dataclass per head; the official ones are in `sapiens2.models.build`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class RMSNorm2d(nn.Module):
    """RMSNorm across channels at each pixel (the albedo head's norm); key `<unit>.norm.weight`.

    Both sides are made contiguous, as in the reference: the fused norm reduces a permuted view in another
    order (~1e-6 apart), and a channels_last result would change how the next convolution rounds.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1).contiguous()).permute(0, 3, 1, 2).contiguous()


def _norm(kind: str, channels: int) -> nn.Module:
    # InstanceNorm without affine or running stats: no state-dict keys, per-sample statistics even in eval.
    return nn.InstanceNorm2d(channels) if kind == "instance" else RMSNorm2d(channels)


def _deconv_units(in_ch: int, widths: tuple[int, ...], kernels: tuple[int, ...]) -> nn.Sequential:
    """[ConvTranspose2d(x2, no bias) -> InstanceNorm -> SiLU] per width."""
    padding = {4: (1, 0), 3: (1, 1), 2: (0, 0)}
    layers: list[nn.Module] = []
    for out_ch, k in zip(widths, kernels, strict=True):
        if k not in padding:
            raise ValueError(f"deconv kernel must be 2, 3 or 4, got {k}")
        pad, out_pad = padding[k]
        layers += [
            nn.ConvTranspose2d(in_ch, out_ch, k, stride=2, padding=pad, output_padding=out_pad, bias=False),
            nn.InstanceNorm2d(out_ch),
            nn.SiLU(),
        ]
        in_ch = out_ch
    return nn.Sequential(*layers)


def _conv_units(
    in_ch: int, widths: tuple[int, ...], kernels: tuple[int, ...], norm: str = "instance", stride: int = 1
) -> nn.Sequential:
    """[Conv2d(k, 'same' padding) -> norm -> SiLU] per width."""
    layers: list[nn.Module] = []
    for out_ch, k in zip(widths, kernels, strict=True):
        layers += [nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=(k - 1) // 2), _norm(norm, out_ch), nn.SiLU()]
        in_ch = out_ch
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class PoseHeadConfig:
    in_channels: int
    deconv_channels: tuple[int, ...] = (1024, 768)
    deconv_kernels: tuple[int, ...] = (4, 4)
    conv_channels: tuple[int, ...] = (512, 512, 256)
    conv_kernels: tuple[int, ...] = (1, 1, 1)
    num_keypoints: int = 308


class PoseHeatmapHead(nn.Module):
    """Deconvs then 1x1 convs to one raw heatmap per keypoint, at 1/4 of the input size."""

    def __init__(self, cfg: PoseHeadConfig) -> None:
        super().__init__()
        self.deconv_layers = _deconv_units(cfg.in_channels, cfg.deconv_channels, cfg.deconv_kernels)
        self.conv_layers = _conv_units(cfg.deconv_channels[-1], cfg.conv_channels, cfg.conv_kernels)
        self.conv_pose = nn.Conv2d(cfg.conv_channels[-1], cfg.num_keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pose(self.conv_layers(self.deconv_layers(x)))


@dataclass(frozen=True)
class SegHeadConfig:
    in_channels: int
    deconv_channels: tuple[int, ...] = (512, 256, 128, 64)
    deconv_kernels: tuple[int, ...] = (4, 4, 4, 4)
    conv_channels: tuple[int, ...] = (64, 64)
    conv_kernels: tuple[int, ...] = (1, 1)
    num_classes: int = 29


class SegHead(nn.Module):
    """Four x2 deconvs then 1x1 convs to raw class logits at the full input size."""

    def __init__(self, cfg: SegHeadConfig) -> None:
        super().__init__()
        self.deconv_layers = _deconv_units(cfg.in_channels, cfg.deconv_channels, cfg.deconv_kernels)
        self.conv_layers = _conv_units(cfg.deconv_channels[-1], cfg.conv_channels, cfg.conv_kernels)
        self.conv_seg = nn.Conv2d(cfg.conv_channels[-1], cfg.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.conv_layers(self.deconv_layers(x)))


@dataclass(frozen=True)
class DenseHeadConfig:
    """Normal, albedo and the pointmap's dense branch: a 3x3 input conv, PixelShuffle upsampling, 3x3 convs."""

    in_channels: int
    upsample_channels: tuple[int, ...] = (768, 512, 256, 128)
    conv_channels: tuple[int, ...] = (64, 32, 16)
    conv_kernels: tuple[int, ...] = (3, 3, 3)
    out_channels: int = 3


class _PixelShuffleTrunk(nn.Module):
    """input_conv -> upsample_blocks (conv to 4U, PixelShuffle(2), norm, SiLU) -> conv_layers."""

    def __init__(self, cfg: DenseHeadConfig, norm: str) -> None:
        super().__init__()
        c = cfg.in_channels
        self.input_conv = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), _norm(norm, c), nn.SiLU())
        blocks = []
        for u in cfg.upsample_channels:
            blocks.append(nn.Sequential(nn.Conv2d(c, 4 * u, 3, padding=1), nn.PixelShuffle(2), _norm(norm, u), nn.SiLU()))
            c = u
        self.upsample_blocks = nn.ModuleList(blocks)
        self.conv_layers = _conv_units(c, cfg.conv_channels, cfg.conv_kernels, norm=norm)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_conv(x)
        for block in self.upsample_blocks:
            x = block(x)
        return self.conv_layers(x)


class NormalHead(_PixelShuffleTrunk):
    """Raw (not unit-length) surface normals, 3 channels at full input size."""

    def __init__(self, cfg: DenseHeadConfig) -> None:
        super().__init__(cfg, norm="instance")
        self.conv_normal = nn.Conv2d(cfg.conv_channels[-1], cfg.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_normal(self.trunk(x))


class AlbedoHead(_PixelShuffleTrunk):
    """Raw albedo (RGB, clamp to [0, 1] for display); the normal layout with channel RMSNorm."""

    def __init__(self, cfg: DenseHeadConfig) -> None:
        super().__init__(cfg, norm="rms")
        self.conv_albedo = nn.Conv2d(cfg.conv_channels[-1], cfg.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_albedo(self.trunk(x))


class MattingHead(_PixelShuffleTrunk):
    """Foreground and alpha in [0, 1] (`facebook/sapiens2-matting-1b`): the normal head's trunk, then
    `conv_matting` to four channels and a sigmoid inside the head. Channels 0-2 are the foreground RGB,
    premultiplied by alpha; channel 3 is alpha."""

    def __init__(self, cfg: DenseHeadConfig) -> None:
        super().__init__(cfg, norm="instance")
        self.conv_matting = nn.Conv2d(cfg.conv_channels[-1], cfg.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_matting(self.trunk(x)).sigmoid()


@dataclass(frozen=True)
class PointmapHeadConfig(DenseHeadConfig):
    upsample_channels: tuple[int, ...] = (1536, 768, 512, 256)
    scale_conv_channels: tuple[int, ...] = (1536, 512, 128)
    scale_conv_kernels: tuple[int, ...] = (1, 1, 1)
    # Linear widths of the scale MLP, input first: 6144 = 128 x 8 x 6 for a 1024x768 input.
    scale_mlp: tuple[int, ...] = (6144, 512, 128, 1)


class PointmapHead(_PixelShuffleTrunk):
    """Pointmap (3 channels, full size) and a scale per image, both raw: metric points = pointmap / scale.

    The scale branch reads the same feature map through stride-2 convs and an MLP whose input width fixes
    the input resolution (1024x768 for the official models).
    """

    def __init__(self, cfg: PointmapHeadConfig) -> None:
        super().__init__(cfg, norm="instance")
        self.conv_pointmap = nn.Conv2d(cfg.conv_channels[-1], cfg.out_channels, 1)
        self.scale_conv_layers = _conv_units(cfg.in_channels, cfg.scale_conv_channels, cfg.scale_conv_kernels, stride=2)
        mlp: list[nn.Module] = [nn.Flatten()]
        for i, (a, b) in enumerate(zip(cfg.scale_mlp[:-1], cfg.scale_mlp[1:])):
            mlp.append(nn.Linear(a, b))
            if i < len(cfg.scale_mlp) - 2:
                mlp.append(nn.SiLU())
        self.scale_final_layer = nn.Sequential(*mlp)
        self.scale_input_width = cfg.scale_mlp[0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pointmap = self.conv_pointmap(self.trunk(x))
        s = self.scale_conv_layers(x)
        if s[0].numel() != self.scale_input_width:
            raise ValueError(
                f"the pointmap scale branch expects {self.scale_input_width} features, got "
                f"{s.shape[1]}x{s.shape[2]}x{s.shape[3]} = {s[0].numel()}: this model needs its training input size "
                "(1024x768 for the official checkpoints)"
            )
        return pointmap, self.scale_final_layer(s)
