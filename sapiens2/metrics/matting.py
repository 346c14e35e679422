"""Alpha-matting metrics: SAD, MSE, gradient and connectivity errors (Rhemann et al., CVPR 2009).

Conventions (those of the Deep Image Matting benchmark code, which most papers follow):
- alpha mattes are in [0, 1] (8-bit mattes are divided by 255 by the readers);
- errors are summed over the evaluated region: the trimap's unknown pixels (value 128) when a trimap is
  given, otherwise the whole image;
- `sad`, `grad` and `conn` are reported in thousands (the region sum divided by 1000);
- `mse` is the plain mean squared error over the region (papers often print it multiplied by 1000);
- gradient: magnitudes of first-order Gaussian-derivative filters (sigma 1.4, replicated borders);
  `grad` = sum of squared differences of the magnitudes / 1000;
- connectivity: thresholds 0.1, 0.2, ..., 1; for each pixel, l = the last threshold before the one at which
  it leaves the largest 4-connected component of (pred >= t) & (gt >= t) (1 if it never leaves); then
  phi = 1 - d * (d >= 0.15) with d = alpha - l, and `conn` = sum |phi_pred - phi_gt| / 1000.
Over a dataset the per-image values are averaged.
"""

from __future__ import annotations

import cv2
import numpy as np

UNKNOWN = 128
_GRAD_SIGMA = 1.4
_CONN_STEP = 0.1


def _region(gt: np.ndarray, trimap: np.ndarray | None) -> np.ndarray:
    if trimap is None:
        return np.ones(gt.shape, dtype=bool)
    trimap = np.asarray(trimap)
    if trimap.ndim == 3:
        trimap = trimap[..., 0]
    if trimap.shape != gt.shape:
        raise ValueError(f"trimap shape {trimap.shape} differs from the matte's {gt.shape}")
    return trimap == UNKNOWN


def _gaussian_derivative_kernels(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """1D Gaussian and its derivative, sized so the Gaussian tail below 1% of its peak is dropped."""
    half = int(np.ceil(sigma * np.sqrt(-2.0 * np.log(np.sqrt(2 * np.pi) * sigma * 1e-2))))
    x = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    dg = -x * g / sigma**2
    # Unit L2 norm of the 2D derivative kernel g(y) * dg(x).
    norm = np.sqrt(np.sum(np.outer(g, dg) ** 2))
    return g, dg / norm


def gradient_magnitude(alpha: np.ndarray, sigma: float = _GRAD_SIGMA) -> np.ndarray:
    g, dg = _gaussian_derivative_kernels(sigma)
    a = alpha.astype(np.float64)
    gx = cv2.sepFilter2D(a, cv2.CV_64F, dg, g, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.sepFilter2D(a, cv2.CV_64F, g, dg, borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx * gx + gy * gy)


def _largest_component(binary: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=4)
    if n <= 1:
        return np.zeros(binary.shape, dtype=bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == biggest


def connectivity_levels(pred: np.ndarray, gt: np.ndarray, step: float = _CONN_STEP) -> np.ndarray:
    """Per pixel, the highest threshold at which it is still connected to the main shared component."""
    levels = np.full(gt.shape, -1.0)
    n_steps = int(round(1.0 / step))
    for i in range(1, n_steps + 1):
        t = i * step
        omega = _largest_component((pred >= t) & (gt >= t))
        levels[(levels == -1) & ~omega] = (i - 1) * step
    levels[levels == -1] = 1.0
    return levels


def matting_errors(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray | None = None) -> dict[str, float]:
    """SAD, MSE, Grad, Conn of one matte (H x W, values in [0, 1])."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or gt.ndim != 2:
        raise ValueError(f"expected two H x W mattes of one shape, got {pred.shape} and {gt.shape}")
    if not (np.isfinite(pred).all() and np.isfinite(gt).all()):
        raise ValueError("mattes have NaN or infinite values")
    if pred.max(initial=0) > 1.0 + 1e-6 or gt.max(initial=0) > 1.0 + 1e-6:
        raise ValueError("alpha mattes must be in [0, 1]; divide 8-bit mattes by 255")
    region = _region(gt, trimap)
    n = int(np.count_nonzero(region))
    if n == 0:
        raise ValueError("the evaluated region is empty (no unknown pixels in the trimap)")
    diff = pred - gt
    grad = np.square(gradient_magnitude(pred) - gradient_magnitude(gt))
    levels = connectivity_levels(pred, gt)
    d_pred, d_gt = pred - levels, gt - levels
    phi_pred = 1.0 - d_pred * (d_pred >= 0.15)
    phi_gt = 1.0 - d_gt * (d_gt >= 0.15)
    return {
        "sad": float(np.abs(diff)[region].sum()) / 1000.0,
        "mse": float(np.square(diff)[region].mean()),
        "grad": float(grad[region].sum()) / 1000.0,
        "conn": float(np.abs(phi_pred - phi_gt)[region].sum()) / 1000.0,
    }


class MattingMetrics:
    """Averages per-image matting errors over a dataset."""

    def __init__(self) -> None:
        self.totals = {"sad": 0.0, "mse": 0.0, "grad": 0.0, "conn": 0.0}
        self.images = 0

    def update(self, pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray | None = None) -> None:
        for k, v in matting_errors(pred, gt, trimap).items():
            self.totals[k] += v
        self.images += 1

    def compute(self) -> dict[str, float]:
        if self.images == 0:
            raise ValueError("no images were evaluated")
        out = {k: v / self.images for k, v in self.totals.items()}
        out["images"] = self.images
        return out
