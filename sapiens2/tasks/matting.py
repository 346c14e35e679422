"""Matting: `Matting` and `MattingResult` (alpha H x W float32 in [0, 1]; foreground colour H x W x 3 RGB,
premultiplied by alpha), from `sapiens2-matting-1b`.

The photo is stretched to the network input (INTER_AREA when the width shrinks, else INTER_LINEAR); the
sigmoid outputs are resized bilinearly onto the photo and clamped to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sapiens2.io.images import as_image
from sapiens2.io.writers import write_image, write_npz
from sapiens2.tasks.base import DensePredictor, Prepared, Result, Writer, side_by_side_figure
from sapiens2.tasks.resize import to_source
from sapiens2.vis import dense as vis

__all__ = ["Matting", "MattingResult"]


@dataclass
class MattingResult(Result):
    task = "matting"

    alpha: np.ndarray  # H x W float32 in [0, 1]
    foreground: np.ndarray  # H x W x 3 float32 RGB, premultiplied by alpha

    @property
    def shape(self) -> tuple[int, int]:
        return self.alpha.shape

    @property
    def mask(self) -> np.ndarray:
        return self.alpha >= 0.5

    def rgba(self, image: np.ndarray) -> np.ndarray:
        """The photo with the matte as its alpha channel (H x W x 4 uint8): a cutout."""
        image = as_image(image)
        a = (np.clip(self.alpha, 0, 1) * 255 + 0.5).astype(np.uint8)
        return np.concatenate([image, a[..., None]], axis=2)

    def picture(self, background: Any = vis.CHROMA_GREEN) -> np.ndarray:
        return vis.draw_matting(self.foreground, self.alpha, background)

    def figure(self, image: np.ndarray, **options: Any) -> np.ndarray:
        return side_by_side_figure(self.picture(), image)

    def writers(self, image: np.ndarray | None, **options: Any) -> dict[str, Writer]:
        """`_matting.npz` (`alpha`, `foreground` float32), `_alpha.png` (16-bit, alpha * 65535 rounded) and
        `_cutout.png` (the photo as RGBA; needs the photo)."""
        def cutout(path):
            if image is None:
                raise ValueError("saving the matting cutout needs the photo: pass image=")
            return write_image(path, self.rgba(image))

        return {"_matting.npz": lambda path: write_npz(path, alpha=self.alpha.astype(np.float32),
                                                       foreground=self.foreground.astype(np.float32)),
                "_alpha.png": lambda path: write_image(path, (np.clip(self.alpha, 0, 1) * 65535 + 0.5).astype(np.uint16)),
                "_cutout.png": cutout}


class Matting(DensePredictor[MattingResult]):
    """Alpha matte and premultiplied foreground colour."""

    task = "matting"
    policy = "stretch"
    upsampling = "linear"

    def _finish(self, raw: torch.Tensor, prepared: Prepared) -> MattingResult:
        m = to_source(raw.float(), prepared.placement)[0].clamp(0.0, 1.0)
        if m.shape[0] != 4:
            raise ValueError(f"a matting network gives 4 channels (foreground RGB, alpha), got {m.shape[0]}")
        return MattingResult(m[3].cpu().numpy(), m[:3].permute(1, 2, 0).cpu().numpy())
