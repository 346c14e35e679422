"""Dense predictors: body-part segmentation, surface normals, pointmaps, albedo and matting from raw photos.

Each predictor owns its pre- and post-processing; the network stays tensors in, tensors out::

    seg = Segmenter("0.4b")                 # or an official name, a hub id, a file, an nn.Module
    result = seg("photo.jpg")               # a path or an H x W x 3 uint8 RGB array; a list gives a list
    result.labels                            # H x W class ids, at the photo's own size

Photo -> network input follows `sapiens2.tasks.resize` (segmentation and matting stretch to 1024 x 768, the
others keep the aspect and pad); the network runs in batches of `batch_size`; its maps are cropped and resized
back onto the photo. `DensePipeline` runs several tasks on the same photos and resizes each photo once per
distinct geometry (normals, pointmap and albedo share one).

Conventions of the outputs:

- segmentation: labels 0..28 in the order of `seg29().names` (0 = background); optional per-pixel class
  probabilities (softmax of the resized logits); `foreground` = label != background;
- normals: H x W x 3 float32 (x, y, z) in the network's camera frame, unit length at the network's resolution
  (the reference normalises before resizing and not after; `renormalize=True` also normalises after). The
  release documents only "unit vectors in the camera frame"; its pointmaps use the OpenCV camera (x right,
  y down, z forward), and training mirrors images by negating x, so x is horizontal. Pictures map
  R, G, B = x, y, z;
- pointmap: metric points = network points / network scale, H x W x 3 float32 in the OpenCV camera frame
  (x right, y down, z forward, metres); depth = z. When the map is enlarged back onto the photo it is first
  blurred (4 passes of a 3 x 3 Gaussian, sigma 0.8), as the reference does;
- albedo: H x W x 3 float32 RGB in [0, 1];
- matting: alpha H x W float32 in [0, 1] and the foreground colour H x W x 3 (RGB, premultiplied by alpha).

A `mask` (from a segmentation, a matte, a boolean or label array) never changes the numbers; like the reference
visualizers it only limits pictures and the PLY export to the foreground.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sapiens2.io.images import ImageLike, as_image
from sapiens2.models.sapiens1 import Sapiens1Backbone, trained_input_size
from sapiens2.tasks import camera
from sapiens2.tasks.dense_models import resolve_model
from sapiens2.tasks.masks import foreground_mask
from sapiens2.tasks.ply import write_ply
from sapiens2.tasks.resize import (
    Placement,
    Policy,
    Upsampling,
    normalize,
    place,
    placement,
    to_source,
    to_source_smooth,
)
from sapiens2.tasks.seg29 import SegClasses, seg28, seg29
from sapiens2.vis import dense as vis
from sapiens2.zoo import DENSE_INPUT

R = TypeVar("R")

__all__ = [
    "Albedo",
    "AlbedoResult",
    "DensePipeline",
    "DensePredictor",
    "Matting",
    "MattingResult",
    "Normals",
    "NormalsResult",
    "Pointmap",
    "PointmapResult",
    "Prepared",
    "SegmentationResult",
    "Segmenter",
    "as_image",
    "run_tasks",
]


# ------------------------------------------------------------------------------------------------ inputs


def _as_list(images: ImageLike | Sequence[ImageLike]) -> tuple[list[ImageLike], bool]:
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


@dataclass(frozen=True)
class Prepared:
    """A decoded photo and its network input (H x W x 3 uint8 RGB), with where the photo sits in it."""

    image: np.ndarray
    placement: Placement
    input: np.ndarray


# ------------------------------------------------------------------------------------------------ results


def _mask_copy(result: R, source: Any) -> R:
    shape = result.shape  # type: ignore[attr-defined]
    return dataclasses.replace(result, mask=None if source is None else foreground_mask(source, shape))


@dataclass
class SegmentationResult:
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


@dataclass
class NormalsResult:
    normals: np.ndarray  # H x W x 3 float32
    mask: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.normals.shape[:2]

    def with_mask(self, source: Any) -> NormalsResult:
        return _mask_copy(self, source)

    def picture(self, image: np.ndarray | None = None) -> np.ndarray:
        """Normal colours; background black, or `image` there when given."""
        return vis.draw_normals(self.normals, self.mask, image)


@dataclass
class PointmapResult:
    points: np.ndarray  # H x W x 3 float32, metric, OpenCV camera frame
    scale: float  # the network's scale output (canonical focal / focal)
    placement: Placement
    mask: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.points.shape[:2]

    @property
    def depth(self) -> np.ndarray:
        return self.points[..., 2]

    @property
    def focal_from_scale(self) -> float:
        """The focal length (photo pixels) the network's scale implies: 768 / scale / resize factor."""
        return camera.focal_from_scale(self.scale, self.placement.scale[1])

    def estimate_focal(self, principal_point: tuple[float, float] | None = None,
                       use_mask: bool = True) -> camera.CameraEstimate:
        """Least-squares pinhole intrinsics from the points (see `sapiens2.tasks.camera`)."""
        return camera.estimate_focal(self.points, self.mask if use_mask else None, principal_point)

    def with_mask(self, source: Any) -> PointmapResult:
        return _mask_copy(self, source)

    def foreground_points(self, image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(N x 3 points inside the mask with finite values, N x 3 uint8 colours from `image` or None)."""
        keep = np.isfinite(self.points).all(axis=2)
        if self.mask is not None:
            keep &= self.mask
        colors = None
        if image is not None:
            image = as_image(image)
            if image.shape[:2] != self.shape:
                raise ValueError(f"image {image.shape[:2]} and pointmap {self.shape} differ in size")
            colors = image[keep]
        return self.points[keep], colors

    def save_ply(self, path: str | os.PathLike, image: np.ndarray | None = None, *, binary: bool = True,
                 camera_marker: bool = False):
        """The foreground points (coloured by `image`) as PLY; optionally a small blue sphere at the camera."""
        points, colors = self.foreground_points(image)
        if camera_marker:
            marker = _sphere_points(500, 0.05)
            points = np.concatenate([points, marker])
            if colors is not None:
                colors = np.concatenate([colors, np.tile(np.array([[0, 0, 255]], np.uint8), (len(marker), 1))])
        return write_ply(path, points, colors, binary=binary)

    def picture(self, image: np.ndarray | None = None, bounds: tuple[float, float] | None = None) -> np.ndarray:
        """Turbo inverse depth on grey; pass the same `bounds` to every frame of a video."""
        return vis.draw_depth(self.depth, self.mask, image, bounds)


def _sphere_points(n: int, radius: float) -> np.ndarray:
    """`n` evenly spread points on a sphere (Fibonacci lattice): the camera marker."""
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5**0.5) * i
    return (radius * np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], 1)).astype(
        np.float32)


@dataclass
class AlbedoResult:
    albedo: np.ndarray  # H x W x 3 float32 RGB in [0, 1]
    mask: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.albedo.shape[:2]

    def with_mask(self, source: Any) -> AlbedoResult:
        return _mask_copy(self, source)

    def picture(self, image: np.ndarray | None = None) -> np.ndarray:
        return vis.draw_albedo(self.albedo, self.mask, image)


@dataclass
class MattingResult:
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


# ------------------------------------------------------------------------------------------------ predictors


class DensePredictor(Generic[R]):
    """Shared machinery: model resolution, input checks, placement, batching, inference."""

    task: ClassVar[str]
    policy: ClassVar[Policy]
    upsampling: ClassVar[Upsampling] = "cubic"

    def __init__(
        self,
        model: str | os.PathLike | nn.Module = "0.4b",
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        batch_size: int = 1,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.network = resolve_model(self.task, model, device, dtype)
        # Sapiens v1 stretches every dense input bilinearly (no INTER_AREA, no keep-aspect padding).
        self.generation = 1 if isinstance(getattr(self.network, "backbone", None), Sapiens1Backbone) else 2
        if self.generation == 1:
            self.policy, self.upsampling = "stretch", "linear"
        param = next(self.network.parameters(), None)
        self.device = param.device if param is not None else torch.device(device or "cpu")
        self.dtype = param.dtype if param is not None and param.is_floating_point() else (dtype or torch.float32)
        self.batch_size = int(batch_size)
        # (H, W) the network is fed; by default a v1 model's training size (1024 x 768 for the released ones)
        trained = trained_input_size(self.network)
        self.input_size: tuple[int, int] = tuple(input_size or trained or DENSE_INPUT)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(input {self.input_size[0]}x{self.input_size[1]}, device={self.device}, "
                f"dtype={self.dtype}, batch_size={self.batch_size})")

    def placement(self, size: tuple[int, int]) -> Placement:
        """Where a photo of `size` (h, w) goes in the network input."""
        return placement(self.policy, tuple(size), self.input_size, self.upsampling,
                         area_when_shrinking=self.generation == 2)

    def prepare(self, image: ImageLike) -> Prepared:
        img = as_image(image)
        where = self.placement(img.shape[:2])
        return Prepared(img, where, place(img, where))

    def __call__(self, images: ImageLike | Sequence[ImageLike]) -> R | list[R]:
        items, single = _as_list(images)
        results = self.run([self.prepare(i) for i in items])
        return results[0] if single else results

    def run(self, prepared: Sequence[Prepared]) -> list[R]:
        """Results for already prepared photos, the forward pass batched by `batch_size`."""
        results: list[R] = []
        for start in range(0, len(prepared), self.batch_size):
            chunk = prepared[start:start + self.batch_size]
            for p in chunk:
                if p.input.shape[:2] != self.input_size:
                    raise ValueError(f"a prepared input is {p.input.shape[:2]}, this predictor feeds {self.input_size}")
            x = normalize(np.stack([p.input for p in chunk]), self.device, self.dtype)
            with torch.inference_mode():
                out = self.network(x)
                results += [self._finish(out, i, p) for i, p in enumerate(chunk)]
        return results

    def _finish(self, output: Any, index: int, prepared: Prepared) -> R:
        raise NotImplementedError


def _maps(output: Any, index: int) -> torch.Tensor:
    return output[index:index + 1].float()


class Segmenter(DensePredictor[SegmentationResult]):
    """29-class body-part segmentation. The photo is stretched to the network input (INTER_AREA when the width
    shrinks, else INTER_CUBIC); logits are resized bilinearly to the photo and argmax'ed."""

    task = "seg"
    policy = "stretch"
    upsampling = "cubic"

    def __init__(self, model: str | os.PathLike | nn.Module = "0.4b", *, probabilities: bool = False,
                 classes: SegClasses | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.probabilities = probabilities
        self.classes = classes or (seg28() if self.generation == 1 else seg29())

    def _finish(self, output: torch.Tensor, index: int, prepared: Prepared) -> SegmentationResult:
        logits = _maps(output, index)
        if logits.shape[1] != len(self.classes):
            raise ValueError(f"the network gives {logits.shape[1]} classes but the class list has {len(self.classes)}")
        probs = None
        if self.probabilities:
            full = to_source(logits, prepared.placement)[0]
            labels = full.argmax(0)
            probs = full.softmax(0).permute(1, 2, 0).cpu().numpy()
        else:
            labels = _resized_argmax(logits, prepared.placement)
        dtype = np.uint8 if len(self.classes) <= 256 else np.int64
        return SegmentationResult(labels.cpu().numpy().astype(dtype), self.classes, probs)


def _resized_argmax(logits: torch.Tensor, where: Placement, group: int = 8) -> torch.Tensor:
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


class Normals(DensePredictor[NormalsResult]):
    """Surface normals. Keep-aspect resize + zero pad; unit length at the network resolution, then crop and
    resize onto the photo (`renormalize=True` normalises again after resizing; the reference does not)."""

    task = "normal"
    policy = "pad"

    def __init__(self, model: str | os.PathLike | nn.Module = "0.4b", *, renormalize: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.renormalize = renormalize

    def _finish(self, output: torch.Tensor, index: int, prepared: Prepared) -> NormalsResult:
        if self.generation == 1:
            # v1 resizes the raw half-resolution output onto the photo, then divides by (norm + 1e-5).
            n = to_source(_maps(output, index), prepared.placement)
            n = n / (n.norm(dim=1, keepdim=True) + 1e-5)
            return NormalsResult(n[0].permute(1, 2, 0).cpu().numpy())
        n = F.normalize(_maps(output, index), dim=1, eps=1e-8)
        n = to_source(n, prepared.placement)
        if self.renormalize:
            n = F.normalize(n, dim=1, eps=1e-8)
        return NormalsResult(n[0].permute(1, 2, 0).cpu().numpy())


class Pointmap(DensePredictor[PointmapResult]):
    """Metric pointmaps (network points / network scale). Keep-aspect resize + pad; the crop is blurred before
    it is enlarged onto the photo. The official models need exactly the 1024 x 768 input."""

    task = "pointmap"
    policy = "pad"

    def run(self, prepared: Sequence[Prepared]) -> list[PointmapResult]:
        try:
            return super().run(prepared)
        except ValueError as e:
            if "scale branch" not in str(e):
                raise
            raise ValueError(f"{e}; this predictor feeds {self.input_size[0]}x{self.input_size[1]}: pass "
                             "input_size=(H, W) of the model's training input") from e

    def _finish(self, output: tuple[torch.Tensor, torch.Tensor], index: int, prepared: Prepared) -> PointmapResult:
        points, scale = output
        s = scale[index].float().reshape(())
        metric = _maps(points, index) / s
        metric = to_source_smooth(metric, prepared.placement)
        return PointmapResult(metric[0].permute(1, 2, 0).cpu().numpy(), float(s), prepared.placement)


class Albedo(DensePredictor[AlbedoResult]):
    """Albedo (RGB in [0, 1]). Keep-aspect resize + pad; clamped at the network resolution, then resized."""

    task = "albedo"
    policy = "pad"

    def _finish(self, output: torch.Tensor, index: int, prepared: Prepared) -> AlbedoResult:
        a = to_source(_maps(output, index).clamp(0.0, 1.0), prepared.placement)
        return AlbedoResult(a[0].permute(1, 2, 0).cpu().numpy())


class Matting(DensePredictor[MattingResult]):
    """Alpha matte and premultiplied foreground colour (`sapiens2-matting-1b`). The photo is stretched to the
    network input (INTER_AREA when the width shrinks, else INTER_LINEAR); the sigmoid outputs are resized
    bilinearly onto the photo and clamped to [0, 1]."""

    task = "matting"
    policy = "stretch"
    upsampling = "linear"

    def __init__(self, model: str | os.PathLike | nn.Module = "1b", **kwargs: Any) -> None:
        super().__init__(model, **kwargs)

    def _finish(self, output: torch.Tensor, index: int, prepared: Prepared) -> MattingResult:
        m = to_source(_maps(output, index), prepared.placement)[0].clamp(0.0, 1.0)
        if m.shape[0] != 4:
            raise ValueError(f"a matting network gives 4 channels (foreground RGB, alpha), got {m.shape[0]}")
        return MattingResult(m[3].cpu().numpy(), m[:3].permute(1, 2, 0).cpu().numpy())


# ------------------------------------------------------------------------------------------------ several tasks

@dataclass
class DepthResult:
    depth: np.ndarray  # H x W float32, relative (scale-invariant training): larger is farther
    mask: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.depth.shape[:2]

    def with_mask(self, source: Any) -> DepthResult:
        return _mask_copy(self, source)

    def picture(self, image: np.ndarray | None = None) -> np.ndarray:
        """Inferno of the foreground's min-max normalised inverse, grey background, as the v1 demo draws it."""
        return vis.draw_relative_depth(self.depth, self.mask, image)


class Depth(DensePredictor[DepthResult]):
    """Relative depth from the Sapiens v1 depth models (`sapiens-depth-<size>`): the photo stretched to
    1024 x 768, one channel at full input size resized back bilinearly. Values have no metric scale."""

    task = "depth"
    policy = "stretch"
    upsampling = "linear"

    def __init__(self, model: str | os.PathLike | nn.Module = "sapiens-depth-0.3b", **kwargs: Any) -> None:
        super().__init__(model, **kwargs)

    def _finish(self, output: torch.Tensor, index: int, prepared: Prepared) -> DepthResult:
        d = to_source(_maps(output, index), prepared.placement)
        return DepthResult(d[0, 0].cpu().numpy())


PREDICTORS: dict[str, type[DensePredictor]] = {
    "seg": Segmenter, "normal": Normals, "pointmap": Pointmap, "albedo": Albedo, "matting": Matting, "depth": Depth,
}


class DensePipeline:
    """Several dense tasks on the same photos: each photo is decoded once and resized once per distinct
    geometry (normals, pointmap and albedo share the padded input; segmentation and matting share theirs when
    both shrink the photo). With `mask_from` naming a task in the pipeline (segmentation by default, as the
    reference's `--seg_dir`), its foreground is attached as the mask of the normal, pointmap and albedo results.
    """

    def __init__(self, predictors: Mapping[str, DensePredictor], mask_from: str | None = "seg") -> None:
        if not predictors:
            raise ValueError("a pipeline needs at least one predictor")
        self.predictors = dict(predictors)
        self.mask_from = mask_from if mask_from in self.predictors else None

    def __call__(self, images: ImageLike | Sequence[ImageLike]) -> dict[str, Any] | list[dict[str, Any]]:
        items, single = _as_list(images)
        decoded = [as_image(i) for i in items]
        inputs: dict[Placement, np.ndarray] = {}
        per_task: dict[str, list[Prepared]] = {name: [] for name in self.predictors}
        for img in decoded:
            for name, predictor in self.predictors.items():
                where = predictor.placement(img.shape[:2])
                if where not in inputs:
                    inputs[where] = place(img, where)
                per_task[name].append(Prepared(img, where, inputs[where]))
            inputs.clear()  # shared within one photo only, so memory stays per photo
        results = {name: self.predictors[name].run(prepared) for name, prepared in per_task.items()}
        out = [{name: results[name][i] for name in self.predictors} for i in range(len(decoded))]
        if self.mask_from is not None:
            for row in out:
                source = row[self.mask_from]
                for name, result in row.items():
                    if name != self.mask_from and hasattr(result, "with_mask"):
                        row[name] = result.with_mask(source)
        return out[0] if single else out

    def shared_inputs(self, size: tuple[int, int]) -> int:
        """How many distinct network inputs a photo of `size` needs (for tests and curiosity)."""
        return len({p.placement(size) for p in self.predictors.values()})


def run_tasks(images: ImageLike | Sequence[ImageLike], predictors: Mapping[str, DensePredictor],
              mask_from: str | None = "seg") -> dict[str, Any] | list[dict[str, Any]]:
    """`DensePipeline(predictors, mask_from)(images)`."""
    return DensePipeline(predictors, mask_from)(images)


def predictor_for(task: str) -> Callable[..., DensePredictor]:
    """The predictor class of a task name ("seg", "normal", "pointmap", "albedo", "matting")."""
    if task not in PREDICTORS:
        raise ValueError(f"unknown dense task {task!r}; expected one of {', '.join(PREDICTORS)}")
    return PREDICTORS[task]
