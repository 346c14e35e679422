"""Training configuration: a TOML file read into plain dataclasses, checked field by field.

Every error is a `ConfigError` naming the dotted field (`optim.lr`, `data.train[0].root`) and the reason,
so a typo or a wrong type is reported before anything is built. `from_dict` is generic (any dataclass of
ints, floats, bools, strings, tuples, lists, dicts, optionals, literals and nested dataclasses), so
pretraining can describe its own sections with it.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

TASKS = ("pose", "seg", "normal", "pointmap", "albedo", "matting", "depth")  # depth: Sapiens v1 only


class ConfigError(ValueError):
    """A configuration value that cannot be used: `field` is its dotted path, `reason` says why."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field or 'config'}: {reason}")


# ----------------------------------------------------------------------------------------- sections


@dataclass
class DatasetConfig:
    """One training or validation source. Folder names are relative to `root` unless absolute.

    pose: `annotations` (COCO keypoint JSON) and images under `root` / `images`.
    seg: `images` and `labels` (label PNGs with the same stem); `class_map` maps source ids to training ids
    (unlisted ids become 255, ignored). dense tasks: `images` (default "rgb"), `mask`, `target` folders
    (defaults per task: normal, depth + `intrinsics` for pointmap, albedo, alpha for matting).
    """

    root: str
    annotations: str | None = None
    images: str | None = None
    labels: str = "labels"
    mask: str | None = "mask"
    target: str | None = None
    intrinsics: str = "camera_intrinsics"
    keypoints_field: str | None = None  # None: goliath_wholebody_kpts if present, else keypoints
    keypoint_indices: list[int] | None = None  # train on these points of the annotation field only
    bbox_from: Literal["keypoints", "annotation"] = "keypoints"
    class_map: dict[str, int] | None = None
    repeat: int = 1  # listed N times: sampled N times as often


@dataclass
class DataConfig:
    train: list[DatasetConfig]
    val: list[DatasetConfig] = field(default_factory=list)
    input_size: tuple[int, int] = (1024, 768)  # (H, W) of the network input
    num_workers: int = 4
    val_batch_size: int = 4
    num_classes: int | None = None  # seg; None: the init checkpoint's seg head, else 29 (Sapiens2) / 28 (v1)
    augment: bool = True  # False: only the deterministic resize / crop / target steps
    max_val_samples: int | None = None


@dataclass
class ModelConfig:
    """The network: an official `arch`, or a custom `backbone` table, or taken whole from `init`.

    `init` is an official name, hub id or file read with `sapiens2.load`: a pretrain checkpoint gives the
    backbone, a task checkpoint of the same task and head gives the whole model (otherwise its backbone).
    `head` overrides head widths (the fields of the task's head config, e.g. `deconv_channels`).
    `generation` 1 fine-tunes a Sapiens v1 network (`arch` 0.3b / 0.6b / 1b / 2b; pose, seg, normal, depth);
    None takes it from `init`, else 2. `allow_pickle` lets `init` be an original `.pth` (read weights-only).
    """

    arch: str | None = None
    backbone: dict[str, Any] | None = None
    init: str | None = None
    generation: Literal[1, 2] | None = None
    allow_pickle: bool = False
    head: dict[str, Any] = field(default_factory=dict)
    grad_checkpointing: bool = False
    freeze_backbone: bool = False
    rope_dtype: Literal["bfloat16", "float32"] = "bfloat16"


@dataclass
class OptimConfig:
    lr: float = 5e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    layer_decay: float = 1.0  # 1.0: off. Official: 0.4b 0.8, 0.8b 0.85, 1b 0.9, 5b 0.94
    warmup_iters: int = 500
    warmup_start_factor: float = 1e-3
    schedule: Literal["poly", "cosine", "constant"] = "poly"
    power: float = 1.0
    min_lr: float = 0.0
    clip_grad: float | None = 2.0  # global L2 norm; None or 0: off


@dataclass
class RunConfig:
    work_dir: str
    num_iters: int
    batch_size: int  # per process
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    parallel: Literal["auto", "none", "ddp", "fsdp"] = "auto"  # auto: DDP when launched with torchrun
    seed: int = 0
    save_every: int = 1000
    val_every: int = 1000
    log_every: int = 10
    keep_checkpoints: int = 3  # 0: keep all
    tf32: bool = True
    flip_test: bool = True  # pose validation


@dataclass
class TrainConfig:
    task: Literal["pose", "seg", "normal", "pointmap", "albedo", "matting", "depth"]
    model: ModelConfig
    data: DataConfig
    train: RunConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: dict[str, Any] = field(default_factory=dict)  # per-task loss weights (see sapiens2.train.tasks)
    augment: dict[str, Any] = field(default_factory=dict)  # per-task augmentation parameters


# ------------------------------------------------------------------------------------------ loading


def read_toml(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """A TOML config file as a dict, with `key.path=value` overrides applied (shared with pretraining)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("", f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"{path} is not valid TOML: {e}") from None
    for item in overrides:
        apply_override(data, item)
    return data


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a TOML file, apply `key.path=value` overrides, and validate into a `TrainConfig`."""
    return config_from_dict(read_toml(path, overrides))


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Validate a plain dict (parsed TOML) into a `TrainConfig`, including the task-specific tables."""
    cfg = from_dict(TrainConfig, data)
    check_config(cfg)
    return cfg


def apply_override(data: dict[str, Any], item: str) -> None:
    """`optim.lr=1e-4` (the value read as TOML, else as a plain string) into the nested dict."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(item, "an override must look like section.field=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(".".join(parts[: i + 1]), "is not a table, so it has no fields to override")
        node = nxt
    node[parts[-1]] = value


def check_config(cfg: TrainConfig) -> None:
    """Rules that span fields: ranges, and the task tables validated against the task's dataclasses."""
    m = cfg.model
    if m.arch is None and m.backbone is None and m.init is None:
        raise ConfigError("model", "give `arch` (an official size), a `backbone` table, or `init` (a checkpoint)")
    if m.arch is not None and m.backbone is not None:
        raise ConfigError("model.backbone", "give either `arch` or a custom `backbone` table, not both")
    if m.generation == 1:
        from sapiens2.train.v1 import check_v1_model

        check_v1_model(cfg)
    elif m.generation == 2 or m.init is None:
        check_sapiens2_model(cfg)
    elif m.arch is not None:  # the generation comes from `init`; the arch must be one of either
        from sapiens2.models import ARCHS
        from sapiens2.models.sapiens1 import V1_ARCHS

        if m.arch not in ARCHS and m.arch not in V1_ARCHS:
            raise ConfigError("model.arch", f"unknown arch {m.arch!r}; expected one of {', '.join(ARCHS)} "
                              f"(Sapiens2) or {', '.join(V1_ARCHS)} (v1)")
    from sapiens2.train import tasks  # the task tables live with the tasks

    spec = tasks.TASK_SPECS[cfg.task]
    from_dict(spec.loss_config, cfg.loss, "loss")
    from_dict(spec.augment_config, cfg.augment, "augment")
    if cfg.data.num_classes is not None and not 1 <= cfg.data.num_classes <= 255:
        raise ConfigError("data.num_classes", f"must be in [1, 255] (255 marks ignored pixels), got {cfg.data.num_classes}")

    h, w = cfg.data.input_size
    if h <= 0 or w <= 0 or h % 16 or w % 16:
        raise ConfigError("data.input_size", f"must be positive multiples of the patch size 16, got {[h, w]}")
    if not cfg.data.train:
        raise ConfigError("data.train", "needs at least one dataset")
    for name, group in (("train", cfg.data.train), ("val", cfg.data.val)):
        for i, ds in enumerate(group):
            where = f"data.{name}[{i}]"
            if ds.repeat < 1:
                raise ConfigError(f"{where}.repeat", f"must be >= 1, got {ds.repeat}")
            if cfg.task == "pose" and not ds.annotations:
                raise ConfigError(f"{where}.annotations", "pose needs a COCO keypoint JSON file")
    _positive("data.val_batch_size", cfg.data.val_batch_size)
    _positive("train.num_iters", cfg.train.num_iters)
    _positive("train.batch_size", cfg.train.batch_size)
    _positive("train.save_every", cfg.train.save_every)
    _positive("train.val_every", cfg.train.val_every)
    _positive("train.log_every", cfg.train.log_every)
    if cfg.data.num_workers < 0:
        raise ConfigError("data.num_workers", f"must be >= 0, got {cfg.data.num_workers}")
    o = cfg.optim
    _positive("optim.lr", o.lr)
    if o.weight_decay < 0:
        raise ConfigError("optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
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


def check_sapiens2_model(cfg: TrainConfig) -> None:
    """`model.arch`, `model.backbone` and `model.head` against the Sapiens2 networks."""
    from sapiens2.models import ARCHS, BackboneConfig
    from sapiens2.models.sapiens1 import V1_ARCHS
    from sapiens2.train import tasks

    m = cfg.model
    if cfg.task == "depth":
        raise ConfigError("task", "depth is a Sapiens v1 task: set model.generation = 1 (or init from a v1 checkpoint)")
    if m.arch is not None and m.arch not in ARCHS:
        hint = "; it is a Sapiens v1 size: set model.generation = 1" if m.arch in V1_ARCHS else ""
        raise ConfigError("model.arch", f"unknown arch {m.arch!r}; expected one of {', '.join(ARCHS)}{hint}")
    if m.backbone is not None:
        from_dict(BackboneConfig, m.backbone, "model.backbone")
    spec = tasks.TASK_SPECS[cfg.task]
    if "in_channels" in m.head:
        raise ConfigError("model.head.in_channels", "is the backbone width; it cannot be set")
    if spec.head_config is not None:
        from_dict(spec.head_config, {"in_channels": 1, **m.head}, "model.head")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(name, f"must be > 0, got {value}")


def to_dict(cfg: Any) -> Any:
    """A dataclass config back to plain TOML-able values (tuples as lists, None fields dropped)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
                if getattr(cfg, f.name) is not None}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {str(k): to_dict(v) for k, v in cfg.items() if v is not None}
    return cfg


def dump_toml(obj: dict[str, Any]) -> str:
    """A small TOML writer for configs (scalars, arrays, tables, arrays of tables)."""
    lines: list[str] = []
    _emit(obj, [], lines)
    return "\n".join(lines).strip() + "\n"


def _emit(table: dict[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not _is_table(v) and not _is_table_array(v)}
    if path and (scalars or not table):
        lines.append(f"\n[{'.'.join(map(_key, path))}]")
    for k, v in scalars.items():
        lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in table.items():
        if _is_table(v):
            _emit(v, [*path, k], lines)
        elif _is_table_array(v):
            for item in v:
                lines.append(f"\n[[{'.'.join(map(_key, [*path, k]))}]]")
                for ik, iv in item.items():
                    lines.append(f"{_key(ik)} = {_value(iv)}")


def _is_table(v: Any) -> bool:
    return isinstance(v, dict)


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else f'"{k}"'


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


# --------------------------------------------------------------------------- generic dataclass reading


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass `cls` from `data`, converting and checking every field against its type hint."""
    if not isinstance(data, dict):
        raise ConfigError(where, f"expected a table, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        known = ", ".join(fields)
        raise ConfigError(_join(where, unknown[0]), f"unknown field (known fields here: {known})")
    values = {}
    for name, f in fields.items():
        path = _join(where, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(path, "is required")
            continue
        values[name] = _convert(hints[name], data[name], path)
    return cls(**values)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _describe(v: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
             dict: "a table"}
    return f"{names.get(type(v), type(v).__name__)} ({v!r})" if not isinstance(v, (dict, list)) else names[type(v)]


def _convert(tp: Any, v: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return v
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, v, path)
            except ConfigError as e:
                errors.append(e.reason)
        raise ConfigError(path, " or ".join(dict.fromkeys(errors)))
    if origin is Literal:
        if v not in args:
            raise ConfigError(path, f"must be one of {', '.join(repr(a) for a in args)}, got {v!r}")
        return v
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, v, path)
    if origin in (list, tuple):
        if not isinstance(v, (list, tuple)):
            raise ConfigError(path, f"expected an array, got {_describe(v)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(v) != len(args):
                raise ConfigError(path, f"expected an array of {len(args)} values, got {len(v)}")
            return tuple(_convert(a, x, f"{path}[{i}]") for i, (a, x) in enumerate(zip(args, v)))
        inner = args[0] if args else Any
        out = [_convert(inner, x, f"{path}[{i}]") for i, x in enumerate(v)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(v, dict):
            raise ConfigError(path, f"expected a table, got {_describe(v)}")
        vt = args[1] if args else Any
        return {str(k): _convert(vt, x, f"{path}.{k}") for k, x in v.items()}
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(path, f"expected true or false, got {_describe(v)}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(path, f"expected an integer, got {_describe(v)}")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(path, f"expected a number, got {_describe(v)}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise ConfigError(path, f"expected a string, got {_describe(v)}")
        return v
    raise ConfigError(path, f"cannot be set from a config file (type {getattr(tp, '__name__', tp)})")
