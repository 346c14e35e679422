"""RTMDet's inference pre- and post-processing, as mmdet runs it for the official person detector.

Pre: keep-ratio resize so the image fits a square canvas (enlarging small images too), bilinear; paste at
the top-left of a canvas filled with 114; normalize in BGR order with mmdet's ImageNet mean/std.

Post: per stride, sigmoid scores above `score_thr`, at most `nms_pre` best points; points sit at the
top-left corner of their cell (offset 0); boxes = point -/+ distances, clipped to the padded canvas; mapped
back to the original image by the real x/y resize factors (no clip there); empty boxes dropped; optional
NMS; at most `max_per_img`. The Sapiens demo then keeps scores above 0.3 and runs a second, pixel-inclusive
NMS at IoU 0.3 (`filter_people`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from sapiens2.detect.boxes import batched_nms, clip_boxes, distance_to_box, nms

# Both in B, G, R order: the official weights see BGR images (mmdet's `bgr_to_rgb=False`).
BGR_MEAN = (103.53, 116.28, 123.675)
BGR_STD = (57.375, 57.12, 58.395)
PAD_VALUE = 114


@dataclass(frozen=True)
class DetectionSettings:
    """mmdet's `test_cfg` plus the input size. Defaults: the Sapiens2 pose demo's detector config."""

    input_size: int = 640
    score_thr: float = 0.05
    nms_pre: int = 1000
    iou_threshold: float | None = None  # None: mmdet sorts by score and suppresses nothing
    max_per_img: int = 100
    min_bbox_size: float = 0.0


# What the Sapiens2 demo's detector config sets (`nms=None`: its own NMS follows in `filter_people`).
SAPIENS2_SETTINGS = DetectionSettings()
# mmdet's stock RTMDet test settings (what the golden fixtures were made with, at input size 320).
MMDET_TEST_SETTINGS = DetectionSettings(score_thr=0.001, nms_pre=30000, iou_threshold=0.65, max_per_img=300)


@dataclass(frozen=True)
class Letterbox:
    """Where an image of `orig_hw` went on the square canvas: resized to `resized_hw`, at the top-left."""

    orig_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    canvas: int

    @property
    def scale_xy(self) -> tuple[float, float]:
        """The real per-axis factors after rounding the new size (they can differ slightly)."""
        return self.resized_hw[1] / self.orig_hw[1], self.resized_hw[0] / self.orig_hw[0]

    def to_original(self, boxes: torch.Tensor) -> torch.Tensor:
        """Canvas-pixel (x1, y1, x2, y2) boxes -> original-image pixels; no clipping (as mmdet)."""
        (h, w), (rh, rw) = self.orig_hw, self.resized_hw
        return _scale(boxes, w / rw, h / rh)

    def to_canvas(self, boxes: torch.Tensor) -> torch.Tensor:
        """Original-image boxes -> canvas pixels."""
        (h, w), (rh, rw) = self.orig_hw, self.resized_hw
        return _scale(boxes, rw / w, rh / h)


def _scale(boxes: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    # The product is taken in float64 and rounded once to the input dtype: the resized image's corners map
    # exactly onto the original's, and a float32 box sent to the canvas in float64 and back is unchanged.
    # (mmdet multiplies by a float32 reciprocal instead; the two differ by at most one float32 ulp.)
    f = torch.tensor([sx, sy, sx, sy], dtype=torch.float64, device=boxes.device)
    return (boxes.to(torch.float64) * f).to(boxes.dtype)


def letterbox(image: np.ndarray, size: int = 640) -> tuple[np.ndarray, Letterbox]:
    """Resize an H x W x C uint8 image keeping its aspect ratio to fit size x size, pad with 114.

    The factor is size / long side (small images are enlarged); each side is rounded half up.
    """
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x C uint8 image, got shape {image.shape} dtype {image.dtype}")
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    factor = min(size / max(h, w), size / min(h, w))
    new_w, new_h = int(w * factor + 0.5), int(h * factor + 0.5)
    resized = cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if resized.ndim == 2:  # cv2 drops a trailing channel axis of size 1
        resized = resized[:, :, None]
    canvas = np.full((size, size, image.shape[2]), PAD_VALUE, dtype=np.uint8)
    canvas[:new_h, :new_w] = resized
    return canvas, Letterbox((h, w), (new_h, new_w), size)


def normalize_bgr(canvases: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """N x H x W x 3 uint8 BGR canvases -> N x 3 x H x W float32, (x - mean) / std per BGR channel."""
    # contiguous NCHW, as the reference's detector receives it (a permuted view convolves with other rounding)
    x = torch.as_tensor(canvases, device=device).permute(0, 3, 1, 2).contiguous().float()
    mean = torch.tensor(BGR_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(BGR_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def grid_points(height: int, width: int, stride: int, device: torch.device | None = None) -> torch.Tensor:
    """(height * width, 2) points (col * stride, row * stride), row-major: each cell's top-left corner."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device) * stride,
                            torch.arange(width, device=device) * stride, indexing="ij")
    return torch.stack((xs.reshape(-1), ys.reshape(-1)), dim=1).float()


@dataclass
class Detections:
    """One image's detections: (N, 4) xyxy boxes, (N,) scores, (N,) integer labels."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor

    def __getitem__(self, index: torch.Tensor | slice) -> Detections:
        return Detections(self.boxes[index], self.scores[index], self.labels[index])

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def as_array(self) -> np.ndarray:
        """(N, 5) float32 [x1, y1, x2, y2, score]."""
        return torch.cat((self.boxes, self.scores[:, None]), dim=1).float().cpu().numpy()


def decode(cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor], strides: tuple[int, ...],
           canvas_hw: tuple[int, int], score_thr: float, nms_pre: int) -> list[Detections]:
    """Raw head outputs (per stride: N x C x h x w logits, N x 4 x h x w distances) -> canvas-frame boxes.

    Per image and level: candidates (point, class) with sigmoid score > score_thr, the best `nms_pre` of
    them; then all levels together are turned into boxes clipped to the canvas. Nothing is suppressed here.
    """
    results = []
    for n in range(cls_scores[0].shape[0]):
        boxes, scores, labels = [], [], []
        for logits, dist, stride in zip(cls_scores, bbox_preds, strides):
            c, h, w = logits.shape[1:]
            prob = logits[n].permute(1, 2, 0).reshape(-1, c).sigmoid()
            dist = dist[n].permute(1, 2, 0).reshape(-1, 4)
            cand = torch.nonzero(prob > score_thr)  # (K, 2): point index, class, in row-major order
            s = prob[cand[:, 0], cand[:, 1]]
            top = torch.sort(s, descending=True, stable=True).indices[:nms_pre]
            point_idx, label = cand[top, 0], cand[top, 1]
            points = grid_points(h, w, stride, logits.device)[point_idx]
            boxes.append(distance_to_box(points, dist[point_idx]))
            scores.append(s[top])
            labels.append(label)
        det = Detections(torch.cat(boxes), torch.cat(scores), torch.cat(labels))
        det.boxes = clip_boxes(det.boxes, *canvas_hw)
        results.append(det)
    return results


def finish(det: Detections, settings: DetectionSettings, box: Letterbox | None) -> Detections:
    """mmdet's last steps on one image: back to original pixels (if `box`), drop empty boxes, NMS, cap."""
    if box is not None:
        det = Detections(box.to_original(det.boxes), det.scores, det.labels)
    if settings.min_bbox_size >= 0:
        wh = det.boxes[:, 2:] - det.boxes[:, :2]
        det = det[(wh > settings.min_bbox_size).all(dim=1)]
    keep = batched_nms(det.boxes, det.scores, det.labels, settings.iou_threshold)
    return det[keep[: settings.max_per_img]]


def filter_people(det: Detections, score_thr: float = 0.3, iou_threshold: float = 0.3,
                  person_label: int = 0) -> Detections:
    """The Sapiens demo's filter: person label, score > score_thr, then pixel-inclusive NMS (areas +1)."""
    det = det[(det.labels == person_label) & (det.scores > score_thr)]
    return det[nms(det.boxes, det.scores, iou_threshold, offset=1.0)]


