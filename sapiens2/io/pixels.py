"""Decoded samples of any layout -> ``H x W x 3`` ``uint8`` RGB, one band of rows at a time.

Why bands: converting a whole picture at once costs several float32 copies of it (an RGBA composite used
to peak at ~56 bytes per pixel, ~7 GiB at the default pixel limit). Converting ``TILE_PIXELS`` at a time
into a preallocated output bounds the peak at the decoded samples, the 3-byte output and one small band
of temporaries, whatever the colour mode.

The rules (which `sapiens2.io.images` documents for users) are given by a `Conversion`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["TILE_PIXELS", "Conversion", "cmyk_to_rgb_like_libtiff", "cmyk_to_rgb_like_opencv", "convert_rows",
           "samples_to_rgb8"]

#: Pixels converted per band: 256 Ki pixels, so a band's float32 temporaries stay near a few MiB.
TILE_PIXELS = 1 << 18


@dataclass(frozen=True)
class Conversion:
    """How samples become 8-bit RGB.

    ``composite``: alpha is composited onto ``background`` (RGB, 0..255); otherwise alpha is ignored.
    ``high_byte``: 16-bit samples keep their high byte (``v >> 8``, what libpng and OpenCV give);
    otherwise they are scaled, ``round(v * 255 / 65535)``. Composited samples are always scaled.
    """

    composite: bool = False
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    high_byte: bool = True


def convert_rows(height: int, width: int, band: Callable[[int, int], np.ndarray]) -> np.ndarray:
    """A new ``height x width x 3`` uint8 array filled band by band: ``band(r0, r1)`` gives rows r0..r1-1."""
    out = np.empty((height, width, 3), np.uint8)
    step = max(1, TILE_PIXELS // max(1, width))
    for r0 in range(0, height, step):
        r1 = min(height, r0 + step)
        out[r0:r1] = band(r0, r1)
    return out


def samples_to_rgb8(a: np.ndarray, conv: Conversion) -> np.ndarray:
    """gray / gray+alpha / RGB / RGBA of any sample type -> uint8 RGB of the same height and width.

    Raises ValueError for another number of channels and TypeError for an unknown sample type.
    """
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        color, alpha = a[..., None], None
    elif a.ndim == 3 and a.shape[2] in (2, 4):
        color, alpha = a[..., :-1], a[..., -1:]
    elif a.ndim == 3 and a.shape[2] == 3:
        color, alpha = a, None
    else:
        raise ValueError(f"images with shape {a.shape} (channels) are not supported")

    if alpha is None or not conv.composite:
        out = _to_uint8(color, conv.high_byte)
    else:
        w = _unit_float(alpha)
        mixed = _unit_float(color) * (w * 255.0) + np.asarray(conv.background, np.float32) * (1.0 - w)
        out = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out if out.shape[2] == 3 else np.broadcast_to(out, (*out.shape[:2], 3))


def cmyk_to_rgb_like_opencv(cmyk: np.ndarray) -> np.ndarray:
    """CMYK (Pillow's convention: 0 = no ink) -> RGB exactly as OpenCV's JPEG reader converts it.

    libjpeg hands OpenCV Adobe's inverted samples C' = 255 - C, K' = 255 - K, and OpenCV computes
    ``K' - ((255 - C') * K' >> 8)`` per channel, i.e. ``(255 - K) - (C * (255 - K) >> 8)`` here.
    """
    k = 255 - cmyk[..., 3:].astype(np.uint16)
    return (k - ((cmyk[..., :3].astype(np.uint16) * k) >> 8)).astype(np.uint8)


def cmyk_to_rgb_like_libtiff(cmyk: np.ndarray) -> np.ndarray:
    """CMYK -> RGB exactly as OpenCV's TIFF reader (libtiff's RGBA interface) converts it:
    ``(255 - C) * (255 - K) // 255`` per channel."""
    k = 255 - cmyk[..., 3:].astype(np.uint16)
    return ((255 - cmyk[..., :3].astype(np.uint16)) * k // 255).astype(np.uint8)


def _to_uint8(a: np.ndarray, high_byte: bool) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * np.uint8(255)
    if a.dtype.kind in "ui":  # 16-bit (either byte order) and Pillow's 32-bit "I", read as 16-bit data
        if high_byte:
            v = np.clip(a, 0, 65535) if a.dtype.itemsize > 2 or a.dtype.kind == "i" else a
            return (v >> 8).astype(np.uint8)
    return np.rint(_unit_float(a) * 255.0).astype(np.uint8)


def _unit_float(a: np.ndarray) -> np.ndarray:
    """Samples as float32 in [0, 1]: 8-bit / 255, 16-bit / 65535, floats clipped (NaN -> 0)."""
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype.kind in "ui":
        return np.clip(a, 0, 65535).astype(np.float32) / 65535.0
    if a.dtype.kind == "f":
        return np.clip(np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    raise TypeError(f"unexpected sample type {a.dtype}")
