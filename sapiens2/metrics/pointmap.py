"""Pointmap metrics: 3D point errors and the angle between normals derived from the points.

The reference compares the predicted canonical pointmap with the canonical GT directly: no alignment, and the
predicted scale is ignored. That is the default here. `align="scale"` or `align="scale_shift"` fits, per image
and over the mask, the least-squares s (and t, a 3D shift) mapping the prediction onto the GT before scoring;
the chosen alignment is reported under "alignment".

Over mask pixels, pooled over the dataset:
- `l2_mean`: mean Euclidean distance; `rmse`: root of the mean squared Euclidean distance;
- `x_mae`, `y_mae`, `z_mae`: mean absolute error per axis;
- `within_05_cm`, `within_10_cm`, `within_20_cm`: fraction of pixels closer than 0.05 / 0.10 / 0.20 units
  (metres for metric maps);
- normals: for each map, the cross product of its Sobel (5 x 5) derivatives along x and y, computed on the
  whole map (OpenCV's reflected border), normalized; `normal_mae`, `normal_rmse` in degrees and
  `within_T_deg` as fractions (not percent, as in the reference). Mask pixels where the GT normal is undefined
  (zero or parallel tangents, e.g. a flat border row) are left out of the normal statistics only. (The
  reference adds 1e-6 to the norm instead, which shortens small normals and so biases angles up, up to 90
  degrees between identical near-degenerate normals.) The GT map is used as given; the reference's GT holds
  zeros outside the mask, which bends GT normals along the mask border.
"""

from __future__ import annotations

import cv2
import numpy as np

from .normals import THRESHOLDS_DEG, check_dense_pair, threshold_key

DISTANCE_THRESHOLDS = {"within_05_cm": 0.05, "within_10_cm": 0.10, "within_20_cm": 0.20}
ALIGNMENTS = ("none", "scale", "scale_shift")


def normals_from_points(points: np.ndarray) -> np.ndarray:
    """Unit normals (H x W x 3) of a pointmap from 5 x 5 Sobel derivatives of each channel."""
    return _normals(points)[0]


def _normals(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals, and where they are defined: the two tangents are neither zero nor parallel."""
    points = np.asarray(points, dtype=np.float64)
    dx = np.stack([cv2.Sobel(points[..., c], cv2.CV_64F, 1, 0, ksize=5) for c in range(3)], axis=-1)
    dy = np.stack([cv2.Sobel(points[..., c], cv2.CV_64F, 0, 1, ksize=5) for c in range(3)], axis=-1)
    n = np.cross(dx, dy)
    length = np.linalg.norm(n, axis=-1)
    defined = (length > 1e-9 * np.linalg.norm(dx, axis=-1) * np.linalg.norm(dy, axis=-1)) & (length > 0)
    return n / np.maximum(length, 1e-300)[..., None], defined


def align_points(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, mode: str) -> tuple[np.ndarray, float, np.ndarray]:
    """Least-squares s (and shift t) so that s * pred + t best fits gt on the mask; returns (aligned, s, t)."""
    if mode not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {mode!r}")
    shift = np.zeros(3)
    if mode == "none":
        return pred, 1.0, shift
    p, g = pred[mask].astype(np.float64), gt[mask].astype(np.float64)
    if mode == "scale_shift":
        p_mean, g_mean = p.mean(axis=0), g.mean(axis=0)
        p, g = p - p_mean, g - g_mean
    denom = float(np.sum(p * p))
    scale = float(np.sum(p * g)) / denom if denom > 0 else 1.0
    if mode == "scale_shift":
        shift = g_mean - scale * p_mean
    return pred * scale + shift, scale, shift


class PointmapMetrics:
    """Accumulates pointmap errors over images."""

    def __init__(self, align: str = "none", thresholds_deg: tuple[float, ...] = THRESHOLDS_DEG) -> None:
        if align not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {align!r}")
        self.align = align
        self.thresholds = tuple(thresholds_deg)
        self.count = 0
        self.normal_count = 0
        self.sums = {"l2": 0.0, "sq": 0.0, "x": 0.0, "y": 0.0, "z": 0.0, "ang": 0.0, "ang_sq": 0.0}
        self.close = dict.fromkeys(DISTANCE_THRESHOLDS, 0)
        self.below = np.zeros(len(self.thresholds), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Add one image: H x W x 3 predicted and GT points, optional H x W mask (> 0 = valid)."""
        pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
        valid = check_dense_pair(pred, gt, mask, 3)
        valid &= np.isfinite(gt).all(axis=-1)
        if not np.isfinite(pred[valid]).all():
            raise ValueError("prediction has NaN or infinite values on valid pixels")
        if not valid.any():
            return
        pred, _, _ = align_points(pred, gt, valid, self.align)
        d = pred[valid] - gt[valid]
        dist = np.linalg.norm(d, axis=-1)
        self.count += dist.size
        self.sums["l2"] += float(dist.sum())
        self.sums["sq"] += float(np.square(dist).sum())
        for axis, name in enumerate("xyz"):
            self.sums[name] += float(np.abs(d[:, axis]).sum())
        for key, t in DISTANCE_THRESHOLDS.items():
            self.close[key] += int(np.count_nonzero(dist < t))
        n_pred, _ = _normals(np.nan_to_num(pred))
        n_gt, defined = _normals(np.nan_to_num(gt))
        scored = valid & defined
        cos = np.clip(np.sum(n_pred[scored] * n_gt[scored], axis=-1), -1.0, 1.0)
        ang = np.degrees(np.arccos(cos))
        self.normal_count += ang.size
        self.sums["ang"] += float(ang.sum())
        self.sums["ang_sq"] += float(np.square(ang).sum())
        self.below += np.array([np.count_nonzero(ang < t) for t in self.thresholds], dtype=np.int64)

    def compute(self) -> dict[str, float | str]:
        if self.count == 0:
            raise ValueError("no valid pixels: every mask was empty")
        n = self.count
        out: dict[str, float | str] = {
            "l2_mean": self.sums["l2"] / n,
            "x_mae": self.sums["x"] / n,
            "y_mae": self.sums["y"] / n,
            "z_mae": self.sums["z"] / n,
            "rmse": float(np.sqrt(self.sums["sq"] / n)),
        }
        out.update({k: v / n for k, v in self.close.items()})
        nn = self.normal_count
        out["normal_mae"] = self.sums["ang"] / nn if nn else float("nan")
        out["normal_rmse"] = float(np.sqrt(self.sums["ang_sq"] / nn)) if nn else float("nan")
        out.update({threshold_key(t): float(c) / nn if nn else float("nan")
                    for t, c in zip(self.thresholds, self.below, strict=True)})
        out["alignment"] = self.align
        out["pixels"] = n
        return out


def pointmap_metrics(
    pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, align: str = "none"
) -> dict[str, float | str]:
    """The metrics of a single image (see `PointmapMetrics` for many)."""
    acc = PointmapMetrics(align)
    acc.update(pred, gt, mask)
    return acc.compute()
