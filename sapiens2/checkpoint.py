"""Reading checkpoint files safely and with little memory.

Safetensors files are parsed here directly (an 8-byte header length, a JSON header, raw little-endian
data): the header alone gives every key and shape, so a file can be checked before any tensor is read,
and tensors are then read one at a time with plain file reads into their final buffers. No memory map
stays open while the model fills, so the process never holds the file's pages and the tensors at once.

Pickle files (`.pth`, `.bin`, `.pt`) can run code when unpickled; they are refused unless the caller
opts in, and then read by the restricted unpickler of `sapiens2.safe_pickle` (an allow-list: tensors,
plain containers and numpy arrays, nothing that runs code).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import torch

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl")
_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnsafeCheckpointError(CheckpointError):
    """A pickle checkpoint given without `allow_pickle=True`, or one that references code."""


class SafetensorsFile:
    """The header of a safetensors file, validated, and tensor-by-tensor reads of its data."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise CheckpointError(path, f"not a safetensors file: only {size} bytes")
                (n,) = struct.unpack("<Q", head)
                if n > min(_MAX_HEADER, size - 8):
                    raise CheckpointError(path, "not a safetensors file (or truncated): its header length is "
                                          f"{n} bytes but the file has {size} bytes")
                raw = f.read(n)
        except OSError as e:
            raise CheckpointError(path, f"cannot be read: {e.strerror or e}") from e
        try:
            header = json.loads(raw)
            if not isinstance(header, dict):
                raise ValueError("header is not a JSON object")
        except (UnicodeDecodeError, ValueError) as e:
            raise CheckpointError(path, f"not a safetensors file: its header is not valid JSON ({e})") from e
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._data_start = 8 + n
        data_size = size - self._data_start
        self.entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        for key, info in header.items():
            try:
                dtype = _DTYPES[info["dtype"]]
                shape = tuple(int(s) for s in info["shape"])
                start, end = (int(o) for o in info["data_offsets"])
            except (KeyError, TypeError, ValueError) as e:
                raise CheckpointError(path, f"malformed header entry for {key!r}: {info!r}") from e
            expected = _numel(shape) * _itemsize(dtype)
            if end - start != expected:
                raise CheckpointError(path, f"tensor {key!r} claims {end - start} bytes but {shape} {dtype} needs {expected}")
            if end > data_size:
                raise CheckpointError(path, f"truncated: tensor {key!r} needs bytes up to {end} of the data section, "
                                      f"which has only {data_size} (the download may be incomplete)")
            self.entries[key] = (dtype, shape, start, end)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v[1] for k, v in self.entries.items()}

    def dtypes(self) -> set[torch.dtype]:
        return {v[0] for v in self.entries.values()}

    def nbytes(self) -> int:
        return sum(v[3] - v[2] for v in self.entries.values())

    def iter_tensors(self, keys: list[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (key, CPU tensor) in file order, each read straight into its own buffer."""
        wanted = self.entries if keys is None else {k: self.entries[k] for k in keys}
        order = sorted(wanted.items(), key=lambda kv: kv[1][2])
        with open(self.path, "rb", buffering=0) as f:
            for key, (dtype, shape, start, end) in order:
                t = torch.empty(shape, dtype=dtype)
                view = memoryview(t.view(-1).view(torch.uint8).numpy()) if t.numel() else memoryview(b"")
                f.seek(self._data_start + start)
                got = 0
                while got < end - start:
                    n = f.readinto(view[got:])
                    if not n:
                        raise CheckpointError(self.path, f"truncated while reading tensor {key!r}")
                    got += n
                yield key, t


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def is_pickle_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in PICKLE_SUFFIXES
