"""`Depth`: relative depth from the Sapiens v1 depth models (`sapiens-depth-<size>`), the one v1-only task.

Preprocessing as v1 does it: the photo is stretched to 1024 x 768 (no padding) and normalised like every
Sapiens input; the network's single-channel map is resized bilinearly back onto the photo. The values are
relative depth in the network's own units (larger = farther), so pictures normalise them per image
between the 1st and 99th percentile of the foreground.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sapiens2.tasks.dense import DensePredictor, Prepared
from sapiens2.tasks.masks import foreground_mask
from sapiens2.tasks.resize import to_source
from sapiens2.vis.dense import DEPTH_BACKGROUND, turbo

__all__ = ["Depth", "DepthResult", "draw_relative_depth"]


@dataclass
class DepthResult:
    depth: np.ndarray  # H x W float32, relative
    mask: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.depth.shape

    def with_mask(self, source: Any) -> DepthResult:
        return dataclasses.replace(self, mask=None if source is None else foreground_mask(source, self.shape))

    def picture(self, image: np.ndarray | None = None) -> np.ndarray:
        return draw_relative_depth(self.depth, self.mask, image)


def draw_relative_depth(depth: np.ndarray, mask: np.ndarray | None = None, image: np.ndarray | None = None
                        ) -> np.ndarray:
    """Turbo colours of relative depth, near = red end, stretched between the 1st and 99th foreground
    percentiles; background grey (or `image` there)."""
    d = np.asarray(depth, np.float32)
    m = np.ones(d.shape, bool) if mask is None else np.asarray(mask, bool)
    picture = np.full((*d.shape, 3), DEPTH_BACKGROUND, np.uint8)
    finite = m & np.isfinite(d)
    if finite.any():
        lo, hi = np.percentile(d[finite], [1, 99])
        t = 1.0 - np.clip((d - lo) / max(float(hi - lo), 1e-12), 0.0, 1.0)
        picture[finite] = turbo(t[finite])
    if image is not None:
        picture[~m] = np.asarray(image)[~m]
    return picture


class Depth(DensePredictor[DepthResult]):
    """Relative depth (Sapiens v1). Give the loaded network (`sapiens2.load("sapiens-depth-0.3b",
    allow_pickle=True)`) or a file / name that loads without pickle."""

    task = "depth"
    policy = "stretch"
    upsampling = "linear"

    def _finish(self, output: torch.Tensor, index: int, prepared: Prepared) -> DepthResult:
        d = output[index:index + 1].float()
        if d.shape[1] != 1:
            raise ValueError(f"a depth network gives 1 channel, got {d.shape[1]}")
        return DepthResult(to_source(d, prepared.placement)[0, 0].cpu().numpy())
