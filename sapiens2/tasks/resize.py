"""Dense-task geometry: a photo -> the 1024x768 network input, and the network's maps -> back onto the photo.

Two policies, as the reference test pipelines apply them:

- **stretch** (segmentation, matting): the image is resized to exactly H x W, aspect ignored, no padding.
  OpenCV picks the interpolation from the *widths* only: INTER_AREA when the new width is smaller than the old
  one, else INTER_CUBIC (segmentation, `SegResize`) or INTER_LINEAR (matting, `MattingResize`).
- **pad** (normals, pointmaps, albedo, `*ResizePadImage`): s = min(W / w, H / h); the image is resized to
  (int(w * s), int(h * s)) with INTER_LINEAR (truncation, not rounding), then padded with zeros, left = pad_w // 2
  and top = pad_h // 2, the rest right and bottom.

The reference works on BGR uint8 and flips to RGB when normalising. Resizing and zero padding treat every channel
alike, so running them on RGB gives the same numbers in the other channel order. Back on the photo, the padding
is cropped away and the map resized bilinearly (align_corners False, no antialias) to the photo's size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F

Policy = Literal["stretch", "pad"]
# For stretch: the interpolation used when enlarging (shrinking the width always uses INTER_AREA).
Upsampling = Literal["cubic", "linear"]
_CV2_UPSAMPLING = {"cubic": cv2.INTER_CUBIC, "linear": cv2.INTER_LINEAR}

# ImageNet statistics on the 0-255 scale, RGB order: the normalisation of every Sapiens2 model.
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Placement:
    """Where a photo of `source` (h, w) sits inside a network input of `target` (H, W).

    `size` (h', w') is the resized photo; `pad` is (left, right, top, bottom) zero padding around it (all zero for
    a stretch). `interpolation` is the OpenCV flag used to resize.
    """

    source: tuple[int, int]
    target: tuple[int, int]
    size: tuple[int, int]
    pad: tuple[int, int, int, int]
    interpolation: int
    policy: Policy

    @property
    def scale(self) -> tuple[float, float]:
        """(sy, sx): network-input pixels per photo pixel along each axis (equal for `pad`, up to truncation)."""
        return self.size[0] / self.source[0], self.size[1] / self.source[1]

    @property
    def content(self) -> tuple[slice, slice]:
        """Rows and columns of the network input that hold the photo."""
        left, _, top, _ = self.pad
        return slice(top, top + self.size[0]), slice(left, left + self.size[1])


def _check_sizes(source: tuple[int, int], target: tuple[int, int]) -> None:
    if min(source) <= 0:
        raise ValueError(f"cannot resize an empty image of size {source[0]}x{source[1]}")
    if min(target) <= 0:
        raise ValueError(f"the network input size must be positive, got {target}")


def stretch_placement(source: tuple[int, int], target: tuple[int, int], upsampling: Upsampling = "cubic",
                      area_when_shrinking: bool = True) -> Placement:
    """Resize to exactly `target`, aspect ignored (segmentation: cubic; matting: linear). Sapiens2 shrinks
    with INTER_AREA; Sapiens v1 (`area_when_shrinking=False`) resizes bilinearly both ways."""
    _check_sizes(source, target)
    shrink = target[1] < source[1] and area_when_shrinking
    interpolation = cv2.INTER_AREA if shrink else _CV2_UPSAMPLING[upsampling]
    return Placement(tuple(source), tuple(target), tuple(target), (0, 0, 0, 0), interpolation, "stretch")


def pad_placement(source: tuple[int, int], target: tuple[int, int]) -> Placement:
    """Keep the aspect: scale by min(W / w, H / h), truncate, centre with zero padding (left/top get the floor)."""
    _check_sizes(source, target)
    (h, w), (th, tw) = source, target
    s = min(tw / w, th / h)
    nw, nh = int(w * s), int(h * s)
    # A degenerate strip (say 1 x 5000) would truncate to zero pixels; keep at least one.
    nw, nh = max(1, min(nw, tw)), max(1, min(nh, th))
    pad_w, pad_h = tw - nw, th - nh
    pad = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    return Placement(tuple(source), tuple(target), (nh, nw), pad, cv2.INTER_LINEAR, "pad")


def placement(policy: Policy, source: tuple[int, int], target: tuple[int, int],
              upsampling: Upsampling = "cubic", area_when_shrinking: bool = True) -> Placement:
    if policy == "pad":
        return pad_placement(source, target)
    return stretch_placement(source, target, upsampling, area_when_shrinking)


def place(image: np.ndarray, where: Placement) -> np.ndarray:
    """The network input (H x W x C uint8) for `image` (h x w x C uint8) placed as `where` says."""
    if image.shape[:2] != where.source:
        raise ValueError(f"image is {image.shape[0]}x{image.shape[1]} but the placement is for {where.source}")
    nh, nw = where.size
    out = image if (nh, nw) == image.shape[:2] else cv2.resize(image, (nw, nh), interpolation=where.interpolation)
    left, right, top, bottom = where.pad
    if left or right or top or bottom:
        out = cv2.copyMakeBorder(out, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(0, 0, 0, 0))
    return np.ascontiguousarray(out)


def normalize(batch: np.ndarray | torch.Tensor, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N x H x W x 3 uint8 RGB -> contiguous N x 3 x H x W, (x - mean) / std in float32, then cast to `dtype`.

    Contiguous, as the reference feeds its networks: a permuted (channels_last) view holds the same values,
    but the patch-embedding convolution may round differently on those strides, and 24 blocks with bfloat16
    RoPE amplify that to ~1e-3 at the outputs. The uint8 pixels are reordered, a quarter of the float bytes.
    """
    x = torch.as_tensor(batch, device=device)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected N x H x W x 3 images, got shape {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).contiguous().float()
    mean = torch.tensor(MEAN_RGB, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD_RGB, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(dtype)


def crop_content(maps: torch.Tensor, where: Placement) -> torch.Tensor:
    """The part of `maps` (... x H' x W') that covers the photo.

    Maps at the network input size are cropped exactly; maps at another size (a head at 1/4, say) are cropped at
    the proportional rows and columns, which must fall on whole pixels.
    """
    oh, ow = maps.shape[-2:]
    th, tw = where.target
    rows, cols = where.content
    if (oh, ow) == (th, tw):
        return maps[..., rows, cols]
    r0, r1 = _proportional(rows.start, oh, th), _proportional(rows.stop, oh, th)
    c0, c1 = _proportional(cols.start, ow, tw), _proportional(cols.stop, ow, tw)
    return maps[..., r0:r1, c0:c1]


def _proportional(index: int, out: int, full: int) -> int:
    value = index * out / full
    if not math.isclose(value, round(value)):
        raise ValueError(f"the output ({out} px) is not a whole-pixel rescaling of the input ({full} px) at the crop")
    return round(value)


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of N x C x h x w (or C x h x w) to `size`, align_corners False, no antialias."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    squeeze = maps.ndim == 3
    x = maps[None] if squeeze else maps
    x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    return x[0] if squeeze else x


def to_source(maps: torch.Tensor, where: Placement) -> torch.Tensor:
    """Crop the padding and resize back onto the photo (N x C x h x w at the photo's h x w)."""
    return resize_maps(crop_content(maps, where), where.source)


def gaussian_blur3(maps: torch.Tensor, sigma: float = 0.8, passes: int = 1) -> torch.Tensor:
    """3x3 Gaussian blur with reflect padding, `passes` times (torchvision's `gaussian_blur` on float maps)."""
    x = torch.arange(3, dtype=torch.float32, device=maps.device) - 1
    k1 = torch.exp(-0.5 * (x / sigma) ** 2)
    k1 = (k1 / k1.sum()).to(maps.dtype)
    c = maps.shape[-3]
    kernel = (k1[:, None] * k1[None, :]).expand(c, 1, 3, 3)
    squeeze = maps.ndim == 3
    y = maps[None] if squeeze else maps
    for _ in range(passes):
        mode = "reflect" if min(y.shape[-2:]) > 1 else "replicate"  # reflect needs two pixels per side
        y = F.conv2d(F.pad(y, (1, 1, 1, 1), mode=mode), kernel, groups=c)
    return y[0] if squeeze else y


def to_source_smooth(maps: torch.Tensor, where: Placement) -> torch.Tensor:
    """`to_source` with the pointmap rule: when the crop is enlarged, blur it first (4 passes, sigma 0.8)."""
    crop = crop_content(maps, where)
    h, w = crop.shape[-2:]
    if where.source[0] > h or where.source[1] > w:
        crop = gaussian_blur3(crop, 0.8, passes=4)
    return resize_maps(crop, where.source)
