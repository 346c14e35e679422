"""Surface-normal metrics: angular error in degrees on valid pixels, pooled over the dataset.

Both maps are normalized per pixel first (norm clamped at 1e-6, so the prediction's length does not matter).
Following the reference:
- `normal_mae` is the mean angle, `normal_rmse` the root of the mean squared angle;
- `normal_median_deg` comes from a histogram of 0.5 degree bins over [0, 180): it is the centre of the bin in
  which the cumulative count reaches half the pixels, so it is within 0.25 degree of the exact median and
  needs no per-pixel storage;
- `within_T_deg` is the percentage of pixels with error strictly below T, for T in 5, 11.25, 22.5, 30.
Valid pixels: mask > 0 where a mask is given, and a finite, non-zero GT normal.
"""

from __future__ import annotations

import numpy as np

THRESHOLDS_DEG = (5.0, 11.25, 22.5, 30.0)
_BIN_DEG = 0.5
_NUM_BINS = int(180 / _BIN_DEG)


def threshold_key(t: float) -> str:
    """`within_11_25_deg` style names, as the reference logs them."""
    return "within_" + f"{t:g}".replace(".", "_") + ("_0" if float(t).is_integer() else "") + "_deg"


def _unit(v: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), eps)


def angular_error_deg(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Angle in degrees between (..., 3) vectors, each normalized first."""
    cos = np.sum(_unit(np.asarray(pred, np.float64)) * _unit(np.asarray(gt, np.float64)), axis=-1)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def check_dense_pair(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None, channels: int | None) -> np.ndarray:
    """Validate shapes and return the boolean mask (all ones when none is given)."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from GT shape {gt.shape}")
    if channels is not None and (gt.ndim != 3 or gt.shape[-1] != channels):
        raise ValueError(f"expected H x W x {channels} maps, got shape {gt.shape}")
    if mask is None:
        return np.ones(gt.shape[:2], dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != gt.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} differs from the map's H x W {gt.shape[:2]}")
    return mask > 0


class NormalMetrics:
    """Accumulates angular-error statistics over images."""

    def __init__(self, thresholds_deg: tuple[float, ...] = THRESHOLDS_DEG) -> None:
        self.thresholds = tuple(thresholds_deg)
        self.count = 0
        self.sum = 0.0
        self.sum_sq = 0.0
        self.below = np.zeros(len(self.thresholds), dtype=np.int64)
        self.histogram = np.zeros(_NUM_BINS, dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Add one image: H x W x 3 prediction and GT, optional H x W mask (> 0 = valid)."""
        pred, gt = np.asarray(pred), np.asarray(gt)
        valid = check_dense_pair(pred, gt, mask, 3)
        valid &= np.isfinite(gt).all(axis=-1) & (np.abs(gt).sum(axis=-1) > 0)
        p, g = pred[valid], gt[valid]
        if not np.isfinite(p).all():
            raise ValueError("prediction has NaN or infinite values on valid pixels")
        err = angular_error_deg(p, g)
        self.count += err.size
        self.sum += float(err.sum())
        self.sum_sq += float(np.square(err).sum())
        self.below += np.array([np.count_nonzero(err < t) for t in self.thresholds], dtype=np.int64)
        bins = np.minimum((err / _BIN_DEG).astype(np.int64), _NUM_BINS - 1)
        self.histogram += np.bincount(bins, minlength=_NUM_BINS)

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no valid pixels: every mask was empty")
        half = np.searchsorted(np.cumsum(self.histogram), self.count / 2.0, side="left")
        out = {
            "normal_mae": self.sum / self.count,
            "normal_median_deg": (half + 0.5) * _BIN_DEG,
            "normal_rmse": float(np.sqrt(self.sum_sq / self.count)),
        }
        for t, n in zip(self.thresholds, self.below, strict=True):
            out[threshold_key(t)] = 100.0 * float(n) / self.count
        out["pixels"] = self.count
        return out


def normal_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """The metrics of a single image (see `NormalMetrics` for many)."""
    acc = NormalMetrics()
    acc.update(pred, gt, mask)
    return acc.compute()
