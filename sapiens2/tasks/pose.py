"""`Pose`: photos in, people with whole-body keypoints out (top-down: detect, crop, heatmaps, decode).

The steps and their conventions follow the reference demo: boxes from the person detector (or given, or the
whole image), each box padded by 1.25 and widened to the 3:4 network aspect, a UDP affine crop to 768x1024,
all people of a batch of images through the network together, the flip test (on by default, as every
reference pose config sets it), UDP decoding with its refinement step, and the keypoints mapped back to
image pixels. When the detector finds nobody the whole image is used, as the reference does, and the result
says so.

The three steps (`prepare` → `run` → `finish`) are what every entry point composes; see `sapiens2.tasks.base`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sapiens2.io.images import ImageLike, as_image
from sapiens2.io.writers import write_json, write_npz
from sapiens2.keypoints.convert import ConvertedKeypoints, convert_keypoints, format_name, keypoint_mapping
from sapiens2.keypoints.metadata import KeypointSet, keypoint_set_for
from sapiens2.tasks import models
from sapiens2.tasks.base import Result, Writer, as_list, check_input_size
from sapiens2.tasks.given_boxes import read_coco_detections
from sapiens2.tasks.resize import normalize
from sapiens2.keypoints.topdown import (
    BBOX_PADDING,
    INPUT_SIZE,
    TopdownCrops,
    average_flip_heatmaps,
    crop_people,
    heatmaps_to_keypoints,
    whole_image_box,
)
from sapiens2.vis.pose import draw_pose, draw_track_boxes

__all__ = ["Person", "Pose", "PosePrepared", "PoseResult", "format_header", "keypoint_metadata", "read_coco_detections"]

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


def keypoint_metadata(keypoint_set: KeypointSet, keypoint_format: str | None = None) -> dict[str, Any]:
    """Names (and skeleton, for the model's own set) of the keypoints as saved: `pose_keypoints.json`."""
    if keypoint_format is not None:
        mapping = keypoint_mapping(keypoint_format)
        return {"keypoint_format": mapping.format, "names": list(mapping.names)}
    return {"keypoint_format": keypoint_set.name, "names": list(keypoint_set.names),
            "skeleton_links": [list(link) for link in keypoint_set.skeleton_links]}


def format_header(keypoint_set: KeypointSet, keypoint_format: str | None = None,
                  kpt_thr: float = 0.3) -> dict[str, Any]:
    """What a pose JSON says about its keypoints: their format, how many, and the drawing threshold."""
    names = keypoint_mapping(keypoint_format).names if keypoint_format else keypoint_set.names
    name = format_name(keypoint_format) if keypoint_format else keypoint_set.name
    return {"keypoint_format": name, "num_keypoints": len(names), "kpt_thr_used": kpt_thr}


@dataclass
class PoseResult(Result):
    """Everyone found in one image."""

    task = "pose"

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
        """The keypoints in another format: 'coco17', 'coco_wholebody133' ('wholebody133'), 'openpose_body25'
        ('openpose25'), 'openpose_body18' ('openpose18')."""
        kp = self.keypoints()
        return convert_keypoints(kp[..., :2], kp[..., 2], to=to)

    def keypoints_as(self, keypoint_format: str | None, keypoints: np.ndarray | None = None) -> np.ndarray:
        """(N, K', 3) x, y, score in `keypoint_format` (None: the model's own set) of `keypoints` (default:
        this result's; a video passes its smoothed ones)."""
        kp = self.keypoints() if keypoints is None else keypoints
        if keypoint_format is None:
            return kp
        if len(self.keypoint_set) != 308:
            raise ValueError(f"keypoint formats convert 308-keypoint predictions; this model gives {len(self.keypoint_set)}")
        if len(kp) == 0:
            return np.zeros((0, len(keypoint_mapping(keypoint_format).names), 3), np.float32)
        return convert_keypoints(kp[..., :2], kp[..., 2], to=keypoint_format).as_triplets()

    def instances(self, keypoint_format: str | None = None, keypoints: np.ndarray | None = None,
                  track_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """JSON instances: box, box score, keypoints [[x, y], ...] and their scores (the raw heatmap maxima), at
        full float precision, as the reference writes them."""
        kp = self.keypoints_as(keypoint_format, keypoints).astype(np.float64)
        boxes = self.boxes().astype(np.float64)
        out = []
        for i in range(len(boxes)):
            entry: dict[str, Any] = {}
            if track_ids is not None:
                entry["track_id"] = int(track_ids[i])
            entry.update(bbox=boxes[i, :4].tolist(), bbox_score=float(boxes[i, 4]),
                         keypoints=kp[i, :, :2].tolist(), keypoint_scores=kp[i, :, 2].tolist())
            out.append(entry)
        return out

    def record(self, keypoint_format: str | None = None, kpt_thr: float = 0.3) -> dict[str, Any]:
        """The `_pose.json` of one image."""
        return {"image": os.fsdecode(self.path) if self.path else None, "image_size": list(self.image_size),
                **format_header(self.keypoint_set, keypoint_format, kpt_thr), "box_source": self.box_source,
                "instances": self.instances(keypoint_format)}

    def figure(self, image: np.ndarray, kpt_thr: float = 0.3, radius: int = 3, thickness: int = 1,
               keypoints: np.ndarray | None = None, track_ids: Sequence[int] | None = None,
               **options: Any) -> np.ndarray:
        """The photo with every skeleton (all the model's keypoints) and box; with `track_ids`, boxes coloured
        and labelled by track."""
        kp = self.keypoints() if keypoints is None else keypoints
        canvas = np.ascontiguousarray(as_image(image)).copy()
        if track_ids is not None:
            canvas = draw_track_boxes(canvas, self.boxes()[:, :4], list(track_ids), max(1, thickness))
        if len(kp) == 0:
            return canvas
        return draw_pose(canvas, kp[..., :2], kp[..., 2], kpt_thr=kpt_thr, radius=radius, thickness=thickness,
                         boxes=None if track_ids is not None else self.boxes()[:, :4],
                         keypoint_set=self.keypoint_set, channel_order="rgb")

    def writers(self, image: np.ndarray | None, keypoint_format: str | None = None, kpt_thr: float = 0.3,
                **options: Any) -> dict[str, Writer]:
        """`_pose.json` (`record`) and `_pose.npz`: `keypoints` (N x K x 2 x, y pixels), `scores` (N x K) and
        `boxes` (N x 5: x1, y1, x2, y2, box score), float32, in `keypoint_format`."""
        def npz(path: Path) -> Path:
            kp = self.keypoints_as(keypoint_format)
            return write_npz(path, keypoints=kp[..., :2].astype(np.float32), scores=kp[..., 2].astype(np.float32),
                             boxes=self.boxes())

        return {"_pose.json": lambda path: write_json(path, self.record(keypoint_format, kpt_thr), indent=None),
                "_pose.npz": npz}


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


def _default_detector(device: str | torch.device | None, allow_code: bool = False) -> Detector:
    from sapiens2.detect import PersonDetector
    from sapiens2.hub import resolve

    path, _ = resolve("rtmdet-m-person")
    return PersonDetector.from_file(path, device=device, allow_code=allow_code)


@dataclass
class PosePrepared:
    """One photo ready for the network: its boxes (N x 5), where they came from, and the crops."""

    image_size: tuple[int, int]  # (H, W)
    boxes: np.ndarray
    box_source: BoxSource
    crops: TopdownCrops | None
    path: Path | None = None


class Pose:
    """Whole-body pose for photos.

    `model`: a size ("0.4b", "0.8b", "1b", "5b"), an official name (also v1: "sapiens-pose-1b-coco17"),
    a checkpoint path, or a loaded pose network (None: the default, 0.4b). `detector`: "rtmdet" (the
    built-in person detector on the official weights), None (the whole image is one person), or any callable
    taking an RGB image and returning N x 4 / N x 5 boxes. Call on one image (path or H x W x 3 uint8 RGB
    array) or a list. `input_size` (H, W) is the crop the network sees: 1024 x 768 by default, or for a v1
    model the size it was trained at (its positions tell). `flip_test` (default on, as the reference) also
    runs the mirrored crops and averages the heatmaps.
    """

    task = "pose"

    def __init__(
        self,
        model: models.ModelSpec = None,
        detector: str | Detector | None = "rtmdet",
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        flip_test: bool = True,
        batch_size: int = 8,
        box_padding: float = BBOX_PADDING,
        input_size: tuple[int, int] | None = None,
        allow_pickle: bool = False,
        allow_code: bool = False,
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError("batch_size must be at least 1")
        input_size = check_input_size(input_size, multiple=4)  # the heatmap stride
        self.device = models.resolve_device(device)
        self.network: nn.Module = models.load_network("pose", model, self.device, dtype, allow_pickle, allow_code)
        h, w = input_size or models.network_input_size(self.network) or INPUT_SIZE
        self.input_size: tuple[int, int] = (int(h), int(w))
        self.dtype = next(self.network.parameters()).dtype
        self.keypoint_set = keypoint_set_for(self._num_keypoints())
        if detector == "rtmdet":
            detector = _default_detector(self.device, allow_code)
        elif isinstance(detector, str):
            raise ValueError(f"unknown detector {detector!r}: use 'rtmdet', None or a callable returning boxes")
        self.detector = detector
        self.flip_test = flip_test
        self.batch_size = int(batch_size)
        self.box_padding = box_padding
        self._detector_lock = threading.Lock()

    def _num_keypoints(self) -> int:
        if getattr(self.network, "num_keypoints", None) is not None:  # an exported network says it
            return int(self.network.num_keypoints)
        head = getattr(self.network, "decode_head", None) or getattr(self.network, "head", None)
        final = getattr(head, "conv_pose", None) or getattr(head, "final_layer", None)
        if final is None:
            raise ValueError("the network has no pose head (conv_pose / final_layer)")
        return final.out_channels

    def __call__(
        self,
        images: ImageLike | Sequence[ImageLike],
        boxes: Any | Sequence[Any] | None = None,
    ) -> PoseResult | list[PoseResult]:
        """People in each image. `boxes` (per image) skips the detector for the images it is given for."""
        batch, single = as_list(images)
        if boxes is not None and single:
            boxes = [boxes]
        if boxes is not None and len(boxes) != len(batch):
            raise ValueError(f"{len(batch)} images but {len(boxes)} box lists")
        paths = [Path(x) if isinstance(x, (str, os.PathLike)) else None for x in batch]
        arrays = [as_image(x) for x in batch]
        detected = self.detect(arrays) if boxes is None and self.detector is not None else None
        prepared = [self._prepare(img, None if boxes is None else boxes[i],
                                  None if detected is None else detected[i], paths[i])
                    for i, img in enumerate(arrays)]
        results = [self.finish(raw, p) for raw, p in zip(self.run(prepared), prepared)]
        return results[0] if single else results

    # ------------------------------------------------------------------ the three steps
    def prepare(self, image: ImageLike, boxes: Any | None = None) -> PosePrepared:
        """Boxes (given, else detected, else the whole image) and the crops of one photo. Thread-safe: the
        detector runs one image at a time (it shares the device with the pose network)."""
        path = Path(image) if isinstance(image, (str, os.PathLike)) else None
        img = as_image(image)
        detected = None
        if boxes is None and self.detector is not None:
            with self._detector_lock:
                detected = self.detect([img])[0]
        return self._prepare(img, boxes, detected, path)

    def _prepare(self, image: np.ndarray, given: Any | None, detected: Any | None,
                 path: Path | None = None) -> PosePrepared:
        boxes, source = self.choose_boxes(image, given, detected)
        crops = crop_people(image, boxes[:, :4], self.box_padding, self.input_size) if len(boxes) else None
        return PosePrepared(image.shape[:2], boxes, source, crops, path)

    @torch.inference_mode()
    def run(self, prepared: Sequence[PosePrepared]) -> list[np.ndarray | None]:
        """Heatmaps (N_i x K x H/4 x W/4) of every photo's people, all crops through the network together in
        batches of `batch_size` (None for a photo without people)."""
        counts = [0 if p.crops is None else len(p.crops) for p in prepared]
        if not sum(counts):
            return [None] * len(prepared)
        crops = np.concatenate([p.crops.crops for p in prepared if p.crops is not None])
        heat = np.concatenate([self.heatmaps(crops[s:s + self.batch_size])
                               for s in range(0, len(crops), self.batch_size)])
        out, start = [], 0
        for n in counts:
            out.append(heat[start:start + n] if n else None)
            start += n
        return out

    def finish(self, raw: np.ndarray | None, prepared: PosePrepared) -> PoseResult:
        """UDP decoding of one photo's heatmaps, keypoints mapped back to its pixels."""
        people = []
        if raw is not None and prepared.crops is not None:
            crops = prepared.crops
            kp, scores = heatmaps_to_keypoints(raw, crops.centers, crops.scales, self.input_size)
            for j in range(len(crops)):
                people.append(Person(crops.boxes[j].copy(), float(prepared.boxes[j, 4]), kp[j].astype(np.float32),
                                     scores[j].astype(np.float32)))
        return PoseResult(people, prepared.image_size, self.keypoint_set, prepared.box_source, prepared.path)

    # ------------------------------------------------------------------ pieces
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

    def heatmaps(self, crops: np.ndarray) -> np.ndarray:
        """(N, K, H/4, W/4) heatmaps for N x H x W x 3 uint8 RGB crops (flip-averaged when flip_test)."""
        x = normalize(crops, device=self.device, dtype=self.dtype)
        heat = self.network(x)
        if self.flip_test:
            flipped = self.network(x.flip(-1))
            heat = average_flip_heatmaps(heat, flipped, self.keypoint_set.flip_indices)
        return heat.float().cpu().numpy()
