"""What every predictor shares: its three steps, the dense tasks' network plumbing, and how results save.

A predictor is three explicit steps, and every entry point (the Python API, the batch runner, evaluation,
the server) composes these same steps rather than copies of them::

    prepared = predictor.prepare(image)       # CPU, thread-safe: decode checks, detection/crops or resize
    raws = predictor.run([prepared, ...])     # the network, batched by `batch_size`
    result = predictor.finish(raw, prepared)  # CPU/device, thread-safe: decode, un-pad, resize to the photo

`predictor(images)` is exactly `finish(run(prepare(...)))`. A result knows its task and saves itself
(`result.save(prefix, image, kinds)`), writing the files `sapiens2.tasks.outputs` names.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
from torch import nn

from sapiens2.io.images import ImageLike, as_image
from sapiens2.io.writers import write_image
from sapiens2.models.sapiens1 import Sapiens1Backbone
from sapiens2.tasks import models
from sapiens2.tasks.masks import foreground_mask
from sapiens2.tasks.outputs import FILES, file_suffixes, output_path
from sapiens2.tasks.resize import Placement, Policy, Upsampling, normalize, place, placement
from sapiens2.task_table import TASKS
from sapiens2.vis.dense import side_by_side
from sapiens2.zoo import DENSE_INPUT

__all__ = ["DensePredictor", "Prepared", "Result", "as_list", "check_input_size", "mask_copy", "side_by_side_figure"]

R = TypeVar("R")
Writer = Callable[[Path], Path]


def as_list(images: ImageLike | Sequence[ImageLike]) -> tuple[list[ImageLike], bool]:
    """(the images, whether a single image was given); an N x H x W x 3 array counts as N images."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        if len(images) == 0:
            raise ValueError("got an empty stack of images")
        return list(images), False  # N x H x W x 3: a batch
    if isinstance(images, (str, os.PathLike, np.ndarray, torch.Tensor)):
        return [images], True
    if isinstance(images, Sequence):
        items = list(images)
        if not items:
            raise ValueError("got an empty list of images")
        return items, False
    raise TypeError(f"expected an image, a path or a list of them, not {type(images).__name__}")


def check_input_size(size: Sequence[int] | None, multiple: int = 1) -> tuple[int, int] | None:
    """A (height, width) network input, both positive (and multiples of `multiple`); None stays None."""
    if size is None:
        return None
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"input_size must be (height, width), got {size!r}") from None
    if h <= 0 or w <= 0 or h % multiple or w % multiple:
        extra = f" multiples of {multiple}" if multiple > 1 else ""
        raise ValueError(f"input_size must be positive{extra} (height, width), got {(h, w)}")
    return h, w


class Result:
    """A task's result: it knows its task, the files it writes and the picture the CLI saves."""

    task: ClassVar[str]

    def figure(self, image: np.ndarray, **options: Any) -> np.ndarray:
        """The picture saved as `_<task>.jpg`."""
        raise NotImplementedError

    def writers(self, image: np.ndarray | None, **options: Any) -> dict[str, Writer]:
        """suffix -> a function writing that file at a path (every suffix of `outputs.FILES` but the picture)."""
        raise NotImplementedError

    def save(self, prefix: str | os.PathLike, image: np.ndarray | None = None,
             kinds: Iterable[str] | None = None, **options: Any) -> list[Path]:
        """Write this result's files as `<prefix><suffix>` (`out/x` -> `out/x_seg.npy`, ...), atomically.

        `kinds` are save kinds (`json`, `npz`, `png`, `ply`, `vis`; default: the task's defaults); pictures and
        cutouts need the photo (`image`). `options` go to the task's writers (pose: `keypoint_format`,
        `kpt_thr`, `radius`, `thickness`)."""
        kinds = TASKS[self.task].default_saves if kinds is None else set(kinds)
        suffixes = file_suffixes(self.task, kinds)
        picture = next(s for k, s in FILES[self.task] if k == "vis")
        writers = self.writers(image, **options)
        paths = []
        for suffix in suffixes:
            path = output_path(prefix, suffix)
            if suffix == picture:
                if image is None:
                    raise ValueError(f"saving the {self.task} picture needs the photo: pass image=")
                paths.append(write_image(path, self.figure(image, **options)))
            else:
                paths.append(writers[suffix](path))
        return paths


def mask_copy(result: R, source: Any) -> R:
    """A copy of a dense result whose `mask` is the foreground of `source` (a seg result, matte or mask)."""
    shape = result.shape  # type: ignore[attr-defined]
    return dataclasses.replace(result, mask=None if source is None else foreground_mask(source, shape))


@dataclass(frozen=True)
class Prepared:
    """A decoded photo and its network input (H x W x 3 uint8 RGB), with where the photo sits in it."""

    image: np.ndarray
    placement: Placement
    input: np.ndarray


class DensePredictor(Generic[R]):
    """The dense tasks' steps: place the photo in the network input, run batches, map outputs back."""

    task: ClassVar[str]
    policy: ClassVar[Policy]
    upsampling: ClassVar[Upsampling] = "cubic"

    def __init__(
        self,
        model: models.ModelSpec = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 1,
        input_size: tuple[int, int] | None = None,
        allow_pickle: bool = False,
        allow_code: bool = False,
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        input_size = check_input_size(input_size)
        self.network: nn.Module = models.load_network(self.task, model, device, dtype, allow_pickle, allow_code)
        # Sapiens v1 stretches every dense input bilinearly (no INTER_AREA, no keep-aspect padding).
        self.generation = 1 if isinstance(getattr(self.network, "backbone", None), Sapiens1Backbone) else 2
        if self.generation == 1:
            self.policy, self.upsampling = "stretch", "linear"
        param = next(self.network.parameters(), None)
        self.device = param.device if param is not None else models.resolve_device(device)
        self.dtype = param.dtype if param is not None and param.is_floating_point() else models.resolve_dtype(dtype)
        self.batch_size = int(batch_size)
        # (H, W) the network is fed; by default a v1 model's training size (1024 x 768 for the released ones)
        self.input_size: tuple[int, int] = tuple(input_size or models.network_input_size(self.network) or DENSE_INPUT)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(input {self.input_size[0]}x{self.input_size[1]}, device={self.device}, "
                f"dtype={self.dtype}, batch_size={self.batch_size})")

    def placement(self, size: tuple[int, int]) -> Placement:
        """Where a photo of `size` (h, w) goes in the network input."""
        return placement(self.policy, tuple(size), self.input_size, self.upsampling,
                         area_when_shrinking=self.generation == 2)

    # ------------------------------------------------------------------ the three steps
    def prepare(self, image: ImageLike) -> Prepared:
        img = as_image(image)
        where = self.placement(img.shape[:2])
        return Prepared(img, where, place(img, where))

    def run(self, prepared: Sequence[Prepared]) -> list[Any]:
        """The network's raw outputs for each prepared photo, forward passes batched by `batch_size`."""
        raws: list[Any] = []
        for start in range(0, len(prepared), self.batch_size):
            chunk = prepared[start:start + self.batch_size]
            for p in chunk:
                if p.input.shape[:2] != self.input_size:
                    raise ValueError(f"a prepared input is {p.input.shape[:2]}, this predictor feeds {self.input_size}")
            x = normalize(np.stack([p.input for p in chunk]), self.device, self.dtype)
            with torch.inference_mode():
                out = self.network(x)
                raws += [self.split(out, i) for i in range(len(chunk))]
        return raws

    def split(self, output: Any, index: int) -> Any:
        """One image's part of a batch's output."""
        return output[index:index + 1]

    def finish(self, raw: Any, prepared: Prepared) -> R:
        with torch.inference_mode():
            return self._finish(raw, prepared)

    def _finish(self, raw: Any, prepared: Prepared) -> R:
        raise NotImplementedError

    def __call__(self, images: ImageLike | Sequence[ImageLike]) -> R | list[R]:
        items, single = as_list(images)
        prepared = [self.prepare(i) for i in items]
        results = [self.finish(raw, p) for raw, p in zip(self.run(prepared), prepared)]
        return results[0] if single else results


def side_by_side_figure(panel: np.ndarray, image: np.ndarray) -> np.ndarray:
    """[photo | result], as the reference saves its dense pictures."""
    return side_by_side(as_image(image), panel)
