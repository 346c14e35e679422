"""Validation of each task: an evaluator takes (network output, batch) per batch and gives named metrics at
the end, computed with `sapiens2.metrics` exactly as `sapiens2 eval` computes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from sapiens2.keypoints.topdown import crop_to_image
from sapiens2.keypoints.udp import udp_decode
from sapiens2.metrics.pose import KeypointAnnotations, KeypointDetections, keypoint_ap
from sapiens2.metrics.segmentation import SegmentationMetrics
from sapiens2.train.losses import match_size


def _flat(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.floating, np.integer))}


def whole_target(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> tuple:
    """albedo, depth: the metrics take the prediction, the target and the mask as they are."""
    return pred, gt, mask


def target_inside_mask(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> tuple:
    """normal, pointmap: the target zeroed outside the mask (it holds fill values there)."""
    return pred, np.where(mask[..., None], gt, 0), mask


def alpha_only(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> tuple:
    """matting: the alpha channel (head channel 3) against the alpha target, over the whole image."""
    return pred[..., 3], gt[..., 0]


class DenseEvaluator:
    """A dense task at the network resolution, over each sample's mask (samples with an empty mask skipped).

    `metrics` is a `sapiens2.metrics` accumulator; `select(pred, gt, mask)` (H x W x C arrays) gives the
    arguments of its `update`.
    """

    def __init__(self, metrics: Any, select: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple]) -> None:
        self.metrics = metrics
        self.select = select

    def update(self, out: Any, batch: dict) -> None:
        pred = out[0] if isinstance(out, tuple) else out
        pred = match_size(pred.float(), batch["target"]).cpu().numpy().transpose(0, 2, 3, 1)  # B x H x W x C
        gt = batch["target"].cpu().numpy().transpose(0, 2, 3, 1)
        mask = batch["mask"].cpu().numpy()
        for p, g, m in zip(pred, gt, mask):
            if m.any():
                self.metrics.update(*self.select(p, g, m))

    def compute(self) -> dict[str, float]:
        return _flat(self.metrics.compute())


class SegEvaluator:
    def __init__(self, num_classes: int) -> None:
        self.metrics = SegmentationMetrics(num_classes)

    def update(self, out: torch.Tensor, batch: dict) -> None:
        labels = batch["label"]
        pred = match_size(out.float(), labels).argmax(1).cpu().numpy()
        for p, g in zip(pred, labels.cpu().numpy()):
            self.metrics.update(p, g)

    def compute(self) -> dict[str, float]:
        return _flat(self.metrics.compute())


class PoseEvaluator:
    """GT-box crops -> UDP decode -> image coordinates -> OKS AP over the validation people (no OKS-NMS:
    every crop comes from a distinct GT box)."""

    def __init__(self, source: Any, input_size: tuple[int, int]) -> None:
        self.source = source
        self.h, self.w = input_size
        self.rows: list[tuple[int, np.ndarray, float]] = []

    def update(self, out: torch.Tensor, batch: dict) -> None:
        hm = out.float().cpu().numpy()
        kp, scores = udp_decode(hm, input_size=(self.h, self.w))
        kp = crop_to_image(kp, batch["center"].numpy(), batch["scale"].numpy(), (self.h, self.w))
        for i in range(len(hm)):
            s = scores[i]
            good = s > 0.2
            score = float(s[good].mean()) if good.any() else 0.0
            self.rows.append((int(batch["image_id"][i]), np.concatenate([kp[i], s[:, None]], 1), score))

    def compute(self) -> dict[str, float]:
        gts = self.source.gt
        gt = KeypointAnnotations(
            np.array([g["image_id"] for g in gts]), np.stack([g["keypoints"] for g in gts]),
            np.array([g["area"] for g in gts]), np.array([g["bbox"] for g in gts], np.float64),
            np.array([g["iscrowd"] for g in gts]), np.array(self.source.all_image_ids))
        det = KeypointDetections(np.array([r[0] for r in self.rows]), np.stack([r[1] for r in self.rows]),
                                 np.array([r[2] for r in self.rows]))
        res = keypoint_ap(gt, det, self.source.sigmas())
        return {k: float(v) for k, v in res.items()}
