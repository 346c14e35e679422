"""The network to fine-tune: built from `[model]` (an official arch, a custom backbone, or weights to start
from), for either generation, with the task's head.

`model.init` goes through `sapiens2.load`: its backbone is always used; its head too when it is a checkpoint
of the same task with the same head shapes. A Sapiens v1 checkpoint (or `model.generation = 1`) builds a v1
network (`sapiens2.train.v1`); otherwise a Sapiens2 one, its head from the task's `TaskSpec`.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import torch
from torch import nn

import sapiens2
from sapiens2.checkpoint import ProgramCheckpointError, UnsafeCheckpointError
from sapiens2.models import ARCHS, BackboneConfig, Sapiens2TaskModel, build_backbone, build_head, official_head_config
from sapiens2.models.sapiens1 import V1_ARCHS, Sapiens1Backbone, Sapiens1TaskModel
from sapiens2.task_table import TASKS
from sapiens2.train import v1
from sapiens2.train.schema import TrainConfig
from sapiens2.train.specs import TASK_SPECS
from sapiens2.training.config import ConfigError, from_dict

GENERATION_NAMES = {1: "Sapiens v1", 2: "Sapiens2"}


def check_sapiens2_model(cfg: TrainConfig) -> None:
    """`task`, `model.arch`, `model.backbone` and `model.head` against the Sapiens2 networks."""
    m = cfg.model
    if 2 not in TASKS[cfg.task].generations:
        raise ConfigError("task", f"{cfg.task} is a Sapiens v1 task: set model.generation = 1 (or init from a v1 "
                          "checkpoint)")
    if m.arch is not None and m.arch not in ARCHS:
        hint = "; it is a Sapiens v1 size: set model.generation = 1" if m.arch in V1_ARCHS else ""
        raise ConfigError("model.arch", f"unknown arch {m.arch!r}; expected one of {', '.join(ARCHS)}{hint}")
    if m.backbone is not None:
        from_dict(BackboneConfig, m.backbone, "model.backbone")
    if "in_channels" in m.head:
        raise ConfigError("model.head.in_channels", "is the backbone width; it cannot be set")
    spec = TASK_SPECS[cfg.task]
    if spec.head_config is not None:
        from_dict(spec.head_config, {"in_channels": 1, **m.head}, "model.head")


def check_model(cfg: TrainConfig) -> None:
    """`[model]` as a whole: what to build it from, and the checks of its generation."""
    m = cfg.model
    if m.arch is None and m.backbone is None and m.init is None:
        raise ConfigError("model", "give `arch` (an official size), a `backbone` table, or `init` (a checkpoint)")
    if m.arch is not None and m.backbone is not None:
        raise ConfigError("model.backbone", "give either `arch` or a custom `backbone` table, not both")
    if m.generation == 1:
        v1.check_v1_model(cfg)
    elif m.generation == 2 or m.init is None:
        check_sapiens2_model(cfg)
    elif m.arch is not None and m.arch not in ARCHS and m.arch not in V1_ARCHS:
        # the generation comes from `init`; the arch must be one of either
        raise ConfigError("model.arch", f"unknown arch {m.arch!r}; expected one of {', '.join(ARCHS)} "
                          f"(Sapiens2) or {', '.join(V1_ARCHS)} (v1)")


def head_config(cfg: TrainConfig, embed_dim: int, arch: str | None, outputs: int | None) -> Any:
    """The head config: official widths for an official arch (the spec's defaults otherwise), the `model.head`
    overrides, the output count (`outputs`: the data's keypoints or classes, else the init checkpoint's), and
    whatever the spec fits to the input size (the pointmap scale MLP)."""
    spec = TASK_SPECS[cfg.task]
    base = official_head_config(arch, cfg.task) if arch else replace(spec.head_config(embed_dim),
                                                                      **spec.head_defaults)
    values = {f.name: getattr(base, f.name) for f in fields(base)}
    values.update(cfg.model.head)
    values["in_channels"] = embed_dim
    if spec.count_field is not None and outputs is not None and spec.count_field not in cfg.model.head:
        values[spec.count_field] = outputs
    head = from_dict(type(base), values, "model.head")
    return spec.fit_head(head, tuple(cfg.data.input_size)) if spec.fit_head is not None else head


def load_init(cfg: TrainConfig) -> nn.Module:
    """`model.init` through `sapiens2.load`, its errors as `ConfigError`s on that field."""
    m = cfg.model
    if str(m.init).lower().endswith(".pt2"):
        raise ConfigError("model.init", f"{m.init} is a Sapiens v1 lite program (TorchScript / torch.export), not "
                          "weights to fine-tune: use the original .pth of the same model (with model.allow_pickle "
                          "= true) or its official name")
    try:
        return sapiens2.load(m.init, rope_dtype=rope_dtype(cfg), allow_pickle=m.allow_pickle)
    except ProgramCheckpointError as e:
        raise ConfigError("model.init", f"{e} A program is not weights to fine-tune: use the original .pth or "
                          ".safetensors of the same model.") from None
    except UnsafeCheckpointError as e:
        raise ConfigError("model.init", f"{e} In a training config: set model.allow_pickle = true "
                          "(or convert the file once with `sapiens2 convert`).") from None
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError("model.init", str(e)) from None


def rope_dtype(cfg: TrainConfig) -> torch.dtype:
    return torch.float32 if cfg.model.rope_dtype == "float32" else torch.bfloat16


def generation_of(model: nn.Module) -> int:
    return 1 if isinstance(model, (Sapiens1Backbone, Sapiens1TaskModel)) else 2


def build_network(cfg: TrainConfig, outputs: int | None = None) -> tuple[nn.Module, str]:
    """The network to fine-tune, and a line saying where its weights came from.

    `outputs` is what the data says the head must produce (the keypoint count for pose), None when the data
    does not say.
    """
    m = cfg.model
    loaded = load_init(cfg) if m.init else None
    generation = m.generation or 2
    if loaded is not None:
        generation = generation_of(loaded)
        if m.generation is not None and m.generation != generation:
            raise ConfigError("model.init", f"{m.init} is a {GENERATION_NAMES[generation]} checkpoint, but "
                              f"model.generation = {m.generation} asks for {GENERATION_NAMES[m.generation]}")
    if generation == 1:
        backbone, head, loaded_head, source = v1.build_v1_parts(cfg, outputs, loaded)
        model_class: type[nn.Module] = Sapiens1TaskModel
    else:
        backbone, head, loaded_head, source = _build_sapiens2_parts(cfg, outputs, loaded)
        model_class = Sapiens2TaskModel
    head, source = keep_loaded_head(head, loaded_head, source, m.init)
    return ready_to_train(model_class(backbone, head, cfg.task), cfg), source


def _build_sapiens2_parts(cfg: TrainConfig, outputs: int | None,
                          loaded: nn.Module | None) -> tuple[nn.Module, nn.Module, nn.Module | None, str]:
    """(backbone, new head, the loaded head of the same task or None, where-from line) of a Sapiens2 network."""
    check_sapiens2_model(cfg)
    m = cfg.model
    spec = TASK_SPECS[cfg.task]
    rope = rope_dtype(cfg)
    loaded_head = None
    if loaded is not None:
        backbone = loaded.backbone if isinstance(loaded, Sapiens2TaskModel) else loaded
        if isinstance(loaded, Sapiens2TaskModel) and loaded.task == cfg.task:
            loaded_head = loaded.decode_head
        want = ARCHS[m.arch] if m.arch else (from_dict(BackboneConfig, m.backbone, "model.backbone") if m.backbone else None)
        if want is not None and replace(want, rope_dtype=rope) != replace(backbone.config, rope_dtype=rope):
            raise ConfigError("model.init", f"{m.init} holds a different backbone than model.arch / model.backbone")
        source = f"backbone from {m.init}"
    else:
        bcfg = ARCHS[m.arch] if m.arch else from_dict(BackboneConfig, m.backbone, "model.backbone")
        backbone = build_backbone(replace(bcfg, rope_dtype=rope))
        source = "random init (no model.init)"
    bcfg = backbone.config
    arch = next((name for name, a in ARCHS.items() if replace(a, rope_dtype=rope) == replace(bcfg, rope_dtype=rope)), None)
    if spec.counts_classes:  # data.num_classes, else the init checkpoint's classes, else the head's default
        outputs = cfg.data.num_classes or (getattr(loaded_head, spec.classifier).out_channels if loaded_head else None)
    head = build_head(cfg.task, head_config(cfg, bcfg.embed_dim, arch, outputs))
    return backbone, head, loaded_head, source


def keep_loaded_head(head: nn.Module, loaded: nn.Module | None, source: str, init: str | None) -> tuple[nn.Module, str]:
    """The loaded head (of the same task) when it has the shapes of the new `head`, else `head`; and the
    where-from line saying which."""
    if loaded is None:
        return head, source
    mine = {k: v.shape for k, v in head.state_dict().items()}
    if mine == {k: v.shape for k, v in loaded.state_dict().items()}:
        return loaded, f"backbone and head from {init}"
    return head, source + " (its head has other shapes: new head)"


def ready_to_train(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """`model` with gradient checkpointing and backbone freezing as the config asks, in training mode."""
    model.backbone.grad_checkpointing = cfg.model.grad_checkpointing
    if cfg.model.freeze_backbone:
        model.backbone.requires_grad_(False)
    return model.train()


def settle_config(cfg: TrainConfig, model: nn.Module) -> TrainConfig:
    """`cfg` with what building the network decided written in: the generation and, when the head's output
    count is a data setting (seg's `data.num_classes`), that count (so the loss, transforms, metrics and the
    saved config.toml agree with the head)."""
    cfg = replace(cfg, model=replace(cfg.model, generation=generation_of(model)))
    spec = TASK_SPECS[cfg.task]
    if spec.counts_classes:
        classes = getattr(model.decode_head, spec.classifier).out_channels
        cfg = replace(cfg, data=replace(cfg.data, num_classes=classes))
    return cfg
