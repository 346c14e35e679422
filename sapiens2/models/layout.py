"""Read a network's configuration back from a state dict's key names and shapes.

Official files name their arch and task, but fine-tuned, converted or tiny checkpoints often do not; and a
file given under the wrong name must be caught. Everything a Sapiens2 network is (widths, depth, heads,
grouped-KV blocks, head layers) shows in its parameter shapes, so `infer_layout` rebuilds the configs from
them alone, without reading any tensor data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from sapiens2.models.backbone import ARCHS, BackboneConfig
from sapiens2.models.build import HeadConfig, build_model, official_head_config
from sapiens2.models.heads import DenseHeadConfig, PointmapHeadConfig, PoseHeadConfig, SegHeadConfig

Shapes = Mapping[str, Sequence[int]]
HEAD_FINAL_CONV = {"conv_pose": "pose", "conv_seg": "seg", "conv_normal": "normal", "conv_albedo": "albedo",
                   "conv_pointmap": "pointmap", "conv_matting": "matting"}


class NotSapiens2Error(ValueError):
    """The keys do not describe a Sapiens2 network; the message says what they look like instead."""


@dataclass(frozen=True)
class CheckpointLayout:
    """What a state dict holds: the backbone config, the task ('pretrain' for a bare backbone) and head."""

    backbone: BackboneConfig
    task: str
    head: HeadConfig | None = None

    @property
    def arch(self) -> str | None:
        """The official arch name when the backbone is one of them, else None."""
        for name, cfg in ARCHS.items():
            if _same_backbone(cfg, self.backbone):
                return name
        return None

    generation = 2

    @property
    def keypoints(self) -> int | None:
        return self.head.num_keypoints if isinstance(self.head, PoseHeadConfig) else None

    def build(self, rope_dtype: torch.dtype | None = None) -> nn.Module:
        """The network this layout describes (official head widths when they match)."""
        head = None if self.is_official else self.head
        return build_model(self.arch or self.backbone, self.task, head, rope_dtype=rope_dtype)

    @property
    def is_official(self) -> bool:
        arch = self.arch
        if arch is None:
            return False
        return self.task == "pretrain" or official_head_config(arch, self.task) == self.head

    def describe(self) -> str:
        b = self.backbone
        arch = self.arch
        what = f"Sapiens2 {arch}" if arch else (
            f"a custom Sapiens2 backbone (embed {b.embed_dim}, {b.depth} blocks, {b.num_heads} heads"
            + (", 4K tokenizer" if b.use_tokenizer else "") + ")"
        )
        if self.task == "pretrain":
            return f"{what} pretrain backbone"
        return f"{what} {self.task} model" + ("" if self.is_official or not arch else " (non-official head widths)")


def _same_backbone(a: BackboneConfig, b: BackboneConfig) -> bool:
    # RoPE dtype is a numerics choice, not part of the layout.
    return replace(a, rope_dtype=b.rope_dtype) == b


def infer_layout(shapes: Shapes) -> CheckpointLayout:
    """The layout a Sapiens2 state dict (bare backbone keys, or `backbone.*` + `decode_head.*`) describes."""
    keys = list(shapes)
    if any(k.startswith("backbone.") for k in keys):
        backbone_shapes = {k[len("backbone."):]: v for k, v in shapes.items() if k.startswith("backbone.")}
        head_shapes = {k[len("decode_head."):]: v for k, v in shapes.items() if k.startswith("decode_head.")}
    else:
        backbone_shapes, head_shapes = dict(shapes), {}
    _reject_foreign(backbone_shapes, head_shapes, shapes)
    backbone = _infer_backbone(backbone_shapes)
    if not head_shapes:
        return CheckpointLayout(backbone, "pretrain")
    task = _infer_task(head_shapes)
    return CheckpointLayout(backbone, task, _infer_head(task, head_shapes, backbone.embed_dim))


def _reject_foreign(backbone: Shapes, head: Shapes, everything: Shapes) -> None:
    if not everything:
        raise NotSapiens2Error("it holds no tensors")
    if "pos_embed" in backbone or any(k.startswith("layers.") for k in backbone):
        raise NotSapiens2Error("it looks like a Sapiens v1 checkpoint (ViT with `pos_embed` and `layers.*`), not Sapiens2")
    if any(k.startswith(("bbox_head.", "neck.")) for k in everything):
        raise NotSapiens2Error("it looks like a detector checkpoint (`bbox_head.*` / `neck.*`), not Sapiens2")
    if "patch_embed.projection.weight" not in backbone:
        sample = ", ".join(sorted(everything)[:5])
        raise NotSapiens2Error(f"it has no Sapiens2 patch embedding (`patch_embed.projection.weight`); keys start: {sample}")


def block_indices(shapes: Shapes, pattern: str) -> list[int]:
    """The sorted distinct integers captured by `pattern`'s first group across the keys (block numbers)."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in shapes if (m := rx.match(k))})


def _first(shapes: Shapes, candidates: Sequence[str]) -> Sequence[int] | None:
    for key in candidates:
        if key in shapes:
            return shapes[key]
    return None


def _infer_backbone(s: Shapes) -> BackboneConfig:
    embed, in_ch, patch, _ = s["patch_embed.projection.weight"]
    blocks = block_indices(s, r"blocks\.(\d+)\.")
    if not blocks:
        raise NotSapiens2Error("it has a patch embedding but no transformer blocks (`blocks.N.*`)")
    depth = blocks[-1] + 1
    # Any surviving block will do: a damaged key should show up as a mismatch later, not break inference.
    head_dim = _first(s, [f"blocks.{i}.attn.q_norm.weight" for i in blocks])
    periods = s.get("rope_embed.periods")
    if head_dim is not None:
        d = head_dim[0]
    elif periods is not None:
        d = 4 * periods[0]
    else:
        raise NotSapiens2Error("its blocks have neither QK-norm weights nor RoPE periods, so the head size is unknown")
    hidden = _first(s, [f"blocks.{i}.ffn.w3.weight" for i in blocks])
    tok_blocks = block_indices(s, r"tokenizer\.blocks\.(\d+)\.")
    storage = s.get("storage_tokens", (1, 8, embed))[1]
    kv_first, kv_last = _grouped_span(s, blocks, depth, embed)
    num_heads = embed // d
    cfg = BackboneConfig(
        embed_dim=embed,
        depth=depth,
        num_heads=num_heads,
        ffn_hidden=hidden[1] if hidden is not None and hidden[1] != 4 * embed else None,
        num_tokenizer_layers=tok_blocks[-1] + 1 if tok_blocks else 2,
        use_tokenizer=bool(tok_blocks) or "tokenizer.w_cls" in s,
        window_size=_window_size(s),
        patch_size=patch,
        in_channels=in_ch,
        n_storage_tokens=storage,
        full_attention_first=kv_first,
        full_attention_last=kv_last,
        kv_group=_kv_group(s, blocks, embed),
    )
    official = next((a for a in ARCHS.values() if a.embed_dim == embed and a.depth == depth), None)
    if official is not None and not cfg.use_tokenizer:
        # Tokenizer depth is an arch constant even when unused: keep it so the official config compares equal.
        cfg = replace(cfg, num_tokenizer_layers=official.num_tokenizer_layers)
    return cfg


def _window_size(s: Shapes) -> int:
    pos = s.get("tokenizer.local_pos_embed")
    if pos is None:
        return 4
    return round((pos[1] - 1) ** 0.5)


def _kv_group(s: Shapes, blocks: list[int], embed: int) -> int:
    for i in blocks:
        wk = s.get(f"blocks.{i}.attn.wk.weight")
        if wk is not None and wk[0] != embed:
            return embed // wk[0]
    return 2


def _grouped_span(s: Shapes, blocks: list[int], depth: int, embed: int) -> tuple[int, int]:
    """(first, last) such that blocks outside [first, depth - last) use full attention, as the rule goes."""
    grouped = [i for i in blocks if (wk := s.get(f"blocks.{i}.attn.wk.weight")) is not None and wk[0] != embed]
    if not grouped:
        return 8, 8
    return grouped[0], depth - 1 - grouped[-1]


def _infer_task(head: Shapes) -> str:
    for conv, task in HEAD_FINAL_CONV.items():
        if f"{conv}.weight" in head:
            return task
    raise NotSapiens2Error(
        "its decode_head has none of the final convs " + ", ".join(f"`{c}`" for c in HEAD_FINAL_CONV)
    )


def _conv_widths(head: Shapes, prefix: str, transpose: bool = False) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(out widths, kernel sizes) of the convs `prefix.{i}.weight`, in index order."""
    widths, kernels = [], []
    for i in block_indices(head, re.escape(prefix) + r"\.(\d+)\.weight$"):
        shape = head[f"{prefix}.{i}.weight"]
        if len(shape) != 4:
            continue  # a norm weight inside the same Sequential
        widths.append(shape[1] if transpose else shape[0])
        kernels.append(shape[-1])
    return tuple(widths), tuple(kernels)


def _infer_head(task: str, head: Shapes, embed: int) -> HeadConfig:
    if task in ("pose", "seg"):
        deconv, deconv_k = _conv_widths(head, "deconv_layers", transpose=True)
        conv, conv_k = _conv_widths(head, "conv_layers")
        out = head[f"conv_{task}.weight"][0]
        if task == "pose":
            return PoseHeadConfig(embed, deconv, deconv_k, conv, conv_k, num_keypoints=out)
        return SegHeadConfig(embed, deconv, deconv_k, conv, conv_k, num_classes=out)
    ups = tuple(head[f"upsample_blocks.{i}.0.weight"][0] // 4 for i in block_indices(head, r"upsample_blocks\.(\d+)\.0\.weight"))
    conv, conv_k = _conv_widths(head, "conv_layers")
    out = head[f"conv_{task}.weight"][0]
    if task != "pointmap":
        return DenseHeadConfig(embed, ups, conv, conv_k, out_channels=out)
    scale_conv, scale_k = _conv_widths(head, "scale_conv_layers")
    linears = [head[f"scale_final_layer.{i}.weight"] for i in block_indices(head, r"scale_final_layer\.(\d+)\.weight")]
    mlp = tuple([linears[0][1]] + [w[0] for w in linears]) if linears else (6144, 512, 128, 1)
    return PointmapHeadConfig(embed, ups, conv, conv_k, out, scale_conv, scale_k, mlp)
