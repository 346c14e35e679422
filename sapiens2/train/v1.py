"""Fine-tuning Sapiens v1 networks: pose, 28-class segmentation, normals and relative depth.

The network is the v1 backbone (learned absolute positions) with the v1 head of the task. From a pretrain
checkpoint the reference's conversion is applied: the cls token is dropped, the 64 x 64 positions are
resized bicubic to the training grid, and the patch conv takes the task's padding (2 px for pose and
normal). What the loop saves is then an ordinary v1 task checkpoint: `backbone.*` + `head.*` (pose) or
`decode_head.*`, which `sapiens2.load`, the predictors and `sapiens2 <task> --model` read as they read the
released files.
"""

from __future__ import annotations

from dataclasses import fields, replace

from torch import nn

from sapiens2.models.sapiens1 import (
    V1_ARCHS,
    Sapiens1Backbone,
    Sapiens1Config,
    Sapiens1TaskModel,
    V1Head,
    V1HeadConfig,
    official_v1_head_config,
    task_backbone,
    v1_patch_padding,
)
from sapiens2.task_table import TASKS
from sapiens2.train.schema import TrainConfig
from sapiens2.train.specs import TASK_SPECS
from sapiens2.training.config import ConfigError, from_dict

V1_TRAIN_TASKS = tuple(name for name, task in TASKS.items() if 1 in task.generations)
# Set by the task and the input size, not by the user: a checkpoint must load back with the same values.
DERIVED_BACKBONE_FIELDS = ("patch_padding", "with_cls_token", "pos_grid")
DERIVED_HEAD_FIELDS = ("in_channels", "out_channels")


def check_v1_model(cfg: TrainConfig) -> None:
    """`task`, `model.arch`, `model.backbone` and `model.head` against the v1 networks."""
    m = cfg.model
    if cfg.task not in V1_TRAIN_TASKS:
        raise ConfigError("task", f"Sapiens v1 has no {cfg.task} head; v1 models fine-tune for "
                          f"{', '.join(V1_TRAIN_TASKS)}")
    if m.arch is not None and m.arch not in V1_ARCHS:
        raise ConfigError("model.arch", f"unknown Sapiens v1 arch {m.arch!r}; expected one of {', '.join(V1_ARCHS)}")
    if m.backbone is not None:
        for name in DERIVED_BACKBONE_FIELDS:
            if name in m.backbone:
                raise ConfigError(f"model.backbone.{name}", "follows from the task and data.input_size; it cannot be set")
        from_dict(Sapiens1Config, m.backbone, "model.backbone")
    for name in DERIVED_HEAD_FIELDS:
        if name in m.head:
            raise ConfigError(f"model.head.{name}", "follows from the backbone and the data; it cannot be set")
    from_dict(V1HeadConfig, {"in_channels": 1, "deconv_channels": (1,), "conv_channels": (1,), "out_channels": 1,
                             **m.head}, "model.head")
    grid_for(cfg, int((m.backbone or {}).get("patch_size", 16)))


def grid_for(cfg: TrainConfig, patch_size: int) -> tuple[int, int]:
    """The patch grid of the training input. v1 checkpoints store positions for that grid, and a file can
    only be read back when the grid is 4:3 (H:W) or square."""
    h, w = cfg.data.input_size
    gh, gw = h // patch_size, w // patch_size
    if not (3 * gh == 4 * gw or gh == gw):
        raise ConfigError("data.input_size", f"a Sapiens v1 model stores its positions for a 4:3 (H:W) or square "
                          f"patch grid; {h} x {w} gives {gh} x {gw} (1024 x 768, 512 x 384 or 512 x 512 work)")
    return gh, gw


def outputs_of(cfg: TrainConfig, keypoints: int | None, loaded_outputs: int | None) -> int | None:
    """The head's output channels when they are the data's to say (the keypoints, seg's `data.num_classes`),
    else the loaded head's; None keeps the official head's (308 keypoints, 28 classes, 3 normal components,
    1 depth value)."""
    spec = TASK_SPECS[cfg.task]
    data = None
    if spec.count_field is not None:
        data = cfg.data.num_classes if spec.counts_classes else keypoints
    return data or loaded_outputs


def head_config_v1(cfg: TrainConfig, embed_dim: int, arch: str | None, outputs: int | None) -> V1HeadConfig:
    """The official v1 head widths for the task (the same for every size), `model.head` overrides, and the
    output count (None: the official head's)."""
    base = official_v1_head_config(arch or "0.3b", cfg.task)
    values = {f.name: getattr(base, f.name) for f in fields(base)}
    for kind in ("deconv", "conv"):  # new widths without kernels: the default kernel for each layer
        if f"{kind}_channels" in cfg.model.head and f"{kind}_kernels" not in cfg.model.head:
            values[f"{kind}_kernels"] = None
    values.update(cfg.model.head)
    values["in_channels"] = embed_dim
    if outputs is not None:
        values["out_channels"] = outputs
    head = from_dict(V1HeadConfig, values, "model.head")
    for name, widths, kernels in (("deconv", head.deconv_channels, head.deconv_kernels),
                                  ("conv", head.conv_channels, head.conv_kernels)):
        if kernels is not None and len(kernels) != len(widths):
            raise ConfigError(f"model.head.{name}_kernels", f"has {len(kernels)} entries for {len(widths)} "
                              f"{name} layers")
    return head


def _task_head(model: nn.Module) -> V1Head | None:
    if not isinstance(model, Sapiens1TaskModel):
        return None
    return model.head if hasattr(model, "head") else model.decode_head  # v1 pose keeps its head as `head`


def build_v1_parts(cfg: TrainConfig, keypoints: int | None,
                   loaded: nn.Module | None) -> tuple[Sapiens1Backbone, V1Head, V1Head | None, str]:
    """(backbone, new head, the loaded head of the same task or None, where-from line) of the v1 network to
    fine-tune; `sapiens2.train.network` keeps the loaded head when its shapes match and assembles the model.

    `loaded` is what `sapiens2.load(model.init)` returned (a v1 backbone or task model), or None for random
    weights.
    """
    check_v1_model(cfg)
    m = cfg.model
    loaded_head = None
    if loaded is not None:
        backbone = loaded.backbone if isinstance(loaded, Sapiens1TaskModel) else loaded
        if getattr(loaded, "task", None) == cfg.task:
            loaded_head = _task_head(loaded)
        want = V1_ARCHS[m.arch] if m.arch else (from_dict(Sapiens1Config, m.backbone, "model.backbone") if m.backbone else None)
        have = backbone.config
        if want is not None and (want.embed_dim, want.depth, want.num_heads, want.hidden, want.patch_size) != (
                have.embed_dim, have.depth, have.num_heads, have.hidden, have.patch_size):
            raise ConfigError("model.init", f"{m.init} holds a different backbone than model.arch / model.backbone")
        source = f"backbone from {m.init}"
    else:
        bcfg = V1_ARCHS[m.arch] if m.arch else from_dict(Sapiens1Config, m.backbone, "model.backbone")
        backbone = Sapiens1Backbone(replace(bcfg, with_cls_token=False, patch_padding=v1_patch_padding(cfg.task)))
        backbone.init_weights()
        source = "random init (no model.init)"
    backbone = task_backbone(backbone, cfg.task, grid_for(cfg, backbone.config.patch_size))
    bc = backbone.config
    arch = next((name for name, a in V1_ARCHS.items() if (a.embed_dim, a.depth, a.num_heads) == (bc.embed_dim, bc.depth,
                                                                                                  bc.num_heads)), None)
    loaded_outputs = getattr(loaded_head, loaded_head.classifier_name).out_channels if loaded_head else None
    head_cfg = head_config_v1(cfg, bc.embed_dim, arch, outputs_of(cfg, keypoints, loaded_outputs))
    head = V1Head(head_cfg, cfg.task)
    return backbone, head, loaded_head, source
