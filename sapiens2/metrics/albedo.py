"""Albedo metrics on the mask: MAE, RMSE, PSNR, masked SSIM and gradient L1, pooled over the dataset.

Following the reference (the prediction is not clamped):
- `mae`: mean over mask pixels of the channel-mean |pred - gt|;
- `rmse`: sqrt of the pooled mean of the channel-mean squared error; `psnr` = 10 log10(R^2 / that MSE);
- `ssim`: SSIM with an 11 x 11 Gaussian window (sigma 1.5), whose local means and (co)variances are
  mask-weighted averages (convolve mask * x, divide by the convolved mask, zero outside the image), so
  background never leaks in; averaged over channels and over pixels where the convolved mask exceeds 0.5;
- `grad_l1`: mean channel-mean |difference of forward differences| over horizontal and vertical neighbour
  pairs whose two pixels are both in the mask.
R, the data range, is 1 for maps in [0, 1]; by default it is chosen like the reference: 255 if the first GT's
maximum exceeds 1.5, else 1.
"""

from __future__ import annotations

import cv2
import numpy as np

from .normals import check_dense_pair

_SSIM_SIZE = 11
_SSIM_SIGMA = 1.5


def _gaussian_window() -> np.ndarray:
    x = np.arange(_SSIM_SIZE) - _SSIM_SIZE // 2
    g = np.exp(-(x**2) / (2 * _SSIM_SIGMA**2))
    return g / g.sum()


def _blur(x: np.ndarray) -> np.ndarray:
    """Gaussian-window average with zeros outside the image (a 'same' zero-padded convolution)."""
    g = _gaussian_window()
    return cv2.sepFilter2D(x, cv2.CV_64F, g, g, borderType=cv2.BORDER_CONSTANT)


def masked_ssim(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, data_range: float) -> tuple[float, int]:
    """Sum of the per-pixel masked SSIM (channel mean) and the number of pixels counted."""
    m = mask.astype(np.float64)
    wm = _blur(m)
    counted = wm > 0.5
    if not counted.any():
        return 0.0, 0
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    safe = np.where(wm > 0, wm, 1.0)
    total = np.zeros(m.shape)
    for c in range(gt.shape[-1]):
        x, y = pred[..., c].astype(np.float64), gt[..., c].astype(np.float64)
        mx, my = _blur(m * x) / safe, _blur(m * y) / safe
        vx = _blur(m * x * x) / safe - mx * mx
        vy = _blur(m * y * y) / safe - my * my
        cxy = _blur(m * x * y) / safe - mx * my
        total += ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    ssim = total / gt.shape[-1]
    return float(ssim[counted].sum()), int(np.count_nonzero(counted))


class AlbedoMetrics:
    """Accumulates albedo errors over images."""

    def __init__(self, data_range: float | None = None) -> None:
        self.data_range = data_range
        self.count = 0
        self.abs_sum = 0.0
        self.sq_sum = 0.0
        self.ssim_sum = 0.0
        self.ssim_count = 0
        self.grad_sum = 0.0
        self.grad_count = 0

    def update(self, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Add one image: H x W x C prediction and GT (same range), optional H x W mask (> 0 = valid)."""
        pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
        if gt.ndim != 3:
            raise ValueError(f"expected H x W x C albedo maps, got shape {gt.shape}")
        valid = check_dense_pair(pred, gt, mask, None)
        if not np.isfinite(pred[valid]).all() or not np.isfinite(gt[valid]).all():
            raise ValueError("albedo maps have NaN or infinite values on valid pixels")
        if self.data_range is None:
            self.data_range = 255.0 if gt.max(initial=0.0) > 1.5 else 1.0
        diff = pred - gt
        self.count += int(np.count_nonzero(valid))
        self.abs_sum += float(np.abs(diff[valid]).mean(axis=-1).sum())
        self.sq_sum += float(np.square(diff[valid]).mean(axis=-1).sum())
        s, n = masked_ssim(pred, gt, valid, self.data_range)
        self.ssim_sum += s
        self.ssim_count += n
        for axis in (0, 1):
            both = _pairs(valid, axis)
            step = np.abs(np.diff(diff, axis=axis)).mean(axis=-1)
            self.grad_sum += float(step[both].sum())
            self.grad_count += int(np.count_nonzero(both))

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no valid pixels: every mask was empty")
        mse = self.sq_sum / self.count
        r = float(self.data_range)
        return {
            "mae": self.abs_sum / self.count,
            "rmse": float(np.sqrt(mse)),
            "psnr": float(10.0 * np.log10(r * r / mse)) if mse > 0 else float("inf"),
            "ssim": self.ssim_sum / self.ssim_count if self.ssim_count else float("nan"),
            "grad_l1": self.grad_sum / self.grad_count if self.grad_count else float("nan"),
            "data_range": r,
            "pixels": self.count,
        }


def _pairs(valid: np.ndarray, axis: int) -> np.ndarray:
    """Neighbour pairs along `axis` whose two pixels are both valid."""
    return valid[1:, :] & valid[:-1, :] if axis == 0 else valid[:, 1:] & valid[:, :-1]


def albedo_metrics(
    pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, data_range: float | None = None
) -> dict[str, float]:
    """The metrics of a single image (see `AlbedoMetrics` for many)."""
    acc = AlbedoMetrics(data_range)
    acc.update(pred, gt, mask)
    return acc.compute()
