"""Pretraining configuration: a TOML file read into dataclasses and checked field by field.

Sections: [model] (an official `arch` or a custom `backbone` table), [objective] (`ObjectiveConfig`:
masking, MAE decoder, DINO head, loss weights), [teacher] (EMA momentum and temperature schedules),
[crops] (`MultiCropConfig`), [data], [optim], [train]. Every field has the paper's value as its
default where the paper gives one; see configs/pretrain/ for complete examples. Reading and checking
uses the generic dataclass reader of `sapiens2.train.config`, so errors name the dotted field.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any, Literal

from sapiens2.models.backbone import ARCHS, BackboneConfig
from sapiens2.pretrain.augment import MultiCropConfig
from sapiens2.pretrain.ssl_meta_arch import ObjectiveConfig
from sapiens2.training.config import ConfigError, check_folder, from_dict, read_toml


@dataclass
class ModelConfig:
    arch: str | None = None  # "0.1b" ... "5b", "1b-4k"
    backbone: dict[str, Any] | None = None  # a custom BackboneConfig (fields as in sapiens2.models)
    # Start from weights (a fresh run only; resuming wins): a pretrain safetensors file (student and
    # teacher backbones) or a training checkpoint folder `iter_N` (student, teacher, heads; new optimizer).
    init: str | None = None
    grad_checkpointing: bool = False
    rope_dtype: Literal["bfloat16", "float32"] = "bfloat16"


@dataclass
class TeacherConfig:
    momentum: float = 0.992
    momentum_final: float = 0.992  # cosine ramp to this over training; equal to `momentum`: constant
    temp: float = 0.07
    temp_warmup_start: float = 0.065
    temp_warmup_iters: int = 1000


@dataclass
class DataConfig:
    # Folders (recursive), .txt list files, globs or image files; or tar shards (`sapiens2 shard`): a folder
    # holding an index.json, a `sapiens2 curate` output folder, index.json paths or URLs,
    # `name-{000000..000099}.tar` ranges, .tar paths or URLs.
    # Shards stream (no list of all images is held); the rest is read as files.
    source: list[str]
    num_workers: int = 4
    shuffle_buffer: int = 1000  # shards: samples each stream mixes (more: better mixing, more memory)


@dataclass
class OptimConfig:
    lr: float = 1e-4
    min_lr: float = 1e-7
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_iters: int = 1000
    clip_grad: float | None = 5.0  # global L2 norm; None or 0: off
    # The DINO head's last layer gets no update for this many first steps, which keeps the prototypes from
    # collapsing while the rest settles (DINOv2 / DINOv3: one epoch, 1250 iterations; the paper is silent).
    freeze_last_layer_iters: int = 1250


@dataclass
class RunConfig:
    work_dir: str
    num_iters: int = 500_000
    batch_size: int = 8  # images per process per step (each gives 2 global + 4 local views)
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    # auto: DDP when launched with torchrun; fsdp shards over all processes; hsdp shards within groups of
    # `shard_size` processes (0: one node's) and replicates across them. One process: always plain.
    parallel: Literal["auto", "none", "ddp", "fsdp", "hsdp"] = "auto"
    shard_size: int = 0
    compile: bool = False  # torch.compile each transformer block (student and teacher)
    seed: int = 0
    save_every: int = 1000
    log_every: int = 10
    keep_checkpoints: int = 2  # 0: keep all
    export: Literal["teacher", "student"] = "teacher"  # which backbone the final safetensors file holds


@dataclass
class PretrainConfig:
    model: ModelConfig
    data: DataConfig
    train: RunConfig
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    crops: MultiCropConfig = field(default_factory=MultiCropConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PretrainConfig:
    """Read a TOML file, apply `section.field=value` overrides, validate into a `PretrainConfig`."""
    return config_from_dict(read_toml(path, overrides))


def config_from_dict(data: dict[str, Any]) -> PretrainConfig:
    data = dict(data)
    if isinstance(data.get("data"), dict) and isinstance(data["data"].get("source"), str):
        data["data"] = {**data["data"], "source": [data["data"]["source"]]}
    cfg = from_dict(PretrainConfig, data)
    check_config(cfg)
    return cfg


def backbone_config(m: ModelConfig) -> BackboneConfig:
    """The backbone the [model] section describes."""
    if m.arch is not None:
        if m.arch not in ARCHS:
            raise ConfigError("model.arch", f"unknown arch {m.arch!r}; expected one of {', '.join(ARCHS)}")
        return ARCHS[m.arch]
    table = dict(m.backbone or {})
    if "rope_dtype" in table:
        raise ConfigError("model.backbone.rope_dtype", "set it as model.rope_dtype")
    allowed = {f.name for f in fields(BackboneConfig)} - {"rope_dtype"}
    return from_dict(_subset(BackboneConfig, allowed), table, "model.backbone").build()


def _subset(cls: type, names: set[str]) -> type:
    """A dataclass with `cls`'s config-file fields, whose `build()` gives the real `cls`."""
    spec = [(f.name, f.type) if f.default is MISSING else (f.name, f.type, field(default=f.default))
            for f in fields(cls) if f.name in names]
    namespace = {"build": lambda self: cls(**vars(self)), "__module__": cls.__module__}
    return make_dataclass(cls.__name__, spec, namespace=namespace)


def check_config(cfg: PretrainConfig) -> None:
    m = cfg.model
    if (m.arch is None) == (m.backbone is None):
        raise ConfigError("model", "give exactly one of `arch` (an official size) or a `backbone` table")
    bb = backbone_config(m)
    o, t, c, r, opt = cfg.objective, cfg.teacher, cfg.crops, cfg.train, cfg.optim
    if not 0 <= o.mask_ratio < 1:
        raise ConfigError("objective.mask_ratio", f"must be in [0, 1), got {o.mask_ratio}")
    if not 0 <= o.block_prob <= 1:
        raise ConfigError("objective.block_prob", f"must be in [0, 1], got {o.block_prob}")
    if o.centering not in ("sinkhorn", "ema"):
        raise ConfigError("objective.centering", f"must be 'sinkhorn' or 'ema', got {o.centering!r}")
    if o.decoder_dim % o.decoder_heads or o.decoder_dim % 4:
        raise ConfigError("objective.decoder_dim", "must be divisible by decoder_heads and by 4")
    stride = bb.patch_size * (bb.window_size if bb.use_tokenizer else 1)
    if o.target_downsample < 1 or stride % o.target_downsample:
        raise ConfigError("objective.target_downsample", f"must divide the token stride {stride}")
    for name in ("global_size", "local_size"):
        h, w = getattr(c, name)
        if h <= 0 or w <= 0 or h % stride or w % stride:
            raise ConfigError(f"crops.{name}", f"must be positive multiples of the token stride {stride} px, "
                              f"got {[h, w]}")
    if c.n_global < 2 and c.n_local < 1:
        raise ConfigError("crops", "the contrastive loss needs 2 global views, or local views")
    if c.n_global < 1:
        raise ConfigError("crops.n_global", "at least one global view is needed (the MAE views)")
    for name, v in (("momentum", t.momentum), ("momentum_final", t.momentum_final)):
        if not 0 <= v <= 1:
            raise ConfigError(f"teacher.{name}", f"must be in [0, 1], got {v}")
    for name, v in (("train.num_iters", r.num_iters), ("train.batch_size", r.batch_size),
                    ("train.save_every", r.save_every), ("train.log_every", r.log_every), ("optim.lr", opt.lr)):
        if not v > 0:
            raise ConfigError(name, f"must be > 0, got {v}")
    if r.shard_size < 0:
        raise ConfigError("train.shard_size", f"must be >= 0 (0: the processes of one node), got {r.shard_size}")
    if cfg.data.shuffle_buffer < 1:
        raise ConfigError("data.shuffle_buffer", f"must be >= 1 (1: no shuffling), got {cfg.data.shuffle_buffer}")
    if cfg.data.num_workers < 0:
        raise ConfigError("data.num_workers", f"must be >= 0, got {cfg.data.num_workers}")
    if not cfg.data.source:
        raise ConfigError("data.source", "name at least one folder, list file or glob of images")
    if opt.min_lr < 0 or opt.min_lr > opt.lr:
        raise ConfigError("optim.min_lr", f"must be in [0, lr={opt.lr}], got {opt.min_lr}")
    if opt.warmup_iters < 0:
        raise ConfigError("optim.warmup_iters", f"must be >= 0, got {opt.warmup_iters}")
    if opt.freeze_last_layer_iters < 0:
        raise ConfigError("optim.freeze_last_layer_iters", f"must be >= 0, got {opt.freeze_last_layer_iters}")
    if opt.weight_decay < 0:
        raise ConfigError("optim.weight_decay", f"must be >= 0, got {opt.weight_decay}")
    if not opt.eps > 0:
        raise ConfigError("optim.eps", f"must be > 0, got {opt.eps}")
    if not all(0 <= b < 1 for b in opt.betas):
        raise ConfigError("optim.betas", f"each beta must be in [0, 1), got {list(opt.betas)}")
    check_folder("train.work_dir", r.work_dir)
    if opt.clip_grad is not None and opt.clip_grad < 0:
        raise ConfigError("optim.clip_grad", f"must be >= 0 (0 turns clipping off), got {opt.clip_grad}")
