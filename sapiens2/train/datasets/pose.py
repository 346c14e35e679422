"""Pose samples from a COCO-format keypoint JSON: one sample per annotated person.

The keypoint field is `goliath_wholebody_kpts` (308 x 3) when present, else COCO-WholeBody's five fields
joined in its order (`keypoints`, `foot_kpts`, `face_kpts`, `lefthand_kpts`, `righthand_kpts`: 133 points,
field name `coco_wholebody`), else `keypoints` (COCO-17), or the one named; `keypoint_indices` keeps a subset
of its points. Flip pairs, half-body groups and OKS sigmas come from the matching metadata (308, 133 or 17
points, or a subset of the 308). Points with visibility 0 (or missing, or non-finite) are
unlabelled; visibility is clipped to 1. People are dropped when they are crowds, have no labelled point, or
a degenerate box, as the reference loader does. The training box is the tight box around the labelled
points (the reference's choice) or the annotation's `bbox`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sapiens2.io import read_image
from sapiens2.keypoints import KeypointSet, keypoint_set_for, keypoints308
from sapiens2.train.datasets.base import SampleSource
from sapiens2.train.schema import DatasetConfig
from sapiens2.train.transforms import KeypointLayout
from sapiens2.training.config import ConfigError

WHOLEBODY_PARTS = ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")
FIELDS = ("goliath_wholebody_kpts", "coco_wholebody", "keypoints")


def _has(ann: dict, field: str) -> bool:
    return all(f in ann for f in WHOLEBODY_PARTS) if field == "coco_wholebody" else field in ann


def _points(ann: dict, field: str) -> list:
    if field == "coco_wholebody":
        return [v for part in WHOLEBODY_PARTS for v in (ann.get(part) or [])]
    return ann.get(field) or []


class CocoKeypoints(SampleSource):
    def __init__(self, cfg: DatasetConfig, where: str = "data") -> None:
        root = Path(cfg.root)
        ann_path = root / (cfg.annotations or "")
        try:
            coco = json.loads(ann_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{where}.annotations", f"{ann_path}: no such file") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}.annotations", f"{ann_path} is not valid JSON: {e}") from None
        self.image_dir = root / cfg.images if cfg.images else root
        images = {im["id"]: im for im in coco.get("images", [])}
        anns = [a for a in coco.get("annotations", []) if a.get("category_id", 1) == 1]
        field = cfg.keypoints_field or next((f for f in FIELDS if any(_has(a, f) for a in anns)), None)
        if field is None:
            raise ConfigError(f"{where}.keypoints_field", f"{ann_path}: no annotation has {' or '.join(FIELDS)}")
        self.field = field
        self.indices = None if cfg.keypoint_indices is None else np.asarray(cfg.keypoint_indices, np.int64)
        self.samples: list[dict] = []
        self.all_image_ids = sorted(images)
        self.gt: list[dict] = []  # every person (crowds included) for AP
        width = None
        for a in anns:
            raw = np.asarray(_points(a, field), np.float64).reshape(-1, 3)
            if width is None and len(raw):
                width = len(raw)
            if len(raw) != (width or 0):
                raise ConfigError(f"{where}.annotations", f"annotation {a.get('id')} has {len(raw)} points in "
                                  f"`{field}`, others have {width}")
            if self.indices is not None:
                if self.indices.max(initial=-1) >= len(raw):
                    raise ConfigError(f"{where}.keypoint_indices", f"index {int(self.indices.max())} is out of "
                                      f"range for {len(raw)} keypoints")
                raw = raw[self.indices]
            kp = np.nan_to_num(raw[:, :2]).astype(np.float32)
            vis = np.where(np.isfinite(raw).all(1), np.minimum(1.0, np.maximum(raw[:, 2], 0)), 0).astype(np.float32)
            im = images.get(a["image_id"])
            if im is None:
                continue
            box = _clip_box(a.get("bbox"), im)
            self.gt.append({"image_id": a["image_id"], "keypoints": np.concatenate([kp, vis[:, None]], 1),
                            "area": float(a.get("area", (box[2] - box[0]) * (box[3] - box[1]) if box is not None else 0)),
                            "bbox": a.get("bbox", [0, 0, 0, 0]), "iscrowd": bool(a.get("iscrowd", 0))})
            if a.get("iscrowd", 0) or not (vis > 0).any():
                continue
            if cfg.bbox_from == "annotation" and (box is None or box[2] <= box[0] or box[3] <= box[1]):
                continue
            self.samples.append({"file": im["file_name"], "image_id": a["image_id"], "keypoints": kp,
                                 "visible": vis, "ann_box": box, "size": (im.get("width"), im.get("height"))})
        self.bbox_from = cfg.bbox_from
        self.num_keypoints = len(self.indices) if self.indices is not None else (width or 0)

    def __len__(self) -> int:
        return len(self.samples)

    def image_file(self, index: int) -> Path:
        return self.image_dir / self.samples[index]["file"]

    def load(self, index: int) -> dict:
        s = self.samples[index]
        image = read_image(self.image_dir / s["file"])
        h, w = image.shape[:2]
        if self.bbox_from == "annotation":
            bbox = s["ann_box"]
        else:
            pts = s["keypoints"][s["visible"] > 0]
            if len(pts):
                lo, hi = pts.min(0), pts.max(0)
                bbox = np.array([max(lo[0], 0), max(lo[1], 0), min(hi[0], w - 1), min(hi[1], h - 1)], np.float32)
            else:
                bbox = np.array([0, 0, w - 1, h - 1], np.float32)
        return {"image": image, "keypoints": s["keypoints"], "visible": s["visible"], "bbox": bbox,
                "image_id": s["image_id"], "instance": index, "ann_box": s["ann_box"]}

    def _keypoint_set(self) -> KeypointSet | None:
        """The metadata these points index: the full set of their count, or the 308 for a subset."""
        if self.indices is not None:
            return keypoints308()
        try:
            return keypoint_set_for(self.num_keypoints)
        except ValueError:
            return None

    def layout(self) -> KeypointLayout:
        """Flip pairs and half-body groups for these points (none for an unknown set)."""
        kset = self._keypoint_set()
        if kset is None:
            return KeypointLayout(None)
        idx = np.arange(kset.num_keypoints) if self.indices is None else self.indices
        pos = {int(g): i for i, g in enumerate(idx)}
        flip = [pos.get(kset.flip_indices[int(g)]) for g in idx]
        flips = None if any(f is None for f in flip) else tuple(flip)
        return KeypointLayout(flips, tuple(pos[i] for i in kset.upper_body_ids if i in pos),
                              tuple(pos[i] for i in kset.lower_body_ids if i in pos))

    def sigmas(self) -> np.ndarray:
        """OKS sigmas of these points (0.025 each for an unknown set)."""
        kset = self._keypoint_set()
        if kset is None:
            return np.full(self.num_keypoints, 0.025)
        idx = np.arange(kset.num_keypoints) if self.indices is None else self.indices
        return np.asarray(kset.sigmas, np.float64)[idx]



def _clip_box(bbox, im: dict) -> np.ndarray | None:
    """COCO xywh -> xyxy clipped to the image (None when absent)."""
    if not bbox or len(bbox) != 4:
        return None
    x, y, w, h = (float(v) for v in bbox)
    W, H = im.get("width") or 1e9, im.get("height") or 1e9
    return np.array([max(0, x), max(0, y), min(W - 1, x + max(0, w - 1)), min(H - 1, y + max(0, h - 1))], np.float32)
