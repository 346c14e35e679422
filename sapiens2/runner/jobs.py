"""One task of a run: its predictor's three steps placed on the pipeline's threads, and what to save.

The job holds no task logic: `prepare` (reader threads), `run` (the main thread, a batch at a time) and
`finish` (writer threads) are the predictor's own steps (`sapiens2.tasks.base`), and files are written by the
result itself (`Result.save`) under the names of `sapiens2.tasks.outputs`. What the job adds is scheduling
data: which kinds to save, the drawing/format options for the files, and (pose) the boxes given per input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.runner.sources import Source
from sapiens2.tasks.outputs import file_suffixes, video_suffixes

__all__ = ["Job"]


@dataclass
class Job:
    """`predictor` runs `task`; its results save `saves` with `options` (pose: keypoint_format, kpt_thr, radius,
    thickness). `boxes` maps an input's path relative to the input root, its file name, or its full path to
    given boxes (pose only; they skip the detector)."""

    task: str
    predictor: Any
    saves: frozenset[str]
    options: dict[str, Any] = field(default_factory=dict)
    boxes: dict[str, Any] = field(default_factory=dict)

    def given_boxes(self, source: Source) -> Any | None:
        if not self.boxes or source.path is None:
            return None
        for key in (source.rel_input, source.path.name, str(source.path)):
            if key is not None and key in self.boxes:
                return self.boxes[key]
        return None

    # -- the predictor's steps
    def prepare(self, image: np.ndarray, source: Source) -> Any:
        if self.task == "pose":
            prepared = self.predictor.prepare(image, self.given_boxes(source))
            prepared.path = source.path
            return prepared
        return self.predictor.prepare(image)

    def run(self, prepared: list[Any]) -> list[Any]:
        return self.predictor.run(prepared)

    def finish(self, raw: Any, prepared: Any) -> Any:
        return self.predictor.finish(raw, prepared)

    # -- files
    def outputs(self, source: Source, out_dir: Path) -> list[Path]:
        """Every file an image source gets."""
        return [source.out(out_dir, s) for s in file_suffixes(self.task, self.saves)]

    def video_outputs(self, source: Source, out_dir: Path) -> list[Path]:
        """The files a video gets as a whole (per-frame files are not checked by --resume)."""
        return [source.out(out_dir, s) for s in video_suffixes(self.task, self.saves)]

    def save(self, result: Any, image: np.ndarray, prefix: Path, kinds: frozenset[str] | None = None) -> list[Path]:
        return result.save(prefix, image, self.saves if kinds is None else kinds, **self.options)

    def picture(self, result: Any, image: np.ndarray, **extra: Any) -> np.ndarray:
        return result.figure(image, **{**self.options, **extra})
