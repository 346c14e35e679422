"""Pictures of dense predictions, with the reference visualizers' look.

All images are RGB uint8 (the order `sapiens2.io.read_image` gives and `write_image` takes). The reference draws
in BGR; every operation here acts on each channel alike, so the pixels match it with the channels swapped.

- segmentation: palette colours blended 50/50 with the photo (`cv2.addWeighted`);
- normals: colour = uint8(((n + 1) / 2) * 255) with R = x, G = y, B = z; background black (or the photo);
- depth: turbo colours of the normalised inverse depth between robust bounds, background grey 100;
- albedo: uint8(albedo * 255), background grey (100, 100, 100);
- matting: premultiplied foreground over a background colour, composite = F + (1 - alpha) * B (chroma green
  by default), and the alpha matte as grey.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np

__all__ = [
    "CHROMA_GREEN", "DEPTH_BACKGROUND", "depth_bounds", "draw_albedo", "draw_alpha", "draw_depth", "draw_matting",
    "draw_normals", "draw_segmentation", "normals_from_depth", "side_by_side", "turbo",
]

DEPTH_BACKGROUND = 100
ALBEDO_BACKGROUND = (100, 100, 100)
CHROMA_GREEN = (0, 177, 64)  # RGB
_NEAR, _FAR = 0.1, 250.0  # metres: the inverse-depth colour range never goes beyond these


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.dtype} {image.shape}")
    return image


def _mask(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask, dtype=bool)
    if m.shape != shape:
        raise ValueError(f"mask shape {m.shape} differs from the map's {shape}")
    return m


def _background(picture: np.ndarray, mask: np.ndarray, image: np.ndarray | None, fill) -> np.ndarray:
    out = picture.copy()
    out[~mask] = _rgb(image)[~mask] if image is not None else np.asarray(fill, dtype=np.uint8)
    return out


def draw_segmentation(image: np.ndarray, labels: np.ndarray, palette: np.ndarray | None = None,
                      opacity: float = 0.5) -> np.ndarray:
    """Palette colours of `labels` blended over `image` (opacity of the colours; 0.5 as the reference)."""
    image = _rgb(image)
    if palette is None:
        from sapiens2.body_parts import seg29

        palette = seg29().palette
    labels = np.asarray(labels)
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels {labels.shape} and image {image.shape[:2]} differ in size")
    if labels.size and int(labels.max()) >= len(palette):
        raise ValueError(f"label {int(labels.max())} has no palette colour ({len(palette)} colours)")
    colours = np.asarray(palette, dtype=np.uint8)[labels]
    return cv2.addWeighted(image, 1.0 - opacity, colours, opacity, 0)


def draw_normals(normals: np.ndarray, mask: np.ndarray | None = None, image: np.ndarray | None = None) -> np.ndarray:
    """R, G, B = x, y, z mapped from [-1, 1] to [0, 255] (truncating); background black, or `image` there."""
    n = np.asarray(normals, dtype=np.float32)
    m = _mask(mask, n.shape[:2])
    n = np.where(m[..., None], n, -1.0)
    picture = (np.clip((n + 1.0) / 2.0, 0.0, 1.0) * 255).astype(np.uint8)
    return _background(picture, m, image, (0, 0, 0)) if image is not None else picture


@lru_cache(maxsize=1)
def _turbo_lut() -> np.ndarray:
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), cv2.COLORMAP_TURBO)
    return np.ascontiguousarray(lut[:, 0, ::-1])  # BGR -> RGB


def turbo(t: np.ndarray) -> np.ndarray:
    """Turbo colours (RGB uint8) of values in [0, 1]: entry floor(t * 256) of the 256-colour table (clipped)."""
    idx = np.clip((np.asarray(t, dtype=np.float64) * 256).astype(np.int64), 0, 255)
    return _turbo_lut()[idx]


def depth_bounds(depths: np.ndarray | Sequence[np.ndarray], masks: np.ndarray | Sequence | None = None
                 ) -> tuple[float, float] | None:
    """(min over frames of the 1st percentile, max over frames of the 99th) of foreground depth; None if empty."""
    if isinstance(depths, np.ndarray) and depths.ndim == 2:
        depths, masks = [depths], [masks]
    masks = list(masks) if masks is not None else [None] * len(depths)
    lo, hi = [], []
    for d, m in zip(depths, masks):
        d = np.asarray(d, dtype=np.float32)
        values = d[_mask(m, d.shape)]
        if values.size:
            p1, p99 = np.percentile(values, [1, 99])
            lo.append(float(p1))
            hi.append(float(p99))
    return (min(lo), max(hi)) if lo else None


def draw_relative_depth(depth: np.ndarray, mask: np.ndarray | None = None, image: np.ndarray | None = None,
                        background: int = DEPTH_BACKGROUND) -> np.ndarray:
    """Sapiens v1's depth look: foreground min-max normalised, inverted (near = bright), inferno, grey elsewhere."""
    d = np.asarray(depth, dtype=np.float32)
    m = _mask(mask, d.shape)
    picture = np.full((*d.shape, 3), background, dtype=np.uint8) if image is None else np.array(image, np.uint8)
    if m.any():
        lo, hi = float(d[m].min()), float(d[m].max())
        t = 1.0 - (d - lo) / max(hi - lo, 1e-12)
        colours = cv2.applyColorMap(np.clip(t * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
        picture[m] = colours[m]
    return picture


def draw_depth(depth: np.ndarray, mask: np.ndarray | None = None, image: np.ndarray | None = None,
               bounds: tuple[float, float] | None = None, background: int = DEPTH_BACKGROUND) -> np.ndarray:
    """Turbo colours of inverse depth (near = red end), clipped to the bounds' inverse range.

    `bounds` (near, far) default to this map's 1st and 99th foreground percentiles; give the same bounds to
    every frame of a video. The colour range never exceeds 0.1 m .. 250 m.
    """
    d = np.asarray(depth, dtype=np.float32)
    m = _mask(mask, d.shape)
    picture = np.full((*d.shape, 3), background, dtype=np.uint8)
    if bounds is None:
        bounds = depth_bounds(d, m)
    if bounds is not None and m.any():
        near, far = bounds
        inv = 1.0 / np.maximum(d, 1e-6)
        hi = min(1.0 / max(near, 1e-6), 1.0 / _NEAR)
        lo = max(1.0 / _FAR, 1.0 / max(far, 1e-6))
        t = np.clip((inv - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
        picture[m] = turbo(t[m])
    return _background(picture, m, image, (background,) * 3) if image is not None else picture


def normals_from_depth(depth: np.ndarray, mask: np.ndarray | None = None,
                       bounds: tuple[float, float] | None = None) -> np.ndarray:
    """Unit normals from a depth map as the reference's optional panel does (Sobel 7 on normalised depth)."""
    d = np.asarray(depth, dtype=np.float32)
    m = _mask(mask, d.shape)
    if bounds is None:
        bounds = depth_bounds(d, m) or (0.0, 1.0)
    lo, hi = bounds
    norm = np.full(d.shape, np.inf, dtype=np.float32)
    norm[m] = 1.0 - (d[m] - lo) / max(hi - lo, 1e-12)
    gx = cv2.Sobel(norm, cv2.CV_32F, 1, 0, ksize=7)
    gy = cv2.Sobel(norm, cv2.CV_32F, 0, 1, ksize=7)
    n = np.stack([-gx, -gy, -np.ones_like(gx)], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-5
    return np.nan_to_num(n, nan=0.0, posinf=0.0, neginf=0.0)


def draw_albedo(albedo: np.ndarray, mask: np.ndarray | None = None, image: np.ndarray | None = None,
                background: tuple[int, int, int] = ALBEDO_BACKGROUND) -> np.ndarray:
    """uint8(albedo * 255), truncating; background grey (or `image`)."""
    a = np.asarray(albedo, dtype=np.float32)
    picture = (np.clip(a, 0.0, 1.0) * 255).astype(np.uint8)
    m = _mask(mask, a.shape[:2])
    return _background(picture, m, image, background)


def draw_matting(foreground: np.ndarray, alpha: np.ndarray,
                 background: tuple[int, int, int] | np.ndarray = CHROMA_GREEN) -> np.ndarray:
    """The premultiplied foreground (floats in [0, 1]) over a background colour or uint8 image: F + (1 - alpha) B."""
    f = np.asarray(foreground, dtype=np.float32)
    a = np.asarray(alpha, dtype=np.float32)
    if a.ndim == 3:
        a = a[..., 0]
    if f.shape[:2] != a.shape:
        raise ValueError(f"foreground {f.shape[:2]} and alpha {a.shape} differ in size")
    bg = np.asarray(background, dtype=np.float32) / 255.0  # an RGB colour or an H x W x 3 image, 0..255
    composite = np.clip(f + (1.0 - np.clip(a, 0, 1))[..., None] * bg, 0.0, 1.0)
    return (composite * 255 + 0.5).astype(np.uint8)


def draw_alpha(alpha: np.ndarray) -> np.ndarray:
    """The matte as a grey RGB picture (0 black, 1 white)."""
    a = (np.clip(np.asarray(alpha, dtype=np.float32), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return np.repeat(a[..., None], 3, axis=2)


def side_by_side(*panels: np.ndarray) -> np.ndarray:
    """Panels of equal height joined left to right ([input | result ...], as the reference saves them)."""
    if not panels:
        raise ValueError("side_by_side needs at least one panel")
    heights = {p.shape[0] for p in panels}
    if len(heights) != 1:
        raise ValueError(f"panels differ in height: {sorted(heights)}")
    return np.concatenate([p if p.ndim == 3 else np.repeat(p[..., None], 3, axis=2) for p in panels], axis=1)
