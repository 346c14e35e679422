"""Person boxes given in a file (`sapiens2 pose --boxes dets.json`, `read_coco_detections`): skip the detector.

Accepted layouts, all with COCO's `bbox` = [x, y, width, height] in image pixels and an optional `score`
(default 1) and `category_id` (entries of another category than the person's are skipped):

- a list of entries keyed by `file_name` (`[{"file_name": "a.jpg", "bbox": [...], "score": 0.9}, ...]`);
- COCO's results format keyed by `image_id`, with an `images` table (`[{"id": 1, "file_name": "a.jpg"}]`)
  mapping ids to file names: `{"images": [...], "annotations": [...]}` (a COCO ground-truth file works as is);
  `"detections"` or `"results"` may stand for `"annotations"`;
- a plain results list keyed by `image_id` (Python API only: the keys stay ids).

A `file_name` matches an input by its path relative to the input folder, its file name, or its full path.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_coco_detections"]

_ENTRY_KEYS = ("annotations", "detections", "results")
_MAX_BYTES = 1 << 30


_LARGEST = float(np.finfo(np.float32).max)


def _number(value: Any, what: str) -> float:
    """A JSON number that fits the float32 boxes are kept in; anything else is a ValueError naming `what`."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    try:
        number = float(value) if ok else math.nan
    except OverflowError:  # an integer with hundreds of digits
        number = math.nan
    if not math.isfinite(number) or abs(number) > _LARGEST:
        raise ValueError(f"{what} must be a finite number, got {str(value)[:40]!r}")
    return number


def _image_table(images: Any, path: Path) -> dict[Any, str]:
    if not isinstance(images, list):
        raise ValueError(f"{path}: 'images' must be a list of {{'id', 'file_name'}} objects")
    table = {}
    for i, img in enumerate(images):
        if not isinstance(img, dict) or not isinstance(img.get("file_name"), str) or "id" not in img:
            raise ValueError(f"{path}: images[{i}] needs an 'id' and a string 'file_name'")
        if isinstance(img["id"], (dict, list)):
            raise ValueError(f"{path}: images[{i}] 'id' must be a number or a string")
        table[img["id"]] = img["file_name"]
    return table


def read_coco_detections(path: str | os.PathLike, score_threshold: float = 0.0,
                         category_id: int | None = 1) -> dict[int | str, np.ndarray]:
    """Boxes from a detections JSON: image key -> (N, 5) x1, y1, x2, y2, score.

    The key is the entry's `file_name`, else its image's `file_name` from the `images` table, else its
    `image_id`. Entries of another category (when `category_id` is given), scored below the threshold or of
    zero size are skipped. Any malformed entry is a ValueError naming the file and the entry.
    """
    path = Path(path)
    try:
        if path.stat().st_size > _MAX_BYTES:
            raise ValueError(f"{path}: larger than {_MAX_BYTES >> 20} MiB; not a detections file")
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        if isinstance(e, ValueError) and str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable detections JSON ({type(e).__name__}: {e})") from None
    names: dict[Any, str] = {}
    if isinstance(data, dict):
        if "images" in data:
            names = _image_table(data["images"], path)
        key = next((k for k in _ENTRY_KEYS if k in data), None)
        if key is None:
            raise ValueError(f"{path}: expected a list of detections, or an object with one of "
                             f"{', '.join(repr(k) for k in _ENTRY_KEYS)}")
        data = data[key]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of detections (COCO results format)")
    out: dict[int | str, list[list[float]]] = {}
    for i, det in enumerate(data):
        where = f"{path}: detection {i}"
        if not isinstance(det, dict):
            raise ValueError(f"{where} is not an object")
        bbox = det.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise ValueError(f"{where} lacks a valid 'bbox' [x, y, width, height]")
        x, y, w, h = (_number(v, f"{where}: bbox values") for v in bbox)
        if "file_name" in det:
            if not isinstance(det["file_name"], str) or not det["file_name"]:
                raise ValueError(f"{where}: 'file_name' must be a non-empty string, got {det['file_name']!r}")
            key: int | str = det["file_name"]
        elif "image_id" in det:
            image_id = det["image_id"]
            if isinstance(image_id, (dict, list, bool)) or image_id is None:
                raise ValueError(f"{where}: 'image_id' must be a number or a string, got {image_id!r}")
            if names and image_id not in names:
                raise ValueError(f"{where}: image_id {image_id!r} is not in the 'images' table")
            key = names.get(image_id, image_id)
        else:
            raise ValueError(f"{where} has neither 'file_name' nor 'image_id'")
        if category_id is not None and det.get("category_id", category_id) != category_id:
            continue
        score = _number(det.get("score", 1.0), f"{where}: 'score'")
        if score >= score_threshold and w > 0 and h > 0:
            out.setdefault(key, []).append([x, y, x + w, y + h, score])
    return {k: np.asarray(v, np.float32) for k, v in out.items()}
