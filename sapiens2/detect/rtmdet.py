"""RTMDet (CSPNeXt backbone, CSPNeXt-PAFPN neck, separated-BN head) in plain PyTorch.

Module names and child indices follow mmdet's, so an official RTMDet state dict (`backbone.*`, `neck.*`,
`bbox_head.*`) loads strictly with no renaming. The network is pure tensors -> tensors: it takes a
normalized N x 3 x H x W batch (BGR, as the official weights were trained) and returns, per stride, the raw
class logits and the box distances (left, top, right, bottom) in input pixels. Resizing, decoding and NMS
live in `sapiens2.detect.pipeline`.

Sizes come from `RTMDetConfig`; `RTMDetConfig.m()` is the official person detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# (in channels, out channels, blocks, residual in blocks, SPP before the CSP layer) at widen = deepen = 1.
_CSPNEXT_P5 = ((64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False),
               (512, 1024, 3, False, True))
_STEM_CHANNELS = 64


@dataclass(frozen=True)
class RTMDetConfig:
    """Architecture numbers of one RTMDet size (mmdet's `deepen_factor` / `widen_factor` convention)."""

    deepen_factor: float = 0.67
    widen_factor: float = 0.75
    neck_out_channels: int = 192
    neck_csp_blocks: int = 2
    num_classes: int = 1
    stacked_convs: int = 2
    exp_on_reg: bool = True  # m/l/x: distances = exp(conv) * stride; tiny/s: conv * stride
    strides: tuple[int, ...] = (8, 16, 32)
    bn_eps: float = 1e-5

    @classmethod
    def m(cls, num_classes: int = 1) -> RTMDetConfig:
        """RTMDet-m; with one class this is the official person detector (24.66 M parameters)."""
        return cls(0.67, 0.75, 192, 2, num_classes, exp_on_reg=True)

    @classmethod
    def tiny(cls, num_classes: int = 1) -> RTMDetConfig:
        return cls(0.167, 0.375, 96, 1, num_classes, exp_on_reg=False)

    def stage_blocks(self) -> list[int]:
        return [max(round(n * self.deepen_factor), 1) for _, _, n, _, _ in _CSPNEXT_P5]

    def backbone_out_channels(self) -> list[int]:
        """Channels of the stride 8, 16 and 32 backbone outputs, which are also the neck's inputs."""
        return [int(c_out * self.widen_factor) for _, c_out, _, _, _ in _CSPNEXT_P5[1:]]


class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> optional SiLU; keys `conv.*`, `bn.*` (mmcv's ConvModule)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, eps: float = 1e-5,
                 act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=eps)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k x k ConvBNAct then pointwise 1 x 1 ConvBNAct."""

    def __init__(self, c_in: int, c_out: int, k: int, eps: float) -> None:
        super().__init__()
        self.depthwise_conv = ConvBNAct(c_in, c_in, k, groups=c_in, eps=eps)
        self.pointwise_conv = ConvBNAct(c_in, c_out, 1, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class ChannelAttention(nn.Module):
    """Squeeze-excite without reduction: x * hardsigmoid(fc(mean over H, W))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.hardsigmoid(self.fc(F.adaptive_avg_pool2d(x, 1)))


class CSPNeXtBlock(nn.Module):
    """3 x 3 ConvBNAct then a 5 x 5 depthwise-separable conv, with an optional residual."""

    def __init__(self, channels: int, residual: bool, eps: float) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(channels, channels, 3, eps=eps)
        self.conv2 = DepthwiseSeparableConv(channels, channels, 5, eps)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return x + y if self.residual else y


class CSPLayer(nn.Module):
    """Cross-stage-partial layer: a block chain on half the channels, concatenated with a shortcut half."""

    def __init__(self, c_in: int, c_out: int, num_blocks: int, residual: bool, attention: bool,
                 eps: float) -> None:
        super().__init__()
        mid = int(c_out * 0.5)
        self.main_conv = ConvBNAct(c_in, mid, 1, eps=eps)
        self.short_conv = ConvBNAct(c_in, mid, 1, eps=eps)
        self.final_conv = ConvBNAct(2 * mid, c_out, 1, eps=eps)
        self.blocks = nn.Sequential(*(CSPNeXtBlock(mid, residual, eps) for _ in range(num_blocks)))
        self.attention = ChannelAttention(2 * mid) if attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat((self.blocks(self.main_conv(x)), self.short_conv(x)), dim=1)
        if self.attention is not None:
            y = self.attention(y)
        return self.final_conv(y)


class SPPBottleneck(nn.Module):
    """1 x 1 conv to half width, max pools 5/9/13 (stride 1) concatenated with their input, 1 x 1 conv."""

    def __init__(self, c_in: int, c_out: int, eps: float, kernels: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        mid = c_in // 2
        self.conv1 = ConvBNAct(c_in, mid, 1, eps=eps)
        self.kernels = kernels
        self.conv2 = ConvBNAct(mid * (len(kernels) + 1), c_out, 1, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        pooled = [F.max_pool2d(x, k, stride=1, padding=k // 2) for k in self.kernels]
        return self.conv2(torch.cat([x, *pooled], dim=1))


class CSPNeXt(nn.Module):
    """Backbone: a 3-conv stem (stride 2) and four stride-2 stages; returns the stride 8/16/32 maps."""

    def __init__(self, cfg: RTMDetConfig) -> None:
        super().__init__()
        w, eps = cfg.widen_factor, cfg.bn_eps
        stem = int(_STEM_CHANNELS * w // 2)
        self.stem = nn.Sequential(
            ConvBNAct(3, stem, 3, stride=2, eps=eps),
            ConvBNAct(stem, stem, 3, eps=eps),
            ConvBNAct(stem, int(_STEM_CHANNELS * w), 3, eps=eps),
        )
        for i, ((c_in, c_out, _, residual, spp), n) in enumerate(zip(_CSPNEXT_P5, cfg.stage_blocks()), 1):
            c_in, c_out = int(c_in * w), int(c_out * w)
            layers: list[nn.Module] = [ConvBNAct(c_in, c_out, 3, stride=2, eps=eps)]
            if spp:
                layers.append(SPPBottleneck(c_out, c_out, eps))
            layers.append(CSPLayer(c_out, c_out, n, residual, attention=True, eps=eps))
            self.add_module(f"stage{i}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stage2(self.stage1(self.stem(x)))
        c3 = x
        c4 = self.stage3(c3)
        c5 = self.stage4(c4)
        return [c3, c4, c5]


class CSPNeXtPAFPN(nn.Module):
    """Top-down then bottom-up feature pyramid over the three backbone maps, then a 3 x 3 conv per level."""

    def __init__(self, cfg: RTMDetConfig) -> None:
        super().__init__()
        chans, eps, n = cfg.backbone_out_channels(), cfg.bn_eps, cfg.neck_csp_blocks
        levels = len(chans)
        # Index i of reduce_layers / top_down_blocks serves pyramid level (levels - 1 - i): deepest first.
        self.reduce_layers = nn.ModuleList(
            ConvBNAct(chans[j], chans[j - 1], 1, eps=eps) for j in range(levels - 1, 0, -1))
        self.top_down_blocks = nn.ModuleList(
            CSPLayer(2 * chans[j - 1], chans[j - 1], n, residual=False, attention=False, eps=eps)
            for j in range(levels - 1, 0, -1))
        self.downsamples = nn.ModuleList(
            ConvBNAct(chans[j], chans[j], 3, stride=2, eps=eps) for j in range(levels - 1))
        self.bottom_up_blocks = nn.ModuleList(
            CSPLayer(2 * chans[j], chans[j + 1], n, residual=False, attention=False, eps=eps)
            for j in range(levels - 1))
        self.out_convs = nn.ModuleList(ConvBNAct(c, cfg.neck_out_channels, 3, eps=eps) for c in chans)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        levels = len(feats)
        # Top-down: the running deep map is reduced, upsampled x2 (nearest) and fused with the next level up.
        top_down = [feats[-1]]
        for i, j in enumerate(range(levels - 1, 0, -1)):
            top_down[0] = self.reduce_layers[i](top_down[0])
            up = F.interpolate(top_down[0], scale_factor=2.0, mode="nearest")
            top_down.insert(0, self.top_down_blocks[i](torch.cat((up, feats[j - 1]), dim=1)))
        # Bottom-up: downsample the finer result and fuse with the (reduced) top-down map of the next level.
        outs = [top_down[0]]
        for j in range(levels - 1):
            down = self.downsamples[j](outs[-1])
            outs.append(self.bottom_up_blocks[j](torch.cat((down, top_down[j + 1]), dim=1)))
        return [conv(o) for conv, o in zip(self.out_convs, outs)]


class RTMDetSepBNHead(nn.Module):
    """Per level: stacked 3 x 3 convs (weights shared across levels, BatchNorm per level), 1 x 1 predictors.

    Sharing is done by pointing every level's `conv` at level 0's module, as mmdet does, so the state dict
    lists the shared tensors under all level names while `parameters()` counts them once.
    """

    def __init__(self, cfg: RTMDetConfig) -> None:
        super().__init__()
        c, eps = cfg.neck_out_channels, cfg.bn_eps
        levels = len(cfg.strides)
        self.strides = cfg.strides
        self.exp_on_reg = cfg.exp_on_reg

        def tower() -> nn.ModuleList:
            return nn.ModuleList(ConvBNAct(c, c, 3, eps=eps) for _ in range(cfg.stacked_convs))

        self.cls_convs = nn.ModuleList(tower() for _ in range(levels))
        self.reg_convs = nn.ModuleList(tower() for _ in range(levels))
        self.rtm_cls = nn.ModuleList(nn.Conv2d(c, cfg.num_classes, 1) for _ in range(levels))
        self.rtm_reg = nn.ModuleList(nn.Conv2d(c, 4, 1) for _ in range(levels))
        for level in range(1, levels):
            for i in range(cfg.stacked_convs):
                self.cls_convs[level][i].conv = self.cls_convs[0][i].conv
                self.reg_convs[level][i].conv = self.reg_convs[0][i].conv

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        cls_scores, bbox_preds = [], []
        for level, (x, stride) in enumerate(zip(feats, self.strides)):
            cls_feat, reg_feat = x, x
            for layer in self.cls_convs[level]:
                cls_feat = layer(cls_feat)
            for layer in self.reg_convs[level]:
                reg_feat = layer(reg_feat)
            reg = self.rtm_reg[level](reg_feat)
            cls_scores.append(self.rtm_cls[level](cls_feat))
            bbox_preds.append((reg.exp() if self.exp_on_reg else reg) * stride)
        return cls_scores, bbox_preds


class RTMDet(nn.Module):
    """The whole detector network: normalized BGR batch -> (class logits, box distances) per stride."""

    def __init__(self, cfg: RTMDetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg or RTMDetConfig.m()
        self.backbone = CSPNeXt(self.config)
        self.neck = CSPNeXtPAFPN(self.config)
        self.bbox_head = RTMDetSepBNHead(self.config)

    @property
    def strides(self) -> tuple[int, ...]:
        return self.config.strides

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self.bbox_head(self.neck(self.backbone(x)))


def shared_head_keys(model: RTMDet) -> dict[str, list[str]]:
    """Head conv weights stored under several names: level-0 key -> the other levels' keys."""
    groups: dict[str, list[str]] = {}
    head = model.bbox_head
    for tower in ("cls_convs", "reg_convs"):
        for i in range(model.config.stacked_convs):
            first = f"bbox_head.{tower}.0.{i}.conv.weight"
            groups[first] = [f"bbox_head.{tower}.{lv}.{i}.conv.weight" for lv in range(1, len(head.strides))]
    return groups
