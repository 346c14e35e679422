"""Reading checkpoint files safely and with little memory.

`detect_format` tells what a file is from its bytes alone (never its name): safetensors, a `torch.save`
zip archive, a TorchScript or torch.export program (zips too, told apart by their member names), or a bare
pickle stream. `sapiens2.weights` decides from that what may be read; the policy is in the README
("What loading trusts").

Safetensors files are parsed here directly (an 8-byte header length, a JSON header, raw little-endian
data): the header alone gives every key and shape, so a file can be checked before any tensor is read,
and tensors are then read one at a time with plain file reads into their final buffers. No memory map
stays open while the model fills, so the process never holds the file's pages and the tensors at once.

Pickle data can run code when unpickled; it is refused unless the caller opts in, and then read only by
the restricted unpickler of `sapiens2.safe_pickle` (an allow-list: tensors, plain containers and numpy
arrays, nothing that runs code).
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
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


class ProgramCheckpointError(UnsafeCheckpointError):
    """A TorchScript or torch.export program (it carries code) given without `allow_code=True`."""


class CorruptCheckpointError(CheckpointError):
    """A file of a known format whose content is malformed: truncated, inconsistent or out of range."""


class UnknownFormatError(CheckpointError):
    """Bytes that are none of the containers this package reads."""


# What a file is, decided from its bytes (never from its name) before any parser runs.
SAFETENSORS = "safetensors"
TORCH_ZIP = "torch.save archive"
TORCHSCRIPT = "TorchScript program"
TORCH_EXPORT = "torch.export program"
AOTINDUCTOR = "AOTInductor package"
BARE_PICKLE = "bare pickle stream"
PROGRAMS = (TORCHSCRIPT, TORCH_EXPORT, AOTINDUCTOR)

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# Members that make a zip a program: TorchScript keeps its code and constants beside the pickle; an
# AOTInductor package its compiled shared library and sources; a PT2 archive names its format, and older
# torch.export.save files their program.
_TORCHSCRIPT_MEMBERS = ("constants.pkl", "code/")
_AOTI_MEMBERS = ("data/aotinductor/",)
_EXPORT_MEMBERS = ("archive_format", "serialized_exported_program", "models/")


def detect_format(path: str | os.PathLike) -> str:
    """Which container `path` is (`SAFETENSORS`, `TORCH_ZIP`, `TORCHSCRIPT`, `TORCH_EXPORT`, `AOTINDUCTOR`,
    `BARE_PICKLE`),
    from its first bytes and, for a zip, its member names. Nothing in the file is parsed or run.

    Raises FileNotFoundError for a missing file, `CheckpointError` for an empty one, `CorruptCheckpointError`
    for a damaged zip and `UnknownFormatError` for anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise CheckpointError(path, f"cannot be read: {e.strerror or e}") from None
    if not head:
        raise CheckpointError(path, "empty file: only 0 bytes (an interrupted download?)")
    if head[:4] in _ZIP_MAGIC:
        return _zip_kind(path)
    if len(head) >= 9 and head[8:9] == b"{":
        return SAFETENSORS
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return BARE_PICKLE
    raise UnknownFormatError(path, f"not a safetensors file, PyTorch archive or pickle: it starts with {head[:8]!r} "
                                   f"({path.stat().st_size} bytes; a truncated download or another format?)")


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise CorruptCheckpointError(path, f"a damaged zip archive (truncated download?): {e}") from None
    members = [n.split("/", 1)[1] for n in names if "/" in n]
    if any(m == c or m.startswith(c) for m in members for c in _TORCHSCRIPT_MEMBERS):
        return TORCHSCRIPT
    if any(m.startswith(c) for m in members for c in _AOTI_MEMBERS):
        return AOTINDUCTOR  # compiled machine code, whatever else the archive also holds
    if any(m == c or m.startswith(c) for m in members for c in _EXPORT_MEMBERS):
        return TORCH_EXPORT
    if "data.pkl" in members:
        return TORCH_ZIP
    raise UnknownFormatError(path, "a zip archive, but not one written by torch.save (no data.pkl)")


def program_refusal(path: str | os.PathLike, kind: str) -> ProgramCheckpointError:
    """The error for a program archive met without the code opt-in."""
    return ProgramCheckpointError(
        path, f"is a {kind}, not plain weights: it carries code that would run when loaded, and is refused "
        "unread. Load it only if you trust its source, with allow_code=True (command line: --allow-code); "
        "or use the original weights file (.safetensors, or .pth with allow_pickle=True).")


class SafetensorsFile:
    """The header of a safetensors file, validated, and tensor-by-tensor reads of its data.

    Every field of the header is checked for type and range, and the tensors' byte ranges must tile the
    data section exactly (no negative, overlapping or missing bytes), as the format requires.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise CorruptCheckpointError(path, f"not a safetensors file: only {size} bytes")
                (n,) = struct.unpack("<Q", head)
                if n > min(_MAX_HEADER, size - 8):
                    raise CorruptCheckpointError(path, "not a safetensors file (or truncated): its header length "
                                                 f"is {n} bytes but the file has {size} bytes")
                raw = f.read(n)
        except OSError as e:
            raise CheckpointError(path, f"cannot be read: {e.strerror or e}") from e
        header = _parse_header(self.path, raw)
        self.metadata = _metadata(self.path, header.pop("__metadata__", None))
        self._data_start = 8 + n
        self.entries = _entries(self.path, header, size - self._data_start)

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


def _parse_header(path: Path, raw: bytes) -> dict:
    def no_duplicates(pairs: list) -> dict:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
        return dict(pairs)

    try:
        header = json.loads(raw, object_pairs_hook=no_duplicates)
    except RecursionError:
        raise CorruptCheckpointError(path, "not a safetensors file: its header nests too deeply") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise CorruptCheckpointError(path, f"not a safetensors file: its header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CorruptCheckpointError(path, f"not a safetensors file: its header is a JSON {type(header).__name__}, "
                                     "not an object")
    return header


def _metadata(path: Path, value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise CorruptCheckpointError(path, "malformed header: __metadata__ must map names to strings")
    return value


def _entries(path: Path, header: dict, data_size: int) -> dict[str, tuple[torch.dtype, tuple[int, ...], int, int]]:
    """(dtype, shape, start, end) per tensor, every field checked; the byte ranges must tile the data."""
    entries = {}
    for key, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise CorruptCheckpointError(path, f"malformed header entry for {key!r}: expected exactly dtype, shape "
                                         f"and data_offsets, got {_short(info)}")
        code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(code, str) or code not in _DTYPES:
            raise CorruptCheckpointError(path, f"tensor {key!r} has unsupported dtype {_short(code)} "
                                         f"(supported: {', '.join(_DTYPES)})")
        if not isinstance(shape, list) or not all(is_count(s) for s in shape):
            raise CorruptCheckpointError(path, f"tensor {key!r} has shape {_short(shape)}: expected a list of "
                                         "non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_count(o) for o in offsets)
                and offsets[0] <= offsets[1]):
            raise CorruptCheckpointError(path, f"tensor {key!r} has data_offsets {_short(offsets)}: expected "
                                         "[start, end] with 0 <= start <= end")
        dtype, (start, end) = _DTYPES[code], offsets
        expected = _numel(shape) * _itemsize(dtype)
        if end - start != expected:
            raise CorruptCheckpointError(path, f"tensor {key!r} claims {end - start} bytes but {shape} {dtype} "
                                         f"needs {expected}")
        entries[key] = (dtype, tuple(shape), start, end)
    covered = 0
    for key, (_, _, start, end) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if start != covered:
            what = "overlaps the tensor before it" if start < covered else f"leaves bytes {covered}..{start} unused"
            raise CorruptCheckpointError(path, f"tensor {key!r} at data_offsets [{start}, {end}] {what}")
        covered = end
    if covered > data_size:
        last = max(entries, key=lambda k: entries[k][3])
        raise CorruptCheckpointError(path, f"truncated: tensor {last!r} needs bytes up to {covered} of the data "
                                     f"section, which has only {data_size} (the download may be incomplete)")
    return entries


def is_count(value: object) -> bool:
    """A non-negative int that is not a bool (JSON and pickles give bools where ints belong)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()
