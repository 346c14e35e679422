"""The reference training augmentations, as plain functions on numpy arrays with an explicit RNG.

Every random choice draws from the `np.random.Generator` passed in, which the data pipeline seeds per
sample from (run seed, epoch, index): augmentations are then the same whatever the worker count, and a
resumed run sees exactly the samples an uninterrupted one would.

Images are H x W x 3 uint8 RGB throughout. A task transform takes the raw sample dict of its dataset and
returns the arrays the loss needs, or None to reject the sample (the loader then draws another).
Parameters and their reference values live in one dataclass per task (`PoseAugment`, `SegAugment`,
`NormalAugment`, ...), which the config's `[augment]` table overrides field by field.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sapiens2.body_parts import seg28, seg29
from sapiens2.io import read_image
from sapiens2.keypoints.topdown import (
    bbox_xyxy_to_center_scale,
    box_to_center_scale,
    crop_interpolation,
    crop_person,
    fix_aspect_ratio,
    udp_warp_matrix,
)
from sapiens2.keypoints.udp import udp_encode
from sapiens2.training.config import ConfigError

IGNORE = 255
REFERENCE_BACKGROUND_P = 0.8  # seg: the reference swaps the background of studio images with this probability
log = logging.getLogger(__name__)
_INTERPOLATIONS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_LANCZOS4)


# ------------------------------------------------------------------------------------- parameters


@dataclass
class PoseAugment:
    flip_p: float = 0.5
    half_body_p: float = 0.3
    half_body_min_visible: int = 9
    half_body_min_upper: int = 2
    half_body_min_lower: int = 3
    half_body_padding: float = 1.5
    half_body_upper_p: float = 0.7
    shift_p: float = 0.3
    shift_factor: float = 0.16
    scale_p: float = 1.0
    scale_factor: float = 0.5
    rotate_p: float = 0.6
    rotate_factor: float = 80.0  # degrees, times a normal sample truncated to [-1, 1]
    photometric_p: float = 0.8
    blur_p: float = 0.1
    median_blur_p: float = 0.1
    dropout_p: float = 1.0
    dropout_size: tuple[float, float] = (0.2, 0.4)  # hole side as a fraction of the image side
    bbox_padding: float = 1.25
    heatmap_sigma: float = 6.0  # heatmap pixels


@dataclass
class SegAugment:
    """The reference's seg augmentations. The background swap composites the labelled person onto a random JPEG
    of `background_dir` (the reference uses BG-20k) with probability `background_p`, which defaults to the
    reference's 0.8 when a folder is given. Without a folder the swap is off, and training says so in a warning;
    asking for it (`background_p` > 0) without a folder, or naming a folder with no JPEGs, is a config error."""

    background_dir: str | None = None  # BG-20k-like JPEGs to composite the person onto
    background_p: float | None = None  # None: REFERENCE_BACKGROUND_P when background_dir is set
    resize_ratio: tuple[float, float] = (0.4, 2.0)
    crop_p: float = 0.3
    crop_max_class_ratio: float = 0.75
    blur_p: float = 0.3
    noise_p: float = 0.3
    rotate_p: float = 0.5
    rotate_degrees: float = 60.0
    flip_p: float = 0.5
    flip_pairs: list[tuple[int, int]] | None = None  # None: the L/R swaps of the 29 or 28 body parts, else none
    photometric_p: float = 1.0
    min_foreground: float = 0.01  # drop samples with fewer labelled non-background pixels

    def __post_init__(self) -> None:
        if self.background_p is not None and not 0 <= self.background_p <= 1:
            raise ConfigError("augment.background_p", f"must be in [0, 1], got {self.background_p}")
        if self.background_dir is None:
            if self.background_p:
                raise ConfigError("augment.background_p", f"{self.background_p} asks for the background swap, "
                                  "but augment.background_dir names no folder of background JPEGs")
            return
        if not Path(self.background_dir).is_dir():
            raise ConfigError("augment.background_dir", f"{self.background_dir} is not a folder")
        if not background_images(self.background_dir):
            raise ConfigError("augment.background_dir", f"{self.background_dir} holds no .jpg / .jpeg images")

    @property
    def swap_p(self) -> float:
        """The probability of a background swap (0 without a folder)."""
        if self.background_dir is None:
            return 0.0
        return REFERENCE_BACKGROUND_P if self.background_p is None else self.background_p


def background_images(folder: str | Path) -> list[Path]:
    return sorted(Path(folder).glob("*.jp*g"))


@dataclass
class DenseAugment:
    """Shared by normal, pointmap, albedo and matting; the subclasses set each task's reference values."""

    photometric_p: float = 1.0
    down_up_p: float = 0.0
    down_up_scale: tuple[float, float] = (0.1, 0.7)
    scale_p: float = 0.3
    scale_range: tuple[float, float] = (0.5, 2.0)
    crop_p: float = 0.3
    crop_aspect: tuple[float, float] = (0.5, 2.0)  # w / h
    crop_area: tuple[float, float] = (0.4, 1.0)
    flip_p: float = 0.3
    blur_p: float = 0.0
    noise_p: float = 0.0
    solarize_p: float = 0.0
    min_mask_pixels: int = 16
    max_mask_fraction: float = 0.96


@dataclass
class NormalAugment(DenseAugment):
    down_up_p: float = 0.2
    blur_p: float = 0.3
    noise_p: float = 0.3
    solarize_p: float = 0.3


@dataclass
class PointmapAugment(DenseAugment):
    canonical_focal: float | None = None  # None: the input width (768 at the official 1024 x 768)
    min_depth: float = 0.04  # reject samples whose nearest canonical Z is closer


@dataclass
class DepthAugment(DenseAugment):
    """Sapiens v1 relative depth (no released recipe: the shared dense defaults)."""


@dataclass
class AlbedoAugment(DenseAugment):
    photometric_p: float = 0.0
    noise_p: float = 0.2


@dataclass
class MattingAugment(DenseAugment):
    flip_p: float = 0.5
    min_mask_pixels: int = 0
    max_mask_fraction: float = 1.0


# ------------------------------------------------------------------------------------- pixel ops


def truncated_normal(rng: np.random.Generator, size: int | None = None) -> np.ndarray | float:
    """Standard normal samples truncated to [-1, 1] (by rejection)."""
    n = 1 if size is None else size
    out = np.empty(n)
    filled = 0
    while filled < n:
        x = rng.standard_normal(2 * (n - filled) + 4)
        x = x[np.abs(x) <= 1][: n - filled]
        out[filled : filled + len(x)] = x
        filled += len(x)
    return float(out[0]) if size is None else out


def photometric_distortion(img: np.ndarray, rng: np.random.Generator, brightness: float = 32,
                           contrast: tuple[float, float] = (0.5, 1.5), saturation: tuple[float, float] = (0.5, 1.5),
                           hue: int = 18) -> np.ndarray:
    """Brightness, contrast (before or after the colour steps), saturation, hue: each with p 0.5."""
    x = img.astype(np.float32)
    if rng.random() < 0.5:
        x += rng.uniform(-brightness, brightness)
    contrast_first = rng.random() < 0.5
    if contrast_first and rng.random() < 0.5:
        x *= rng.uniform(*contrast)
    x = np.clip(x, 0, 255)
    do_sat, do_hue = rng.random() < 0.5, rng.random() < 0.5
    if do_sat or do_hue:
        hsv = cv2.cvtColor(x.astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
        if do_sat:
            hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*saturation), 0, 255)
        if do_hue:
            hsv[..., 0] = (hsv[..., 0] + rng.integers(-hue, hue + 1)) % 180
        x = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    if not contrast_first and rng.random() < 0.5:
        x = np.clip(x * rng.uniform(*contrast), 0, 255)
    return np.clip(x, 0, 255).astype(np.uint8)


def gaussian_blur(img: np.ndarray, rng: np.random.Generator, sigma: tuple[float, float] = (0.1, 2.0),
                  ksize: int = 3) -> np.ndarray:
    s = rng.uniform(*sigma)
    return cv2.GaussianBlur(img, (ksize, ksize), s)


def gaussian_noise(img: np.ndarray, rng: np.random.Generator, var: tuple[float, float] = (5.0, 20.0)) -> np.ndarray:
    sigma = np.sqrt(rng.uniform(*var))
    return np.clip(img.astype(np.float32) + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def solarize(img: np.ndarray, threshold: int = 128) -> np.ndarray:
    return np.where(img > threshold, 255 - img, img).astype(np.uint8)


def down_up_sample(img: np.ndarray, rng: np.random.Generator, scale: tuple[float, float] = (0.1, 0.7)) -> np.ndarray:
    """Resolution loss: shrink by U(scale) and enlarge back, each with a random interpolation."""
    h, w = img.shape[:2]
    s = rng.uniform(*scale)
    small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))),
                       interpolation=_INTERPOLATIONS[rng.integers(len(_INTERPOLATIONS))])
    return cv2.resize(small, (w, h), interpolation=_INTERPOLATIONS[rng.integers(len(_INTERPOLATIONS))])


def box_blur(img: np.ndarray, rng: np.random.Generator, limit: tuple[int, int] = (3, 7)) -> np.ndarray:
    k = int(rng.choice(np.arange(limit[0], limit[1] + 1, 2)))
    return cv2.blur(img, (k, k))


def median_blur(img: np.ndarray, rng: np.random.Generator, limit: tuple[int, int] = (3, 7)) -> np.ndarray:
    k = int(rng.choice(np.arange(limit[0], limit[1] + 1, 2)))
    return cv2.medianBlur(np.ascontiguousarray(img), k)


def coarse_dropout(img: np.ndarray, rng: np.random.Generator, size: tuple[float, float] = (0.2, 0.4)) -> np.ndarray:
    """One black rectangular hole whose sides are U(size) of the image's."""
    h, w = img.shape[:2]
    hh, hw = max(1, int(h * rng.uniform(*size))), max(1, int(w * rng.uniform(*size)))
    y, x = int(rng.integers(0, h - hh + 1)), int(rng.integers(0, w - hw + 1))
    out = img.copy()
    out[y : y + hh, x : x + hw] = 0
    return out


def to_chw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1))


# ------------------------------------------------------------------------------------------- pose


@dataclass(frozen=True)
class KeypointLayout:
    """What the pose augmentations need to know about the trained keypoints."""

    flip_indices: tuple[int, ...] | None  # None: no horizontal flip (the L/R pairing is unknown)
    upper_ids: tuple[int, ...] = ()
    lower_ids: tuple[int, ...] = ()


class PoseTransform:
    """Top-down crop with the reference augmentations, then the UDP heatmap target (training), or the
    test-time crop from the GT box (validation)."""

    def __init__(self, input_size: tuple[int, int], layout: KeypointLayout, params: PoseAugment | None = None,
                 train: bool = True, augment: bool = True) -> None:
        self.h, self.w = input_size
        self.layout = layout
        self.p = params or PoseAugment()
        self.train = train
        self.augment = augment and train

    def __call__(self, s: dict, rng: np.random.Generator) -> dict | None:
        return self._train(s, rng) if self.train else self._val(s)

    def _val(self, s: dict) -> dict:
        box = s["ann_box"] if s.get("ann_box") is not None else s["bbox"]  # GT boxes, as the reference validates
        center, scale = box_to_center_scale(np.asarray(box, np.float32), self.p.bbox_padding, (self.h, self.w))
        crop, _ = crop_person(s["image"], center, scale, (self.h, self.w))
        return {"image": to_chw(crop), "center": center.astype(np.float32), "scale": scale.astype(np.float32),
                "image_id": np.int64(s["image_id"]), "instance": np.int64(s["instance"])}

    def _train(self, s: dict, rng: np.random.Generator) -> dict | None:
        p, img = self.p, s["image"]
        kp = np.asarray(s["keypoints"], np.float32).copy()
        vis = np.asarray(s["visible"], np.float32).copy()
        center, scale = bbox_xyxy_to_center_scale(np.asarray(s["bbox"], np.float32), p.bbox_padding)
        rot = 0.0
        if self.augment:
            if self.layout.flip_indices is not None and rng.random() < p.flip_p:
                w = img.shape[1]
                img = img[:, ::-1]
                center = np.array([w - 1 - center[0], center[1]], np.float32)
                idx = np.asarray(self.layout.flip_indices)
                kp, vis = kp[idx], vis[idx]
                kp[:, 0] = w - 1 - kp[:, 0]
            if rng.random() < p.half_body_p:
                center, scale = self._half_body(kp, vis, center, scale, rng)
            tn = truncated_normal(rng, 4)
            if rng.random() < p.shift_p:
                center = center + tn[:2].astype(np.float32) * p.shift_factor * scale
            if rng.random() < p.scale_p:
                scale = scale * np.float32(1 + p.scale_factor * tn[2])
            if rng.random() < p.rotate_p:
                rot = float(p.rotate_factor * tn[3])
        scale = fix_aspect_ratio(np.asarray(scale, np.float32), self.w / self.h)
        m = udp_warp_matrix(np.asarray(center, np.float32), scale, (self.h, self.w), rot)
        # as the reference's affine step: INTER_AREA when the warp shrinks, INTER_CUBIC when it enlarges
        crop = cv2.warpAffine(np.ascontiguousarray(img), m, (self.w, self.h), flags=crop_interpolation(m),
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        kp = kp @ m[:, :2].T + m[:, 2]
        inside = (kp[:, 0] >= 0) & (kp[:, 0] < self.w) & (kp[:, 1] >= 0) & (kp[:, 1] < self.h)
        vis = vis * inside
        if self.augment:
            if rng.random() < p.photometric_p:
                crop = photometric_distortion(crop, rng)
            if rng.random() < p.blur_p:
                crop = box_blur(crop, rng)
            if rng.random() < p.median_blur_p:
                crop = median_blur(crop, rng)
            if rng.random() < p.dropout_p:
                crop = coarse_dropout(crop, rng, p.dropout_size)
        heatmaps, weights = udp_encode(kp, vis, input_size=(self.h, self.w),
                                       heatmap_size=(self.h // 4, self.w // 4), sigma=p.heatmap_sigma)
        return {"image": to_chw(crop), "heatmaps": heatmaps, "keypoint_weights": (weights * vis).astype(np.float32)}

    def _half_body(self, kp: np.ndarray, vis: np.ndarray, center: np.ndarray, scale: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        p = self.p
        visible = vis > 0
        if visible.sum() < p.half_body_min_visible:
            return center, scale
        upper = [i for i in self.layout.upper_ids if visible[i]]
        lower = [i for i in self.layout.lower_ids if visible[i]]
        upper_ok, lower_ok = len(upper) >= p.half_body_min_upper, len(lower) >= p.half_body_min_lower
        if rng.random() < p.half_body_upper_p:
            chosen = upper if upper_ok else lower if lower_ok else None
        else:
            chosen = lower if lower_ok else upper if upper_ok else None
        if not chosen:
            return center, scale
        pts = kp[chosen]
        lo, hi = pts.min(0), pts.max(0)
        return pts.mean(0).astype(np.float32), ((hi - lo) * p.half_body_padding).astype(np.float32)


# ------------------------------------------------------------------------------------ segmentation


def default_flip_pairs(num_classes: int) -> tuple[tuple[int, int], ...]:
    """The left/right label swaps of Sapiens2's 29 or v1's 28 body parts. Other class sets have no known
    sides: nothing is swapped (set `augment.flip_pairs` for them)."""
    for classes in (seg29(), seg28()):
        if len(classes) == num_classes:
            return classes.flip_pairs
    return ()


class SegTransform:
    """Background swap, random resize and crop, blur, noise, rotation, flip with L/R label swaps, colour
    jitter, then a stretch to the input size (training); the stretch alone for validation."""

    def __init__(self, input_size: tuple[int, int], num_classes: int, params: SegAugment | None = None,
                 train: bool = True, augment: bool = True) -> None:
        self.h, self.w = input_size
        self.num_classes = num_classes
        self.p = params or SegAugment()
        self.train = train
        self.augment = augment and train
        pairs = self.p.flip_pairs if self.p.flip_pairs is not None else default_flip_pairs(num_classes)
        self.flip_lut = np.arange(256, dtype=np.uint8)
        for a, b in pairs:
            self.flip_lut[a], self.flip_lut[b] = b, a
        self.backgrounds = background_images(self.p.background_dir) if self.p.background_dir else []
        if self.augment and not self.backgrounds:
            log.warning("seg training without augment.background_dir: the background swap is off (the reference "
                        "composites studio images onto BG-20k backgrounds with p %s)", REFERENCE_BACKGROUND_P)

    def __call__(self, s: dict, rng: np.random.Generator) -> dict | None:
        img, label = s["image"], s["label"]
        p = self.p
        if self.augment:
            if self.backgrounds and not s.get("in_the_wild", False) and rng.random() < p.swap_p:
                img = self._background(img, label, rng)
            img, label = self._random_resize(img, label, rng)
            if rng.random() < p.crop_p:
                img, label = self._random_crop(img, label, rng)
            if rng.random() < p.blur_p:
                img = gaussian_blur(img, rng)
            if rng.random() < p.noise_p:
                img = gaussian_noise(img, rng)
            if rng.random() < p.rotate_p:
                img, label = self._rotate(img, label, rng)
            if rng.random() < p.flip_p:
                img, label = img[:, ::-1], self.flip_lut[label[:, ::-1]]
            if rng.random() < p.photometric_p:
                img = photometric_distortion(img, rng)
        img = _resize(img, (self.w, self.h))
        label = cv2.resize(np.ascontiguousarray(label), (self.w, self.h), interpolation=cv2.INTER_NEAREST)
        if self.train:
            fg = np.count_nonzero((label > 0) & (label != IGNORE))
            if fg < p.min_foreground * label.size:
                return None
        return {"image": to_chw(img), "label": label.astype(np.int64)}

    def _random_resize(self, img, label, rng):
        r = rng.uniform(*self.p.resize_ratio)
        th, tw = int(self.h * r), int(self.w * r)
        h, w = img.shape[:2]
        s = min(th / h, tw / w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        return _resize(img, size), cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)

    def _random_crop(self, img, label, rng):
        h, w = img.shape[:2]
        if h < self.h or w < self.w:
            ph, pw = max(0, self.h - h), max(0, self.w - w)
            img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0)
            label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=IGNORE)
            h, w = img.shape[:2]
        for _ in range(10):
            y, x = int(rng.integers(0, h - self.h + 1)), int(rng.integers(0, w - self.w + 1))
            crop = label[y : y + self.h, x : x + self.w]
            counts = np.bincount(crop[crop != IGNORE].ravel(), minlength=1)
            present = counts[counts > 0]
            if len(present) > 1 and present.max() / present.sum() < self.p.crop_max_class_ratio:
                break
        return img[y : y + self.h, x : x + self.w], label[y : y + self.h, x : x + self.w]

    def _rotate(self, img, label, rng):
        h, w = img.shape[:2]
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), rng.uniform(-self.p.rotate_degrees, self.p.rotate_degrees), 1.0)
        img = cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
        label = cv2.warpAffine(np.ascontiguousarray(label), m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
        return img, label

    def _background(self, img, label, rng):
        bg = read_image(self.backgrounds[int(rng.integers(len(self.backgrounds)))])
        h, w = img.shape[:2]
        bh, bw = bg.shape[:2]
        nw = max(1, round(bw * h / bh))
        bg = cv2.resize(bg, (nw, h), interpolation=cv2.INTER_LINEAR)
        bg = bg[:, (nw - w) // 2 : (nw - w) // 2 + w] if nw >= w else cv2.resize(bg, (w, h))
        fg = (label > 0) & (label != IGNORE)
        if not fg.any():
            return img
        out = bg.copy()
        out[fg] = reinhard_transfer(img, fg, bg)[fg]
        return out


def reinhard_transfer(img: np.ndarray, mask: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Match the Lab mean and std of `img`'s masked pixels to those of `reference` (Reinhard et al.)."""
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32)
    ref = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB).astype(np.float32).reshape(-1, 3)
    src = lab[mask]
    mu_s, sd_s = src.mean(0), src.std(0) + 1e-6
    mu_r, sd_r = ref.mean(0), ref.std(0)
    lab[mask] = (src - mu_s) / sd_s * sd_r + mu_r
    return cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (w, h): INTER_AREA when shrinking, INTER_CUBIC when enlarging."""
    shrink = size[0] < img.shape[1]
    return cv2.resize(np.ascontiguousarray(img), size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


# ------------------------------------------------------------------------------------------ dense


def _resize_maps(s: dict, size: tuple[int, int], target_interp: int) -> None:
    """Resize image (bilinear), mask (nearest) and target in place to (w, h)."""
    s["image"] = cv2.resize(np.ascontiguousarray(s["image"]), size, interpolation=cv2.INTER_LINEAR)
    s["mask"] = cv2.resize(s["mask"].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    t = cv2.resize(np.ascontiguousarray(s["target"]), size, interpolation=target_interp)
    s["target"] = t.reshape(size[1], size[0], -1)


class DenseTransform:
    """Normals, pointmap, albedo, matting and (v1) depth: scale, continuous crop, flip, resize to the input,
    pixel noise and the task's target (unit normals; canonical points with intrinsics; albedo in [0, 1];
    alpha; depth as it is).

    `stretch=False` fits the image into the input keeping its aspect and pads (Sapiens2, whose predictors
    do the same); `stretch=True` resizes it to the input size (Sapiens v1, whose predictors stretch)."""

    TARGET_INTERP = {"normal": cv2.INTER_NEAREST, "pointmap": cv2.INTER_NEAREST, "albedo": cv2.INTER_LINEAR,
                     "matting": cv2.INTER_LINEAR, "depth": cv2.INTER_NEAREST}

    def __init__(self, task: str, input_size: tuple[int, int], params: DenseAugment | None = None,
                 train: bool = True, augment: bool = True, stretch: bool = False) -> None:
        self.task = task
        self.h, self.w = input_size
        defaults = {"normal": NormalAugment, "pointmap": PointmapAugment, "albedo": AlbedoAugment,
                    "matting": MattingAugment, "depth": DepthAugment}
        self.p = params or defaults[task]()
        self.train = train
        self.augment = augment and train
        self.stretch = stretch
        if stretch and task == "pointmap":
            raise ValueError("pointmap targets keep the image's aspect: stretch is for the Sapiens v1 tasks")
        self.interp = self.TARGET_INTERP[task]

    def __call__(self, s: dict, rng: np.random.Generator) -> dict | None:
        p = self.p
        s = dict(s)
        if self.task == "pointmap":
            s["K"] = np.asarray(s["K"], np.float64).copy()
        if self.augment:
            if rng.random() < p.photometric_p:
                s["image"] = photometric_distortion(s["image"], rng)
            if rng.random() < p.down_up_p:
                s["image"] = down_up_sample(s["image"], rng, p.down_up_scale)
            if rng.random() < p.scale_p:
                self._scale(s, rng.uniform(*p.scale_range))
            if rng.random() < p.crop_p:
                self._crop(s, rng)
            if rng.random() < p.flip_p:
                self._flip(s)
        if self.stretch:
            _resize_maps(s, (self.w, self.h), self.interp)
        else:
            self._fit_pad(s)
        if self.augment:
            if rng.random() < p.blur_p:
                s["image"] = gaussian_blur(s["image"], rng)
            if rng.random() < p.noise_p:
                s["image"] = gaussian_noise(s["image"], rng)
            if rng.random() < p.solarize_p:
                s["image"] = solarize(s["image"])
        mask = s["mask"] & np.isfinite(s["target"]).all(-1)
        n = int(mask.sum())
        if self.train and (n < p.min_mask_pixels or n > p.max_mask_fraction * mask.size):
            return None  # the reference's filters; validation keeps every sample
        out = {"image": to_chw(s["image"]), "mask": mask}
        target = np.where(mask[..., None], np.nan_to_num(s["target"]), 0).astype(np.float32)
        if self.task == "normal":
            norm = np.linalg.norm(target, axis=-1, keepdims=True)
            out["target"] = to_chw(np.where(mask[..., None], target / (norm + 1e-6), -1000.0).astype(np.float32))
        elif self.task == "pointmap":
            points = self._pointmap_target(target[..., 0], mask, s["K"], out)
            if points is None:
                return None
            out["target"] = points
        else:
            out["target"] = to_chw(target)
        return out

    def _scale(self, s: dict, f: float) -> None:
        h, w = s["image"].shape[:2]
        _resize_maps(s, (max(1, round(w * f)), max(1, round(h * f))), self.interp)
        if "K" in s:
            s["K"][:2] *= f  # fx, cx / fy, cy (homogeneous row stays)

    def _crop(self, s: dict, rng: np.random.Generator) -> None:
        p = self.p
        h, w = s["image"].shape[:2]
        for _ in range(8):
            area = rng.uniform(*p.crop_area) * h * w
            aspect = rng.uniform(*p.crop_aspect)
            cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                for k in ("image", "mask", "target"):
                    s[k] = s[k][y : y + ch, x : x + cw]
                if "K" in s:
                    s["K"][0, 2] -= x
                    s["K"][1, 2] -= y
                return

    def _flip(self, s: dict) -> None:
        w = s["image"].shape[1]
        for k in ("image", "mask", "target"):
            s[k] = s[k][:, ::-1]
        if self.task == "normal":
            s["target"] = s["target"] * np.array([-1, 1, 1], np.float32)
        if "K" in s:
            s["K"][0, 2] = w - 1 - s["K"][0, 2]

    def _fit_pad(self, s: dict) -> None:
        """Aspect-preserving fit into the input, centred on a zero canvas."""
        h, w = s["image"].shape[:2]
        f = min(self.w / w, self.h / h)
        nw, nh = min(self.w, max(1, round(w * f))), min(self.h, max(1, round(h * f)))
        _resize_maps(s, (nw, nh), self.interp)
        x0, y0 = (self.w - nw) // 2, (self.h - nh) // 2
        image = np.zeros((self.h, self.w, 3), np.uint8)
        mask = np.zeros((self.h, self.w), bool)
        target = np.zeros((self.h, self.w, s["target"].shape[-1]), np.float32)
        image[y0 : y0 + nh, x0 : x0 + nw] = s["image"]
        mask[y0 : y0 + nh, x0 : x0 + nw] = s["mask"]
        target[y0 : y0 + nh, x0 : x0 + nw] = s["target"]
        s["image"], s["mask"], s["target"] = image, mask, target
        if "K" in s:
            s["K"][0, 0] *= nw / w
            s["K"][1, 1] *= nh / h
            s["K"][0, 2] = s["K"][0, 2] * nw / w + x0
            s["K"][1, 2] = s["K"][1, 2] * nh / h + y0

    def _pointmap_target(self, depth: np.ndarray, mask: np.ndarray, K: np.ndarray, out: dict) -> np.ndarray | None:
        """Canonical XYZ = (fc / fx) * XYZ from depth and K (points outside the mask are 0)."""
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        fc = self.p.canonical_focal or float(self.w)
        s = fc / fx
        v, u = np.mgrid[0 : self.h, 0 : self.w].astype(np.float64)
        z = depth.astype(np.float64)
        xyz = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=0) * s
        xyz[:, ~mask] = 0
        zc = xyz[2][mask]
        if self.train and (zc.size == 0 or zc.min() < self.p.min_depth):
            return None
        out["scale"] = np.float32(s)
        out["mean_depth"] = np.float32(zc.mean() if zc.size else 1.0)
        out["K"] = np.array([fx, fy, cx, cy], np.float32)  # the original (pre-canonical) intrinsics
        return xyz.astype(np.float32)
