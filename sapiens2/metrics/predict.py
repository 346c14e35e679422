"""Predictions for `sapiens2 eval pose --model`: run a pose predictor on every ground-truth image.

The predictor is passed in (anything called as `pose(path, boxes=...)` returning a result with `keypoints()`
and `boxes()`, as `sapiens2.Pose` does), so evaluation composes the task's own steps and re-implements none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sapiens2.io.images import ImageDecodeError
from sapiens2.keypoints.coco_results import to_coco_results

from .readers import EvalImage, MetricsInputError


def predict_keypoints(images: Sequence[EvalImage], pose: Callable[..., Any]) -> list[dict]:
    """COCO keypoint results for `images` (from `read_eval_images`). 308-point predictions are written in
    the reference evaluator's layout; other keypoint sets as `keypoints` with the mean point score. An image
    that cannot be read is an error naming it (its missing prediction would otherwise lower AP silently)."""
    results: list[dict] = []
    for image in images:
        if image.boxes is not None and len(image.boxes) == 0:
            continue  # --gt-boxes and nobody annotated: nothing to crop
        try:
            found = pose(str(image.path), boxes=image.boxes)
        except ImageDecodeError as e:
            raise MetricsInputError(f"{e.path}: ground-truth image {image.image_id} cannot be read ({e.reason})") from None
        kp = found.keypoints()
        if len(kp) == 0:
            continue
        if kp.shape[1] == 308:
            results += to_coco_results(image.image_id, kp[..., :2], kp[..., 2], bbox_scores=found.boxes()[:, 4])
        else:
            results += [{"image_id": image.image_id, "category_id": 1, "score": float(p[:, 2].mean()),
                         "keypoints": np.round(p, 3).ravel().tolist()} for p in kp]
    return results
