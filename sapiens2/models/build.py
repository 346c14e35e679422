"""Builders: an official (or custom) arch + task -> the network, with the official head widths."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from sapiens2.task_table import TASKS as TASK_TABLE
from sapiens2.models.backbone import ARCHS, BackboneConfig, Sapiens2Backbone
from sapiens2.models.heads import (
    AlbedoHead,
    DenseHeadConfig,
    MattingHead,
    NormalHead,
    PointmapHead,
    PointmapHeadConfig,
    PoseHeadConfig,
    PoseHeatmapHead,
    SegHead,
    SegHeadConfig,
)

TASKS = tuple(t for t, info in TASK_TABLE.items() if 2 in info.generations)  # the Sapiens2 heads
MATTING_CHANNELS = 4  # foreground R, G, B (premultiplied by alpha) and alpha
HeadConfig = PoseHeadConfig | SegHeadConfig | DenseHeadConfig | PointmapHeadConfig


class Sapiens2TaskModel(nn.Module):
    """backbone + decode_head, the official task-checkpoint layout. `forward` returns the head's raw output:
    pose heatmaps (B x K x H/4 x W/4), seg logits, normal / albedo maps, (pointmap, scale), or matting's
    B x 4 x H x W (premultiplied foreground RGB and alpha, already in [0, 1])."""

    def __init__(self, backbone: Sapiens2Backbone, decode_head: nn.Module, task: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.decode_head(self.backbone.forward_featmap(x))


def official_head_config(arch: str, task: str) -> HeadConfig:
    """The head widths every official config of `arch` uses for `task`."""
    c = ARCHS[arch].embed_dim
    big = arch == "5b"
    if task == "pose":
        if arch == "1b":
            return PoseHeadConfig(c, deconv_channels=(1536, 1024), conv_channels=(768, 512, 256))
        return PoseHeadConfig(c)
    if task == "seg":
        return SegHeadConfig(c)
    if task == "normal":
        return DenseHeadConfig(c, (1536, 768, 512, 256), (128, 64, 32)) if big else DenseHeadConfig(c)
    if task == "albedo":
        return DenseHeadConfig(c, (1536, 768, 512, 256), (64, 32, 16)) if big else DenseHeadConfig(c)
    if task == "matting":  # released for 1b only; these are its widths
        return DenseHeadConfig(c, (768, 512, 256, 128), (64, 32, 16), (3, 3, 3), MATTING_CHANNELS)
    if task == "pointmap":
        if big:
            return PointmapHeadConfig(c, upsample_channels=(1536, 768, 768, 768), conv_channels=(128, 64, 32))
        return PointmapHeadConfig(c)
    raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


HEAD_CLASSES: dict[str, type[nn.Module]] = {
    "pose": PoseHeatmapHead,
    "seg": SegHead,
    "normal": NormalHead,
    "albedo": AlbedoHead,
    "pointmap": PointmapHead,
    "matting": MattingHead,
}


def build_head(task: str, cfg: HeadConfig) -> nn.Module:
    """The head for `task` built from `cfg`."""
    if task not in HEAD_CLASSES:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return HEAD_CLASSES[task](cfg)


def build_backbone(arch: str | BackboneConfig, rope_dtype: torch.dtype | None = None) -> Sapiens2Backbone:
    """An official arch name ('0.1b' ... '5b', '1b-4k') or a custom `BackboneConfig`."""
    cfg = _arch_config(arch)
    if rope_dtype is not None:
        cfg = replace(cfg, rope_dtype=rope_dtype)
    return Sapiens2Backbone(cfg)


def build_model(
    arch: str | BackboneConfig,
    task: str,
    head: HeadConfig | None = None,
    rope_dtype: torch.dtype | None = None,
) -> nn.Module:
    """The network for `task` ('pretrain' gives the bare backbone). Official head widths unless `head` is given."""
    backbone = build_backbone(arch, rope_dtype)
    if task == "pretrain":
        return backbone
    if head is None:
        if not isinstance(arch, str):
            raise ValueError("a custom backbone config needs an explicit head config")
        head = official_head_config(arch, task)
    return Sapiens2TaskModel(backbone, build_head(task, head), task)


def _arch_config(arch: str | BackboneConfig) -> BackboneConfig:
    if isinstance(arch, BackboneConfig):
        return arch
    key = arch.lower().removeprefix("sapiens2_").replace("_", "-")
    if key not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)} or a BackboneConfig")
    return ARCHS[key]
