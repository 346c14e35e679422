"""`Pose`: photos in, people with whole-body keypoints out (top-down: detect, crop, heatmaps, decode).

The steps and their conventions follow the reference demo: boxes from the person detector (or given,
or the whole image), each box padded by 1.25 and widened to the 3:4 network aspect, a UDP affine crop to
768x1024, all people of a batch of images through the network together, optional flip test, UDP
decoding with its refinement step, and the keypoints mapped back to image pixels. When the detector
finds nobody the whole image is used, as the reference does, and the result says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sapiens2.detect.pipeline import full_image_box as whole_image_box
from sapiens2.io.images import as_image
from sapiens2.keypoints.convert import ConvertedKeypoints, convert_keypoints
from sapiens2.keypoints.metadata import KeypointSet, keypoint_set_for
from sapiens2.models.sapiens1 import trained_input_size
from sapiens2.tasks.dense_models import resolve_model
from sapiens2.tasks.resize import normalize
from sapiens2.tasks.topdown import (
    BBOX_PADDING,
    INPUT_SIZE,
    average_flip_heatmaps,
    crop_people,
    heatmaps_to_keypoints,
)

BoxSource = str  # "detector", "given", "whole image", "whole image (nobody detected)"
Detector = Callable[[np.ndarray], Any]


@dataclass
class Person:
    """One person: the box that was cropped, and keypoints in image pixels."""

    box: np.ndarray  # (4,) x1, y1, x2, y2
    box_score: float
    keypoints: np.ndarray  # (K, 2) x, y
    scores: np.ndarray  # (K,)

    def as_array(self) -> np.ndarray:
        """(K, 3): x, y, score."""
        return np.concatenate([self.keypoints, self.scores[:, None]], axis=1)


@dataclass
class PoseResult:
    """Everyone found in one image."""

    people: list[Person]
    image_size: tuple[int, int]  # (H, W)
    keypoint_set: KeypointSet
    box_source: BoxSource
    path: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return self.keypoint_set.names

    def keypoints(self) -> np.ndarray:
        """(N, K, 3) for the N people: x, y, score."""
        k = len(self.keypoint_set)
        return np.stack([p.as_array() for p in self.people]) if self.people else np.zeros((0, k, 3), np.float32)

    def boxes(self) -> np.ndarray:
        """(N, 5): x1, y1, x2, y2, box score."""
        if not self.people:
            return np.zeros((0, 5), np.float32)
        return np.stack([np.append(p.box, p.box_score) for p in self.people]).astype(np.float32)

    def convert(self, to: str) -> ConvertedKeypoints:
        """The keypoints in another format: 'coco17', 'coco_wholebody133', 'openpose_body25', 'openpose_body18'."""
        kp = self.keypoints()
        return convert_keypoints(kp[..., :2], kp[..., 2], to=to)


def _as_boxes(boxes: Any) -> np.ndarray:
    """(N, 4) or (N, 5) boxes from a list, an array, a tensor or a Detections-like object."""
    if hasattr(boxes, "as_array"):
        boxes = boxes.as_array()
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.size == 0:
        return np.zeros((0, 5), np.float32)
    arr = arr.reshape(-1, arr.shape[-1])
    if arr.shape[1] not in (4, 5):
        raise ValueError(f"boxes must be N x 4 (x1, y1, x2, y2) or N x 5 (with a score), got {arr.shape}")
    if arr.shape[1] == 4:
        arr = np.concatenate([arr, np.ones((len(arr), 1), np.float32)], axis=1)
    bad = (arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1]) | ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise ValueError(f"boxes must have x2 > x1 and y2 > y1 and be finite; bad rows: {np.flatnonzero(bad).tolist()}")
    return arr


def read_coco_detections(path: str | os.PathLike, score_threshold: float = 0.0,
                         category_id: int | None = 1) -> dict[int | str, np.ndarray]:
    """Boxes from a COCO-style detections JSON: image key -> (N, 5) x1, y1, x2, y2, score.

    The key is `file_name` when the entries carry one, else `image_id`. Entries of another category
    (when `category_id` is given) or scored below the threshold are skipped.
    """
    import json

    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable detections JSON ({e})") from e
    if isinstance(entries, dict) and "annotations" in entries:
        entries = entries["annotations"]
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of detections (COCO results format)")
    out: dict[int | str, list[list[float]]] = {}
    for i, det in enumerate(entries):
        try:
            x, y, w, h = (float(v) for v in det["bbox"])
            key = det.get("file_name", det["image_id"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: detection {i} lacks a valid 'bbox' [x, y, w, h] and 'image_id' ({e})") from e
        if category_id is not None and det.get("category_id", category_id) != category_id:
            continue
        score = float(det.get("score", 1.0))
        if score >= score_threshold and w > 0 and h > 0:
            out.setdefault(key, []).append([x, y, x + w, y + h, score])
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def _default_detector(device: str | torch.device | None) -> Detector:
    from sapiens2.detect import PersonDetector
    from sapiens2.hub import resolve

    path, _ = resolve("rtmdet-m-person")
    return PersonDetector.from_file(path, device=device)


class Pose:
    """Whole-body pose for photos.

    `model`: a size ("0.4b", "0.8b", "1b", "5b"), an official name (also v1: "sapiens-pose-1b-coco17"),
    a checkpoint path, or a loaded pose network. `detector`: "rtmdet" (the built-in person detector on
    the official weights), None (the whole image is one person), or any callable taking an RGB image and
    returning N x 4 / N x 5 boxes. Call on one image (path or H x W x 3 uint8 RGB array) or a list.
    `input_size` (H, W) is the crop the network sees: 1024 x 768 by default, or for a v1 model the size it
    was trained at (its positions tell).
    """

    def __init__(
        self,
        model: str | os.PathLike | nn.Module = "0.4b",
        detector: str | Detector | None = "rtmdet",
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        flip_test: bool = False,
        batch_size: int = 8,
        box_padding: float = BBOX_PADDING,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.network = resolve_model("pose", model, device=self.device, dtype=dtype)
        h, w = input_size or trained_input_size(self.network) or (INPUT_SIZE[1], INPUT_SIZE[0])
        if h <= 0 or w <= 0 or h % 4 or w % 4:
            raise ValueError(f"input_size must be positive multiples of 4 (the heatmap stride), got {(h, w)}")
        self.crop_size: tuple[int, int] = (int(w), int(h))  # (w, h), as the crop and codec functions take it
        self.dtype = next(self.network.parameters()).dtype
        self.keypoint_set = keypoint_set_for(self._num_keypoints())
        if detector == "rtmdet":
            detector = _default_detector(self.device)
        elif isinstance(detector, str):
            raise ValueError(f"unknown detector {detector!r}: use 'rtmdet', None or a callable returning boxes")
        self.detector = detector
        self.flip_test = flip_test
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self.box_padding = box_padding

    def _num_keypoints(self) -> int:
        head = getattr(self.network, "decode_head", None) or getattr(self.network, "head", None)
        final = getattr(head, "conv_pose", None) or getattr(head, "final_layer", None)
        if final is None:
            raise ValueError("the network has no pose head (conv_pose / final_layer)")
        return final.out_channels

    def __call__(
        self,
        images: str | os.PathLike | np.ndarray | Sequence[str | os.PathLike | np.ndarray],
        boxes: Any | Sequence[Any] | None = None,
    ) -> PoseResult | list[PoseResult]:
        """People in each image. `boxes` (per image) skips the detector for the images it is given for."""
        single = isinstance(images, (str, os.PathLike, np.ndarray))
        batch = [images] if single else list(images)
        if boxes is not None and single:
            boxes = [boxes]
        if boxes is not None and len(boxes) != len(batch):
            raise ValueError(f"{len(batch)} images but {len(boxes)} box lists")
        paths = [Path(x) if isinstance(x, (str, os.PathLike)) else None for x in batch]
        arrays = [as_image(x) for x in batch]
        detected = self.detect(arrays) if boxes is None and self.detector is not None else None
        sources, per_image = [], []
        for i, image in enumerate(arrays):
            given = None if boxes is None else boxes[i]
            b, source = self.choose_boxes(image, given, None if detected is None else detected[i])
            per_image.append(b)
            sources.append(source)
        results = self._estimate(arrays, per_image)
        out = [PoseResult(people, img.shape[:2], self.keypoint_set, src, path)
               for people, img, src, path in zip(results, arrays, sources, paths)]
        return out[0] if single else out

    def detect(self, images: list[np.ndarray]) -> list[Any]:
        """Detections per image; the built-in detector takes the whole list in batched forwards."""
        from sapiens2.detect import PersonDetector

        if isinstance(self.detector, PersonDetector):
            return self.detector(images)
        return [self.detector(image) for image in images]

    def choose_boxes(self, image: np.ndarray, given: Any | None, detected: Any | None) -> tuple[np.ndarray, BoxSource]:
        """The boxes to crop (N x 5) and where they came from: given, detected, or the whole image."""
        h, w = image.shape[:2]
        whole = whole_image_box(h, w)
        if given is not None:
            return _as_boxes(given), "given"
        if detected is None:
            return whole, "whole image"
        found = _as_boxes(detected)
        if len(found) == 0:
            return whole, "whole image (nobody detected)"
        return found, "detector"

    @torch.inference_mode()
    def _estimate(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[list[Person]]:
        """All people of all images through the network in batches of `batch_size` crops."""
        size = self.crop_size
        jobs = [(i, crop_people(img, b[:, :4], self.box_padding, size), b[:, 4]) for i, (img, b) in
                enumerate(zip(images, boxes)) if len(b)]
        crops = np.concatenate([c.crops for _, c, _ in jobs]) if jobs else np.zeros((0, size[1], size[0], 3), np.uint8)
        heatmaps = [self.heatmaps(crops[s : s + self.batch_size]) for s in range(0, len(crops), self.batch_size)]
        people: list[list[Person]] = [[] for _ in images]
        if not jobs:
            return people
        heat = np.concatenate(heatmaps)
        start = 0
        for i, crop, scores in jobs:
            n = len(crop.boxes)
            kp, kp_scores = heatmaps_to_keypoints(heat[start : start + n], crop.centers, crop.scales, size)
            start += n
            for j in range(n):
                people[i].append(Person(crop.boxes[j].copy(), float(scores[j]), kp[j].astype(np.float32),
                                        kp_scores[j].astype(np.float32)))
        return people

    def heatmaps(self, crops: np.ndarray) -> np.ndarray:
        """(N, K, H/4, W/4) heatmaps for N x H x W x 3 uint8 RGB crops (flip-averaged when flip_test)."""
        x = normalize(crops, device=self.device, dtype=self.dtype)
        heat = self.network(x)
        if self.flip_test:
            flipped = self.network(x.flip(-1))
            heat = average_flip_heatmaps(heat, flipped, self.keypoint_set.flip_indices)
        return heat.float().cpu().numpy()
