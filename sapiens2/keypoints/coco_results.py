"""COCO-style keypoint results (the list of detections that COCOeval's ``loadRes`` reads).

One dict per person: ``image_id``, ``category_id``, ``score`` and flattened
``[x, y, score] * K`` keypoint fields. The fields depend on the format:

- ``"keypoints308"`` (the reference evaluator's layout): ``goliath_wholebody_kpts`` (308
  points) plus the subsets ``keypoints`` (17 body points, COCO order), ``foot_kpts`` (6),
  ``face_kpts`` (238), ``lefthand_kpts`` (20), ``righthand_kpts`` (20);
- ``"coco17"``: ``keypoints`` (17);
- ``"coco_wholebody133"``: ``keypoints`` (17), ``foot_kpts`` (6), ``face_kpts`` (68),
  ``lefthand_kpts`` (21), ``righthand_kpts`` (21), as COCO-WholeBody's evaluator expects;
  points with no 308 counterpart are written as [0, 0, 0].

The instance ``score`` is, as in the reference evaluator, ``bbox_score`` times the mean
of the 308 keypoint scores that exceed 0.2 (0 when none does), unless given explicitly.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .convert import convert_keypoints
from .metadata import keypoints308

__all__ = ["instance_score", "to_coco_results", "RESULT_FORMATS"]

RESULT_FORMATS = ("keypoints308", "coco17", "coco_wholebody133")

_WHOLEBODY_FIELDS = (
    ("keypoints", 0, 17),
    ("foot_kpts", 17, 23),
    ("face_kpts", 23, 91),
    ("lefthand_kpts", 91, 112),
    ("righthand_kpts", 112, 133),
)
_GOLIATH_SUBSET_FIELDS = (
    ("keypoints", "body"),
    ("foot_kpts", "foot"),
    ("face_kpts", "face"),
    ("lefthand_kpts", "left_hand"),
    ("righthand_kpts", "right_hand"),
)


def instance_score(scores: Any, bbox_score: float = 1.0, threshold: float = 0.2) -> float:
    """bbox_score x mean of the keypoint scores above ``threshold`` (0 if none)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    keep = s > threshold
    return float(bbox_score * s[keep].mean()) if keep.any() else 0.0


def _flat(kp: np.ndarray, sc: np.ndarray) -> list[float]:
    return np.concatenate([kp, sc[:, None]], axis=1).astype(np.float64).reshape(-1).tolist()


def to_coco_results(
    image_ids: int | Sequence[int],
    keypoints: Any,
    scores: Any,
    *,
    format: str = "keypoints308",
    category_id: int = 1,
    bbox_scores: Sequence[float] | None = None,
    instance_scores: Sequence[float] | None = None,
    boxes: Any | None = None,
    score_threshold: float = 0.2,
    path: str | os.PathLike | None = None,
) -> list[dict]:
    """Build (and optionally write) COCO keypoint results for N people.

    Args:
        image_ids: one id per person, or a single id for all of them.
        keypoints: (N, 308, 2) image-pixel keypoints; scores: (N, 308).
        format: one of ``RESULT_FORMATS``.
        bbox_scores: per-person box scores (default 1, as the reference demo).
        instance_scores: override the per-person ``score``.
        boxes: optional (N, 4) xyxy boxes, written as ``bbox`` [x, y, w, h].
        path: when given, the list is written there as JSON (atomically).

    Returns the list of result dicts.
    """
    if format not in RESULT_FORMATS:
        raise ValueError(f"unknown results format {format!r}; expected one of {RESULT_FORMATS}")
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 308, 2)
    sc = np.asarray(scores, dtype=np.float64).reshape(-1, 308)
    if len(kp) != len(sc):
        raise ValueError(f"{len(kp)} keypoint sets but {len(sc)} score sets")
    n = len(kp)
    ids = [int(image_ids)] * n if np.ndim(image_ids) == 0 else [int(i) for i in image_ids]  # type: ignore[arg-type]
    if len(ids) != n:
        raise ValueError(f"{len(ids)} image ids for {n} people")
    bscores = [1.0] * n if bbox_scores is None else [float(b) for b in bbox_scores]
    bxs = None if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)

    meta = keypoints308()
    converted = None
    if format != "keypoints308":
        converted = convert_keypoints(kp, sc, to=format)

    results = []
    for i in range(n):
        if instance_scores is not None:
            score = float(instance_scores[i])
        else:
            score = instance_score(sc[i], bscores[i], score_threshold)
        r: dict[str, Any] = {"image_id": ids[i], "category_id": int(category_id), "score": score}
        if format == "keypoints308":
            r["goliath_wholebody_kpts"] = _flat(kp[i], sc[i])
            for field, subset in _GOLIATH_SUBSET_FIELDS:
                idx = list(meta.subsets[subset])
                r[field] = _flat(kp[i, idx], sc[i, idx])
        elif format == "coco17":
            r["keypoints"] = _flat(converted.keypoints[i], converted.scores[i].astype(np.float64))
        else:
            for field, a, b in _WHOLEBODY_FIELDS:
                r[field] = _flat(
                    converted.keypoints[i, a:b], converted.scores[i, a:b].astype(np.float64)
                )
        if bxs is not None:
            x1, y1, x2, y2 = bxs[i]
            r["bbox"] = [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]
        results.append(r)

    if path is not None:
        _write_json_atomic(Path(path), results)
    return results


def _write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
