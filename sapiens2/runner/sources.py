"""What to run on: the inputs expanded into images, videos and a webcam, each with its place under --out.

Output names mirror the input tree: every file's path relative to the *input root* (the deepest folder
holding every folder given and every file found), up to the stem, so `in/a/x.jpg` and `in/b/x.jpg` give
`out/a/x_*` and `out/b/x_*`. Two inputs of one folder with the same stem (`x.jpg`, `x.png`) are told
apart by their extension (`x_jpg_*`, `x_png_*`).
"""

from __future__ import annotations

import glob
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sapiens2.io.inputs import ExpandedInputs, MissingInput, expand_inputs
from sapiens2.tasks.dense_outputs import output_stem

__all__ = ["Source", "collect_sources"]

_GLOB = re.compile(r"[*?[]")


@dataclass(frozen=True)
class Source:
    """One input. `rel` is its output path under --out without suffix (e.g. `a/x`); outputs add `_<what>`."""

    kind: str  # "image", "video" or "webcam"
    rel: Path
    path: Path | None = None
    webcam: int | None = None

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


def collect_sources(inputs: Sequence[str], webcam: int | None = None) -> tuple[list[Source], list[MissingInput]]:
    """Images first, then videos, then the webcam; plus the inputs that gave nothing."""
    expanded: ExpandedInputs = expand_inputs(list(inputs)) if inputs else ExpandedInputs()
    files = [*expanded.images, *expanded.videos]
    sources: list[Source] = []
    if files:
        parents = [os.path.dirname(os.fspath(f)) for f in files]
        # a folder named on the command line anchors the tree only if something was found in it
        named = [r for r in _root_candidates(inputs) if any(p == r or p.startswith(r.rstrip(os.sep) + os.sep)
                                                             for p in parents)]
        anchors = named + parents
        root = Path(os.path.commonpath(anchors))
        rels = [Path(os.path.relpath(f, root)) for f in files]
        stems = [r.parent / output_stem(r) for r in rels]
        clashes = {s for s, n in Counter(stems).items() if n > 1}
        videos = set(expanded.videos)
        for f, r, s in zip(files, rels, stems):
            if s in clashes:
                s = r.parent / r.name.replace(".", "_")
            kind = "video" if f in videos else "image"
            sources.append(Source(kind, s, path=Path(f)))
    if webcam is not None:
        sources.append(Source("webcam", Path(f"webcam{webcam}"), webcam=webcam))
    return sources, list(expanded.missing)
