"""The DCT perceptual hash: 64 bits that survive resizing, re-compression and small crops."""

from __future__ import annotations

import cv2
import numpy as np


def phash(image: np.ndarray) -> int:
    """64-bit pHash of an RGB (or gray) uint8 image.

    Gray, area-resize to 32 x 32, 2-D DCT, keep the 8 x 8 lowest frequencies, and set each bit where the
    coefficient is above their median (the DC term excluded from the median, as it only tracks brightness).
    Bit 63 is the top-left coefficient; rows then columns."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return int(np.packbits(bits).view(">u8")[0])


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def hashes_to_bytes(hashes: list[str]) -> np.ndarray:
    """Hex pHashes -> (N, 8) uint8, the layout of faiss binary indexes."""
    return np.array([list(bytes.fromhex(h)) for h in hashes], np.uint8).reshape(-1, 8)
