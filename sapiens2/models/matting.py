"""The Sapiens2 matting network (`facebook/sapiens2-matting-1b`): backbone + a four-channel PixelShuffle head.

The head has the surface-normal head's layout (3x3 input conv, PixelShuffle x2 upsampling blocks and 3x3 convs,
all with InstanceNorm and SiLU) and ends in `conv_matting`, a 1x1 conv to four channels, followed by a **sigmoid
inside the head**: the network's raw output is already in [0, 1]. Channels 0-2 are the foreground colour, RGB,
premultiplied by alpha; channel 3 is alpha. The released model is the 1B backbone with upsampling widths
(768, 512, 256, 128) and conv widths (64, 32, 16), trained at 1024x768; the state dict is `backbone.*` +
`decode_head.*` like every other Sapiens2 task checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from sapiens2.models.backbone import ARCHS, BackboneConfig, Sapiens2Backbone
from sapiens2.models.build import Sapiens2TaskModel, build_backbone
from sapiens2.models.heads import DenseHeadConfig, _PixelShuffleTrunk

MATTING_CHANNELS = 4  # foreground R, G, B (premultiplied) and alpha


def official_matting_head_config(arch: str = "1b") -> DenseHeadConfig:
    """The released matting head widths, on `arch`'s embedding width."""
    return DenseHeadConfig(ARCHS[arch].embed_dim, (768, 512, 256, 128), (64, 32, 16), (3, 3, 3), MATTING_CHANNELS)


class MattingHead(_PixelShuffleTrunk):
    """Foreground (premultiplied RGB) and alpha in [0, 1]: the normal head's trunk, `conv_matting`, sigmoid."""

    def __init__(self, cfg: DenseHeadConfig) -> None:
        super().__init__(cfg, norm="instance")
        self.conv_matting = nn.Conv2d(cfg.conv_channels[-1], cfg.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_matting(self.trunk(x)).sigmoid()


def build_matting_model(
    arch: str | BackboneConfig = "1b",
    head: DenseHeadConfig | None = None,
    rope_dtype: torch.dtype | None = None,
) -> Sapiens2TaskModel:
    """The matting network: `model(x)` gives B x 4 x H x W in [0, 1] (foreground RGB premultiplied, alpha)."""
    backbone: Sapiens2Backbone = build_backbone(arch, rope_dtype)
    if head is None:
        if not isinstance(arch, str):
            raise ValueError("a custom backbone config needs an explicit matting head config")
        head = official_matting_head_config(arch.lower().removeprefix("sapiens2_").replace("_", "-"))
    return Sapiens2TaskModel(backbone, MattingHead(head), "matting")
