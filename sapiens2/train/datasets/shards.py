"""Labelled samples in tar shards (`sapiens2 shard --task ...`): packing a sample source into shards, and the
source and decoder that stream them back into a task's transform.

A sample is stored as its source loads it, losslessly: the image as its original file's bytes (`<key>.jpg`,
`.png`, ...: no re-encoding), every other array as `<key>.<field>.npy`, and the remaining plain values
(names, ids, flags) in `<key>.json`. What the training transform needs to know about the whole set (pose: the
keypoint count and flip / body-half layout) goes in the shards' `index.json`. Decoding gives back the very dict
`SampleSource.load` gave, so the task's transform runs unchanged.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sapiens2.io.images import IMAGE_EXTENSIONS, ImageDecodeError, decode_image
from sapiens2.train.datasets.base import SampleSource
from sapiens2.train.schema import DatasetConfig
from sapiens2.train.transforms import KeypointLayout
from sapiens2.training.config import ConfigError
from sapiens2.training.shards import ShardError, ShardWriter, expand_shards, is_shard_spec

log = logging.getLogger(__name__)


def encode_sample(sample: dict[str, Any], image_file: Path | None = None) -> dict[str, bytes]:
    """A loaded sample -> shard members (see the module notes). `image_file`: the image's original file, stored as
    is; without one the decoded image is stored as PNG (lossless)."""
    files: dict[str, bytes] = {}
    meta: dict[str, Any] = {}
    for name, value in sample.items():
        if name == "image" and image_file is not None:
            files[image_file.suffix.lower().lstrip(".")] = image_file.read_bytes()
        elif name == "image":
            ok, png = cv2.imencode(".png", np.ascontiguousarray(value[..., ::-1]))
            if not ok:
                raise ValueError("the image could not be encoded as PNG")
            files["png"] = png.tobytes()
        elif isinstance(value, np.ndarray):
            buf = io.BytesIO()
            np.save(buf, value, allow_pickle=False)
            files[f"{name}.npy"] = buf.getvalue()
        elif isinstance(value, np.generic):
            meta[name] = value.item()
        elif value is None or isinstance(value, (bool, int, float, str, list)):
            meta[name] = value
        else:
            raise TypeError(f"sample field {name!r}: cannot store a {type(value).__name__} in a shard")
    files["json"] = json.dumps(meta).encode()
    return files


def decode_sample(key: str, files: dict[str, bytes]) -> dict[str, Any]:
    """Shard members -> the dict the source's `load` gave (the inverse of `encode_sample`)."""
    sample: dict[str, Any] = json.loads(files["json"]) if "json" in files else {}
    for ext, data in files.items():
        if ext.endswith(".npy"):
            sample[ext[: -len(".npy")]] = np.load(io.BytesIO(data), allow_pickle=False)
        elif f".{ext.lower()}" in IMAGE_EXTENSIONS:
            sample["image"] = decode_image(data, f"{key}.{ext}")
    if "image" not in sample:
        raise ShardError(f"shard sample {key}: no image member (has {', '.join(files)})")
    return sample


def source_metadata(task: str, source: SampleSource) -> dict[str, Any]:
    """What the transform needs beyond the samples, for `index.json` (pose: keypoint count and layout)."""
    meta: dict[str, Any] = {"task": task}
    if hasattr(source, "layout"):
        meta["num_keypoints"] = int(source.num_keypoints)
        meta["layout"] = {k: list(v) if v is not None else None for k, v in asdict(source.layout()).items()}
    return meta


def pack_source(task: str, source: SampleSource, out: str | Path, max_count: int = 1000, max_bytes: int = 1 << 30,
                progress: Callable[[int, int], None] | None = None) -> Path:
    """Every sample of `source` into shards in `out`; samples the source rejects (None) are left out."""
    n = len(source)
    with ShardWriter(out, max_count=max_count, max_bytes=max_bytes, metadata=source_metadata(task, source)) as w:
        for i in range(n):
            sample = source.load(i)
            if sample is not None:
                w.write(f"{i:09d}", encode_sample(sample, source.image_file(i)))
            if progress is not None:
                progress(i + 1, n)
    return Path(out) / "index.json"


class ShardSource(SampleSource):
    """A training set in shards (`root` names them): not indexable, it streams; it knows its shard list, its
    sample count (from `index.json`, if any) and what the transform needs (pose: `layout()`)."""

    def __init__(self, task: str, cfg: DatasetConfig, where: str = "data") -> None:
        try:
            self.shards, self.meta = expand_shards(cfg.root)
        except ShardError as e:
            raise ConfigError(f"{where}.root", str(e)) from None
        if self.meta.get("task", task) != task:
            raise ConfigError(f"{where}.root", f"{cfg.root} holds {self.meta['task']} samples, not {task}")
        self.samples = int(self.meta.get("samples", 0))
        self.num_keypoints = int(self.meta.get("num_keypoints", 0))

    def __len__(self) -> int:
        return self.samples  # 0 when unknown (shards without an index)

    def load(self, index: int) -> dict:
        raise TypeError("a shard source streams; it has no samples by index (validation needs folders)")

    def layout(self) -> KeypointLayout:
        layout = self.meta.get("layout") or {"flip_indices": None}
        return KeypointLayout(**{k: tuple(v) if v is not None else None for k, v in layout.items()})


def is_shard_root(cfg: DatasetConfig) -> bool:
    return is_shard_spec(cfg.root)


class ShardTransform:
    """(key, members, rng) -> the task's transform of the decoded sample, or None (rejected or unreadable: the
    stream moves on). Picklable, for DataLoader workers."""

    def __init__(self, transform: Callable[[dict, np.random.Generator], dict | None]) -> None:
        self.transform = transform

    def __call__(self, key: str, files: dict[str, bytes], rng: np.random.Generator) -> dict | None:
        try:
            sample = decode_sample(key, files)
        except (ImageDecodeError, ShardError, ValueError) as e:
            log.warning("skipping shard sample %s: %s", key, e)
            return None
        return self.transform(sample, rng)
