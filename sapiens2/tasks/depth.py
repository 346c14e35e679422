"""Sapiens v1 relative depth: `Depth` and `DepthResult` (`sapiens-depth-<size>` models).

The photo is stretched to 1024 x 768; the one-channel output at full input size is resized back bilinearly.
Values have no metric scale (scale-invariant training): larger is farther.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sapiens2.io.writers import write_npy
from sapiens2.tasks.base import DensePredictor, Prepared, Result, Writer, mask_copy, side_by_side_figure
from sapiens2.tasks.resize import to_source
from sapiens2.vis import dense as vis

__all__ = ["Depth", "DepthResult"]


@dataclass
class DepthResult(Result):
    task = "depth"

    depth: np.ndarray  # H x W float32, relative
    mask: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.depth.shape[:2]

    def with_mask(self, source: Any) -> DepthResult:
        return mask_copy(self, source)

    def picture(self, image: np.ndarray | None = None) -> np.ndarray:
        """Inferno of the foreground's min-max normalised inverse, grey background, as the v1 demo draws it."""
        return vis.draw_relative_depth(self.depth, self.mask, image)

    def figure(self, image: np.ndarray, **options: Any) -> np.ndarray:
        return side_by_side_figure(self.picture(), image)

    def writers(self, image: np.ndarray | None, **options: Any) -> dict[str, Writer]:
        """`_reldepth.npy`: H x W float32."""
        return {"_reldepth.npy": lambda path: write_npy(path, self.depth.astype(np.float32))}


class Depth(DensePredictor[DepthResult]):
    """Relative depth from the Sapiens v1 depth models."""

    task = "depth"
    policy = "stretch"
    upsampling = "linear"

    def _finish(self, raw: torch.Tensor, prepared: Prepared) -> DepthResult:
        d = to_source(raw.float(), prepared.placement)
        return DepthResult(d[0, 0].cpu().numpy())
