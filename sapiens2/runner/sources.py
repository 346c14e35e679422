"""What to run on: the inputs expanded into images, videos and a webcam, each with its place under --out.

Output names mirror the input tree: every file's path relative to the *input root* (the deepest folder
holding every folder given and every file found), up to the stem, so `in/a/x.jpg` and `in/b/x.jpg` give
`out/a/x_*` and `out/b/x_*`. Every output path is decided for the whole input set before any work starts
(`plan_outputs`), and no two inputs ever write the same file, nor any input file get written over:

1. an input's prefix is its stem (`x.jpg` -> `x`), or, when another input of its folder has the same stem
   (`x.jpg`, `x.png`), its whole name with dots as underscores (`x_jpg`, `x_png`);
2. if that prefix is still taken (compared case-insensitively, for case-insensitive disks), or one of its
   files would be an input file (`--out` inside the input folder), the whole name with dots as underscores
   is tried next (`x_jpg.png` -> `x_jpg_png`), then that with `_2`, `_3`, ... appended;
3. a video writes per-frame files under a folder named by its prefix (`clip/000000_seg.npy`), so a video whose
   folder would hold another input's outputs moves on the same way (`clip_mp4/`).

Inputs are taken in their listed order (images, then videos), so the names are the same on every run. The
files a run will write are listed in `<out>/.sapiens2-outputs` before work starts; a later run never takes
them as inputs (`sapiens2 seg .` twice does not segment its own pictures).
"""

from __future__ import annotations

import glob
import itertools
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from sapiens2.io.inputs import ExpandedInputs, MissingInput, expand_inputs
from sapiens2.tasks.outputs import output_stem

__all__ = ["MANIFEST", "Source", "collect_sources", "plan_outputs", "previous_outputs", "read_manifest", "write_manifest"]

_GLOB = re.compile(r"[*?[]")
#: The list of files (and, ending with `/`, per-frame folders) a run writes, relative to --out.
MANIFEST = ".sapiens2-outputs"


@dataclass(frozen=True)
class Source:
    """One input. `rel` is its output path under --out without suffix (e.g. `a/x`); outputs add `_<what>`.
    `rel_input` is the input's own path relative to the input root (`a/x.jpg`), as `--boxes` may name it."""

    kind: str  # "image", "video" or "webcam"
    rel: Path
    path: Path | None = None
    webcam: int | None = None
    rel_input: str | None = None

    @property
    def name(self) -> str:
        return os.fspath(self.path) if self.path is not None else f"webcam {self.webcam}"

    def out(self, out_dir: Path, suffix: str) -> Path:
        return out_dir / self.rel.parent / f"{self.rel.name}{suffix}"


def _root_candidates(inputs: Sequence[str]) -> list[str]:
    """Folders the user named (directly or as the fixed part of a glob): they anchor the mirrored tree."""
    roots = []
    for entry in inputs:
        path = os.path.abspath(os.path.expanduser(entry))
        if os.path.isdir(path):
            roots.append(path)
        elif _GLOB.search(entry) and not os.path.lexists(path) and glob.glob(path, recursive=True):
            fixed = path[: _GLOB.search(path).start()]
            roots.append(fixed if fixed.endswith(os.sep) else os.path.dirname(fixed))
    return roots


def collect_sources(inputs: Sequence[str], webcam: int | None = None,
                    exclude: Iterable[Path] = ()) -> tuple[list[Source], list[MissingInput]]:
    """Images first, then videos, then the webcam; plus the inputs that gave nothing. Files in `exclude`
    (absolute paths: what an earlier run wrote) are left out."""
    expanded: ExpandedInputs = expand_inputs(list(inputs)) if inputs else ExpandedInputs()
    skip = {os.path.normcase(os.path.abspath(p)) for p in exclude}
    keep = lambda f: os.path.normcase(os.path.abspath(f)) not in skip  # noqa: E731
    files = [f for f in [*expanded.images, *expanded.videos] if keep(f)]
    sources: list[Source] = []
    if files:
        parents = [os.path.dirname(os.fspath(f)) for f in files]
        # a folder named on the command line anchors the tree only if something was found in it
        named = [r for r in _root_candidates(inputs) if any(p == r or p.startswith(r.rstrip(os.sep) + os.sep)
                                                             for p in parents)]
        root = Path(os.path.commonpath(named + parents))
        videos = set(expanded.videos)
        for f in files:
            rel = Path(os.path.relpath(f, root))
            sources.append(Source("video" if f in videos else "image", rel.parent / output_stem(rel), path=Path(f),
                                  rel_input=rel.as_posix()))
    if webcam is not None:
        sources.append(Source("webcam", Path(f"webcam{webcam}"), webcam=webcam))
    return sources, list(expanded.missing)


def _key(path: Path) -> str:
    return os.path.normcase(path.as_posix()).casefold()


def plan_outputs(sources: Sequence[Source], out_dir: Path, files_of: Callable[[Source], Sequence[str]]) -> list[Source]:
    """The sources with output prefixes that collide with nothing (see the module doc). `files_of(source)`
    gives the suffixes that source will write."""
    out_dir = Path(os.path.abspath(out_dir))
    inputs = {_key(Path(os.path.abspath(s.path))) for s in sources if s.path is not None}
    stems = Counter(_key(s.rel) for s in sources if s.kind != "webcam")
    taken: set[str] = set()
    folders: set[str] = set()  # per-frame folders of videos, as "<prefix>/"
    planned = []
    for source in sources:
        if source.kind == "webcam":
            planned.append(source)
            taken.add(_key(source.rel))
            continue
        name = source.path.name if source.path is not None else source.rel.name
        full = source.rel.parent / name.replace(".", "_")
        first = [source.rel] if stems[_key(source.rel)] == 1 and full != source.rel else []
        candidates = itertools.chain(first, [full], (full.parent / f"{full.name}_{n}" for n in range(2, 10_000)))
        for rel in candidates:
            key = _key(rel)
            if key in taken or any(key.startswith(f) for f in folders):
                continue
            if source.kind == "video" and any(t.startswith(key + "/") for t in taken):
                continue
            files = [_key(out_dir / rel.parent / f"{rel.name}{suffix}") for suffix in files_of(source)]
            if any(f in inputs for f in files):
                continue
            break
        taken.add(key)
        if source.kind == "video":
            folders.add(key + "/")
        planned.append(replace(source, rel=rel))
    return planned


def read_manifest(out_dir: Path) -> tuple[set[Path], list[Path]]:
    """(files, per-frame folders) an earlier run listed in `<out>/.sapiens2-outputs`, as absolute paths."""
    path = Path(out_dir) / MANIFEST
    try:
        lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return set(), []
    root = Path(os.path.abspath(out_dir))
    files = {root / line for line in lines if line and not line.endswith("/")}
    folders = [root / line.rstrip("/") for line in lines if line.endswith("/")]
    return files, folders


def write_manifest(out_dir: Path, files: Iterable[Path], folders: Iterable[Path]) -> Path:
    """Add these outputs to `<out>/.sapiens2-outputs` (kept sorted, without duplicates)."""
    from sapiens2.io.writers import atomic_open

    root = Path(os.path.abspath(out_dir))
    old_files, old_folders = read_manifest(root)
    lines = {os.path.relpath(p, root) for p in (*old_files, *files)}
    lines |= {os.path.relpath(p, root) + "/" for p in (*old_folders, *folders)}
    text = "".join(f"{Path(line).as_posix()}{'/' if line.endswith('/') else ''}\n" for line in sorted(lines))
    path = root / MANIFEST
    with atomic_open(path, "wb") as f:
        f.write(text.encode("utf-8", errors="surrogateescape"))
    return path


def previous_outputs(out_dir: Path) -> set[Path]:
    """Every file an earlier run into `out_dir` wrote that the inputs would find again (to leave out)."""
    files, folders = read_manifest(out_dir)
    for folder in folders:
        for dirpath, _, names in os.walk(folder):
            files.update(Path(dirpath) / n for n in names)
    return files

