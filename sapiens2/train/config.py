"""Reading and checking a fine-tuning config: a TOML file into the dataclasses of `sapiens2.train.schema`.

Every error is a `ConfigError` naming the dotted field (`optim.lr`, `data.train[0].root`) and the reason, so a
typo, a wrong type or an unusable value is reported before anything is built. The task's own tables (`[loss]`,
`[augment]`, `model.head`) are checked against the dataclasses its `TaskSpec` names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sapiens2.task_table import TASKS
from sapiens2.train.network import check_model
from sapiens2.train.schema import DataConfig, DatasetConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from sapiens2.train.specs import TASK_SPECS
from sapiens2.training.config import ConfigError, check_folder, from_dict, read_toml
from sapiens2.training.shards import is_shard_spec

__all__ = ["ConfigError", "DataConfig", "DatasetConfig", "ModelConfig", "OptimConfig", "RunConfig", "TrainConfig",
           "check_config", "config_from_dict", "load_config"]


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a TOML file, apply `key.path=value` overrides, and validate into a `TrainConfig`."""
    return config_from_dict(read_toml(path, overrides))


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Validate a plain dict (parsed TOML) into a `TrainConfig`, including the task-specific tables."""
    cfg = from_dict(TrainConfig, data)
    check_config(cfg)
    return cfg


def check_config(cfg: TrainConfig) -> None:
    """Rules that span fields: ranges, and the task tables validated against the task's dataclasses."""
    if cfg.task not in TASKS:
        raise ConfigError("task", f"must be one of {', '.join(repr(t) for t in TASKS)}, got {cfg.task!r}")
    check_model(cfg)
    spec = TASK_SPECS[cfg.task]
    from_dict(spec.loss_config, cfg.loss, "loss")
    from_dict(spec.augment_config, cfg.augment, "augment")
    if cfg.data.num_classes is not None and not 1 <= cfg.data.num_classes <= 255:
        raise ConfigError("data.num_classes", f"must be in [1, 255] (255 marks ignored pixels), got {cfg.data.num_classes}")

    h, w = cfg.data.input_size
    if h <= 0 or w <= 0 or h % 16 or w % 16:
        raise ConfigError("data.input_size", f"must be positive multiples of the patch size 16, got {[h, w]}")
    if not cfg.data.train:
        raise ConfigError("data.train", "needs at least one dataset")
    for split, group in (("train", cfg.data.train), ("val", cfg.data.val)):
        for i, ds in enumerate(group):
            where = f"data.{split}[{i}]"
            if ds.repeat < 1:
                raise ConfigError(f"{where}.repeat", f"must be >= 1, got {ds.repeat}")
            for name, why in spec.dataset_needs.items():
                if not getattr(ds, name) and not is_shard_spec(ds.root):  # shards hold what the files gave
                    raise ConfigError(f"{where}.{name}", why)
    check_folder("train.work_dir", cfg.train.work_dir)
    _positive("data.val_batch_size", cfg.data.val_batch_size)
    _positive("train.num_iters", cfg.train.num_iters)
    _positive("train.batch_size", cfg.train.batch_size)
    _positive("train.accumulate_steps", cfg.train.accumulate_steps)
    _positive("train.save_every", cfg.train.save_every)
    _positive("train.val_every", cfg.train.val_every)
    _positive("train.log_every", cfg.train.log_every)
    if cfg.train.shard_size < 0:
        raise ConfigError("train.shard_size", f"must be >= 0 (0: one node's processes), got {cfg.train.shard_size}")
    if cfg.data.shuffle_buffer < 1:
        raise ConfigError("data.shuffle_buffer", f"must be >= 1 (1: no shuffling), got {cfg.data.shuffle_buffer}")
    if cfg.data.num_workers < 0:
        raise ConfigError("data.num_workers", f"must be >= 0, got {cfg.data.num_workers}")
    o = cfg.optim
    _positive("optim.lr", o.lr)
    if o.weight_decay < 0:
        raise ConfigError("optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    _positive("optim.eps", o.eps)
    _positive("optim.power", o.power)
    if not 0 < o.layer_decay <= 1:
        raise ConfigError("optim.layer_decay", f"must be in (0, 1], got {o.layer_decay}")
    if not all(0 <= b < 1 for b in o.betas):
        raise ConfigError("optim.betas", f"each beta must be in [0, 1), got {list(o.betas)}")
    if o.warmup_iters < 0:
        raise ConfigError("optim.warmup_iters", f"must be >= 0, got {o.warmup_iters}")
    if o.warmup_iters >= cfg.train.num_iters and o.schedule != "constant":
        raise ConfigError("optim.warmup_iters", f"{o.warmup_iters} leaves no decay within train.num_iters "
                          f"= {cfg.train.num_iters}; lower it or use schedule = \"constant\"")
    if not 0 < o.warmup_start_factor <= 1:
        raise ConfigError("optim.warmup_start_factor", f"must be in (0, 1], got {o.warmup_start_factor}")
    if o.min_lr < 0 or o.min_lr > o.lr:
        raise ConfigError("optim.min_lr", f"must be in [0, lr={o.lr}], got {o.min_lr}")
    if o.clip_grad is not None and o.clip_grad < 0:
        raise ConfigError("optim.clip_grad", f"must be >= 0 (0 turns clipping off), got {o.clip_grad}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(name, f"must be > 0, got {value}")


