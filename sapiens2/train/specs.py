"""What differs between tasks, in one table: `TASK_SPECS[name]` is a `TaskSpec` holding the task's config
tables and the builders of its data source, transform, criterion and evaluator. The loop, the config checks and
the network builder only read specs; none of them asks which task it is.

The names are those of `sapiens2.task_table.TASKS` (every task there can be fine-tuned; `depth` only on Sapiens
v1 networks, as the table's generations say).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol

from torch import nn

from sapiens2.metrics.albedo import AlbedoMetrics
from sapiens2.metrics.depth import DepthMetrics
from sapiens2.metrics.matting import MattingMetrics
from sapiens2.metrics.normals import NormalMetrics
from sapiens2.metrics.pointmap import PointmapMetrics
from sapiens2.models import DenseHeadConfig, PointmapHeadConfig, PoseHeadConfig, SegHeadConfig
from sapiens2.models.build import MATTING_CHANNELS
from sapiens2.train import criteria as C
from sapiens2.train import transforms as T
from sapiens2.train.datasets import CocoKeypoints, DenseFolder, SampleSource, SegFolder
from sapiens2.train.evaluators import (
    DenseEvaluator,
    PoseEvaluator,
    SegEvaluator,
    alpha_only,
    target_inside_mask,
    whole_target,
)
from sapiens2.train.schema import DatasetConfig, TrainConfig
from sapiens2.training.config import ConfigError, from_dict


class Evaluator(Protocol):
    def update(self, out: Any, batch: dict) -> None: ...

    def compute(self) -> dict[str, float]: ...


@dataclass(frozen=True)
class TaskSpec:
    """One task as fine-tuning sees it."""

    name: str
    loss_config: type  # the `[loss]` table (criteria.PoseLoss, ...)
    augment_config: type  # the `[augment]` table (transforms.PoseAugment, ...)
    head_config: type | None  # the Sapiens2 head's config (`model.head` fields); None: no Sapiens2 head
    source: Callable[[DatasetConfig, str], SampleSource]  # (dataset table, its dotted name) -> samples
    criterion: Callable[[Any, TrainConfig], nn.Module]  # (loss weights, config)
    transform: Callable[[TrainConfig, Any, SampleSource | None, bool], Callable]  # (config, params, source, train)
    evaluator: Callable[[TrainConfig, SampleSource], Evaluator]
    head_defaults: dict[str, Any] = field(default_factory=dict)  # a new head's fields unlike head_config's defaults
    count_field: str | None = None  # the head field the data's count sets (num_keypoints, num_classes)
    counts_classes: bool = False  # that count is `data.num_classes`, else the init checkpoint's head's
    classifier: str = ""  # the head's last layer, read for the init checkpoint's count
    fit_head: Callable[[Any, tuple[int, int]], Any] | None = None  # (head config, input (H, W)) -> head config
    dataset_needs: dict[str, str] = field(default_factory=dict)  # DatasetConfig fields the task needs, and why
    data_outputs: Callable[[list[SampleSource]], int | None] | None = None  # the count the training data implies
    flip_indices: Callable[[SampleSource], Any] | None = None  # channel swaps of a flip test (None: no flip test)


def build_criterion(cfg: TrainConfig) -> nn.Module:
    spec = TASK_SPECS[cfg.task]
    return spec.criterion(from_dict(spec.loss_config, cfg.loss, "loss"), cfg)


def build_transform(cfg: TrainConfig, source: SampleSource | None, train: bool) -> Callable:
    spec = TASK_SPECS[cfg.task]
    return spec.transform(cfg, from_dict(spec.augment_config, cfg.augment, "augment"), source, train)


def build_evaluator(cfg: TrainConfig, source: SampleSource) -> Evaluator:
    return TASK_SPECS[cfg.task].evaluator(cfg, source)


# ------------------------------------------------------------------------------------------- pose


def _pose_transform(cfg: TrainConfig, params: T.PoseAugment, source: SampleSource | None, train: bool) -> Callable:
    return T.PoseTransform(tuple(cfg.data.input_size), source.layout(), params, train=train, augment=cfg.data.augment)


def keypoint_count(sources: list[SampleSource]) -> int:
    """The keypoints every pose training set has (they must agree: one head predicts them all)."""
    counts = {s.num_keypoints for s in sources}
    if len(counts) != 1:
        raise ConfigError("data.train", f"the pose training sets disagree on the keypoint count: {sorted(counts)} "
                          "(one head predicts them all: choose the same points with keypoint_indices)")
    return counts.pop()


def _pose_flip_indices(source: SampleSource) -> Any:
    return source.layout().flip_indices


# -------------------------------------------------------------------------------------------- seg


def _seg_transform(cfg: TrainConfig, params: T.SegAugment, source: SampleSource | None, train: bool) -> Callable:
    return T.SegTransform(tuple(cfg.data.input_size), cfg.data.num_classes, params, train=train,
                          augment=cfg.data.augment)


# ------------------------------------------------------------------------------------------ dense


def _dense_transform(task: str, cfg: TrainConfig, params: T.DenseAugment, source: SampleSource | None,
                     train: bool) -> Callable:
    # v1 networks were trained on stretched inputs; Sapiens2 ones on aspect-kept, padded inputs
    return T.DenseTransform(task, tuple(cfg.data.input_size), params, train=train, augment=cfg.data.augment,
                            stretch=cfg.model.generation == 1)


def _dense_source(task: str) -> Callable[[DatasetConfig, str], SampleSource]:
    return lambda ds, where: DenseFolder(task, ds, where)


def _dense_evaluator(metrics: type, select: Callable) -> Callable[[TrainConfig, SampleSource], Evaluator]:
    return lambda cfg, source: DenseEvaluator(metrics(), select)


def fit_scale_mlp(head: PointmapHeadConfig, input_size: tuple[int, int]) -> PointmapHeadConfig:
    """The pointmap scale MLP's input width: the last scale conv's channels times the grid left after its
    stride-2 convs, which follows from the input size."""
    gh, gw = input_size[0] // 16, input_size[1] // 16
    for _ in head.scale_conv_channels:
        gh, gw = -(-gh // 2), -(-gw // 2)
    return replace(head, scale_mlp=(head.scale_conv_channels[-1] * gh * gw, *head.scale_mlp[1:]))


# -------------------------------------------------------------------------------------- the table


TASK_SPECS: dict[str, TaskSpec] = {s.name: s for s in (
    TaskSpec("pose", C.PoseLoss, T.PoseAugment, PoseHeadConfig, CocoKeypoints, lambda w, cfg: C.PoseCriterion(w),
             _pose_transform, lambda cfg, source: PoseEvaluator(source, tuple(cfg.data.input_size)),
             count_field="num_keypoints", dataset_needs={"annotations": "pose needs a COCO keypoint JSON file"},
             data_outputs=keypoint_count, flip_indices=_pose_flip_indices),
    TaskSpec("seg", C.SegLoss, T.SegAugment, SegHeadConfig, SegFolder,
             lambda w, cfg: C.SegCriterion(w, cfg.data.num_classes), _seg_transform,
             lambda cfg, source: SegEvaluator(cfg.data.num_classes),
             count_field="num_classes", counts_classes=True, classifier="conv_seg"),
    TaskSpec("normal", C.NormalLoss, T.NormalAugment, DenseHeadConfig, _dense_source("normal"),
             lambda w, cfg: C.NormalCriterion(w), partial(_dense_transform, "normal"),
             _dense_evaluator(NormalMetrics, target_inside_mask)),
    TaskSpec("pointmap", C.PointmapLoss, T.PointmapAugment, PointmapHeadConfig, _dense_source("pointmap"),
             lambda w, cfg: C.PointmapCriterion(w), partial(_dense_transform, "pointmap"),
             _dense_evaluator(PointmapMetrics, target_inside_mask), fit_head=fit_scale_mlp),
    TaskSpec("albedo", C.AlbedoLoss, T.AlbedoAugment, DenseHeadConfig, _dense_source("albedo"),
             lambda w, cfg: C.AlbedoCriterion(w), partial(_dense_transform, "albedo"),
             _dense_evaluator(AlbedoMetrics, whole_target)),
    TaskSpec("matting", C.MattingLoss, T.MattingAugment, DenseHeadConfig, _dense_source("matting"),
             lambda w, cfg: C.MattingCriterion(w), partial(_dense_transform, "matting"),
             _dense_evaluator(MattingMetrics, alpha_only), head_defaults={"out_channels": MATTING_CHANNELS}),
    TaskSpec("depth", C.DepthLoss, T.DepthAugment, None, _dense_source("depth"),  # Sapiens v1 only
             lambda w, cfg: C.DepthCriterion(w), partial(_dense_transform, "depth"),
             _dense_evaluator(DepthMetrics, whole_target)),
)}
