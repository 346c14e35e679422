"""Segmentation and dense-task samples from folders of files paired by name.

seg: `images/<stem>.<ext>` + `labels/<stem>.png` (palette, grey or dome29-colour PNG, or .npy). With
`class_map` {source id: training id}, unlisted source ids become 255 (ignored).
normal / albedo / matting / pointmap: `rgb/<stem>.*` (images), `mask/<stem>.*` (optional; channel 0 > 0
is valid) and the target folder: `normal/` (.npy / .npz H x W x 3), `albedo/` (8-bit PNG, RGB / 255, or
.npy), `alpha/` (PNG / .npy in [0, 1]), or for pointmaps `depth/` (.npy H x W metric Z) with
`camera_intrinsics/<stem>.txt` (3 x 3), or for v1 relative depth `depth/` (.npy H x W, any positive scale).
Samples are the stems present in every folder used.
NaN targets are masked out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sapiens2.io import IMAGE_EXTENSIONS, read_image
from sapiens2.metrics.readers import file_stem, read_label_map, read_map, read_mask
from sapiens2.train.datasets.base import SampleSource
from sapiens2.train.schema import DatasetConfig
from sapiens2.training.config import ConfigError

TARGET_DIRS = {"normal": "normal", "pointmap": "depth", "albedo": "albedo", "matting": "alpha", "depth": "depth"}
TARGET_KEYS = {"normal": ("normal",), "pointmap": ("depth",), "albedo": ("albedo",), "matting": ("alpha",),
               "depth": ("depth",)}
ARRAYS = (".npy", ".npz")
IGNORE = 255


def _index(folder: Path, suffixes: tuple[str, ...], field: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise ConfigError(field, f"{folder}: no such folder")
    return {file_stem(p): p for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes}



class SegFolder(SampleSource):
    def __init__(self, cfg: DatasetConfig, where: str = "data") -> None:
        root = Path(cfg.root)
        images = _index(root / (cfg.images or "images"), tuple(IMAGE_EXTENSIONS), f"{where}.images")
        labels = _index(root / cfg.labels, (".png", ".npy", ".npz", ".bmp", ".tif", ".tiff"), f"{where}.labels")
        self.stems = sorted(images.keys() & labels.keys())
        if not self.stems:
            raise ConfigError(f"{where}.root", f"{root}: no image has a label file with the same name")
        self.images, self.labels = images, labels
        self.lut = None
        if cfg.class_map is not None:
            self.lut = np.full(65536, IGNORE, np.uint8)
            for src, dst in cfg.class_map.items():
                if not src.lstrip("-").isdigit() or not 0 <= int(src) < 65536 or not 0 <= dst <= 255:
                    raise ConfigError(f"{where}.class_map.{src}", "maps a source id in [0, 65535] to an id in [0, 255]")
                self.lut[int(src)] = dst
        self.in_the_wild = "itw" in root.name

    def __len__(self) -> int:
        return len(self.stems)

    def image_file(self, index: int) -> Path:
        return self.images[self.stems[index]]

    def load(self, index: int) -> dict:
        stem = self.stems[index]
        image = read_image(self.images[stem])
        label = read_label_map(self.labels[stem])
        if label.shape != image.shape[:2]:
            raise ValueError(f"{self.labels[stem]}: label map {label.shape} does not match its image {image.shape[:2]}")
        label = self.lut[np.clip(label, 0, 65535)] if self.lut is not None else np.clip(label, 0, 255).astype(np.uint8)
        return {"image": image, "label": label.astype(np.uint8), "in_the_wild": self.in_the_wild, "name": stem}


class DenseFolder(SampleSource):
    def __init__(self, task: str, cfg: DatasetConfig, where: str = "data") -> None:
        self.task = task
        root = Path(cfg.root)
        images = _index(root / (cfg.images or "rgb"), tuple(IMAGE_EXTENSIONS), f"{where}.images")
        target_exts = ARRAYS if task in ("normal", "pointmap", "depth") else (*ARRAYS, ".png", ".jpg", ".jpeg", ".tif", ".tiff")
        targets = _index(root / (cfg.target or TARGET_DIRS[task]), target_exts, f"{where}.target")
        stems = images.keys() & targets.keys()
        self.masks: dict[str, Path] | None = None
        if cfg.mask and (task != "matting" or (root / cfg.mask).is_dir()):
            self.masks = _index(root / cfg.mask, (*tuple(IMAGE_EXTENSIONS), *ARRAYS), f"{where}.mask")
            stems &= self.masks.keys()
        self.intrinsics: dict[str, Path] = {}
        if task == "pointmap":
            self.intrinsics = _index(root / cfg.intrinsics, (".txt", ".npy"), f"{where}.intrinsics")
            stems &= self.intrinsics.keys()
        self.stems = sorted(stems)
        if not self.stems:
            raise ConfigError(f"{where}.root", f"{root}: no sample has all of its files (image, target, mask"
                              + (", intrinsics" if task == "pointmap" else "") + ") under the same name")
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.stems)

    def image_file(self, index: int) -> Path:
        return self.images[self.stems[index]]

    def load(self, index: int) -> dict | None:
        stem = self.stems[index]
        image = read_image(self.images[stem])
        target, file_mask = read_map(self.targets[stem], TARGET_KEYS[self.task])
        if target.ndim == 2:
            target = target[..., None]
        if target.shape[:2] != image.shape[:2]:
            raise ValueError(f"{self.targets[stem]}: target {target.shape[:2]} does not match its image {image.shape[:2]}")
        mask = read_mask(self.masks[stem]) if self.masks is not None else np.ones(image.shape[:2], bool)
        if file_mask is not None:
            mask &= file_mask
        mask &= np.isfinite(target).all(-1)
        if self.task == "normal":
            mask &= np.abs(target).sum(-1) > 0
        if self.task == "depth":
            mask &= target[..., 0] > 0
        if self.task == "albedo" and target.shape[-1] == 4:
            target = target[..., :3]
        if self.task == "albedo" and mask.any() and target[mask].std(0).max() < 0.02:
            return None  # a flat albedo teaches nothing (the reference's filter)
        sample = {"image": image, "mask": mask, "target": np.nan_to_num(target).astype(np.float32), "name": stem}
        if self.task == "pointmap":
            k_path = self.intrinsics[stem]
            K = np.load(k_path) if k_path.suffix == ".npy" else np.loadtxt(k_path)
            sample["K"] = np.asarray(K, np.float64).reshape(3, 3)
        return sample
