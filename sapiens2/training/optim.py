"""Optimizer, layer-wise learning-rate decay, warm-up + decay schedule, gradient clipping. Task-free.

Layer-wise decay (the reference's rule): with L = depth + 2, the patch embedding, 4K tokenizer and the
cls / storage / mask tokens are layer 0, backbone block i is layer i + 1, and everything else (the final
norm, the head, a pretraining decoder) is layer L - 1; a parameter's lr is base_lr x decay^(L - 1 - layer).
So the head trains at the base rate, the last block at base x decay, the embeddings at base x decay^(depth+1).

Which parameters skip weight decay differs by recipe, so the caller picks the rule: `finetune_no_decay` is the
reference fine-tuning rule (1-D tensors, names ending in `.bias`, names containing `pos_embed`; the cls /
storage / mask tokens are decayed like any matrix), `pretrain_no_decay` the paper's pretraining rule (that, plus
the learned tokens).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

EMBED_NAMES = ("cls_token", "mask_token", "storage_tokens", "pos_embed", "patch_embed", "tokenizer")
LEARNED_TOKENS = ("cls_token", "mask_token", "storage_tokens", "w_cls")  # w_cls: the 4K tokenizer's window token


def layer_id(name: str, depth: int, backbone_prefix: str = "backbone.") -> int:
    """The layer-decay index of parameter `name` (see the module docstring).

    `backbone_prefix` is where the backbone sits in the model ("" when the model is the bare backbone):
    only names under it count as embeddings or blocks, so a decoder's own `blocks.*` get the full rate.
    """
    if not name.startswith(backbone_prefix):
        return depth + 1
    rest = name[len(backbone_prefix):]
    if rest.split(".", 1)[0] in EMBED_NAMES:
        return 0
    m = re.match(r"(?:blocks|layers)\.(\d+)\.", rest)
    if m:
        return int(m.group(1)) + 1
    return depth + 1


def finetune_no_decay(name: str, param: torch.Tensor) -> bool:
    """The reference fine-tuning rule (TASKS spec §6.3): 1-D tensors, biases and positional embeddings."""
    return param.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name


def pretrain_no_decay(name: str, param: torch.Tensor) -> bool:
    """The pretraining rule (PRETRAIN spec, no-decay params): norms, biases, positional embeddings and the
    learned tokens (cls / storage (register) / mask, the 4K tokenizer's window token)."""
    return finetune_no_decay(name, param) or name.rsplit(".", 1)[-1] in LEARNED_TOKENS


def param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    lr: float,
    weight_decay: float,
    layer_decay: float = 1.0,
    depth: int = 0,
    backbone_prefix: str = "backbone.",
    no_decay: Callable[[str, torch.Tensor], bool] = finetune_no_decay,
) -> list[dict]:
    """AdamW parameter groups, one per (layer, decay / no decay). Each group carries `lr` (already decayed),
    `lr_scale`, `weight_decay` and a readable `name`; frozen parameters are left out. `no_decay(name, param)`
    says which parameters get no weight decay."""
    groups: dict[tuple[int, bool], dict] = {}
    num_layers = depth + 2
    for name, p in named_params:
        if not p.requires_grad:
            continue
        lid = layer_id(name, depth, backbone_prefix) if layer_decay != 1.0 else num_layers - 1
        nd = no_decay(name, p)
        key = (lid, nd)
        if key not in groups:
            scale = layer_decay ** (num_layers - 1 - lid)
            groups[key] = {"params": [], "param_names": [], "lr": lr * scale, "lr_scale": scale,
                           "weight_decay": 0.0 if nd else weight_decay,
                           "name": f"layer{lid}_{'no_decay' if nd else 'decay'}"}
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(groups: list[dict], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                    fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over `param_groups(...)`; fused kernels on CUDA unless told otherwise."""
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g["params"]) and bool(groups)
    clean = [{k: v for k, v in g.items() if k != "param_names"} for g in groups]
    return torch.optim.AdamW(clean, betas=betas, eps=eps, fused=fused or None)


@dataclass(frozen=True)
class Schedule:
    """Linear warm-up from `start_factor` to 1 over `warmup_iters`, then `kind` decay to `min_factor` at
    `total_iters`: 'poly' (1 - t)^power (power 1: linear to 0, the reference), 'cosine', or 'constant'."""

    total_iters: int
    warmup_iters: int = 500
    start_factor: float = 1e-3
    kind: str = "poly"
    power: float = 1.0
    min_factor: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("poly", "cosine", "constant"):
            raise ValueError(f"unknown schedule {self.kind!r}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_iters:
            return self.start_factor + (1 - self.start_factor) * step / self.warmup_iters
        if self.kind == "constant":
            return 1.0
        span = max(1, self.total_iters - self.warmup_iters)
        t = min(1.0, (step - self.warmup_iters) / span)
        if self.kind == "poly":
            f = (1 - t) ** self.power
        else:
            f = 0.5 * (1 + math.cos(math.pi * t))
        return self.min_factor + (1 - self.min_factor) * f


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration scheduler multiplying every group's initial lr by `schedule(step)`.

    Its state dict holds the step and base rates only (the schedule is rebuilt from the config), so it
    resumes exactly.
    """
    # A plain function, not the Schedule object: LambdaLR would save a callable object's fields and restore
    # them over the config's on resume.
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule(step))


def clip_gradients(params: Iterable[torch.Tensor], max_norm: float | None) -> torch.Tensor:
    """Clip the global L2 gradient norm to `max_norm` (None or 0: only measure it). Returns the norm before
    clipping. Works for plain, DDP and FSDP (DTensor) parameters."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return torch.zeros(())
    if max_norm:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    return torch.nn.utils.clip_grad_norm_(params, float("inf"))
