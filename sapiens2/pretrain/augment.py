"""Multi-crop views for pretraining, in plain torch (no torchvision).

Global views (the MAE views) get geometry only: random resized crop, scale [0.5, 1], and a horizontal
flip; no colour, blur or solarize, so the pixel targets stay true to the image. Local views add DINO's
photometric augmentations: colour jitter, grayscale, Gaussian blur, solarize.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class MultiCropConfig:
    global_size: tuple[int, int] = (1024, 768)  # (H, W)
    local_size: tuple[int, int] = (448, 336)
    n_global: int = 2
    n_local: int = 4
    global_scale: tuple[float, float] = (0.5, 1.0)
    local_scale: tuple[float, float] = (0.2, 0.7)
    # Crop aspect ratios (w / h) are drawn log-uniformly in this range times the output's own aspect.
    aspect_jitter: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.2


@dataclass
class Views:
    global_views: torch.Tensor  # G x 3 x H x W, normalized
    local_views: torch.Tensor  # L x 3 x h x w, normalized (L may be 0)


class MultiCrop:
    """An H x W x 3 uint8 image -> its global and local views, reproducible from a torch.Generator."""

    def __init__(self, cfg: MultiCropConfig = MultiCropConfig()) -> None:
        self.cfg = cfg
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __call__(self, image: np.ndarray | torch.Tensor, generator: torch.Generator | None = None) -> Views:
        img = torch.from_numpy(np.array(image, copy=True)) if isinstance(image, np.ndarray) else image
        if img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(f"expected an H x W x 3 image, got {tuple(img.shape)}")
        img = img.permute(2, 0, 1).float().div_(255.0)
        c = self.cfg
        globals_ = [self._view(img, c.global_size, c.global_scale, False, generator) for _ in range(c.n_global)]
        locals_ = [self._view(img, c.local_size, c.local_scale, True, generator) for _ in range(c.n_local)]
        h, w = c.local_size
        return Views(torch.stack(globals_), torch.stack(locals_) if locals_ else torch.zeros(0, 3, h, w))

    def _view(
        self, img: torch.Tensor, size: tuple[int, int], scale: tuple[float, float], photometric: bool,
        g: torch.Generator | None,
    ) -> torch.Tensor:
        top, left, ch, cw = random_resized_box(img.shape[1:], size, scale, self.cfg.aspect_jitter, g)
        view = F.interpolate(img[None, :, top : top + ch, left : left + cw], size=size, mode="bilinear",
                             align_corners=False, antialias=True)[0].clamp_(0.0, 1.0)
        if _rand(g) < self.cfg.flip_prob:
            view = view.flip(-1)
        if photometric:
            view = self._photometric(view, g)
        return (view - self.mean) / self.std

    def _photometric(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        c = self.cfg
        if _rand(g) < c.jitter_prob:
            x = color_jitter(x, c.brightness, c.contrast, c.saturation, c.hue, g)
        if _rand(g) < c.grayscale_prob:
            x = _gray(x).expand(3, -1, -1).clone()
        if _rand(g) < c.blur_prob:
            x = gaussian_blur(x, c.blur_sigma[0] + _rand(g) * (c.blur_sigma[1] - c.blur_sigma[0]))
        if _rand(g) < c.solarize_prob:
            x = torch.where(x >= 0.5, 1.0 - x, x)
        return x


def random_resized_box(
    hw: tuple[int, int] | torch.Size,
    out_size: tuple[int, int],
    scale: tuple[float, float],
    aspect_jitter: tuple[float, float] = (3 / 4, 4 / 3),
    g: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a crop covering `scale` of the image area, aspect near the output's."""
    h, w = int(hw[0]), int(hw[1])
    area = h * w
    base = out_size[1] / out_size[0]
    lo, hi = math.log(aspect_jitter[0] * base), math.log(aspect_jitter[1] * base)
    for _ in range(10):
        target = area * (scale[0] + _rand(g) * (scale[1] - scale[0]))
        aspect = math.exp(lo + _rand(g) * (hi - lo))
        cw = round(math.sqrt(target * aspect))
        ch = round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return int(torch.randint(h - ch + 1, (), generator=g)), int(torch.randint(w - cw + 1, (), generator=g)), ch, cw
    # Fallback: the largest centred crop with the output's aspect.
    if w / h > base:
        ch, cw = h, max(1, round(h * base))
    else:
        ch, cw = max(1, round(w / base)), w
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def color_jitter(
    x: torch.Tensor, brightness: float, contrast: float, saturation: float, hue: float, g: torch.Generator | None
) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter of a 3 x H x W image in [0, 1], in random order."""
    ops = torch.randperm(4, generator=g).tolist()
    for op in ops:
        if op == 0 and brightness > 0:
            x = (x * _factor(brightness, g)).clamp(0, 1)
        elif op == 1 and contrast > 0:
            x = _blend(x, _gray(x).mean(), _factor(contrast, g))
        elif op == 2 and saturation > 0:
            x = _blend(x, _gray(x), _factor(saturation, g))
        elif op == 3 and hue > 0:
            x = _hue_rotate(x, (2 * _rand(g) - 1) * hue)
    return x


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a C x H x W image, reflect-padded, kernel radius ~3 sigma."""
    radius = max(1, min(int(3 * sigma + 0.5), (min(x.shape[-2:]) - 1)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[0]
    y = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y[0]


def _rand(g: torch.Generator | None) -> float:
    return float(torch.rand((), generator=g))


def _factor(strength: float, g: torch.Generator | None) -> float:
    return max(0.0, 1.0 - strength + 2 * strength * _rand(g))


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]


def _blend(x: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    return (factor * x + (1 - factor) * other).clamp(0, 1)


def _hue_rotate(x: torch.Tensor, turn: float) -> torch.Tensor:
    """Rotate the hue by `turn` of a full circle, as a rotation of the chroma plane in YIQ space."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    a = 2 * math.pi * turn
    rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, math.cos(a), -math.sin(a)], [0.0, math.sin(a), math.cos(a)]])
    m = torch.linalg.inv(to_yiq) @ rot @ to_yiq
    return torch.einsum("ij,jhw->ihw", m.to(x.dtype), x).clamp(0, 1)
