"""Foreground masks for the normal, pointmap and albedo pictures and PLY export.

As in the reference visualizers, a mask never changes a prediction: it only decides which pixels a picture
colours and which points a PLY holds. It may come from a segmentation result (foreground = not background), a
boolean array, a label array (foreground = label > 0), an alpha matte (alpha >= 0.5), or a folder of saved
segmentation outputs, searched with the reference's rules (`find_saved_mask`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.io import read_image

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def foreground_mask(source: Any, shape: tuple[int, int] | None = None) -> np.ndarray:
    """An H x W boolean mask from a segmentation / matting result, a bool, label or alpha array, or a saved file."""
    if hasattr(source, "alpha") and not isinstance(source, np.ndarray):  # a matting result
        mask = np.asarray(source.alpha) >= 0.5
    elif hasattr(source, "labels") and not isinstance(source, np.ndarray):  # a segmentation result
        mask = np.asarray(source.foreground, dtype=bool)
    elif isinstance(source, (str, os.PathLike)):
        mask = read_mask_file(source)
    else:
        arr = np.asarray(source)
        if arr.ndim == 3:
            arr = arr[..., 0]
        if arr.dtype == bool:
            mask = arr
        elif np.issubdtype(arr.dtype, np.floating):
            mask = arr >= 0.5
        elif np.issubdtype(arr.dtype, np.integer):
            mask = arr > 0
        else:
            raise TypeError(f"cannot make a foreground mask from a {arr.dtype} array")
    if mask.ndim != 2:
        raise ValueError(f"a foreground mask must be H x W, got shape {mask.shape}")
    if shape is not None and mask.shape != tuple(shape):
        raise ValueError(f"the mask is {mask.shape[0]}x{mask.shape[1]} but the prediction is {shape[0]}x{shape[1]}")
    return mask


def read_mask_file(path: str | os.PathLike) -> np.ndarray:
    """A saved mask: `.npy` of booleans (as is) or labels (> 0); an image (channel 0 > 0)."""
    p = Path(path)
    if p.suffix.lower() == ".npy":
        arr = np.load(p, allow_pickle=False)
        return arr.astype(bool) if arr.dtype == bool else arr > 0
    return read_image(p)[..., 0] > 0


def find_saved_mask(seg_dir: str | os.PathLike, image_name: str) -> Path | None:
    """The reference's lookup for `--seg_dir`: `<name>.npy`, then `<name>_seg.npy`, then `<seg_dir>/<image_name>`."""
    seg_dir = Path(seg_dir)
    name = Path(image_name).name
    stem = name
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            stem = name[: -len(suffix)]
            break
    for candidate in (seg_dir / f"{stem}.npy", seg_dir / f"{stem}_seg.npy", seg_dir / name):
        if candidate.is_file():
            return candidate
    return None
