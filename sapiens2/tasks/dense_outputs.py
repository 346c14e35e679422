"""Saving dense results: arrays (`.npy` / `.npz`), PNG label maps and mattes, pictures and PLY point clouds.

Every file is written atomically (`sapiens2.io.writers`). Names follow the reference where it saves the same
thing (`<stem>_seg.npy` int64 labels, `<stem>_depth.npy` float16, `<stem>.ply`), except normals: the reference's
`<stem>.npy` is `<stem>_normal.npy` here, so that several tasks can share one folder. `stem` is the photo's name
up to its first dot, as the reference cuts it (`output_stem`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.io.writers import write_image, write_npy, write_npz
from sapiens2.tasks.dense import (
    AlbedoResult,
    MattingResult,
    NormalsResult,
    PointmapResult,
    SegmentationResult,
    as_image,
)
from sapiens2.vis.dense import side_by_side

PathLike = str | os.PathLike


def output_stem(image_path: PathLike) -> str:
    """The name up to its first dot (`a.b.jpg` -> `a`), the reference's output stem."""
    return Path(image_path).name.split(".", 1)[0]


def save_segmentation(result: SegmentationResult, out_dir: PathLike, stem: str, *, npy: bool = True,
                      png: bool = True, probabilities: bool = False) -> list[Path]:
    """`<stem>_seg.npy` (H x W int64, as the reference), `<stem>_seg.png` (8-bit class ids), and with
    `probabilities` `<stem>_seg_probs.npz` (`probabilities`, H x W x C float16, and `classes`)."""
    out = Path(out_dir)
    paths = []
    if npy:
        paths.append(write_npy(out / f"{stem}_seg.npy", result.labels.astype(np.int64)))
    if png:
        if len(result.classes) > 256:
            raise ValueError("a PNG label map holds at most 256 classes")
        paths.append(write_image(out / f"{stem}_seg.png", result.labels.astype(np.uint8)))
    if probabilities:
        if result.probabilities is None:
            raise ValueError("this result has no probabilities: make the Segmenter with probabilities=True")
        paths.append(write_npz(out / f"{stem}_seg_probs.npz", probabilities=result.probabilities.astype(np.float16),
                               classes=np.array(result.classes.names)))
    return paths


def read_label_png(path: PathLike) -> np.ndarray:
    """A label map written by `save_segmentation` (H x W uint8 class ids)."""
    import cv2

    labels = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if labels is None or labels.ndim != 2:
        raise ValueError(f"{path}: not a single-channel label PNG")
    return labels


def save_normals(result: NormalsResult, out_dir: PathLike, stem: str) -> list[Path]:
    """`<stem>_normal.npy`: H x W x 3 float32, unmasked (as the reference saves it)."""
    return [write_npy(Path(out_dir) / f"{stem}_normal.npy", result.normals.astype(np.float32))]


def save_pointmap(result: PointmapResult, out_dir: PathLike, stem: str, image: np.ndarray | None = None, *,
                  points: bool = True, ply: bool = True, binary_ply: bool = True) -> list[Path]:
    """`<stem>_depth.npy` (float16, as the reference), `<stem>_points.npy` (H x W x 3 float32) and
    `<stem>.ply` (the foreground points, coloured by `image` when given)."""
    out = Path(out_dir)
    paths = [write_npy(out / f"{stem}_depth.npy", result.depth.astype(np.float16))]
    if points:
        paths.append(write_npy(out / f"{stem}_points.npy", result.points.astype(np.float32)))
    if ply:
        paths.append(result.save_ply(out / f"{stem}.ply", image, binary=binary_ply))
    return paths


def save_albedo(result: AlbedoResult, out_dir: PathLike, stem: str, *, npy: bool = True) -> list[Path]:
    """`<stem>_albedo.npy` (H x W x 3 float32 RGB) and `<stem>_albedo.png` (uint8, unmasked)."""
    out = Path(out_dir)
    paths = [write_npy(out / f"{stem}_albedo.npy", result.albedo.astype(np.float32))] if npy else []
    paths.append(write_image(out / f"{stem}_albedo.png", (np.clip(result.albedo, 0, 1) * 255).astype(np.uint8)))
    return paths


def save_matting(result: MattingResult, out_dir: PathLike, stem: str, image: np.ndarray | None = None, *,
                 npz: bool = False) -> list[Path]:
    """`<stem>_alpha.png` (16-bit matte, alpha * 65535 rounded), `<stem>_cutout.png` (the photo as RGBA) when
    `image` is given, and with `npz` `<stem>_matting.npz` (`alpha`, `foreground` as float32)."""
    out = Path(out_dir)
    alpha16 = (np.clip(result.alpha, 0, 1) * 65535 + 0.5).astype(np.uint16)
    paths = [write_image(out / f"{stem}_alpha.png", alpha16)]
    if image is not None:
        paths.append(write_image(out / f"{stem}_cutout.png", result.rgba(image)))
    if npz:
        paths.append(write_npz(out / f"{stem}_matting.npz", alpha=result.alpha.astype(np.float32),
                               foreground=result.foreground.astype(np.float32)))
    return paths


def save_result(result: Any, out_dir: PathLike, stem: str, image: np.ndarray | None = None) -> list[Path]:
    """The arrays of any dense result, with each task's defaults."""
    if isinstance(result, SegmentationResult):
        return save_segmentation(result, out_dir, stem, probabilities=result.probabilities is not None)
    if isinstance(result, NormalsResult):
        return save_normals(result, out_dir, stem)
    if isinstance(result, PointmapResult):
        return save_pointmap(result, out_dir, stem, image)
    if isinstance(result, AlbedoResult):
        return save_albedo(result, out_dir, stem)
    if isinstance(result, MattingResult):
        return save_matting(result, out_dir, stem, image)
    raise TypeError(f"not a dense result: {type(result).__name__}")


def picture(result: Any, image: np.ndarray, *, black_background: bool = True,
            depth_bounds: tuple[float, float] | None = None) -> np.ndarray:
    """[photo | result] side by side, as the reference saves its pictures."""
    image = as_image(image)
    backdrop = None if black_background else image
    if isinstance(result, SegmentationResult):
        panel = result.picture(image)
    elif isinstance(result, NormalsResult):
        panel = result.picture(backdrop)
    elif isinstance(result, PointmapResult):
        panel = result.picture(backdrop, depth_bounds)
    elif isinstance(result, AlbedoResult):
        panel = result.picture(backdrop)
    elif isinstance(result, MattingResult):
        panel = result.picture()
    else:
        raise TypeError(f"not a dense result: {type(result).__name__}")
    return side_by_side(image, panel)


def save_picture(result: Any, path: PathLike, image: np.ndarray, **kwargs: Any) -> Path:
    """`picture(result, image)` written to `path` (format from the extension)."""
    return write_image(path, picture(result, image, **kwargs))
