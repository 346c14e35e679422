"""Several tasks on the same photos: `DensePipeline` / `run_tasks`, and the seg foreground as everyone's mask.

Each photo is decoded once and resized once per distinct geometry (normals, pointmap and albedo share the
padded input; segmentation and matting share theirs when both shrink the photo). The batch runner composes
the same predictor steps and the same `attach_masks`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sapiens2.io.images import ImageLike, as_image
from sapiens2.tasks.base import DensePredictor, Prepared, as_list
from sapiens2.tasks.resize import Placement, place

__all__ = ["DensePipeline", "attach_masks", "run_tasks"]


def attach_masks(results: dict[str, Any], mask_from: str | None = "seg") -> dict[str, Any]:
    """With `mask_from` (segmentation by default) among the results, its foreground masks the pictures and PLY
    of the others that take a mask, as the reference's --seg_dir does; the arrays are untouched."""
    source = results.get(mask_from) if mask_from is not None else None
    if source is None:
        return results
    return {task: (r.with_mask(source) if task != mask_from and hasattr(r, "with_mask") else r)
            for task, r in results.items()}


class DensePipeline:
    """Several dense predictors over the same photos, sharing decoding and resizing (see the module doc)."""

    def __init__(self, predictors: Mapping[str, DensePredictor], mask_from: str | None = "seg") -> None:
        if not predictors:
            raise ValueError("a pipeline needs at least one predictor")
        self.predictors = dict(predictors)
        self.mask_from = mask_from if mask_from in self.predictors else None

    def prepare(self, image: ImageLike) -> dict[str, Prepared]:
        """Every predictor's prepared input for one photo; identical placements share one resize."""
        img = as_image(image)
        inputs: dict[Placement, np.ndarray] = {}
        out = {}
        for name, predictor in self.predictors.items():
            where = predictor.placement(img.shape[:2])
            if where not in inputs:
                inputs[where] = place(img, where)
            out[name] = Prepared(img, where, inputs[where])
        return out

    def __call__(self, images: ImageLike | Sequence[ImageLike]) -> dict[str, Any] | list[dict[str, Any]]:
        items, single = as_list(images)
        prepared = [self.prepare(i) for i in items]
        results: dict[str, list[Any]] = {}
        for name, predictor in self.predictors.items():
            mine = [p[name] for p in prepared]
            results[name] = [predictor.finish(raw, p) for raw, p in zip(predictor.run(mine), mine)]
        out = [attach_masks({name: results[name][i] for name in self.predictors}, self.mask_from)
               for i in range(len(items))]
        return out[0] if single else out

    def shared_inputs(self, size: tuple[int, int]) -> int:
        """How many distinct network inputs a photo of `size` needs (for tests and curiosity)."""
        return len({p.placement(size) for p in self.predictors.values()})


def run_tasks(images: ImageLike | Sequence[ImageLike], predictors: Mapping[str, DensePredictor],
              mask_from: str | None = "seg") -> dict[str, Any] | list[dict[str, Any]]:
    """`DensePipeline(predictors, mask_from)(images)`."""
    return DensePipeline(predictors, mask_from)(images)
