"""Task predictors: each owns its whole pipeline (prepare → run → finish) around a network, and its result
saves itself. `PREDICTORS` maps every task of `sapiens2.task_table.TASKS` to its predictor class."""

from __future__ import annotations

from sapiens2.task_table import task_name
from sapiens2.tasks.albedo import Albedo, AlbedoResult
from sapiens2.tasks.base import DensePredictor, Prepared, Result
from sapiens2.tasks.depth import Depth, DepthResult
from sapiens2.tasks.matting import Matting, MattingResult
from sapiens2.tasks.normal import Normals, NormalsResult
from sapiens2.tasks.pointmap import Pointmap, PointmapResult
from sapiens2.tasks.pose import Pose, PoseResult
from sapiens2.tasks.seg import SegmentationResult, Segmenter
from sapiens2.tasks.several import DensePipeline, attach_masks, run_tasks

__all__ = [
    "PREDICTORS", "Albedo", "AlbedoResult", "DensePipeline", "DensePredictor", "Depth", "DepthResult", "Matting",
    "MattingResult", "Normals", "NormalsResult", "Pointmap", "PointmapResult", "Pose", "PoseResult", "Prepared",
    "Result", "SegmentationResult", "Segmenter", "attach_masks", "predictor_for", "run_tasks",
]

PREDICTORS: dict[str, type] = {"pose": Pose, "seg": Segmenter, "normal": Normals, "pointmap": Pointmap,
                               "albedo": Albedo, "matting": Matting, "depth": Depth}


def predictor_for(task: str) -> type:
    """The predictor class of a task name (see `sapiens2.task_table.TASKS`)."""
    return PREDICTORS[task_name(task)]
