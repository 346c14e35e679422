"""Streaming samples from WebDataset-style tar shards: writing them, and reading them split by rank and worker,
shuffled through a buffer, resumable at an exact position. Task-free: a sample is `{extension: bytes}` here;
`decode` turns it into what a dataset needs.

A shard is a plain tar whose consecutive members `<key>.<ext>` form one sample (the WebDataset convention, so
shards written here are read by `webdataset` too and the other way round). `ShardWriter` also writes
`index.json` beside them: the shard names and sample counts, and any metadata the caller adds.

Why our own reader, not the `webdataset` package: resuming exactly needs the order to be a pure function of
(seed, epoch, stream) and the position to be a count in that order; both are a few dozen lines over `tarfile`,
while wrapping `webdataset`'s pipeline would still leave those to us and add a dependency. Local shards are read
lazily (the shuffle buffer holds member offsets, not bytes), so skipping to a resume position reads only tar
headers; shards behind an http(s) URL are streamed once from start to end.

Order. Epoch `e` permutes the shard list with (seed, e) and deals it to the streams: stream `s` of `S` (one per
DataLoader worker of each rank: `s = rank * workers + worker`) reads shards `s, s + S, ...` of that permutation
through a shuffle buffer seeded with (seed, e, s). Every sample is read once per epoch by exactly one stream.
A stream that finishes its shards starts its next epoch at once, so streams never wait for each other and a
training loop never runs dry; streams with more samples lag by a fraction of an epoch at most.

Position. Each sample carries (stream, epoch, ordinal); `ShardLoader` keeps, per stream, where the last batch
it handed out ended, plus which worker is next. A resumed loader with the same streams skips exactly the samples
already handed out and asks the workers in the same turn: the batches are those of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import tarfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

log = logging.getLogger(__name__)

INDEX = "index.json"
#: Where a `sapiens2 curate` output folder keeps its shards: such a folder is a shard source as it is.
CURATED_SHARDS = "shards"
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)

Sample = dict[str, bytes]


class ShardError(ValueError):
    """A shard list or shard that cannot be used; the message names it."""


# ------------------------------------------------------------------------------------------------ writing


def check_shard_folder(folder: str | os.PathLike, prefix: str = "shard") -> None:
    """A FileExistsError when `folder` is a file or already holds shards (writing would mix two sets)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} is a file, not a folder")
    if folder.is_dir() and (any(folder.glob(f"{prefix}-*.tar")) or (folder / INDEX).exists()):
        raise FileExistsError(f"{folder} already holds shards; write into an empty folder")


def check_sample(key: str, files: Sample) -> None:
    """A ValueError unless `key` can name a sample (non-empty, no '.' or '/') and `files` is not empty."""
    if not key or "." in key or "/" in key:
        raise ValueError(f"sample key {key!r}: must be non-empty, without '.' or '/'")
    if not files:
        raise ValueError(f"sample {key!r} has no files")


def _add_sample(tar: tarfile.TarFile, key: str, files: Sample) -> int:
    for ext, data in files.items():
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size, info.mtime, info.mode = len(data), 0, 0o644  # no timestamps: the same input, the same bytes
        tar.addfile(info, io.BytesIO(data))
    return sum(len(b) for b in files.values())


def write_shard(path: str | os.PathLike, samples: Iterable[tuple[str, Sample]]) -> int:
    """One shard at `path` holding `samples` ((key, {extension: bytes}), in order), written through a temporary
    name so a reader never sees half of it; returns the number of samples. For writers that decide themselves
    which samples go in which shard (`sapiens2 curate` rewrites only the shards whose samples changed)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    count, keys = 0, set()
    try:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for key, files in samples:
                check_sample(key, files)
                if key in keys:
                    raise ValueError(f"sample key {key!r} twice in {path.name}")
                keys.add(key)
                _add_sample(tar, key, files)
                count += 1
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def shard_members(path: str | os.PathLike) -> list[str] | None:
    """The member names of a local shard, in order; None when it is missing or not a readable tar."""
    try:
        with tarfile.open(path, "r:") as tar:
            return tar.getnames()
    except (OSError, tarfile.TarError):
        return None


def write_index(folder: str | os.PathLike, shards: Sequence[dict[str, Any]], metadata: dict[str, Any] | None = None
                ) -> Path:
    """`<folder>/index.json`: the shards (``{"name", "samples"}`` each, in order), their total and `metadata`."""
    index = {"shards": list(shards), "samples": sum(s["samples"] for s in shards), **(metadata or {})}
    tmp = Path(folder) / f".{INDEX}.tmp"
    tmp.write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, Path(folder) / INDEX)
    return Path(folder) / INDEX


class ShardWriter:
    """Write samples into `<folder>/<prefix>-NNNNNN.tar`, a new shard every `max_count` samples or `max_bytes`
    bytes, and `index.json` on `close()` (shard names, sample counts, `metadata`). Use as a context manager."""

    def __init__(self, folder: str | os.PathLike, prefix: str = "shard", max_count: int = 1000,
                 max_bytes: int = 1 << 30, metadata: dict[str, Any] | None = None) -> None:
        if max_count < 1 or max_bytes < 1:
            raise ValueError(f"max_count and max_bytes must be >= 1, got {max_count} and {max_bytes}")
        self.folder = Path(folder)
        check_shard_folder(self.folder, prefix)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.prefix, self.max_count, self.max_bytes = prefix, max_count, max_bytes
        self.metadata = dict(metadata or {})
        self.shards: list[dict[str, Any]] = []
        self._tar: tarfile.TarFile | None = None
        self._count = self._bytes = 0
        self._keys: set[str] = set()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, key: str, files: Sample) -> None:
        """One sample: `files` maps an extension (`jpg`, `label.png`, `json`, ...) to its bytes."""
        check_sample(key, files)
        if key in self._keys:
            raise ValueError(f"sample key {key!r}: must be unique, written twice")
        size = sum(len(b) for b in files.values())
        if self._tar is None or self._count >= self.max_count or (self._count and self._bytes + size > self.max_bytes):
            self._next_shard()
        _add_sample(self._tar, key, files)
        self._keys.add(key)
        self._count += 1
        self._bytes += size

    def _next_shard(self) -> None:
        self._close_shard()
        name = f"{self.prefix}-{len(self.shards):06d}.tar"
        self._tar = tarfile.open(self.folder / f".{name}.tmp", "w", format=tarfile.USTAR_FORMAT)
        self.shards.append({"name": name, "samples": 0})
        self._count = self._bytes = 0

    def _close_shard(self) -> None:
        if self._tar is not None:
            self._tar.close()
            name = self.shards[-1]["name"]
            os.replace(self.folder / f".{name}.tmp", self.folder / name)
            self.shards[-1]["samples"] = self._count
            self._tar = None

    def close(self) -> Path:
        """Finish the last shard and write `index.json`; returns its path."""
        self._close_shard()
        return write_index(self.folder, self.shards, self.metadata)


def pack_files(files: Sequence[Path], out: str | os.PathLike, max_count: int = 1000, max_bytes: int = 1 << 30,
               metadata: dict[str, Any] | None = None, progress: Callable[[int, int], None] | None = None) -> Path:
    """Files (images, for pretraining) into shards, each as it is (`<key>.<ext>`, no re-encoding) with its
    original name in `<key>.json`; returns the index path."""
    with ShardWriter(out, max_count=max_count, max_bytes=max_bytes, metadata=metadata) as w:
        for i, path in enumerate(files):
            ext = Path(path).suffix.lower().lstrip(".") or "bin"
            w.write(f"{i:09d}", {ext: Path(path).read_bytes(), "json": json.dumps({"name": str(path)}).encode()})
            if progress is not None:
                progress(i + 1, len(files))
    return Path(out) / INDEX


# ----------------------------------------------------------------------------------------------- the list


def _folder_index(folder: Path) -> Path | None:
    """The index a local folder stands for: its own `index.json`, or that of its `shards/` subfolder (the
    layout `sapiens2 curate` writes: manifest, report and `shards/`)."""
    for index in (folder / INDEX, folder / CURATED_SHARDS / INDEX):
        if index.is_file():
            return index
    return None


def is_shard_spec(spec: str | os.PathLike) -> bool:
    """Whether a data source names shards: a `.tar` file or URL, a `{000..009}` pattern, an `index.json`, a
    folder holding one, or a `sapiens2 curate` output folder."""
    s = str(spec)
    return (s.endswith((".tar", INDEX)) or bool(_BRACES.search(s)) or bool(_URL.match(s))
            or (Path(s).is_dir() and _folder_index(Path(s)) is not None))


def expand_shards(specs: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[list[str], dict[str, Any]]:
    """Shard paths / URLs that `specs` name, in order, and the metadata of their `index.json` (the first found).

    A spec is a shard (`.tar` path or URL), a brace range `data-{000000..000099}.tar`, a glob of local shards,
    an `index.json` (path or URL), a folder holding one, or a `sapiens2 curate` output folder (its `shards/`).
    Missing local shards are an error naming them.
    """
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    out: list[str] = []
    meta: dict[str, Any] = {}
    for spec in specs:
        s = str(spec)
        if not _URL.match(s) and Path(s).is_dir():
            s = str(_folder_index(Path(s)) or Path(s) / INDEX)
        if s.endswith(INDEX):
            index = _read_index(s)
            base = s[: -len(INDEX)]
            out += [base + entry["name"] for entry in index["shards"]]
            if not meta:
                meta = {k: v for k, v in index.items() if k != "shards"}
            continue
        names = _expand_braces(s)
        if not _URL.match(s) and any(c in s for c in "*?["):
            found = sorted(str(p) for p in Path(s).parent.glob(Path(s).name))
            if not found:
                raise ShardError(f"{s}: no shard matches")
            names = found
        out += names
    missing = [n for n in out if not _URL.match(n) and not Path(n).is_file()]
    if missing:
        raise ShardError(f"{len(missing)} shard(s) missing, e.g. {missing[0]}")
    if not out:
        raise ShardError(f"{list(map(str, specs))}: no shards")
    return out, meta


def _read_index(where: str) -> dict[str, Any]:
    try:
        with open_shard(where) as f:
            index = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as e:
        raise ShardError(f"{where}: cannot read the shard index ({e})") from None
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list) or not all(
            isinstance(e, dict) and isinstance(e.get("name"), str) for e in index["shards"]):
        raise ShardError(f"{where}: not a shard index (expected {{\"shards\": [{{\"name\": ...}}, ...]}})")
    return index


def _expand_braces(s: str) -> list[str]:
    m = _BRACES.search(s)
    if not m:
        return [s]
    lo, hi = m.group(1), m.group(2)
    if int(hi) < int(lo):
        raise ShardError(f"{s}: the range {{{lo}..{hi}}} is empty")
    width = len(lo)
    return [name for i in range(int(lo), int(hi) + 1)
            for name in _expand_braces(s[: m.start()] + f"{i:0{width}d}" + s[m.end():])]


def open_shard(url: str, timeout_s: float = 60, retries: int = 3) -> io.BufferedIOBase:
    """A local file, or an http(s) / other urllib URL the user's storage serves, opened for reading."""
    if not _URL.match(url) or url.startswith("file://"):
        return open(url[7:] if url.startswith("file://") else url, "rb")
    for attempt in range(retries):
        try:
            return urllib.request.urlopen(url, timeout=timeout_s)  # noqa: S310 - a URL the user configured
        except OSError:
            if attempt == retries - 1:
                raise
            time.sleep(2**attempt)
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Member:
    """A member of a local shard, read when the sample leaves the shuffle buffer."""

    path: str
    offset: int
    size: int

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise ShardError(f"{self.path}: truncated member at byte {self.offset}")
        return data


def _split_name(name: str) -> tuple[str, str]:
    folder, _, base = name.rpartition("/")
    key, dot, ext = base.partition(".")
    return (f"{folder}/{key}" if folder else key), ext


def iter_shard(url: str) -> Iterator[tuple[str, dict[str, bytes | _Member]]]:
    """(key, {extension: bytes or a lazy local member}) for each sample of one shard, in order."""
    local = not _URL.match(url) or url.startswith("file://")
    path = url[7:] if url.startswith("file://") else url
    key, files = None, {}
    try:
        with contextlib.ExitStack() as stack:
            if local:
                tar = stack.enter_context(tarfile.open(path, "r:"))
            else:  # a stream: members in order, their bytes read as they pass
                tar = stack.enter_context(tarfile.open(fileobj=stack.enter_context(open_shard(url)), mode="r|"))
            for info in tar:
                if not info.isfile():
                    continue
                k, ext = _split_name(info.name)
                if k != key:
                    if files:
                        yield key, files
                    key, files = k, {}
                files[ext] = _Member(path, info.offset_data, info.size) if local else tar.extractfile(info).read()
    except (tarfile.TarError, OSError) as e:
        raise ShardError(f"{url}: cannot read the shard ({e})") from None
    if files:
        yield key, files


def materialize(files: dict[str, bytes | _Member]) -> Sample:
    return {ext: f.read() if isinstance(f, _Member) else f for ext, f in files.items()}


def shuffled(items: Iterable[Any], buffer: int, rng: np.random.Generator) -> Iterator[Any]:
    """Items in a buffer-shuffled order: fill `buffer`, then for each new item emit a random one and put the new
    one in its place; drain in random order at the end. `buffer` <= 1 keeps the order."""
    if buffer <= 1:
        yield from items
        return
    pool: list[Any] = []
    for item in items:
        if len(pool) < buffer:
            pool.append(item)
            continue
        i = int(rng.integers(len(pool)))
        pool[i], item = item, pool[i]
        yield item
    order = rng.permutation(len(pool))
    for i in order:
        yield pool[i]


@dataclass(frozen=True)
class Position:
    """Where a stream stands: the next sample is ordinal `ordinal` of `epoch`."""

    epoch: int = 0
    ordinal: int = 0


class ShardStream(IterableDataset):
    """An endless, deterministic stream of `(decode(key, sample, rng), (stream, epoch, ordinal + 1))` for one
    rank; each DataLoader worker takes its own stream (see the module notes).

    `decode(key, sample, rng)` gets the sample's bytes and a generator seeded with (seed, epoch, stream,
    ordinal) for its augmentations; returning None drops the sample (a rejected or unreadable one).
    `positions` (stream -> Position) resumes; `first_worker` rotates which worker plays which stream so a
    resumed DataLoader asks them in the uninterrupted run's turn.
    """

    def __init__(self, shards: Sequence[str], decode: Callable[[str, Sample, np.random.Generator], Any],
                 rank: int = 0, world_size: int = 1, num_workers: int = 0, seed: int = 0, buffer: int = 1000,
                 shuffle_shards: bool = True, positions: dict[int, Position] | None = None,
                 first_worker: int = 0) -> None:
        self.shards = list(shards)
        self.decode = decode
        self.rank, self.world_size = rank, world_size
        self.workers = max(num_workers, 1)
        self.seed, self.buffer, self.shuffle_shards = seed, buffer, shuffle_shards
        self.positions = dict(positions or {})
        self.first_worker = first_worker % self.workers
        if len(self.shards) < self.num_streams:
            raise ShardError(f"{len(self.shards)} shard(s) for {self.num_streams} streams ({world_size} process(es) x "
                             f"{self.workers} worker(s)): write at least one shard per stream (smaller shards with "
                             "`sapiens2 shard --max-count`) or use fewer workers")

    @property
    def num_streams(self) -> int:
        return self.world_size * self.workers

    def stream_of(self, worker: int) -> int:
        return self.rank * self.workers + (worker + self.first_worker) % self.workers

    def epoch_shards(self, epoch: int, stream: int) -> list[str]:
        order = np.arange(len(self.shards))
        if self.shuffle_shards:
            order = np.random.default_rng([self.seed, epoch, 0x5A4D]).permutation(len(self.shards))
        return [self.shards[i] for i in order[stream :: self.num_streams]]

    def samples(self, stream: int, epoch: int) -> Iterator[tuple[str, dict[str, bytes | _Member]]]:
        """One epoch of a stream, shuffled, not decoded."""
        rng = np.random.default_rng([self.seed, epoch, stream, 0xB0F])
        members = (item for url in self.epoch_shards(epoch, stream) for item in iter_shard(url))
        return shuffled(members, self.buffer, rng)

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        worker = get_worker_info()
        stream = self.stream_of(worker.id if worker is not None else 0)
        pos = self.positions.get(stream, Position())
        epoch, skip = pos.epoch, pos.ordinal
        while True:
            n = used = 0
            for n, (key, files) in enumerate(self.samples(stream, epoch), start=1):
                if n <= skip:
                    continue
                rng = np.random.default_rng([self.seed, epoch, stream, n])
                item = self.decode(key, materialize(files), rng)
                if item is not None:
                    used += 1
                    yield item, torch.tensor([stream, epoch, n])
            if n == 0 or (used == 0 and skip == 0):  # would loop forever yielding nothing
                raise ShardError(f"stream {stream}: its shards of epoch {epoch} hold no usable samples "
                                 f"({n} read, all rejected or unreadable)")
            epoch, skip = epoch + 1, 0


def collate_with_position(collate: Callable[[list], Any]) -> Callable[[list], tuple[Any, torch.Tensor]]:
    """A collate for `ShardStream` items: (collate of the samples, the last sample's (stream, epoch, ordinal))."""
    def _collate(items: list) -> tuple[Any, torch.Tensor]:
        return collate([x for x, _ in items]), items[-1][1]
    return _collate


class ShardLoader:
    """A DataLoader over a `ShardStream` that knows its exact position: `state_dict()` after any batch,
    `ShardLoader(..., state=...)` continues right after it (same process count and workers; otherwise each
    stream restarts its epoch with a warning, and no sample is lost but some repeat)."""

    def __init__(self, shards: Sequence[str], decode: Callable[[str, Sample, np.random.Generator], Any],
                 batch_size: int, collate: Callable[[list], Any], rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, seed: int = 0, buffer: int = 1000, pin_memory: bool = False,
                 state: dict[str, Any] | None = None, worker_init_fn: Callable[[int], None] | None = None) -> None:
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.collate, self.worker_init_fn = collate, worker_init_fn
        self.positions: dict[int, Position] = {}
        self.batches = 0
        self.layout = [world_size, max(num_workers, 1)]
        if state:
            if list(state["layout"]) == self.layout:
                self.positions = {int(s): Position(*p) for s, p in state["positions"].items()}
                self.batches = int(state["batches"])
            else:
                log.warning("the data stream was saved with %s process(es) x %s worker(s), resumed with %s x %s: "
                            "each stream restarts at the start of its latest epoch", *state["layout"], *self.layout)
                epoch = max((p[0] for p in state["positions"].values()), default=0)
                mine = range(rank * self.layout[1], (rank + 1) * self.layout[1])
                self.positions = {s: Position(epoch, 0) for s in mine}
        self.dataset = ShardStream(shards, decode, rank, world_size, num_workers, seed, buffer,
                                   positions=self.positions, first_worker=self.batches)

    def __iter__(self) -> Iterator[Any]:
        self.dataset.positions = dict(self.positions)
        self.dataset.first_worker = self.batches % self.layout[1]
        loader = DataLoader(self.dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                            collate_fn=collate_with_position(self.collate), pin_memory=self.pin_memory,
                            worker_init_fn=self.worker_init_fn, persistent_workers=False)
        for data, (stream, epoch, ordinal) in loader:
            self.positions[int(stream)] = Position(int(epoch), int(ordinal))
            self.batches += 1
            yield data

    def state_dict(self) -> dict[str, Any]:
        """Plain values (weights-only loadable): the layout, each stream's position, the batches handed out."""
        return {"layout": list(self.layout), "batches": self.batches,
                "positions": {str(s): [p.epoch, p.ordinal] for s, p in sorted(self.positions.items())}}
