"""Sapiens v1 (ECCV 2024): a plain ViT (learned absolute positions, LayerNorm, GELU MLP) and its heads.

Module names follow the v1 checkpoints (mmpretrain `VisionTransformer` for the backbone, mmpose
`HeatmapHead` under `head.*` for pose, mmseg heads under `decode_head.*` for seg / depth / normal), so
their state dicts load with no renaming. The patch-conv padding (2 px for pose and normal, none for seg
and depth) is not in the weights; it comes with the task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from sapiens2.task_table import TASKS
from sapiens2.models.heads import _conv_units, _deconv_units

V1_TASKS = tuple(t for t, info in TASKS.items() if 1 in info.generations)


@dataclass(frozen=True)
class Sapiens1Config:
    """A v1 backbone. The official sizes are in `V1_ARCHS`."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden: int | None = None  # None: 4 x embed_dim
    patch_size: int = 16
    in_channels: int = 3
    patch_padding: int | None = None  # None: pad bottom/right up to a multiple of the patch ("corner")
    with_cls_token: bool = False  # pretrain checkpoints have one; task checkpoints do not
    pos_grid: tuple[int, int] = (64, 48)  # the grid `pos_embed` was trained for (H, W)

    @property
    def hidden(self) -> int:
        return self.mlp_hidden or 4 * self.embed_dim


V1_ARCHS: dict[str, Sapiens1Config] = {
    "0.3b": Sapiens1Config(embed_dim=1024, depth=24, num_heads=16),
    "0.6b": Sapiens1Config(embed_dim=1280, depth=32, num_heads=16),
    "1b": Sapiens1Config(embed_dim=1536, depth=40, num_heads=24),
    "2b": Sapiens1Config(embed_dim=1920, depth=48, num_heads=32),
}


def resize_pos_embed(pos_embed: torch.Tensor, source_grid: tuple[int, int], grid: tuple[int, int],
                     prefix_tokens: int) -> torch.Tensor:
    """`pos_embed` (1 x (prefix + gh*gw) x C) without its prefix rows, resized bicubic to `grid` (in float32, as
    the reference does at other input sizes and when it loads a pretrain checkpoint into a task model)."""
    patches = pos_embed[:, prefix_tokens:]
    if tuple(source_grid) == tuple(grid):
        return patches
    gh, gw = source_grid
    x = patches.reshape(1, gh, gw, -1).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=tuple(grid), mode="bicubic", align_corners=False)
    return x.flatten(2).transpose(1, 2).to(pos_embed.dtype)


class _PatchEmbed(nn.Module):
    def __init__(self, cfg: Sapiens1Config) -> None:
        super().__init__()
        self.patch = cfg.patch_size
        self.corner = cfg.patch_padding is None
        self.projection = nn.Conv2d(cfg.in_channels, cfg.embed_dim, cfg.patch_size, cfg.patch_size,
                                    padding=0 if self.corner else cfg.patch_padding)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        if self.corner:
            x = F.pad(x, (0, -x.shape[-1] % self.patch, 0, -x.shape[-2] % self.patch))
        x = self.projection(x)
        return x.flatten(2).transpose(1, 2), (x.shape[-2], x.shape[-1])


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    """Keys `layers.0.0` (in) and `layers.1` (out), as mmcv's FFN names them."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, hidden), nn.GELU()), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, hidden: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, num_heads)
        self.ln2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = _Mlp(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class Sapiens1Backbone(nn.Module):
    """Patch embed -> (+cls) -> + pos_embed (resized bicubic when the grid differs) -> blocks -> LayerNorm."""

    task = "pretrain"

    def __init__(self, config: Sapiens1Config) -> None:
        super().__init__()
        cfg = config
        self.config = cfg
        self.num_prefix_tokens = int(cfg.with_cls_token)
        self.patch_embed = _PatchEmbed(cfg)
        if cfg.with_cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        gh, gw = cfg.pos_grid
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + gh * gw, cfg.embed_dim))
        self.layers = nn.ModuleList(_Block(cfg.embed_dim, cfg.num_heads, cfg.hidden) for _ in range(cfg.depth))
        self.ln1 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.grad_checkpointing = False  # fine-tuning: recompute each layer in the backward pass

    def init_weights(self) -> Sapiens1Backbone:
        """Random weights for training without a checkpoint, in the ViT convention: truncated normal (std
        0.02) positions, cls token and linear weights, zero biases, unit LayerNorms. Returns self."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for token in (self.pos_embed, getattr(self, "cls_token", None)):
            if token is not None:
                nn.init.trunc_normal_(token, std=0.02)
        return self

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer layers, under the name the Sapiens2 backbone uses (FSDP wraps each one)."""
        return self.layers

    def _positions(self, grid: tuple[int, int]) -> torch.Tensor:
        pos, n = self.pos_embed, self.num_prefix_tokens
        if grid == tuple(self.config.pos_grid):
            return pos
        return torch.cat((pos[:, :n], resize_pos_embed(pos, self.config.pos_grid, grid, n)), dim=1)

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected a B x {self.config.in_channels} x H x W image batch, got {tuple(x.shape)}")
        x, grid = self.patch_embed(x)
        if self.config.with_cls_token:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self._positions(grid)
        use_ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            x = checkpoint(layer, x, use_reentrant=False) if use_ckpt else layer(x)
        return self.ln1(x), grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens after the final norm (cls first when the model has one)."""
        return self.tokens(x)[0]

    def forward_featmap(self, x: torch.Tensor) -> torch.Tensor:
        tokens, (h, w) = self.tokens(x)
        patches = tokens[:, self.num_prefix_tokens :]
        return patches.reshape(patches.shape[0], h, w, -1).permute(0, 3, 1, 2)


def task_backbone(backbone: Sapiens1Backbone, task: str, grid: tuple[int, int]) -> Sapiens1Backbone:
    """The backbone of a v1 `task` model trained on a `grid` of patches, from any v1 backbone: the cls
    token dropped, positions resized to `grid`, the task's patch-conv padding. This is what the reference
    does when it fine-tunes from a pretrain checkpoint; a task backbone already in that form is returned
    as it is."""
    cfg = backbone.config
    want = replace(cfg, with_cls_token=False, pos_grid=tuple(grid), patch_padding=v1_patch_padding(task))
    if want == cfg:
        return backbone
    out = Sapiens1Backbone(want).to(backbone.pos_embed.device)
    state = {k: v for k, v in backbone.state_dict().items() if k not in ("cls_token", "pos_embed")}
    state["pos_embed"] = resize_pos_embed(backbone.pos_embed.detach(), cfg.pos_grid, grid, backbone.num_prefix_tokens)
    out.load_state_dict(state, strict=True)
    out.grad_checkpointing = backbone.grad_checkpointing
    return out


@dataclass(frozen=True)
class V1HeadConfig:
    """Deconvs (x2 each), 1x1 convs, then a 1x1 classifier: every v1 head has this shape."""

    in_channels: int
    deconv_channels: tuple[int, ...]
    conv_channels: tuple[int, ...]
    out_channels: int
    deconv_kernels: tuple[int, ...] | None = None  # None: 4 for every deconv
    conv_kernels: tuple[int, ...] | None = None  # None: 1 for every conv


def classifier_name(task: str) -> str:
    """The name of a v1 head's last 1x1 conv in the official checkpoints: `final_layer` for pose (mmpose),
    `conv_seg` for every other task (mmseg)."""
    return "final_layer" if task == "pose" else "conv_seg"


class V1Head(nn.Module):
    """The v1 head of `task`; its classifier's name follows the official checkpoints (`classifier_name`)."""

    def __init__(self, cfg: V1HeadConfig, task: str) -> None:
        super().__init__()
        dk = cfg.deconv_kernels or (4,) * len(cfg.deconv_channels)
        ck = cfg.conv_kernels or (1,) * len(cfg.conv_channels)
        self.deconv_layers = _deconv_units(cfg.in_channels, cfg.deconv_channels, dk)
        self.conv_layers = _conv_units(cfg.deconv_channels[-1], cfg.conv_channels, ck)
        self.classifier_name = classifier_name(task)
        setattr(self, self.classifier_name, nn.Conv2d(cfg.conv_channels[-1], cfg.out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.classifier_name)(self.conv_layers(self.deconv_layers(x)))


class Sapiens1TaskModel(nn.Module):
    """backbone + head (`head.*` for pose, `decode_head.*` for seg / depth / normal); raw head output."""

    def __init__(self, backbone: Sapiens1Backbone, head: V1Head, task: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.task = task
        if task == "pose":
            self.head = head
        else:
            self.decode_head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head if self.task == "pose" else self.decode_head
        return head(self.backbone.forward_featmap(x))


def v1_patch_padding(task: str) -> int | None:
    """Pose and normal models were trained with a 2-px padded patch conv; seg, depth and pretrain without."""
    return 2 if task in ("pose", "normal") else None


def official_v1_head_config(arch: str, task: str, num_keypoints: int = 308) -> V1HeadConfig:
    """The head every released v1 checkpoint of `arch` uses for `task` (same widths for every size)."""
    widths = {"pose": ((768, 768), (768, 768), num_keypoints), "seg": ((768,) * 3, (768,) * 3, 28),
              "depth": ((384,) * 4, (384,) * 2, 1), "normal": ((768,) * 3, (768,) * 3, 3)}
    if task not in widths:
        raise ValueError(f"unknown v1 task {task!r}; expected one of {', '.join(V1_TASKS)}")
    deconv, conv, out = widths[task]
    return V1HeadConfig(V1_ARCHS[arch].embed_dim, deconv, conv, out, (4,) * len(deconv), (1,) * len(conv))


def build_sapiens1(config: Sapiens1Config, task: str, head: V1HeadConfig | None = None) -> nn.Module:
    """A v1 network: the bare backbone for 'pretrain', else backbone + head."""
    backbone = Sapiens1Backbone(config)
    if task == "pretrain":
        return backbone
    if head is None:
        raise ValueError("a v1 task model needs a head config (see official_v1_head_config)")
    return Sapiens1TaskModel(backbone, V1Head(head, task), task)


def trained_input_size(network: nn.Module) -> tuple[int, int] | None:
    """(H, W) a v1 task network was trained on: its positions are stored for that patch grid. None for
    any other network (Sapiens2's RoPE does not record it)."""
    backbone = getattr(network, "backbone", None)
    if not isinstance(backbone, Sapiens1Backbone):
        return None
    cfg = backbone.config
    return cfg.pos_grid[0] * cfg.patch_size, cfg.pos_grid[1] * cfg.patch_size


def pos_grid_for(tokens: int, square: bool) -> tuple[int, int]:
    """The (H, W) grid of a stored pos_embed: square for pretrain, 4:3 (H:W) for the 1024x768 task models."""
    if not square:
        k = math.isqrt(tokens // 12)
        if 12 * k * k == tokens:
            return 4 * k, 3 * k
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"a pos_embed of {tokens} patch positions is neither 4:3 nor square")
    return side, side
