"""`PersonDetector`: images in, person boxes in original image pixels out (the Sapiens pose demo's detector).

The official weights are RTMDet-m trained for one class (person); `from_file` loads them from a local
`.pth` or `.safetensors` (resolving the hub file is the hub module's job: repo `DETECTOR_HUB_REPO`, file
`DETECTOR_FILENAME`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from sapiens2.detect.checkpoint import load_detector
from sapiens2.detect.pipeline import (
    SAPIENS2_SETTINGS,
    Detections,
    DetectionSettings,
    decode,
    filter_people,
    finish,
    letterbox,
    normalize_bgr,
)
from sapiens2.detect.rtmdet import RTMDet, RTMDetConfig
from sapiens2.io.images import as_image
from sapiens2.keypoints.topdown import whole_image_box
from sapiens2.zoo import DETECTOR

DETECTOR_HUB_REPO = DETECTOR.repo
DETECTOR_FILENAME = DETECTOR.filename  # the hub's name; the local layout's is DETECTOR.local_relpath


class PersonDetector:
    """RTMDet person detector with mmdet's pre/post-processing and the Sapiens demo's box filter.

    Call it on one RGB image (H x W x 3 uint8 numpy array, channels R, G, B, as PIL and most readers give)
    or a list of them; arrays straight from `cv2.imread` are BGR: pass `channel_order="BGR"`. Each image
    gives an (N, 5) float32 array [x1, y1, x2, y2, score] in its own pixel coordinates, best score first.

    Steps: letterbox to `settings.input_size` (640) and normalize as mmdet does; one batched forward;
    decode with `settings` (the Sapiens2 demo's: score > 0.05, best 1000 per level, no NMS, top 100); then
    keep scores > `score_threshold` (0.3) and run pixel-inclusive NMS at `nms_threshold` (0.3).
    With `fallback_full_image=True` an image without any person gets one box [0, 0, W - 1, H - 1] with
    score 1, as the Sapiens pose demo does; by default it gets an empty (0, 5) array.
    """

    def __init__(self, model: RTMDet, settings: DetectionSettings = SAPIENS2_SETTINGS,
                 score_threshold: float = 0.3, nms_threshold: float = 0.3, fallback_full_image: bool = False,
                 batch_size: int = 8) -> None:
        self.model = model.eval()
        self.settings = settings
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.fallback_full_image = fallback_full_image
        self.batch_size = batch_size

    @classmethod
    def from_file(cls, path: str | os.PathLike, device: torch.device | str | None = None,
                  config: RTMDetConfig | None = None, allow_code: bool = False, **kwargs: object) -> PersonDetector:
        """Load weights from a local `.pth` (read safely) or `.safetensors`; the architecture is read from
        the file unless `config` is given. A TorchScript / torch.export file is refused unless `allow_code`.
        Extra keyword arguments go to the constructor."""
        return cls(load_detector(path, config, device, allow_code), **kwargs)  # type: ignore[arg-type]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def with_settings(self, **changes: object) -> PersonDetector:
        """A detector sharing this model, with some `DetectionSettings` fields changed."""
        settings = replace(self.settings, **changes)  # type: ignore[arg-type]
        return PersonDetector(self.model, settings, self.score_threshold, self.nms_threshold,
                              self.fallback_full_image, self.batch_size)

    @torch.inference_mode()
    def detect_raw(self, images: Sequence[np.ndarray], channel_order: str = "RGB") -> list[Detections]:
        """mmdet's detections (before the Sapiens filter), in original image pixels, one per image."""
        order = channel_order.upper()
        if order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
        out: list[Detections] = []
        size = self.settings.input_size
        dtype = next(self.model.parameters()).dtype
        for start in range(0, len(images), self.batch_size):
            chunk = [as_image(im) for im in images[start:start + self.batch_size]]
            placed = [letterbox(im[:, :, ::-1] if order == "RGB" else im, size) for im in chunk]
            x = normalize_bgr(np.stack([canvas for canvas, _ in placed]), self.device).to(dtype)
            cls_scores, bbox_preds = self.model(x)
            decoded = decode([c.float() for c in cls_scores], [b.float() for b in bbox_preds],
                             self.model.strides, (size, size), self.settings.score_thr, self.settings.nms_pre)
            out += [finish(det, self.settings, box) for det, (_, box) in zip(decoded, placed)]
        return out

    def __call__(self, images: np.ndarray | Sequence[np.ndarray],
                 channel_order: str = "RGB") -> np.ndarray | list[np.ndarray]:
        single = isinstance(images, np.ndarray) and images.ndim == 3
        batch = [images] if single else list(images)
        results = []
        for image, det in zip(batch, self.detect_raw(batch, channel_order)):
            people = filter_people(det, self.score_threshold, self.nms_threshold).as_array()
            if len(people) == 0 and self.fallback_full_image:
                people = whole_image_box(*image.shape[:2])
            results.append(people)
        return results[0] if single else results
