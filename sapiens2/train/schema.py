"""The sections of a fine-tuning config file, as plain dataclasses (no logic: `sapiens2.train.config` reads and
checks them). Every module of the fine-tuning code reads its settings from these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


# ----------------------------------------------------------------------------------------- sections


@dataclass
class DatasetConfig:
    """One training or validation source. Folder names are relative to `root` unless absolute.

    `root` may instead name tar shards packed with `sapiens2 shard --task ...` (a folder holding their
    index.json, an index.json path or URL, a `{000000..000099}` range, .tar paths or URLs): the samples then
    stream (training sets only; every training set must then be shards).

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
    shuffle_buffer: int = 1000  # shards: samples each stream mixes
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
    batch_size: int  # per process and micro-batch
    # Micro-batches per optimizer step: their gradients add up, so a step sees batch_size x accumulate_steps
    # samples per process (x the process count in all), in the memory of one micro-batch.
    accumulate_steps: int = 1
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    # auto: DDP when launched with torchrun; fsdp shards over all processes; hsdp shards within groups of
    # `shard_size` processes (0: one node's) and replicates across them. One process: always plain.
    parallel: Literal["auto", "none", "ddp", "fsdp", "hsdp"] = "auto"
    shard_size: int = 0
    compile: bool = False  # torch.compile each backbone block
    # full: each checkpoint gathers model.safetensors (sapiens2.load reads it); sharded: every process writes its
    # own shards (torch.distributed.checkpoint), resumable on any process count; the final model.safetensors is
    # exported from the last one either way.
    checkpoint: Literal["full", "sharded"] = "full"
    seed: int = 0
    save_every: int = 1000
    val_every: int = 1000
    log_every: int = 10
    keep_checkpoints: int = 3  # 0: keep all
    tf32: bool = True
    flip_test: bool = True  # pose validation


@dataclass
class TrainConfig:
    task: str  # a name of sapiens2.task_table.TASKS
    model: ModelConfig
    data: DataConfig
    train: RunConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: dict[str, Any] = field(default_factory=dict)  # per-task loss weights (see sapiens2.train.criteria)
    augment: dict[str, Any] = field(default_factory=dict)  # per-task augmentation parameters
