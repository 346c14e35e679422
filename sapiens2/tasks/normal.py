"""Surface normals: `Normals` and `NormalsResult`.

H x W x 3 float32 (x, y, z) in the network's camera frame: the OpenCV camera (x right, y down, z forward), as
the pointmaps use; training mirrors images by negating x. The photo is resized keeping its aspect and padded;
the output is normalised to unit length at the network's resolution, un-padded and resized onto the photo,
then normalised again so that every saved vector has unit length (`renormalize=False` skips that last step
and reproduces the reference demo, whose resized normals are shorter than 1 near edges). Pictures map
R, G, B = x, y, z.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sapiens2.io.writers import write_npy
from sapiens2.tasks.base import DensePredictor, Prepared, Result, Writer, mask_copy, side_by_side_figure
from sapiens2.tasks.models import ModelSpec
from sapiens2.tasks.resize import to_source
from sapiens2.vis import dense as vis

__all__ = ["Normals", "NormalsResult"]


@dataclass
class NormalsResult(Result):
    task = "normal"

    normals: np.ndarray  # H x W x 3 float32
    mask: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.normals.shape[:2]

    def with_mask(self, source: Any) -> NormalsResult:
        return mask_copy(self, source)

    def picture(self, image: np.ndarray | None = None) -> np.ndarray:
        """Normal colours; background black, or `image` there when given."""
        return vis.draw_normals(self.normals, self.mask, image)

    def figure(self, image: np.ndarray, **options: Any) -> np.ndarray:
        return side_by_side_figure(self.picture(), image)

    def writers(self, image: np.ndarray | None, **options: Any) -> dict[str, Writer]:
        """`_normal.npy`: H x W x 3 float32, unmasked."""
        return {"_normal.npy": lambda path: write_npy(path, self.normals.astype(np.float32))}


class Normals(DensePredictor[NormalsResult]):
    """Surface normals; unit length after resizing onto the photo unless `renormalize=False`."""

    task = "normal"
    policy = "pad"

    def __init__(self, model: ModelSpec = None, *, renormalize: bool = True, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.renormalize = renormalize

    def _finish(self, raw: torch.Tensor, prepared: Prepared) -> NormalsResult:
        if self.generation == 1:
            # v1 resizes the raw half-resolution output onto the photo, then divides by (norm + 1e-5).
            n = to_source(raw.float(), prepared.placement)
            n = n / (n.norm(dim=1, keepdim=True) + 1e-5)
            return NormalsResult(n[0].permute(1, 2, 0).cpu().numpy())
        n = F.normalize(raw.float(), dim=1, eps=1e-8)
        n = to_source(n, prepared.placement)
        if self.renormalize:
            n = F.normalize(n, dim=1, eps=1e-8)
        return NormalsResult(n[0].permute(1, 2, 0).cpu().numpy())
