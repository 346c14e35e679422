"""Top-down pose geometry: person box -> network crop -> heatmaps -> image keypoints.

The steps, as the Sapiens2 reference runs them at test time:

1. ``box_to_center_scale``: box (x1, y1, x2, y2) -> centre ``((x1+x2)/2, (y1+y2)/2)`` and
   scale ``(x2-x1, y2-y1) * 1.25``, then enlarged (never shrunk) to the input aspect
   w/h = 768/1024 = 0.75.
2. ``udp_warp_matrix``: the UDP affine map from image to crop pixels,
   ``x' = (768-1)/w * (x - cx + w/2)`` and ``y' = (1024-1)/h * (y - cy + h/2)``, so the
   scaled box ``[c - s/2, c + s/2]`` lands on pixel centres ``[0, 767] x [0, 1023]``.
3. ``crop_person``: ``cv2.warpAffine`` to 1024x768 (height x width), constant black border; INTER_AREA when
   the smaller row norm of the matrix is < 1 (OpenCV's warpAffine treats it as bilinear),
   else INTER_CUBIC.
4. The network runs on the crops (and on their horizontal mirror for the flip test);
   ``average_flip_heatmaps`` mirrors the flipped output back along W, swaps left/right
   channels with the flip indices and averages, before decoding. No pixel shift is
   needed: UDP maps crop x to 767 - x and heatmap x to 191 - x consistently.
5. ``udp_decode`` (``sapiens2.keypoints.udp``) -> keypoints in crop pixels;
   ``crop_to_image`` maps them back: ``p / input_size * scale + center - scale / 2``.

All functions work on numpy arrays; the flip helpers also accept torch tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from ..keypoints.udp import HEATMAP_SIZE, INPUT_SIZE, udp_decode

__all__ = [
    "INPUT_SIZE",
    "HEATMAP_SIZE",
    "BBOX_PADDING",
    "TopdownCrops",
    "bbox_xyxy_to_center_scale",
    "fix_aspect_ratio",
    "box_to_center_scale",
    "whole_image_box",
    "udp_warp_matrix",
    "crop_interpolation",
    "crop_person",
    "crop_people",
    "image_to_crop",
    "crop_to_image",
    "heatmaps_to_keypoints",
    "flip_heatmaps_back",
    "average_flip_heatmaps",
]

BBOX_PADDING = 1.25


def bbox_xyxy_to_center_scale(
    boxes: Any, padding: float = BBOX_PADDING
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) or (4,) xyxy boxes -> (centres (N, 2), scales (N, 2)), scale = size * padding."""
    b = np.asarray(boxes)
    if not np.issubdtype(b.dtype, np.floating):
        b = b.astype(np.float32)
    if b.shape[-1] != 4:
        raise ValueError(f"boxes must end with 4 values (x1, y1, x2, y2), got {b.shape}")
    x1, y1, x2, y2 = np.moveaxis(b, -1, 0)
    center = np.stack([x1 + x2, y1 + y2], axis=-1) * 0.5
    scale = np.stack([x2 - x1, y2 - y1], axis=-1) * padding
    return center, scale


def fix_aspect_ratio(scales: Any, aspect_ratio: float = INPUT_SIZE[1] / INPUT_SIZE[0]) -> np.ndarray:
    """Enlarge (w, h) scales to the aspect ratio w/h, keeping the larger side."""
    s = np.asarray(scales)
    w, h = s[..., 0], s[..., 1]
    wide = w > h * aspect_ratio
    return np.stack(
        [np.where(wide, w, h * aspect_ratio), np.where(wide, w / aspect_ratio, h)], axis=-1
    ).astype(s.dtype if np.issubdtype(s.dtype, np.floating) else np.float64)


def box_to_center_scale(
    boxes: Any,
    padding: float = BBOX_PADDING,
    input_size: tuple[int, int] = INPUT_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Box -> (centre, aspect-fixed padded scale): the values used for cropping and decoding.
    `input_size` is the crop's (height, width)."""
    center, scale = bbox_xyxy_to_center_scale(boxes, padding)
    return center, fix_aspect_ratio(scale, input_size[1] / input_size[0])


def whole_image_box(height: int, width: int) -> np.ndarray:
    """The Sapiens fallback when no person is found: one (1, 5) box [0, 0, W - 1, H - 1] with score 1."""
    return np.array([[0, 0, width - 1, height - 1, 1.0]], dtype=np.float32)


def udp_warp_matrix(
    center: Any,
    scale: Any,
    output_size: tuple[int, int] = INPUT_SIZE,
    rotation: float = 0.0,
) -> np.ndarray:
    """The (2, 3) float32 UDP affine matrix from image to crop pixels.

    ``output_size`` is the crop's (height, width); ``rotation`` is in degrees (0 at test time; training
    rotates about the centre).
    The arithmetic runs in the dtype of ``center``/``scale`` (float32 for float32 boxes)
    in the reference's order of operations, to mirror its float32 rounding.
    """
    c = np.asarray(center).reshape(2)
    s = np.asarray(scale).reshape(2)
    if not np.issubdtype(c.dtype, np.floating):
        c = c.astype(np.float64)
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    size2 = c * 2  # the reference expresses the translation through 2 * centre
    fx = (output_size[1] - 1) / s[0]
    fy = (output_size[0] - 1) / s[1]
    r = float(np.deg2rad(rotation))
    cos, sin = math.cos(r), math.sin(r)
    m = np.zeros((2, 3), dtype=np.float32)
    m[0, 0] = cos * fx
    m[0, 1] = -sin * fx
    m[0, 2] = fx * (-0.5 * size2[0] * cos + 0.5 * size2[1] * sin + 0.5 * s[0])
    m[1, 0] = sin * fy
    m[1, 1] = cos * fy
    m[1, 2] = fy * (-0.5 * size2[0] * sin - 0.5 * size2[1] * cos + 0.5 * s[1])
    return m


def crop_interpolation(matrix: np.ndarray) -> int:
    """INTER_AREA when the warp shrinks (smaller row norm < 1), else INTER_CUBIC."""
    sx = np.linalg.norm(matrix[0, :2])
    sy = np.linalg.norm(matrix[1, :2])
    return cv2.INTER_AREA if min(sx, sy) < 1.0 else cv2.INTER_CUBIC


def crop_person(
    image: np.ndarray,
    center: Any,
    scale: Any,
    input_size: tuple[int, int] = INPUT_SIZE,
    rotation: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp one person to the network input (height, width). Returns (crop (h, w, C), matrix (2, 3)).

    ``scale`` must already be aspect-fixed (``box_to_center_scale``).
    """
    m = udp_warp_matrix(center, scale, input_size, rotation)
    crop = cv2.warpAffine(
        image,
        m,
        (int(input_size[1]), int(input_size[0])),  # OpenCV takes (width, height)
        flags=crop_interpolation(m),
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    if crop.ndim == 2 and image.ndim == 3:  # single-channel images come back 2-D
        crop = crop[..., None]
    return crop, m


@dataclass(frozen=True)
class TopdownCrops:
    """Crops of all people in one image, with what is needed to map results back."""

    crops: np.ndarray  # (N, h, w, C), same dtype as the image
    centers: np.ndarray  # (N, 2)
    scales: np.ndarray  # (N, 2), aspect-fixed and padded
    matrices: np.ndarray  # (N, 2, 3) image -> crop
    boxes: np.ndarray  # (N, 4) the input boxes

    def __len__(self) -> int:
        return len(self.crops)


def crop_people(
    image: np.ndarray,
    boxes: Any,
    padding: float = BBOX_PADDING,
    input_size: tuple[int, int] = INPUT_SIZE,
) -> TopdownCrops:
    """Crop every xyxy box of ``image`` (H, W[, C]) to the network input size (height, width)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    centers, scales = box_to_center_scale(b, padding, input_size)
    h, w = input_size
    channels = () if image.ndim == 2 else (image.shape[2],)
    crops = np.empty((len(b), h, w, *channels), dtype=image.dtype)
    mats = np.empty((len(b), 2, 3), dtype=np.float32)
    for i in range(len(b)):
        crop, m = crop_person(image, centers[i], scales[i], input_size)
        crops[i] = crop.reshape(crops.shape[1:])
        mats[i] = m
    return TopdownCrops(crops=crops, centers=centers, scales=scales, matrices=mats, boxes=b)


def image_to_crop(points: Any, center: Any, scale: Any, input_size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """Image pixels -> crop pixels for one person (no rotation). points (..., 2); `input_size` (height, width)."""
    p = np.asarray(points, dtype=np.float64)
    c = np.asarray(center, dtype=np.float64)
    s = np.asarray(scale, dtype=np.float64)
    size = np.asarray(input_size[::-1], dtype=np.float64)
    return (p - c + 0.5 * s) * (size - 1) / s


def crop_to_image(keypoints: Any, centers: Any, scales: Any, input_size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """Decoded keypoints in crop pixels -> image pixels, as the reference does it.

    ``keypoints`` (N, K, 2) (or (K, 2) with a single centre/scale); centres and scales
    (N, 2). Uses ``p / input_size * scale + center - scale / 2``, which together with the
    ``* input / (heatmap - 1)`` of ``udp_decode`` is the exact inverse of the UDP warp.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    c = np.asarray(centers, dtype=np.float64)
    s = np.asarray(scales, dtype=np.float64)
    if kp.ndim == 3:
        c = c.reshape(-1, 1, 2)
        s = s.reshape(-1, 1, 2)
    size = np.asarray(input_size[::-1], dtype=np.float64)  # (w, h): keypoints are (x, y)
    return kp / size * s + c - 0.5 * s


def heatmaps_to_keypoints(
    heatmaps: Any,
    centers: Any,
    scales: Any,
    input_size: tuple[int, int] = INPUT_SIZE,
    blur_kernel_size: int = 11,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, H, W) heatmaps of N crops -> ((N, K, 2) image keypoints, (N, K) scores).

    ``udp_decode`` followed by ``crop_to_image``; pass the flip-averaged heatmaps for
    the flip test.
    """
    kp, scores = udp_decode(heatmaps, input_size=input_size, blur_kernel_size=blur_kernel_size)
    if kp.ndim == 2:
        kp, scores = kp[None], scores[None]
    return crop_to_image(kp, centers, scales, input_size), scores


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def flip_heatmaps_back(heatmaps_flipped: Any, flip_indices: Sequence[int]) -> Any:
    """Undo a horizontal input flip on (..., K, H, W) heatmaps: mirror W, swap channels.

    Channel k of the result is channel ``flip_indices[k]`` of the mirrored maps. Works
    on numpy arrays and torch tensors (returns the same kind).
    """
    idx = list(flip_indices)
    if heatmaps_flipped.shape[-3] != len(idx):
        raise ValueError(
            f"{len(idx)} flip indices for {heatmaps_flipped.shape[-3]} heatmap channels"
        )
    if _is_torch(heatmaps_flipped):
        return heatmaps_flipped.flip(-1)[..., idx, :, :]
    hm = np.asarray(heatmaps_flipped)
    return np.ascontiguousarray(hm[..., ::-1][..., idx, :, :])


def average_flip_heatmaps(heatmaps: Any, heatmaps_flipped: Any, flip_indices: Sequence[int]) -> Any:
    """Flip test: ``(heatmaps + flip_heatmaps_back(heatmaps_flipped)) / 2``.

    ``heatmaps_flipped`` is the network output for the horizontally mirrored crops.
    """
    return (heatmaps + flip_heatmaps_back(heatmaps_flipped, flip_indices)) / 2.0
