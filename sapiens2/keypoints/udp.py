"""UDP heatmap codec (Unbiased Data Processing, https://arxiv.org/abs/1911.07524).

This is the codec of the Sapiens2 pose models: network input 768x1024 (w x h), heatmaps
192x256, unnormalised Gaussian targets with sigma 6, and a DARK-style sub-pixel
refinement on decode. It reproduces the reference codec to float rounding (see
``tests/keypoints/test_udp_fixture.py``).

Coordinates follow the UDP convention: pixel centres sit on integers and the first and
last pixel centres of the input map to the first and last heatmap pixel centres, so the
scale between crop and heatmap is ``(input - 1) / (heatmap - 1)`` per axis.

Encode (training target), per keypoint with visibility >= 0.5:
  ``k = p * (heatmap - 1) / (input - 1)``; integer centre ``mu = int(k + 0.5)`` (truncated
  towards zero, like the reference; it differs from ``floor`` only for ``k < -0.5``);
  a (6 sigma + 1)^2 window around ``mu`` receives ``exp(-|q - k|^2 / (2 sigma^2))``
  (peak 1 at the exact sub-pixel location), merged into the channel by element-wise max.
  A keypoint whose window misses the map entirely gets weight 0.

Decode, per channel:
  1. argmax -> integer peak; score = raw maximum; a maximum <= 0 gives location (-1, -1);
  2. blur the map (zero-padded, ``cv2.GaussianBlur`` with the given odd kernel, sigma from
     OpenCV's rule) and rescale it to its original maximum;
  3. ``L = log(clip(map, 1e-3, 50))`` with 1-pixel edge padding;
  4. one Newton step at the peak from central differences of ``L``:
     ``k <- k - (H + eps I)^-1 g`` (eps = float32 machine epsilon);
  5. back to input pixels: ``p = k / (heatmap - 1) * input`` (note: ``input``, not
     ``input - 1``; the reference does this and its un-cropping relies on it).

Within about 7 heatmap pixels (~30 input pixels) of the map border the zero-padded blur
pulls decoded points inward (by up to a few input pixels at the very edge); the reference
does the same. Elsewhere encode -> decode is exact to ~1e-4 input pixels.

Points whose maximum is <= 0 are not refined: they stay at heatmap (-1, -1). The reference
reads unrelated memory for them; their score is <= 0 either way, below any threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

__all__ = [
    "INPUT_SIZE",
    "HEATMAP_SIZE",
    "UDPHeatmapCodec",
    "udp_encode",
    "udp_decode",
    "heatmap_maximum",
    "modulate_heatmaps",
]

INPUT_SIZE: tuple[int, int] = (1024, 768)  # (height, width) of the network input
HEATMAP_SIZE: tuple[int, int] = (256, 192)  # (height, width) of the pose heatmaps


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def udp_encode(
    keypoints: Any,
    keypoints_visible: Any | None = None,
    *,
    input_size: tuple[int, int] = INPUT_SIZE,
    heatmap_size: tuple[int, int] = HEATMAP_SIZE,
    sigma: float = 6,
) -> tuple[np.ndarray, np.ndarray]:
    """Render UDP Gaussian heatmaps for keypoints given in input (crop) pixels.

    Args:
        keypoints: (N, K, 2) or (K, 2) crop coordinates (x, y); extra trailing columns
            are ignored.
        keypoints_visible: (N, K) or (K,) visibilities; default all ones. Points with
            visibility < 0.5 (or non-finite coordinates) are not drawn.
        input_size, heatmap_size: (height, width), as every size in this package.
        sigma: Gaussian sigma in heatmap pixels; the window half-size is int(3 sigma).

    Returns:
        heatmaps: (K, H, W) float32; all N instances are merged by max, as the reference.
        keypoint_weights: (N, K) float32 (or (K,) for a (K, 2) input): the visibility,
            zeroed where the Gaussian window lies entirely outside the heatmap.
    """
    kp = _to_numpy(keypoints)
    single = kp.ndim == 2
    if single:
        kp = kp[None]
    if kp.ndim != 3 or kp.shape[-1] < 2:
        raise ValueError(f"keypoints must be (N, K, 2) or (K, 2), got {kp.shape}")
    if not np.issubdtype(kp.dtype, np.floating):
        kp = kp.astype(np.float32)
    n, k, _ = kp.shape
    if keypoints_visible is None:
        vis = np.ones((n, k), dtype=np.float32)
    else:
        vis = _to_numpy(keypoints_visible).reshape(n, k)
    weights = vis.astype(np.float32, copy=True)

    h, w = heatmap_size
    in_size = np.asarray(input_size[::-1], dtype=np.float64)  # (w, h): keypoints are (x, y)
    hm_size = np.asarray(heatmap_size[::-1], dtype=np.float64)
    # float32 factor, like the reference, so float32 keypoints stay float32 here.
    factor = ((in_size - 1) / (hm_size - 1)).astype(np.float32)
    khm = kp[..., :2] / factor  # (N, K, 2) heatmap coordinates

    radius = int(3 * sigma)
    labelled = (vis >= 0.5) & np.isfinite(khm).all(-1)
    safe = np.where(labelled[..., None], khm, 0)
    mu = (safe + 0.5).astype(np.int64)  # truncation towards zero, as the reference
    lo = mu - radius
    hi = mu + radius + 1  # exclusive
    # The reference tests "right < 0" with an exclusive right edge: a window ending
    # exactly at -1 still counts as touching the map (it draws nothing).
    outside = (lo[..., 0] >= w) | (lo[..., 1] >= h) | (hi[..., 0] < 0) | (hi[..., 1] < 0)
    weights[labelled & outside] = 0
    active = labelled & ~outside

    heatmaps = np.zeros((k, h, w), dtype=np.float32)
    inst, chan = np.nonzero(active)
    if inst.size == 0:
        return heatmaps, (weights[0] if single else weights)

    offs = np.arange(-radius, radius + 1, dtype=np.int64)
    center = safe[inst, chan].astype(np.float64)  # (M, 2), exact upcast
    px = mu[inst, chan, 0][:, None] + offs  # (M, S)
    py = mu[inst, chan, 1][:, None] + offs
    dx2 = (px - center[:, 0:1]) ** 2  # exact differences in float64
    dy2 = (py - center[:, 1:2]) ** 2
    gauss = np.exp(-(dy2[:, :, None] + dx2[:, None, :]) / (2 * sigma**2))  # (M, S, S)

    inside = ((py >= 0) & (py < h))[:, :, None] & ((px >= 0) & (px < w))[:, None, :]
    flat_idx = (chan[:, None, None] * h + py[:, :, None]) * w + px[:, None, :]
    np.maximum.at(
        heatmaps.reshape(-1),
        flat_idx[inside],
        gauss[inside].astype(np.float32),
    )
    return heatmaps, (weights[0] if single else weights)


def heatmap_maximum(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Argmax per channel of (..., H, W) maps.

    Returns (locations (..., 2) float32 as (x, y), values (...)); locations are (-1, -1)
    where the maximum is <= 0.
    """
    hm = _to_numpy(heatmaps)
    *lead, h, w = hm.shape
    flat = hm.reshape(-1, h * w)
    idx = flat.argmax(axis=1)
    vals = flat[np.arange(flat.shape[0]), idx]
    locs = np.stack([idx % w, idx // w], axis=-1).astype(np.float32)
    locs[vals <= 0] = -1
    return locs.reshape(*lead, 2), vals.reshape(lead)


def modulate_heatmaps(heatmaps: np.ndarray, kernel_size: int = 11) -> np.ndarray:
    """Gaussian-blur each (H, W) map with zero padding, keeping its maximum.

    Input (M, H, W); returns a new float32 array.
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"blur kernel size must be odd, got {kernel_size}")
    hm = np.asarray(heatmaps, dtype=np.float32)
    m, h, w = hm.shape
    b = (kernel_size - 1) // 2
    out = np.empty_like(hm)
    buf = np.zeros((h + 2 * b, w + 2 * b), dtype=np.float32)
    for i in range(m):
        buf[b : b + h, b : b + w] = hm[i]
        out[i] = cv2.GaussianBlur(buf, (kernel_size, kernel_size), 0)[b : b + h, b : b + w]
    orig_max = hm.reshape(m, -1).max(axis=1)
    new_max = out.reshape(m, -1).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = orig_max / new_max  # float32, per channel
    out *= ratio[:, None, None]
    return out


def _refine_dark_udp(locs: np.ndarray, heatmaps: np.ndarray, kernel_size: int) -> np.ndarray:
    """One Newton step on the log of the modulated maps. locs (M, 2), maps (M, H, W)."""
    m, h, w = heatmaps.shape
    logmap = modulate_heatmaps(heatmaps, kernel_size)
    with np.errstate(invalid="ignore"):
        np.clip(logmap, 1e-3, 50.0, out=logmap)
    np.log(logmap, out=logmap)
    pad = np.pad(logmap, ((0, 0), (1, 1), (1, 1)), mode="edge")

    valid = (locs[:, 0] >= 0) & (locs[:, 1] >= 0)
    sel = np.nonzero(valid)[0]
    refined = locs.copy()
    if sel.size == 0:
        return refined
    x = locs[sel, 0].astype(np.int64) + 1  # into the padded map
    y = locs[sel, 1].astype(np.int64) + 1

    def at(dy: int, dx: int) -> np.ndarray:
        return pad[sel, y + dy, x + dx]

    c = at(0, 0)
    xp, xm = at(0, 1), at(0, -1)
    yp, ym = at(1, 0), at(-1, 0)
    xpyp, xmym = at(1, 1), at(-1, -1)

    # Same float32 operation order as the reference, for bit-level agreement.
    gx = 0.5 * (xp - xm)
    gy = 0.5 * (yp - ym)
    hxx = xp - 2 * c + xm
    hyy = yp - 2 * c + ym
    hxy = 0.5 * (xpyp - xp - yp + c + c - xm - ym + xmym)

    grad = np.stack([gx, gy], axis=-1)[:, :, None]  # (S, 2, 1)
    hess = np.stack([np.stack([hxx, hxy], -1), np.stack([hxy, hyy], -1)], axis=-2)
    hess_inv = np.linalg.inv(hess + np.finfo(np.float32).eps * np.eye(2))
    step = np.einsum("imn,ink->imk", hess_inv, grad)[:, :, 0]
    refined[sel] = (locs[sel].astype(np.float64) - step).astype(np.float32)
    return refined


def udp_decode(
    heatmaps: Any,
    *,
    input_size: tuple[int, int] = INPUT_SIZE,
    blur_kernel_size: int = 11,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode UDP heatmaps to keypoints in input (crop) pixels.

    Args:
        heatmaps: (K, H, W) or (N, K, H, W) array or tensor (any float dtype).
        input_size: (height, width) of the network input the heatmaps belong to.
        blur_kernel_size: odd kernel of the modulation blur.

    Returns:
        keypoints: (K, 2) or (N, K, 2) float64, (x, y) in input pixels.
        scores: (K,) or (N, K) float32, the raw heatmap maxima.
    """
    hm = _to_numpy(heatmaps).astype(np.float32, copy=False)
    if hm.ndim not in (3, 4):
        raise ValueError(f"heatmaps must be (K, H, W) or (N, K, H, W), got {hm.shape}")
    lead = hm.shape[:-2]
    h, w = hm.shape[-2:]
    flat = hm.reshape(-1, h, w)
    locs, vals = heatmap_maximum(flat)
    locs = _refine_dark_udp(locs, flat, blur_kernel_size)
    kps = locs.astype(np.float64) / np.array([w - 1, h - 1], dtype=np.float64)
    kps = kps * np.asarray(input_size[::-1], dtype=np.float64)
    return kps.reshape(*lead, 2), vals.astype(np.float32).reshape(lead)


@dataclass(frozen=True)
class UDPHeatmapCodec:
    """The UDP codec with its parameters bound (defaults = Sapiens2 pose)."""

    input_size: tuple[int, int] = INPUT_SIZE
    heatmap_size: tuple[int, int] = HEATMAP_SIZE
    sigma: float = 6
    blur_kernel_size: int = 11

    def encode(
        self, keypoints: Any, keypoints_visible: Any | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, K, 2) crop keypoints -> ((K, H, W) heatmaps, (N, K) weights)."""
        return udp_encode(
            keypoints,
            keypoints_visible,
            input_size=self.input_size,
            heatmap_size=self.heatmap_size,
            sigma=self.sigma,
        )

    def decode(self, heatmaps: Any) -> tuple[np.ndarray, np.ndarray]:
        """(K, H, W) or (N, K, H, W) heatmaps -> (keypoints in crop pixels, scores)."""
        hm = _to_numpy(heatmaps)
        if tuple(hm.shape[-2:]) != tuple(self.heatmap_size):
            raise ValueError(
                f"heatmaps of size {tuple(hm.shape[-2:])} (h, w) do not match the codec's "
                f"heatmap_size {tuple(self.heatmap_size)} (h, w)"
            )
        return udp_decode(hm, input_size=self.input_size, blur_kernel_size=self.blur_kernel_size)
