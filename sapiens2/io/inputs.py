"""Expand what a user types on the command line into the image and video files to process.

An input may be a file, a folder (searched recursively), a glob pattern (``**`` allowed), or a
``.txt`` list file with one input per line. Whatever cannot be resolved is *reported*, never dropped:
`expand_inputs` returns it in ``missing`` so a batch job can log it, process the rest, and exit non-zero
at the end; ``strict=True`` (or `ExpandedInputs.raise_if_missing`) turns it into one `MissingInputsError`.

Rules:

- Extensions are matched case-insensitively: `IMAGE_EXTENSIONS` for images, `VIDEO_EXTENSIONS` for videos.
  The file contents are not opened here; `read_image` reports a bad file when it is decoded.
- Folders are walked recursively. Hidden files and folders (name starting with ``.``) are skipped, as
  are files of other types. Symbolic links to folders are followed, each real folder once (no loops).
- Glob matches are filtered the same way; wildcards do not match hidden names, and the pattern itself
  is case-sensitive, as in the shell. A pattern naming an existing file (``shot[1].jpg``) is taken
  literally.
- List files: blank lines and lines starting with ``#`` are ignored; relative entries are resolved
  against the list file's own folder; entries may be files, folders, globs or further list files.
  Only an input given *as* a list (on the command line or in a list) is read as one; ``.txt`` files
  found inside folders are ignored.
- The result is absolute paths (symbolic links kept as written, ``..`` removed), without duplicates, in
  natural order (``frame2`` before ``frame10``, case ignored), the same on every run.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from sapiens2.io.images import IMAGE_EXTENSIONS

__all__ = [
    "LIST_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "ExpandedInputs",
    "MissingInput",
    "MissingInputsError",
    "expand_inputs",
    "is_video_path",
]

#: Extensions recognised as videos (lower case, with the dot). Decoding them is not this module's job.
VIDEO_EXTENSIONS: Final[frozenset[str]] = frozenset({".mp4", ".m4v", ".mov", ".avi", ".webm", ".mkv"})
#: Extensions of list files: one input per line.
LIST_EXTENSIONS: Final[frozenset[str]] = frozenset({".txt"})

_GLOB_MAGIC = re.compile(r"[*?[]")


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """True when the file name ends in one of `VIDEO_EXTENSIONS`, in any case."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class MissingInput:
    """An input that produced no file: what was asked for, why nothing came of it, and where it was
    asked for (``"list.txt:12"`` for a line of a list file, None for the command line)."""

    input: str
    reason: str
    source: str | None = None

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.input}: {self.reason}"


class MissingInputsError(FileNotFoundError):
    """Raised by ``strict=True``: some inputs could not be resolved. ``missing`` lists them all."""

    def __init__(self, missing: Iterable[MissingInput]) -> None:
        self.missing = list(missing)
        shown = "; ".join(str(m) for m in self.missing[:5])
        more = f"; and {len(self.missing) - 5} more" if len(self.missing) > 5 else ""
        super().__init__(f"{len(self.missing)} input(s) not found: {shown}{more}")

    def __reduce__(self):
        return (type(self), (self.missing,))


@dataclass
class ExpandedInputs:
    """The images and videos to process, in a deterministic order, and the inputs that gave nothing."""

    images: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    missing: list[MissingInput] = field(default_factory=list)

    def raise_if_missing(self) -> None:
        if self.missing:
            raise MissingInputsError(self.missing)


def expand_inputs(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, strict: bool = False
) -> ExpandedInputs:
    """Resolve files, folders, globs and ``.txt`` lists into image and video paths (see module doc).

    Unresolvable inputs are returned in ``missing``; with ``strict=True`` they raise `MissingInputsError`
    instead (after everything has been looked at, so the error lists them all).
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    state = _Expansion()
    for item in inputs:
        state.expand(os.fspath(item), base=None, source=None)
    result = ExpandedInputs(
        images=sorted(state.images, key=_natural_key),
        videos=sorted(state.videos, key=_natural_key),
        missing=state.missing,
    )
    if strict:
        result.raise_if_missing()
    return result


class _Expansion:
    def __init__(self) -> None:
        self.images: set[Path] = set()
        self.videos: set[Path] = set()
        self.missing: list[MissingInput] = []
        self._open_lists: set[str] = set()  # real paths of the list files being read (cycle guard)

    def report(self, entry: str, reason: str, source: str | None) -> None:
        self.missing.append(MissingInput(entry, reason, source))

    def expand(self, entry: str, base: str | None, source: str | None) -> None:
        if not entry.strip():
            self.report(entry, "empty input", source)
            return
        path = os.path.expanduser(entry)
        if base is not None and not os.path.isabs(path):
            path = os.path.join(base, path)
        path = os.path.abspath(path)

        if os.path.lexists(path) or not _GLOB_MAGIC.search(entry):
            self._expand_path(entry, path, source, explicit=True)
            return
        matches = sorted(glob.glob(path, recursive=True))
        if not matches:
            self.report(entry, "glob pattern matched nothing", source)
            return
        found = 0
        for match in matches:
            found += self._expand_path(entry, match, source, explicit=False)
        if not found:
            self.report(entry, "glob pattern matched no images or videos", source)

    def _expand_path(self, entry: str, path: str, source: str | None, explicit: bool) -> int:
        """Add what ``path`` holds; returns how many files it gave. Only explicit inputs report."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if explicit:
                broken = os.path.islink(path)
                self.report(entry, "broken symbolic link" if broken else "no such file or folder", source)
            return 0
        except OSError as e:
            if explicit:
                self.report(entry, f"cannot access ({e.strerror or e})", source)
            return 0

        if stat.S_ISDIR(st.st_mode):
            found = self._walk(entry, path, source)
            if explicit and not found:
                self.report(entry, "folder contains no images or videos", source)
            return found

        suffix = os.path.splitext(path)[1].lower()
        if suffix in IMAGE_EXTENSIONS:
            self.images.add(Path(path))
            return 1
        if suffix in VIDEO_EXTENSIONS:
            self.videos.add(Path(path))
            return 1
        if explicit and suffix in LIST_EXTENSIONS:
            return self._read_list(entry, path, source)
        if explicit:
            kind = f"extension {suffix!r}" if suffix else "no extension"
            self.report(entry, f"not an image, video or .txt list ({kind})", source)
        return 0

    def _walk(self, entry: str, top: str, source: str | None) -> int:
        found = 0
        seen: set[tuple[int, int]] = set()
        stack = [top]
        while stack:
            folder = stack.pop()
            try:
                st = os.stat(folder)
                if (st.st_dev, st.st_ino) in seen:
                    continue  # a symbolic link back into a folder already walked
                seen.add((st.st_dev, st.st_ino))
                with os.scandir(folder) as it:
                    children = list(it)
            except OSError as e:
                self.report(entry, f"cannot list folder {folder} ({e.strerror or e})", source)
                continue
            for child in children:
                if child.name.startswith("."):
                    continue
                try:
                    is_dir = child.is_dir()  # follows symbolic links
                except OSError as e:  # a link to itself, or one too deep to follow: say so, keep going
                    self.report(child.path, f"cannot follow symbolic link ({e.strerror or e})", source)
                    continue
                if is_dir:
                    stack.append(child.path)
                    continue
                suffix = os.path.splitext(child.name)[1].lower()
                if suffix in IMAGE_EXTENSIONS:
                    self.images.add(Path(child.path))
                    found += 1
                elif suffix in VIDEO_EXTENSIONS:
                    self.videos.add(Path(child.path))
                    found += 1
        return found

    def _read_list(self, entry: str, path: str, source: str | None) -> int:
        real = os.path.realpath(path)
        if real in self._open_lists:
            self.report(entry, "list file includes itself (directly or through another list)", source)
            return 0
        try:
            with open(path, encoding="utf-8-sig") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            self.report(entry, f"cannot read list file ({reason})", source)
            return 0
        entries = [(n, line.strip()) for n, line in enumerate(lines, start=1)]
        entries = [(n, line) for n, line in entries if line and not line.startswith("#")]
        if not entries:
            self.report(entry, "list file has no entries (only blank lines or comments)", source)
            return 0
        self._open_lists.add(real)
        try:
            for number, line in entries:
                self.expand(line, base=os.path.dirname(path), source=f"{path}:{number}")
        finally:
            self._open_lists.discard(real)
        return len(entries)


def _natural_key(path: Path) -> tuple:
    """Sort key, folder by folder: digit runs compare as numbers (frame2 < frame10 < frame010) and
    letters ignoring case (a.jpg < B.jpg), exact text breaking ties, so the order is total."""

    def runs(text: str) -> tuple:
        return tuple((0, int(t), len(t), t) if t.isdigit() else (1, 0, 0, t) for t in re.split(r"(\d+)", text))

    return tuple((runs(part.casefold()), runs(part)) for part in path.parts)
