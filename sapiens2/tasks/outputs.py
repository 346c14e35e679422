"""Output names: the one table of which files each task writes for each kind of output (`--save`).

Every file of an input is `<prefix><suffix>`, where the prefix is the input's place under the output folder
(`out/a/x` for `in/a/x.jpg`; `sapiens2.runner.sources` decides it) and the suffix comes from this table. The
result types (`SegmentationResult.save`, `PoseResult.save`, ...) write exactly these files, and the batch
runner checks them for `--resume`; nothing else spells a suffix.

| task | json | npz (arrays) | png | ply | vis (picture) | video |
|---|---|---|---|---|---|---|
| pose | `_pose.json` | `_pose.npz` | | | `_pose.jpg` | `_pose.mp4`, `_pose.json` |
| seg | | `_seg.npy` (int64 labels) | `_seg.png` (8-bit labels) | | `_seg.jpg` | `_seg.mp4` |
| normal | | `_normal.npy` | | | `_normal.jpg` | `_normal.mp4` |
| pointmap | | `_depth.npy`, `_points.npy` | | `.ply` | `_pointmap.jpg` | `_pointmap.mp4` |
| albedo | | `_albedo.npy` | `_albedo.png` | | `_albedo.jpg` | `_albedo.mp4` |
| matting | | `_matting.npz` | `_alpha.png`, `_cutout.png` | | `_matting.jpg` | `_matting.mp4` |
| depth (v1) | | `_reldepth.npy` | | | `_reldepth.jpg` | `_reldepth.mp4` |
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from sapiens2.task_table import SAVE_KINDS, TASKS

__all__ = ["FILES", "PICTURE", "PROBABILITIES", "file_suffixes", "output_path", "output_stem", "parse_saves", "video_suffixes"]

PICTURE = ".jpg"
#: Segmentation class probabilities (`SegmentationResult.save_probabilities`; not a --save kind).
PROBABILITIES = "_seg_probs.npz"

#: task -> ((save kind, suffix), ...) in writing order.
FILES: dict[str, tuple[tuple[str, str], ...]] = {
    "pose": (("json", "_pose.json"), ("npz", "_pose.npz"), ("vis", f"_pose{PICTURE}")),
    "seg": (("npz", "_seg.npy"), ("png", "_seg.png"), ("vis", f"_seg{PICTURE}")),
    "normal": (("npz", "_normal.npy"), ("vis", f"_normal{PICTURE}")),
    "pointmap": (("npz", "_depth.npy"), ("npz", "_points.npy"), ("ply", ".ply"), ("vis", f"_pointmap{PICTURE}")),
    "albedo": (("npz", "_albedo.npy"), ("png", "_albedo.png"), ("vis", f"_albedo{PICTURE}")),
    "matting": (("npz", "_matting.npz"), ("png", "_alpha.png"), ("png", "_cutout.png"), ("vis", f"_matting{PICTURE}")),
    "depth": (("npz", "_reldepth.npy"), ("vis", f"_reldepth{PICTURE}")),
}


def file_suffixes(task: str, kinds: Iterable[str]) -> list[str]:
    """The suffixes `task` writes for these save kinds, in writing order."""
    kinds = set(kinds)
    return [suffix for kind, suffix in FILES[task] if kind in kinds]


def video_suffixes(task: str, kinds: Iterable[str]) -> list[str]:
    """The files a video gets as a whole: the annotated video for `vis`, and for pose one JSON of every frame.
    Other kinds are written per frame, under a folder named after the video."""
    kinds = set(kinds)
    out = [s.removesuffix(PICTURE) + ".mp4" for k, s in FILES[task] if k == "vis" and "vis" in kinds]
    if task == "pose" and "json" in kinds:
        out.insert(0, "_pose.json")
    return out


def output_path(prefix: str | os.PathLike, suffix: str) -> Path:
    """`<prefix><suffix>`: `out/a/x` + `_seg.npy` -> `out/a/x_seg.npy`."""
    prefix = Path(prefix)
    return prefix.parent / f"{prefix.name}{suffix}"


def output_stem(image_path: str | os.PathLike) -> str:
    """The name up to its first dot (`a.b.jpg` -> `a`), the reference's output stem."""
    return Path(image_path).name.split(".", 1)[0]


def parse_saves(text: str | None, task: str) -> frozenset[str]:
    """The kinds `task` writes for a --save value (None: the task's defaults); `npy` means `npz`."""
    info = TASKS[task]
    if text is None:
        return info.default_saves
    kinds = {k.strip().lower() for k in text.split(",") if k.strip()}
    kinds = {"npz" if k == "npy" else k for k in kinds}
    unknown = kinds - set(SAVE_KINDS)
    if unknown:
        raise ValueError(f"--save: unknown kind(s) {', '.join(sorted(unknown))}; expected some of {', '.join(SAVE_KINDS)}")
    return frozenset(kinds & info.saves)
