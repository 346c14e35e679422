"""Read a Sapiens v1 network's configuration back from its state dict's key names and shapes."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from torch import nn

from sapiens2.models.layout import block_indices
from sapiens2.models.sapiens1 import (
    V1_ARCHS,
    Sapiens1Config,
    V1HeadConfig,
    build_sapiens1,
    official_v1_head_config,
    pos_grid_for,
    v1_patch_padding,
)

Shapes = Mapping[str, Sequence[int]]
V1_TASK_BY_CHANNELS = {28: "seg", 1: "depth", 3: "normal"}


def looks_like_v1(shapes: Shapes) -> bool:
    """v1 backbones have a learned `pos_embed` and `layers.N` blocks (v2: RoPE and `blocks.N`)."""
    return any(k.removeprefix("backbone.") == "pos_embed" for k in shapes) and any(
        k.removeprefix("backbone.").startswith("layers.") for k in shapes
    )


@dataclass(frozen=True)
class V1Layout:
    backbone: Sapiens1Config
    task: str  # "pretrain", "pose", "seg", "depth", "normal"
    head: V1HeadConfig | None = None

    @property
    def arch(self) -> str | None:
        for name, cfg in V1_ARCHS.items():
            if (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.hidden) == (
                self.backbone.embed_dim, self.backbone.depth, self.backbone.num_heads, self.backbone.hidden
            ):
                return name
        return None

    generation = 1

    @property
    def keypoints(self) -> int | None:
        return self.head.out_channels if self.task == "pose" and self.head else None

    def build(self, rope_dtype: object = None) -> nn.Module:
        """The v1 network this layout describes (`rope_dtype` is accepted and ignored: v1 has no RoPE)."""
        return build_sapiens1(self.backbone, self.task, self.head)

    def describe(self) -> str:
        b = self.backbone
        what = f"Sapiens v1 {self.arch}" if self.arch else f"a custom Sapiens v1 ViT (embed {b.embed_dim}, {b.depth} layers)"
        if self.task == "pretrain":
            return f"{what} pretrain backbone"
        extra = f" with {self.keypoints} keypoints" if self.task == "pose" else ""
        return f"{what} {self.task} model{extra}"

    def is_official(self) -> bool:
        arch = self.arch
        if arch is None or self.task == "pretrain":
            return arch is not None
        return official_v1_head_config(arch, self.task, self.keypoints or 308) == self.head


def _widths(head: Shapes, prefix: str, transpose: bool) -> tuple[int, ...]:
    return tuple(head[f"{prefix}.{i}.weight"][1 if transpose else 0]
                 for i in block_indices(head, re.escape(prefix) + r"\.(\d+)\.weight$"))


def infer_v1_layout(shapes: Shapes, num_heads: int | None = None, task: str | None = None) -> V1Layout:
    """The v1 layout of a state dict (bare backbone keys, or `backbone.*` + `head.*` / `decode_head.*`).

    The number of attention heads does not show in the shapes: it is taken from the official arch with
    the same width and depth, or must be given. Nor does the task of a `decode_head` always: its output
    channels say seg (28), depth (1) or normal (3) unless `task` names one of them.
    """
    prefixed = any(k.startswith("backbone.") for k in shapes)
    bb = {k.removeprefix("backbone."): v for k, v in shapes.items() if not prefixed or k.startswith("backbone.")}
    embed, in_ch, patch, _ = bb["patch_embed.projection.weight"]
    depth = block_indices(bb, r"layers\.(\d+)\.")[-1] + 1
    hidden = bb.get("layers.0.ffn.layers.0.0.weight", (4 * embed,))[0]
    official = next((a for a in V1_ARCHS.values() if (a.embed_dim, a.depth) == (embed, depth)), None)
    heads = num_heads or (official.num_heads if official else max(1, embed // 64))
    with_cls = "cls_token" in bb
    grid = pos_grid_for(bb["pos_embed"][1] - int(with_cls), square=with_cls)
    if "head.final_layer.weight" in shapes:
        task, prefix, classifier = "pose", "head.", "final_layer"
    elif "decode_head.conv_seg.weight" in shapes:
        out = shapes["decode_head.conv_seg.weight"][0]
        if task not in ("seg", "depth", "normal"):
            task = V1_TASK_BY_CHANNELS.get(out, "seg")
        prefix, classifier = "decode_head.", "conv_seg"
    else:
        task, prefix, classifier = "pretrain", "", ""
    config = Sapiens1Config(
        embed_dim=embed, depth=depth, num_heads=heads, mlp_hidden=None if hidden == 4 * embed else hidden,
        patch_size=patch, in_channels=in_ch, patch_padding=v1_patch_padding(task), with_cls_token=with_cls,
        pos_grid=grid,
    )
    if task == "pretrain":
        return V1Layout(config, task)
    head = {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}
    cfg = V1HeadConfig(
        embed,
        _widths(head, "deconv_layers", transpose=True),
        _widths(head, "conv_layers", transpose=False),
        head[f"{classifier}.weight"][0],
        tuple(head[f"deconv_layers.{i}.weight"][-1] for i in block_indices(head, r"deconv_layers\.(\d+)\.weight$")),
        tuple(head[f"conv_layers.{i}.weight"][-1] for i in block_indices(head, r"conv_layers\.(\d+)\.weight$")),
    )
    return V1Layout(config, task, cfg)


def official_v1_layout(arch: str, task: str, keypoints: int | None = None) -> V1Layout:
    """The layout of an official v1 checkpoint (pretrain: cls token and a 64x64 position grid)."""
    cfg = V1_ARCHS[arch]
    if task == "pretrain":
        return V1Layout(replace(cfg, with_cls_token=True, pos_grid=(64, 64)), task)
    cfg = replace(cfg, patch_padding=v1_patch_padding(task))
    return V1Layout(cfg, task, official_v1_head_config(arch, task, keypoints or 308))
