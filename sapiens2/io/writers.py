"""Atomic output writers: a file is either its old self or the complete new content, never half.

Every writer here encodes in memory or streams into a temporary file *in the target's folder*
(``.<name>.<random>.sapiens2-tmp``), flushes and fsyncs it, then renames it over the target with
``os.replace`` (atomic on POSIX and Windows within one file system) and fsyncs the folder so the rename
itself survives a power cut. If anything fails before the rename (an encoder error, a full disk, Ctrl-C)
the temporary file is removed and the target is untouched. Only a hard kill (SIGKILL, power loss) can
leave a temporary file behind, never a damaged target; `remove_stale_temp_files` sweeps those up.

New files get the permissions a plain ``open(path, "w")`` would give them (0o666 minus the umask);
an overwritten file keeps its permissions. Missing parent folders are created. Images are taken in
RGB(A) order, the order `read_image` returns.

JSON is UTF-8, and file names that are not valid UTF-8 are kept losslessly: Python hands such a name out
(``os.fsdecode``, ``os.listdir``, `pathlib`) with each undecodable byte XX as the lone surrogate U+DCXX
("surrogateescape"). `write_json` writes each of those as the JSON escape ``\\udcXX`` (the rest of the text
stays as it is), so the file is valid UTF-8 JSON, and ``os.fsencode(json.load(f)["file"])`` gives back the
exact bytes of the name. Readers in other languages see the escape, which marks the byte that was not UTF-8.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Final

import cv2
import numpy as np

__all__ = [
    "IMAGE_WRITE_EXTENSIONS",
    "TEMP_SUFFIX",
    "atomic_open",
    "remove_stale_temp_files",
    "write_bytes",
    "json_text",
    "write_errors_json",
    "write_image",
    "write_json",
    "write_npy",
    "write_npz",
    "write_text",
]

#: Suffix of the temporary files, so leftovers from a killed process are recognisable.
TEMP_SUFFIX: Final[str] = ".sapiens2-tmp"
#: Extensions `write_image` can encode (lower case, with the dot).
IMAGE_WRITE_EXTENSIONS: Final[frozenset[str]] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
_SIXTEEN_BIT_EXTENSIONS: Final[frozenset[str]] = frozenset({".png", ".tif", ".tiff"})

PathLike = str | os.PathLike[str]
_SURROGATE: Final[re.Pattern[str]] = re.compile("[\ud800-\udfff]")


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", *, encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; on a clean exit it replaces ``path``.

    ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8 unless ``encoding`` says otherwise). If the block
    raises, the temporary file is deleted and ``path`` keeps its old content (or stays absent).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'wb' or 'w', not {mode!r}")
    target = Path(path)
    if target.name in ("", ".", ".."):
        raise ValueError(f"not a file path: {path!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    final_mode = _mode_for(target)
    # Keep the prefix short enough that the temp name stays under the 255-byte name limit.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:120]}.", suffix=TEMP_SUFFIX, dir=target.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, final_mode)
        else:
            os.chmod(tmp, final_mode)
        binary = mode == "wb"
        with os.fdopen(fd, mode, encoding=None if binary else encoding or "utf-8",
                       newline=None if binary else "") as f:
            fd = -1  # now owned by f
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_folder(target.parent)


def write_bytes(path: PathLike, data: bytes | bytearray | memoryview) -> Path:
    """Atomically write ``data`` to ``path``; returns the path."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Atomically write ``text`` (newlines written as given, not translated); returns the path."""
    return write_bytes(path, text.encode(encoding))


def write_json(path: PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Atomically write ``obj`` as UTF-8 JSON. numpy scalars and arrays and paths are converted.

    NaN and infinity are refused (``ValueError``, nothing written): they are not JSON and break strict
    readers; store ``None`` instead.
    """
    return write_text(path, json_text(obj, indent=indent) + "\n")


def json_text(obj: Any, *, indent: int | None = 2) -> str:
    """``obj`` as the JSON text `write_json` writes: UTF-8-encodable, lone surrogates (non-UTF-8 file names,
    see the module docstring) as ``\\uXXXX`` escapes, NaN and infinity refused."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False, default=_json_default)
    # Outside strings JSON text is ASCII, so any surrogate is inside a string, where its escape means it.
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def write_npy(path: PathLike, array: np.ndarray) -> Path:
    """Atomically write one array as ``.npy`` (never pickled: object arrays are refused)."""
    array = np.asanyarray(array)
    _refuse_objects({"array": array})
    with atomic_open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
    return Path(path)


def write_npz(path: PathLike, *, compressed: bool = True, **arrays: np.ndarray) -> Path:
    """Atomically write named arrays as ``.npz`` (zip-compressed unless ``compressed=False``).

    The name is used as given: unlike ``np.savez``, no ``.npz`` is appended.
    """
    if not arrays:
        raise ValueError("write_npz needs at least one named array")
    arrays = {k: np.asanyarray(v) for k, v in arrays.items()}
    _refuse_objects(arrays)
    with atomic_open(path, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)
    return Path(path)


def write_image(path: PathLike, image: np.ndarray, *, jpeg_quality: int = 95, png_compression: int = 3) -> Path:
    """Atomically write an image; the format follows the extension (`IMAGE_WRITE_EXTENSIONS`).

    ``image`` is ``H x W`` (gray), ``H x W x 3`` (RGB) or ``H x W x 4`` (RGBA), ``uint8``, or
    ``uint16`` for PNG/TIFF (depth maps, say). JPEG and BMP have no alpha: RGBA there is refused
    rather than silently flattened. The image is fully encoded before the file is touched.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_WRITE_EXTENSIONS:
        raise ValueError(f"{path}: cannot write images as {suffix or 'no extension'!r}; "
                         f"use one of {sorted(IMAGE_WRITE_EXTENSIONS)}")
    image = np.asarray(image)
    if image.dtype == np.uint16 and suffix not in _SIXTEEN_BIT_EXTENSIONS:
        raise ValueError(f"{path}: 16-bit images can only be written as PNG or TIFF")
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: images must be uint8 or uint16, not {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[2] == 3:
        image = image[..., ::-1]
    elif image.ndim == 3 and image.shape[2] == 4:
        if suffix in (".jpg", ".jpeg", ".bmp"):
            raise ValueError(f"{path}: {suffix} has no alpha channel; drop or composite alpha first")
        image = image[..., [2, 1, 0, 3]]
    elif image.ndim != 2:
        raise ValueError(f"{path}: expected H x W, H x W x 3 or H x W x 4, got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"{path}: cannot write an empty image of shape {image.shape}")

    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    elif suffix == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)]
    ok, encoded = cv2.imencode(suffix, np.ascontiguousarray(image), params)
    if not ok:
        raise ValueError(f"{path}: OpenCV could not encode a {image.shape} {image.dtype} image as {suffix}")
    return write_bytes(path, encoded.tobytes())


def write_errors_json(errors: Iterable[Any], out_dir: PathLike, *, name: str = "errors.json") -> Path:
    """Write a batch's failure report to ``out_dir/name``: ``{"count": n, "errors": [...]}``.

    Each entry has ``file``, ``reason`` and ``error_type`` (plus ``source`` for a missing input named
    in a list file). ``errors`` may hold `ImageDecodeError`\\ s (or anything with ``path`` and
    ``reason``), `MissingInput`\\ s, ``(file, exception)`` pairs, or exceptions with a ``filename``.
    The report is written even when empty, so a stale report from an earlier run never survives.
    """
    entries = [_error_entry(e) for e in errors]
    return write_json(Path(out_dir) / name, {"count": len(entries), "errors": entries})


def remove_stale_temp_files(folder: PathLike, *, older_than_s: float = 3600.0) -> list[Path]:
    """Delete temporary files left in ``folder`` by writers that were killed mid-write.

    Only files with `TEMP_SUFFIX` whose last change is older than ``older_than_s`` are removed, so a
    writer still at work in another process is not disturbed. Returns what was removed.
    """
    removed = []
    cutoff = time.time() - older_than_s
    with os.scandir(folder) as it:
        for entry in it:
            if not (entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX)):
                continue
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime <= cutoff:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except FileNotFoundError:
                pass
    return sorted(removed)


# ------------------------------------------------------------------------------------------- helpers


def _error_entry(err: Any) -> dict[str, Any]:
    exc: BaseException | None = None
    if isinstance(err, tuple) and len(err) == 2:
        file, exc = err
        reason = getattr(exc, "reason", None) or str(exc) or repr(exc)
        return {"file": _name(file), "reason": reason, "error_type": type(exc).__name__}
    if hasattr(err, "input") and hasattr(err, "reason"):  # MissingInput
        entry = {"file": err.input, "reason": err.reason, "error_type": type(err).__name__}
        if getattr(err, "source", None):
            entry["source"] = err.source
        return entry
    if hasattr(err, "path") and hasattr(err, "reason"):  # ImageDecodeError and friends
        return {"file": _name(err.path), "reason": err.reason, "error_type": type(err).__name__}
    if isinstance(err, BaseException):
        file = getattr(err, "filename", None)
        reason = (err.strerror if isinstance(err, OSError) and err.strerror else str(err)) or repr(err)
        return {"file": _name(file) if file is not None else None, "reason": reason,
                "error_type": type(err).__name__}
    raise TypeError(f"cannot report {err!r}: expected an exception, a MissingInput or a (file, exception) pair")


def _name(path: Any) -> str:
    """A file name for a report: bytes names decoded the way the OS module does (lossless)."""
    return os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _refuse_objects(arrays: dict[str, np.ndarray]) -> None:
    for key, a in arrays.items():
        if a.dtype.hasobject:
            raise ValueError(f"array {key!r} has dtype object, which would need pickle; convert it first")


_fallback_umask: int | None = None


def _current_umask() -> int:
    global _fallback_umask
    try:  # Linux: read it without changing it
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    if _fallback_umask is None:  # elsewhere the only way to read it is to set it: do that once
        _fallback_umask = os.umask(0o022)
        os.umask(_fallback_umask)
    return _fallback_umask


def _mode_for(target: Path) -> int:
    """Permissions for the new file: the old file's, or what open() would create."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~_current_umask()


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable. Not possible on every platform (Windows); best effort there."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
