"""Metric pointmaps: `Pointmap` and `PointmapResult`.

Metric points = network points / network scale, H x W x 3 float32 in the OpenCV camera frame (x right, y down,
z forward, metres); depth = z. Keep-aspect resize and pad; when the map is enlarged back onto the photo it is
first blurred (4 passes of a 3 x 3 Gaussian, sigma 0.8), as the reference does. The official models need
exactly the 1024 x 768 input (their scale branch is sized for it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sapiens2.io.images import as_image
from sapiens2.io.writers import write_npy
from sapiens2.tasks import camera
from sapiens2.tasks.base import DensePredictor, Prepared, Result, Writer, mask_copy, side_by_side_figure
from sapiens2.tasks.ply import write_ply
from sapiens2.tasks.resize import Placement, to_source_smooth
from sapiens2.vis import dense as vis

__all__ = ["Pointmap", "PointmapResult"]


@dataclass
class PointmapResult(Result):
    task = "pointmap"

    points: np.ndarray  # H x W x 3 float32, metric, OpenCV camera frame
    scale: float  # the network's scale output (canonical focal / focal)
    placement: Placement
    mask: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.points.shape[:2]

    @property
    def depth(self) -> np.ndarray:
        return self.points[..., 2]

    @property
    def focal_from_scale(self) -> float:
        """The focal length (photo pixels) the network's scale implies: 768 / scale / resize factor."""
        return camera.focal_from_scale(self.scale, self.placement.scale[1])

    def estimate_focal(self, principal_point: tuple[float, float] | None = None,
                       use_mask: bool = True) -> camera.CameraEstimate:
        """Least-squares pinhole intrinsics from the points (see `sapiens2.tasks.camera`)."""
        return camera.estimate_focal(self.points, self.mask if use_mask else None, principal_point)

    def with_mask(self, source: Any) -> PointmapResult:
        return mask_copy(self, source)

    def foreground_points(self, image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(N x 3 points inside the mask with finite values, N x 3 uint8 colours from `image` or None)."""
        keep = np.isfinite(self.points).all(axis=2)
        if self.mask is not None:
            keep &= self.mask
        colors = None
        if image is not None:
            image = as_image(image)
            if image.shape[:2] != self.shape:
                raise ValueError(f"image {image.shape[:2]} and pointmap {self.shape} differ in size")
            colors = image[keep]
        return self.points[keep], colors

    def save_ply(self, path: str | os.PathLike, image: np.ndarray | None = None, *, binary: bool = True,
                 camera_marker: bool = False):
        """The foreground points (coloured by `image`) as PLY; optionally a small blue sphere at the camera."""
        points, colors = self.foreground_points(image)
        if camera_marker:
            marker = _sphere_points(500, 0.05)
            points = np.concatenate([points, marker])
            if colors is not None:
                colors = np.concatenate([colors, np.tile(np.array([[0, 0, 255]], np.uint8), (len(marker), 1))])
        return write_ply(path, points, colors, binary=binary)

    def picture(self, image: np.ndarray | None = None, bounds: tuple[float, float] | None = None) -> np.ndarray:
        """Turbo inverse depth on grey; pass the same `bounds` to every frame of a video."""
        return vis.draw_depth(self.depth, self.mask, image, bounds)

    def figure(self, image: np.ndarray, depth_bounds: tuple[float, float] | None = None, **options: Any) -> np.ndarray:
        return side_by_side_figure(self.picture(None, depth_bounds), image)

    def writers(self, image: np.ndarray | None, **options: Any) -> dict[str, Writer]:
        """`_depth.npy` (float16, as the reference), `_points.npy` (H x W x 3 float32) and `.ply` (the foreground
        points, coloured by the photo when given)."""
        return {"_depth.npy": lambda path: write_npy(path, self.depth.astype(np.float16)),
                "_points.npy": lambda path: write_npy(path, self.points.astype(np.float32)),
                ".ply": lambda path: self.save_ply(path, image)}


def _sphere_points(n: int, radius: float) -> np.ndarray:
    """`n` evenly spread points on a sphere (Fibonacci lattice): the camera marker."""
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    return (radius * np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], 1)).astype(
        np.float32)


class Pointmap(DensePredictor[PointmapResult]):
    """Metric pointmaps (network points / network scale)."""

    task = "pointmap"
    policy = "pad"

    def run(self, prepared: Sequence[Prepared]) -> list[Any]:
        try:
            return super().run(prepared)
        except ValueError as e:
            if "scale branch" not in str(e):
                raise
            raise ValueError(f"{e}; this predictor feeds {self.input_size[0]}x{self.input_size[1]}: pass "
                             "input_size=(H, W) of the model's training input") from e

    def split(self, output: tuple[torch.Tensor, torch.Tensor], index: int) -> tuple[torch.Tensor, torch.Tensor]:
        points, scale = output
        return points[index:index + 1], scale[index]

    def _finish(self, raw: tuple[torch.Tensor, torch.Tensor], prepared: Prepared) -> PointmapResult:
        points, scale = raw
        s = scale.float().reshape(())
        metric = to_source_smooth(points.float() / s, prepared.placement)
        return PointmapResult(metric[0].permute(1, 2, 0).cpu().numpy(), float(s), prepared.placement)
