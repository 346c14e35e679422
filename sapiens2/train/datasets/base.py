"""The pieces every task's data pipeline shares: a resumable sample stream, the transform wrapper with
refetch on rejected samples, and concatenation with repeats.

Order and augmentation are both functions of (seed, epoch, position), never of worker scheduling: the
sampler yields `(index, epoch)` pairs, and each sample's augmentations draw from a generator seeded with
(seed, epoch, index). A run resumed at step N rebuilds the stream at position N x batch size and sees the
very batches an uninterrupted run would.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

log = logging.getLogger(__name__)
MAX_REFETCH = 1000


class SampleSource(Dataset):
    """A dataset that returns raw samples (numpy arrays + metadata) by index, before any transform."""

    def __len__(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def load(self, index: int) -> dict | None:  # pragma: no cover - interface
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict | None:
        return self.load(index)

    def image_file(self, index: int) -> Path | None:
        """The file sample `index`'s image comes from (packing shards stores its bytes as they are), if any."""
        return None


class ConcatSources(SampleSource):
    """Several sources one after another; a source given `repeat` times is sampled that much more often."""

    def __init__(self, sources: Sequence[SampleSource], repeats: Sequence[int] | None = None) -> None:
        repeats = repeats or [1] * len(sources)
        self.parts = [s for s, r in zip(sources, repeats, strict=True) for _ in range(r)]
        self.ends = list(np.cumsum([len(p) for p in self.parts]))

    def __len__(self) -> int:
        return int(self.ends[-1]) if self.ends else 0

    def locate(self, index: int) -> tuple[SampleSource, int]:
        part = bisect.bisect_right(self.ends, index)
        start = self.ends[part - 1] if part else 0
        return self.parts[part], index - int(start)

    def load(self, index: int) -> dict | None:
        source, i = self.locate(index)
        return source.load(i)


def sample_rng(seed: int, epoch: int, index: int, attempt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index, attempt])


class TransformedDataset(Dataset):
    """source.load -> transform(sample, rng). A rejected sample (None from either) is replaced by another
    index drawn from the same seeded generator (training), up to `MAX_REFETCH` times."""

    def __init__(self, source: SampleSource, transform: Callable[[dict, np.random.Generator], dict | None],
                 seed: int = 0, refetch: bool = True) -> None:
        self.source = source
        self.transform = transform
        self.seed = seed
        self.refetch = refetch

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        for attempt in range(MAX_REFETCH + 1):
            rng = sample_rng(self.seed, epoch, index, attempt)
            raw = self.source.load(index)
            out = self.transform(raw, rng) if raw is not None else None
            if out is not None:
                return out
            if not self.refetch:
                raise ValueError(f"sample {index} was rejected and refetching is off (validation)")
            index = int(rng.integers(len(self.source)))
        raise RuntimeError(f"{MAX_REFETCH} samples in a row were rejected: check the data and the filters")


class StreamSampler(Sampler):
    """An endless stream of (index, epoch) for one rank, starting at its `start`-th sample.

    Each epoch is a permutation of the dataset seeded with (seed, epoch), padded by wrapping to a multiple
    of the world size and dealt out round-robin, so ranks see disjoint samples and equal counts.
    """

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0,
                 shuffle: bool = True) -> None:
        if size <= 0:
            raise ValueError("the training set is empty")
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.start, self.shuffle = start, shuffle
        self.per_rank = -(-size // world_size)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.size, generator=g).numpy()
        else:
            perm = np.arange(self.size)
        total = self.per_rank * self.world_size
        perm = np.resize(perm, total)  # wraps around to pad
        return perm[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start
        while True:
            epoch, offset = divmod(position, self.per_rank)
            indices = self.epoch_indices(epoch)
            for i in indices[offset:]:
                yield int(i), epoch
            position = (epoch + 1) * self.per_rank

    def __len__(self) -> int:  # endless; a nominal epoch for tools that ask
        return self.per_rank


def worker_init(_: int) -> None:
    cv2.setNumThreads(0)
    torch.set_num_threads(1)
