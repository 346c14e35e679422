"""The per-batch stages: each a callable over a `Batch` giving one column per measurement and a `reason`.

A stage sees only the rows every earlier stage kept. It returns ``{column: [value per row]}`` with the
columns of its `fields` plus ``reason`` (None: kept; else the drop reason) and ``detail`` (why, in words).
Decode failures are rows with a reason, never exceptions: the batch goes on.

Stages that hold a model. Both engines run the same stage objects: the local engine in this process, the Ray
engine (`sapiens2.curate.ray_engine`) pickled into worker processes, where a model stage runs in a pool of
actors that each keep one copy of its model. So a stage's model is given either as the model itself (tests:
any callable, e.g. a stand-in function) or as a `Loader`: a picklable recipe (a module-level function and
plain arguments) that builds it, e.g. ``Loader.of(BackboneEmbedder.load, path, size, device)`` as
`sapiens2.curate.cli` gives it. The stage builds it on first use with ``self.model = built(self.model)``: once
per process or actor (with Ray, never on the driver), and not at all when every part it would compute is
already written. A model stage also sets the class attribute
``holds_model = True``; the Ray engine runs those as actor pools and the others as stateless CPU tasks. To add
a stage: a dataclass with `name`, `fields`, `settings` (see `Stage`), its model field typed
``Model | Loader``, its reason appended to `REASONS`, and a line in `engine.build_stages`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import cv2
import numpy as np
import pyarrow as pa

from sapiens2.curate.config import DecodeConfig, PersonConfig
from sapiens2.curate.phash import phash
from sapiens2.curate.sources import Item
from sapiens2.io.images import ImageDecodeError, decode_image

#: A person detector: one RGB image -> (N, 5) [x1, y1, x2, y2, score] boxes (`PersonDetector` fits).
Detector = Callable[[np.ndarray], np.ndarray]
#: An image embedder: RGB images -> (N, D) float32 features.
Embedder = Callable[[Sequence[np.ndarray]], np.ndarray]



class ModelLoadError(RuntimeError):
    """A stage's model could not be built from its `Loader`; the message names the loader."""


@dataclass(frozen=True)
class Loader:
    """How to build a stage's model in whichever process runs the stage: ``fn(*args, **kwargs)``.

    It travels by pickle to Ray workers, so `fn` must be importable by name (a module-level function or a
    class's constructor / classmethod) and the arguments plain values (names, paths, device strings)."""

    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Loader:
        return cls(fn, args, tuple(sorted(kwargs.items())))

    def build(self) -> Any:
        try:
            return self.fn(*self.args, **dict(self.kwargs))
        except (OSError, ValueError, TypeError, RuntimeError, ImportError) as err:
            name = getattr(self.fn, "__qualname__", repr(self.fn))
            raise ModelLoadError(f"cannot load a model ({name}): {err}") from err


def built(model: Any) -> Any:
    """The model itself: `model` built when it is a `Loader`, else unchanged."""
    return model.build() if isinstance(model, Loader) else model


# Drop reasons, in stage order; the manifest's `reason` is the first that applies.
DECODE, TOO_SMALL, NO_PERSON, DUPLICATE, BALANCE = "decode", "too_small", "no_person", "duplicate", "balance"
NOT_PHOTO, TEXT_OVERLAY, LOW_AESTHETIC = "not_photo", "text_overlay", "low_aesthetic"  # the CLIP stage's
NO_FACE, HEAD_POSE = "no_face", "head_pose"  # the head stage's
REASONS = (DECODE, TOO_SMALL, NO_PERSON, NOT_PHOTO, TEXT_OVERLAY, LOW_AESTHETIC, NO_FACE, HEAD_POSE, DUPLICATE,
           BALANCE)


def bounded(image: np.ndarray, max_side: int) -> np.ndarray:
    """`image` shrunk (area interpolation) so its long side is at most `max_side`; never enlarged."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


@dataclass
class Batch:
    """Items of one batch; pixels are decoded on first use and kept for the later stages of the batch.

    With `work_side`, the kept pixels are shrunk (area) to that long side once decoded: the stages look at
    640 px (detector), 224 px (embedder) or 32 px (pHash), so a batch of 12-megapixel photos need not stay
    in memory at full size. `size(i)` is always the decoded file's own (height, width).

    The engine `record`s each stage's scalar columns here, so a later stage reads an earlier one's
    measurements (`value`), whether that stage ran now or was resumed from its part."""

    items: list[Item]
    max_pixels: int | None = None
    work_side: int | None = None
    _pixels: dict[str, tuple[np.ndarray, tuple[int, int]] | ImageDecodeError] = field(default_factory=dict,
                                                                                       repr=False)
    _values: dict[str, dict[str, object]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.items)

    def _get(self, i: int) -> tuple[np.ndarray, tuple[int, int]]:
        item = self.items[i]
        if item.key not in self._pixels:
            try:
                image = decode_image(item.read_bytes(), item.path, max_pixels=self.max_pixels)
                h, w = image.shape[:2]
                if self.work_side:
                    image = bounded(image, self.work_side)
                self._pixels[item.key] = (image, (h, w))
            except ImageDecodeError as err:
                self._pixels[item.key] = err
        got = self._pixels[item.key]
        if isinstance(got, ImageDecodeError):
            raise got
        return got

    def prefetch(self, i: int) -> None:
        """Decode item `i` now (a decode failure is kept for the stages to report, as `image` would)."""
        try:
            self._get(i)
        except ImageDecodeError:
            pass

    def image(self, i: int) -> np.ndarray:
        """The RGB pixels of item `i`; raises its `ImageDecodeError` (every time) when it does not decode."""
        return self._get(i)[0]

    def size(self, i: int) -> tuple[int, int]:
        """(height, width) of item `i` as decoded, before any `work_side` shrinking."""
        return self._get(i)[1]

    def subset(self, keep: Sequence[int]) -> Batch:
        """The rows `keep`, with their decoded pixels and recorded values (shared, not copied; the others' are
        left behind, so a batch sent to another process carries only what its rows need)."""
        items = [self.items[i] for i in keep]
        return Batch(items, self.max_pixels, self.work_side,
                     {it.key: self._pixels[it.key] for it in items if it.key in self._pixels},
                     {it.key: self._values[it.key] for it in items if it.key in self._values})

    def record(self, table: pa.Table) -> None:
        """Keep `table`'s scalar columns (a stage's result: `key` + its fields) for the later stages."""
        keys = table["key"].to_pylist()
        for name in table.column_names:
            if name in ("key", "reason", "detail") or pa.types.is_nested(table.schema.field(name).type):
                continue
            for key, value in zip(keys, table[name].to_pylist()):
                self._values.setdefault(key, {})[name] = value

    def value(self, i: int, column: str) -> object:
        """Row `i`'s value of an earlier stage's `column`; None when that stage did not run."""
        return self._values.get(self.items[i].key, {}).get(column)


class Stage(Protocol):
    """What the engine runs. `name` names its parts folder; `settings` (a config dataclass or None) is
    hashed into that folder's name, so changing a threshold recomputes the stage."""

    name: str
    fields: dict[str, pa.DataType]
    settings: object

    def __call__(self, batch: Batch) -> dict[str, list]: ...


def _columns(fields: dict[str, pa.DataType], n: int) -> dict[str, list]:
    return {name: [None] * n for name in (*fields, "reason", "detail")}


@dataclass
class DecodeStage:
    """Decode with `sapiens2.io.images` and keep images whose short side is >= `min_short_side`."""

    settings: DecodeConfig = field(default_factory=DecodeConfig)
    name: str = "decode"
    fields: dict[str, pa.DataType] = field(default_factory=lambda: {"width": pa.int32(), "height": pa.int32()})

    def __call__(self, batch: Batch) -> dict[str, list]:
        out = _columns(self.fields, len(batch))
        for i in range(len(batch)):
            try:
                h, w = batch.size(i)
            except ImageDecodeError as err:
                out["reason"][i], out["detail"][i] = DECODE, f"{type(err).__name__}: {err.reason}"
                continue
            out["width"][i], out["height"][i] = w, h
            if min(h, w) < self.settings.min_short_side:
                out["reason"][i] = TOO_SMALL
                out["detail"][i] = f"short side {min(h, w)} < {self.settings.min_short_side}"
        return out


@dataclass
class PersonStage:
    """Keep images with a prominent person: a box scoring >= `min_score` covering >= `min_area_fraction`.

    Records the number of boxes passing the score, and the score, area fraction and box (in the file's
    pixels: `person_x1` ... `person_y2`) of the largest of them. With `batched` the detector is called once
    on the batch's list of images and returns a list of box arrays (as `PersonDetector` does: one batched
    forward); otherwise once per image."""

    detector: Detector | Loader
    settings: PersonConfig = field(default_factory=PersonConfig)
    batched: bool = False
    name: str = "person"
    fields: dict[str, pa.DataType] = field(default_factory=lambda: {
        "person_count": pa.int32(), "person_score": pa.float32(), "person_area": pa.float32(),
        **{f"person_{c}": pa.float32() for c in ("x1", "y1", "x2", "y2")}})
    holds_model: ClassVar[bool] = True

    def __call__(self, batch: Batch) -> dict[str, list]:
        out = _columns(self.fields, len(batch))
        s = self.settings
        detector = self.detector = built(self.detector)
        images = [batch.image(i) for i in range(len(batch))]
        found = detector(images) if self.batched else [detector(im) for im in images]
        if len(found) != len(images):
            raise ValueError(f"the detector gave {len(found)} results for {len(images)} images")
        for i, image in enumerate(images):
            boxes = np.asarray(found[i], np.float32).reshape(-1, 5)
            boxes = boxes[boxes[:, 4] >= s.min_score]
            h, w = image.shape[:2]
            areas = (np.clip(boxes[:, 2] - boxes[:, 0] + 1, 0, None) * np.clip(boxes[:, 3] - boxes[:, 1] + 1, 0, None)
                     / float(h * w))
            out["person_count"][i] = len(boxes)
            if len(boxes):
                best = int(np.argmax(areas))
                out["person_score"][i], out["person_area"][i] = float(boxes[best, 4]), float(areas[best])
                fh, fw = batch.size(i)  # the box in the file's pixels, whatever the working copy's size
                scale = (fw / w, fh / h, fw / w, fh / h)
                for c, v, k in zip(("x1", "y1", "x2", "y2"), boxes[best, :4], scale):
                    out[f"person_{c}"][i] = float(v) * k
            if not len(boxes) or areas.max() < s.min_area_fraction:
                out["reason"][i] = NO_PERSON
                out["detail"][i] = (f"no person box with score >= {s.min_score}" if not len(boxes) else
                                    f"largest person covers {areas.max():.3f} < {s.min_area_fraction} of the image")
        return out


@dataclass
class PhashStage:
    """The 64-bit DCT perceptual hash of each image, as 16 hex digits (for the dedup stage)."""

    settings: object = None
    name: str = "phash"
    fields: dict[str, pa.DataType] = field(default_factory=lambda: {"phash": pa.string()})

    def __call__(self, batch: Batch) -> dict[str, list]:
        out = _columns(self.fields, len(batch))
        out["phash"] = [f"{phash(batch.image(i)):016x}" for i in range(len(batch))]
        return out


@dataclass
class EmbedStage:
    """L2-normalised image embeddings (for deep dedup and clustering); stored in the parts, not the manifest.

    `settings` names the embedder (e.g. the `EmbedConfig`) so that another model means new parts."""

    embedder: Embedder | Loader
    settings: object = None
    name: str = "embed"
    fields: dict[str, pa.DataType] = field(default_factory=lambda: {"embedding": pa.list_(pa.float32())})
    holds_model: ClassVar[bool] = True

    def __call__(self, batch: Batch) -> dict[str, list]:
        out = _columns(self.fields, len(batch))
        self.embedder = built(self.embedder)
        feats = np.asarray(self.embedder([batch.image(i) for i in range(len(batch))]), np.float32)
        if feats.ndim != 2 or len(feats) != len(batch):
            raise ValueError(f"the embedder gave shape {feats.shape} for {len(batch)} images; expected (N, D)")
        feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        out["embedding"] = list(feats)
        return out

