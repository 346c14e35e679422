"""The one table of tasks: name, generations, default model, what each can write, and how it is described.

Every place that needs the task names reads them here: the CLI's sub-commands, the batch runner, the zoo,
evaluation, training. It sits below every other module (it imports nothing of the package), so any layer may
read it. Which predictor class runs a task is the task layer's business (`sapiens2.tasks.PREDICTORS`, keyed by
these same names); which files a kind of output becomes is the result type's (`sapiens2.tasks.outputs`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SAVE_KINDS", "TASKS", "TaskInfo", "dense_tasks", "task_info", "task_name"]

#: The kinds of output a run can be asked for (`--save`): JSON records, arrays, PNG maps, PLY clouds, pictures.
SAVE_KINDS = ("json", "npz", "png", "ply", "vis")


@dataclass(frozen=True)
class TaskInfo:
    """One task as every entry point sees it."""

    name: str
    summary: str  # one line, for --help and reports
    generations: tuple[int, ...]  # 2: Sapiens2 has it; 1: Sapiens v1 has it
    default_model: str  # what runs when no model is named (a size of `default_generation`)
    saves: frozenset[str]  # the SAVE_KINDS it can write
    default_saves: frozenset[str]  # what it writes when --save is not given

    @property
    def default_generation(self) -> int:
        return 2 if 2 in self.generations else 1


def _info(name: str, summary: str, generations: tuple[int, ...], default_model: str, saves: str,
          default_saves: str) -> TaskInfo:
    return TaskInfo(name, summary, generations, default_model, frozenset(saves.split(",")),
                    frozenset(default_saves.split(",")))


TASKS: dict[str, TaskInfo] = {t.name: t for t in (
    _info("pose", "308-keypoint whole-body pose (person detector, crops, heatmaps) with pictures and JSON",
          (2, 1), "0.4b", "json,npz,vis", "json,vis"),
    _info("seg", "29-class body-part segmentation", (2, 1), "0.4b", "npz,png,vis", "npz,vis"),
    _info("normal", "surface normals", (2, 1), "0.4b", "npz,vis", "npz,vis"),
    _info("pointmap", "metric pointmaps (depth, points, PLY)", (2,), "0.4b", "npz,ply,vis", "npz,ply,vis"),
    _info("albedo", "albedo (RGB reflectance)", (2,), "0.4b", "npz,png,vis", "png,vis"),
    _info("matting", "alpha matte and cutout", (2,), "1b", "npz,png,vis", "png,vis"),
    _info("depth", "relative depth (Sapiens v1 models, sapiens-depth-<size>)", (1,), "0.3b", "npz,vis", "npz,vis"),
)}

#: Other spellings people use for a task name.
_ALIASES = {"segmentation": "seg", "normals": "normal", "pointmaps": "pointmap", "alpha": "matting",
            "keypoints": "pose"}


def task_name(name: str) -> str:
    """The table's name for `name` (case and the usual aliases forgiven); a ValueError lists the choices."""
    low = name.strip().lower()
    low = _ALIASES.get(low, low)
    if low not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    return low


def task_info(name: str) -> TaskInfo:
    return TASKS[task_name(name)]


def dense_tasks() -> tuple[str, ...]:
    """Every task but pose: the ones whose network maps a photo to per-pixel outputs."""
    return tuple(t for t in TASKS if t != "pose")
