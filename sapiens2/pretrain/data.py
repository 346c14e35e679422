"""Unlabelled images for pretraining: a folder (searched recursively), a `.txt` list, or a glob; or tar shards
streamed through `sapiens2.training.shards` (`ShardViews` decodes their samples).

Sampling is a function of (seed, epoch, position) only, so a run resumed at any step sees exactly the
batches it would have seen without stopping: `ResumableSampler` yields this rank's share of a seeded
per-epoch permutation starting at any offset, and each image's augmentation generator is seeded from
(seed, epoch, index).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler

import numpy as np

from sapiens2.io.images import IMAGE_EXTENSIONS, ImageDecodeError, decode_image, read_image
from sapiens2.io.inputs import expand_inputs
from sapiens2.pretrain.augment import MultiCrop, Views

log = logging.getLogger(__name__)


def list_images(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Every image a folder, list file, glob or file (or several) names; an error when none or some are missing."""
    found = expand_inputs(source, strict=True)
    if not found.images:
        raise FileNotFoundError(f"no images found in {source}")
    return found.images


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix-style), so nearby (seed, epoch, index) give unrelated streams."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class PretrainImages(Dataset):
    """Decodes image `i` and returns its multi-crop views; `set_epoch` changes the augmentation stream.

    An image that fails to decode is logged and replaced by the next decodable one, so one bad file
    does not stop a long run.
    """

    def __init__(self, paths: Sequence[Path], transform: MultiCrop, seed: int = 0) -> None:
        if not paths:
            raise ValueError("no images to pretrain on")
        self.paths = list(paths)
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Views:
        for attempt in range(min(len(self.paths), 16)):
            i = (index + attempt) % len(self.paths)
            try:
                image = read_image(self.paths[i])
            except ImageDecodeError as e:
                log.warning("skipping an unreadable image: %s", e)
                continue
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, index))
            return self.transform(image, g)
        raise RuntimeError(f"16 images in a row from index {index} could not be read")


class ShardViews:
    """A shard sample (its first image member, by extension) -> multi-crop views; an unreadable image is logged
    and dropped (the stream moves on). Picklable, for DataLoader workers."""

    def __init__(self, transform: MultiCrop) -> None:
        self.transform = transform

    def __call__(self, key: str, sample: dict[str, bytes], rng: np.random.Generator) -> Views | None:
        ext = next((e for e in sample if f".{e.rpartition('.')[2].lower()}" in IMAGE_EXTENSIONS), None)
        if ext is None:
            log.warning("skipping shard sample %s: no image member (has %s)", key, ", ".join(sample))
            return None
        try:
            image = decode_image(sample[ext], f"{key}.{ext}")
        except ImageDecodeError as e:
            log.warning("skipping an unreadable image: %s", e)
            return None
        g = torch.Generator().manual_seed(int(rng.integers(2**62)))
        return self.transform(image, g)


def collate_views(items: Sequence[Views]) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (G x B x 3 x H x W global views, L x B x 3 x h x w local views)."""
    return (torch.stack([v.global_views for v in items], dim=1), torch.stack([v.local_views for v in items], dim=1))


class ResumableSampler(Sampler[int]):
    """This rank's indices of a seeded permutation per epoch; whole batches only, so every rank takes
    the same number of steps. `start` skips the first batches of the epoch (resume)."""

    def __init__(self, size: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        self.size = size
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"{size} images are fewer than one global batch ({batch_size} x {world_size} processes)")

    @property
    def batches_per_epoch(self) -> int:
        return self.size // (self.batch_size * self.world_size)

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=g)
        per_rank = self.batches_per_epoch * self.batch_size
        mine = order[: per_rank * self.world_size][self.rank :: self.world_size]
        return iter(mine[self.start_batch * self.batch_size :].tolist())
