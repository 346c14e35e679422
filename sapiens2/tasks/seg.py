"""Body-part segmentation: `Segmenter` and `SegmentationResult`.

The photo is stretched to the network input (INTER_AREA when the width shrinks, else INTER_CUBIC); logits are
resized bilinearly to the photo and argmax'ed. Labels are 0..28 in the order of `seg29().names` (0 =
background; Sapiens v1 models: 28 classes, `seg28()`); optional per-pixel class probabilities (softmax of
the resized logits).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sapiens2.body_parts import SegClasses, seg28, seg29
from sapiens2.io.writers import write_image, write_npy, write_npz
from sapiens2.tasks.base import DensePredictor, Prepared, Result, Writer, side_by_side_figure
from sapiens2.tasks.models import ModelSpec
from sapiens2.tasks.outputs import PROBABILITIES, output_path
from sapiens2.tasks.resize import Placement, to_source
from sapiens2.vis import dense as vis

__all__ = ["SegmentationResult", "Segmenter"]


@dataclass
class SegmentationResult(Result):
    task = "seg"

    labels: np.ndarray  # H x W uint8 class ids
    classes: SegClasses = field(default_factory=seg29)
    probabilities: np.ndarray | None = None  # H x W x C float32, or None

    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape

    @property
    def foreground(self) -> np.ndarray:
        """Every pixel that is not background."""
        return self.labels != self.classes.background

    def mask_of(self, *names: str) -> np.ndarray:
        """Pixels of any of the named classes (e.g. "Hair", "Face_Neck")."""
        return np.isin(self.labels, [self.classes.index(n) for n in names])

    def colors(self) -> np.ndarray:
        """The palette colour of every pixel (H x W x 3 RGB uint8)."""
        return self.classes.palette[self.labels]

    def picture(self, image: np.ndarray, opacity: float = 0.5) -> np.ndarray:
        return vis.draw_segmentation(image, self.labels, self.classes.palette, opacity)

    def figure(self, image: np.ndarray, **options: Any) -> np.ndarray:
        return side_by_side_figure(self.picture(image), image)

    def writers(self, image: np.ndarray | None, **options: Any) -> dict[str, Writer]:
        """`_seg.npy`: H x W int64 labels, as the reference; `_seg.png`: 8-bit class ids."""
        def png(path: Path) -> Path:
            if len(self.classes) > 256:
                raise ValueError("a PNG label map holds at most 256 classes")
            return write_image(path, self.labels.astype(np.uint8))

        return {"_seg.npy": lambda path: write_npy(path, self.labels.astype(np.int64)), "_seg.png": png}

    def save_probabilities(self, prefix: str | os.PathLike) -> Path:
        """`<prefix>_seg_probs.npz`: `probabilities` (H x W x C float16) and the class `names`."""
        if self.probabilities is None:
            raise ValueError("this result has no probabilities: make the Segmenter with probabilities=True")
        return write_npz(output_path(prefix, PROBABILITIES), probabilities=self.probabilities.astype(np.float16),
                         classes=np.array(self.classes.names))


class Segmenter(DensePredictor[SegmentationResult]):
    """29-class body-part segmentation (28 for Sapiens v1 models)."""

    task = "seg"
    policy = "stretch"
    upsampling = "cubic"

    def __init__(self, model: ModelSpec = None, *, probabilities: bool = False,
                 classes: SegClasses | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.probabilities = probabilities
        self.classes = classes or (seg28() if self.generation == 1 else seg29())

    def _finish(self, raw: torch.Tensor, prepared: Prepared) -> SegmentationResult:
        logits = raw.float()
        if logits.shape[1] != len(self.classes):
            raise ValueError(f"the network gives {logits.shape[1]} classes but the class list has {len(self.classes)}")
        probs = None
        if self.probabilities:
            full = to_source(logits, prepared.placement)[0]
            labels = full.argmax(0)
            probs = full.softmax(0).permute(1, 2, 0).cpu().numpy()
        else:
            labels = resized_argmax(logits, prepared.placement)
        dtype = np.uint8 if len(self.classes) <= 256 else np.int64
        return SegmentationResult(labels.cpu().numpy().astype(dtype), self.classes, probs)


def resized_argmax(logits: torch.Tensor, where: Placement, group: int = 8) -> torch.Tensor:
    """argmax over classes of the logits resized onto the photo, a few classes at a time.

    Bilinear resizing acts on each channel alone, so resizing groups of channels and keeping a running maximum
    gives exactly the argmax of the full resize (ties go to the lower class, as `argmax` does) while holding only
    `group` photo-sized planes instead of all of them.
    """
    best_val: torch.Tensor | None = None
    best_idx: torch.Tensor | None = None
    for start in range(0, logits.shape[1], group):
        part = to_source(logits[:, start:start + group], where)[0]
        val, idx = part.max(0)
        idx = idx + start
        if best_val is None:
            best_val, best_idx = val, idx
        else:
            better = val > best_val
            best_val = torch.where(better, val, best_val)
            best_idx = torch.where(better, idx, best_idx)
    assert best_idx is not None
    return best_idx
