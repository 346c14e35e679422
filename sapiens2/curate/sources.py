"""What to curate: image files from folders, globs and list files, and the image members of tar shards.

Each input becomes an `Item` with a stable `key` (a hash of where it came from, safe as a WebDataset key)
so a rerun over the same sources finds the rows it already wrote.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from sapiens2.io.images import DEFAULT_MAX_BYTES, ImageTooLargeError, UnreadableImageError, is_image_path
from sapiens2.io.inputs import expand_inputs

#: Separates a tar shard from its member in `Item.path`: ``shards/000.tar::photo.jpg``.
MEMBER_SEP = "::"


@dataclass(frozen=True)
class Item:
    """One input image. `path` is a file, or ``SHARD.tar::MEMBER`` for a member of a tar shard."""

    key: str
    path: str

    def read_bytes(self, max_bytes: int | None = DEFAULT_MAX_BYTES) -> bytes:
        """The encoded bytes; an unreadable file or member raises `UnreadableImageError` naming it."""
        shard, sep, member = self.path.partition(MEMBER_SEP)
        try:
            if not sep:
                size = os.path.getsize(shard)
                if max_bytes is not None and size > max_bytes:
                    raise ImageTooLargeError(self.path, f"file is {size} bytes, over the {max_bytes}-byte limit")
                return Path(shard).read_bytes()
            return _SHARDS.read(shard, member, self.path)
        except (OSError, KeyError, tarfile.TarError) as err:
            raise UnreadableImageError(self.path, f"cannot read: {err}") from None


class _OpenShards:
    """The last few tar shards read, kept open with their member index: reading member after member of a
    shard then costs one open and one scan of its headers, not one per member. A shard rewritten since
    (another size or modification time) is opened afresh. One reader at a time: the open files have one
    position each, and the local engine decodes from several threads."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._open: OrderedDict[tuple, tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, shard: str, member: str, label: str) -> bytes:
        with self._lock:
            return self._read(shard, member, label)

    def _read(self, shard: str, member: str, label: str) -> bytes:
        st = os.stat(shard)
        key = (os.path.realpath(shard), st.st_size, st.st_mtime_ns)
        if key not in self._open:
            tar = tarfile.open(shard)
            self._open[key] = (tar, {m.name: m for m in tar.getmembers()})
            while len(self._open) > self.size:
                self._open.popitem(last=False)[1][0].close()
        self._open.move_to_end(key)
        tar, members = self._open[key]
        info = members.get(member)
        if info is None:
            raise UnreadableImageError(label, "no such member in the shard")
        f = tar.extractfile(info)
        if f is None:
            raise UnreadableImageError(label, "not a regular file in the shard")
        return f.read()


_SHARDS = _OpenShards()


def item_key(path: str) -> str:
    """16 hex digits of the SHA-1 of the path: stable across runs, no dots (WebDataset splits keys at dots)."""
    return hashlib.sha1(path.encode("utf-8")).hexdigest()[:16]


def is_tar_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() == ".tar"


def tar_items(shard: str | os.PathLike[str]) -> list[Item]:
    """The image members of a tar shard (by extension, as WebDataset names them), in archive order."""
    shard = os.fspath(shard)
    try:
        with tarfile.open(shard) as tar:
            names = [m.name for m in tar.getmembers() if m.isfile() and is_image_path(m.name)]
    except (OSError, tarfile.TarError) as err:
        raise ValueError(f"{shard}: cannot read the tar shard: {err}") from None
    return [Item(item_key(p), p) for p in (f"{shard}{MEMBER_SEP}{n}" for n in names)]


def collect_items(sources: list[str]) -> list[Item]:
    """Every image of `sources` (files, folders, globs, ``.txt`` lists, ``.tar`` shards), each once.

    A source that names nothing raises a `MissingInputsError` listing all of them; videos are refused."""
    shards = [s for s in sources if is_tar_path(s) and Path(s).is_file()]
    rest = [s for s in sources if s not in shards]
    items: list[Item] = []
    if rest:
        found = expand_inputs(rest, strict=True)
        if found.videos:
            raise ValueError(f"videos are not curated (extract frames first): {found.videos[0]}")
        items += [Item(item_key(str(p)), str(p)) for p in found.images]
    for shard in shards:
        items += tar_items(shard)
    seen: set[str] = set()
    unique = []
    for item in items:
        if item.key not in seen:
            seen.add(item.key)
            unique.append(item)
    return unique
