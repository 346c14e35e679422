"""The predictors a server holds: each task's network loaded once, shared by every request, or the reason
it is missing (which weights, and how to get them, in the words the CLI's demo uses)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Served", "load_served"]


@dataclass
class Served:
    """One task as the server offers it: its predictor, or `missing` saying why there is none."""

    task: str
    model: str  # what was asked for: an official name, a hub id or a file
    predictor: Any | None = None
    missing: str | None = None

    @property
    def ready(self) -> bool:
        return self.predictor is not None

    def describe(self) -> dict[str, Any]:
        """The task's entry in `GET /v1/models`."""
        from sapiens2.task_table import TASKS

        out: dict[str, Any] = {"task": self.task, "summary": TASKS[self.task].summary, "model": self.model,
                               "ready": self.ready, "saves": sorted(TASKS[self.task].saves)}
        if self.missing:
            out["missing"] = self.missing
        if self.predictor is not None:
            out.update(_describe(self.predictor))
        return out


def _describe(predictor: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(predictor.device), "dtype": str(predictor.dtype).removeprefix("torch."),
                            "input_size": list(predictor.input_size)}
    keypoint_set = getattr(predictor, "keypoint_set", None)
    if keypoint_set is not None:
        info["keypoints"] = len(keypoint_set)
        info["detector"] = predictor.detector is not None
    return info


def load_served(tasks: list[str], specs: dict[str, Any], *, detector: str | None = "rtmdet",
                **options: Any) -> list[Served]:
    """Each task's predictor built from `specs[task]` (None: the task's default model) with `options`
    (device, dtype, batch_size, input_size, allow_pickle; pose also flip_test). Missing weights are not an
    error here: the task is served as missing, and requests for it are answered with what to download."""
    from sapiens2.hub import CheckpointNotFoundError
    from sapiens2.tasks import PREDICTORS
    from sapiens2.tasks.models import missing_weights, missing_weights_message, model_name

    flip_test = options.pop("flip_test", True)
    served = []
    for task in tasks:
        spec = specs.get(task)
        name = spec if spec is not None and not isinstance(spec, str) else model_name(task, spec)
        shown = name if isinstance(name, str) else type(name).__name__
        try:
            if task == "pose":
                predictor = PREDICTORS[task](spec, detector, flip_test=flip_test, **options)
            else:
                predictor = PREDICTORS[task](spec, **options)
        except CheckpointNotFoundError as e:
            wanted = [shown] + (["rtmdet-m-person"] if task == "pose" and detector == "rtmdet" else [])
            missing = missing_weights(wanted)
            text = missing_weights_message(missing, f"the {task} task") if missing else str(e)
            served.append(Served(task, shown, missing=text))
            continue
        served.append(Served(task, shown, predictor))
    return served
