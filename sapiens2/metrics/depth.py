"""Relative-depth metrics (Sapiens v1 depth): the standard monocular-depth errors after alignment.

A relative depth map has no metric scale, so each prediction is first fitted to its GT over the valid pixels:
- "median" (default): scaled so the medians agree (the usual protocol for scale-ambiguous depth);
- "scale_shift": least-squares scale and shift;
- "none": compared as it is.
Then, per image: AbsRel mean(|p - g| / g), SqRel mean((p - g)^2 / g), RMSE, RMSE of the logs, SILog
(100 x sqrt(mean d^2 - (mean d)^2), d = log p - log g) and the fractions with max(p / g, g / p) below 1.25,
1.25^2, 1.25^3. The reported values are means over images. Valid pixels: mask > 0 where a mask is given,
and a finite GT above zero; aligned predictions are clamped at 1e-6 before the ratios and logs.
"""

from __future__ import annotations

import numpy as np

DEPTH_ALIGNMENTS = ("median", "scale_shift", "none")
_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "silog", "delta1", "delta2", "delta3")
_EPS = 1e-6


def align_depth(pred: np.ndarray, gt: np.ndarray, mode: str) -> np.ndarray:
    """`pred` (valid pixels, 1-D) fitted to `gt` by `mode` (see the module docstring)."""
    if mode == "none":
        return pred
    if mode == "median":
        m = float(np.median(pred))
        return pred * (float(np.median(gt)) / m) if abs(m) > _EPS else pred
    if mode == "scale_shift":
        a = np.stack([pred, np.ones_like(pred)], axis=1)
        (scale, shift), *_ = np.linalg.lstsq(a, gt, rcond=None)
        return pred * scale + shift
    raise ValueError(f"alignment must be one of {DEPTH_ALIGNMENTS}, got {mode!r}")


def depth_errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """The errors of one image's valid pixels (1-D arrays, already aligned)."""
    p = np.maximum(pred, _EPS)
    diff = p - gt
    d = np.log(p) - np.log(gt)
    ratio = np.maximum(p / gt, gt / p)
    return {
        "abs_rel": float(np.mean(np.abs(diff) / gt)),
        "sq_rel": float(np.mean(diff**2 / gt)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean(d**2))),
        "silog": float(100 * np.sqrt(max(np.mean(d**2) - np.mean(d) ** 2, 0.0))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
    }


class DepthMetrics:
    """Accumulates per-image depth errors; `compute` averages them over the images that had valid pixels."""

    def __init__(self, align: str = "median") -> None:
        if align not in DEPTH_ALIGNMENTS:
            raise ValueError(f"alignment must be one of {DEPTH_ALIGNMENTS}, got {align!r}")
        self.align = align
        self.images = 0
        self.pixels = 0
        self.sums = dict.fromkeys(_NAMES, 0.0)

    def update(self, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Add one image: H x W (or H x W x 1) predicted and GT depth, optional H x W mask (> 0 = valid)."""
        pred, gt = _plane(pred, "prediction"), _plane(gt, "GT")
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from GT shape {gt.shape}")
        valid = np.isfinite(gt) & (gt > 0)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.ndim == 3:
                mask = mask[..., 0]
            if mask.shape != gt.shape:
                raise ValueError(f"mask shape {mask.shape} differs from the map's H x W {gt.shape}")
            valid &= mask > 0
        if not valid.any():
            return
        p = pred[valid]
        if not np.isfinite(p).all():
            raise ValueError("prediction has NaN or infinite values on valid pixels")
        errors = depth_errors(align_depth(p, gt[valid], self.align), gt[valid])
        for k, v in errors.items():
            self.sums[k] += v
        self.images += 1
        self.pixels += int(valid.sum())

    def compute(self) -> dict[str, float | str | int]:
        if self.images == 0:
            raise ValueError("no valid pixels: every mask was empty or every GT depth was <= 0")
        out: dict[str, float | str | int] = {k: v / self.images for k, v in self.sums.items()}
        out["alignment"] = self.align
        out["pixels"] = self.pixels
        return out


def _plane(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 2:
        raise ValueError(f"the {what} depth must be H x W, got shape {x.shape}")
    return x
