"""Albedo: `Albedo` and `AlbedoResult` (H x W x 3 float32 RGB in [0, 1]).

Keep-aspect resize and pad; the output is clamped at the network's resolution, un-padded and resized.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sapiens2.io.writers import write_image, write_npy
from sapiens2.tasks.base import DensePredictor, Prepared, Result, Writer, mask_copy, side_by_side_figure
from sapiens2.tasks.resize import to_source
from sapiens2.vis import dense as vis

__all__ = ["Albedo", "AlbedoResult"]


@dataclass
class AlbedoResult(Result):
    task = "albedo"

    albedo: np.ndarray  # H x W x 3 float32 RGB in [0, 1]
    mask: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.albedo.shape[:2]

    def with_mask(self, source: Any) -> AlbedoResult:
        return mask_copy(self, source)

    def picture(self, image: np.ndarray | None = None) -> np.ndarray:
        return vis.draw_albedo(self.albedo, self.mask, image)

    def figure(self, image: np.ndarray, **options: Any) -> np.ndarray:
        return side_by_side_figure(self.picture(), image)

    def writers(self, image: np.ndarray | None, **options: Any) -> dict[str, Writer]:
        """`_albedo.npy` (H x W x 3 float32 RGB) and `_albedo.png` (uint8, unmasked)."""
        return {"_albedo.npy": lambda path: write_npy(path, self.albedo.astype(np.float32)),
                "_albedo.png": lambda path: write_image(path, (np.clip(self.albedo, 0, 1) * 255).astype(np.uint8))}


class Albedo(DensePredictor[AlbedoResult]):
    """Albedo (RGB in [0, 1])."""

    task = "albedo"
    policy = "pad"

    def _finish(self, raw: torch.Tensor, prepared: Prepared) -> AlbedoResult:
        a = to_source(raw.float().clamp(0.0, 1.0), prepared.placement)
        return AlbedoResult(a[0].permute(1, 2, 0).cpu().numpy())
