"""The CLIP stage: one CLIP image embedding per image gives the realism and text-overlay scores (zero-shot)
and the aesthetic score (the LAION head); drops `not_photo`, then `text_overlay`, then `low_aesthetic`.

The models come as a `ClipModels`, or as a `stages.Loader` (``clip_loader(config)``) that the stage builds on
first use, so an engine can build the stage from the config alone in another process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np
import pyarrow as pa

from sapiens2.curate.config import ClipConfig
from sapiens2.curate.stages import LOW_AESTHETIC, NOT_PHOTO, TEXT_OVERLAY, Batch, Loader, _columns, built

if TYPE_CHECKING:
    from sapiens2.fetch import CheckpointNotFoundError


class ClipLike(Protocol):
    """What the stage needs of a CLIP model (`sapiens2.curate.clip.ClipEmbedder` fits)."""

    logit_scale: float

    def image_features(self, images: Sequence[np.ndarray]) -> np.ndarray: ...

    def text_features(self, prompts: Sequence[str]) -> np.ndarray: ...


@dataclass
class ClipModels:
    """The CLIP model, and the aesthetic head (unit embeddings -> scores) or None when it is off."""

    clip: ClipLike
    aesthetic: Callable[[np.ndarray], np.ndarray] | None = None


def clip_files(config: ClipConfig) -> tuple[list[Path], list[CheckpointNotFoundError]]:
    """The CLIP folder and the aesthetic head's file, found or fetched; and a `CheckpointNotFoundError` for each
    one that is missing (so a command can report every missing file at once)."""
    from sapiens2.curate.clip import aesthetic_head_file, clip_folder
    from sapiens2.fetch import CheckpointNotFoundError

    found, missing = [], []
    for get in ([lambda: clip_folder(config.model)]
                + ([lambda: aesthetic_head_file(config.aesthetic_repo, config.aesthetic_file)] if config.aesthetic
                   else [])):
        try:
            found.append(get())
        except CheckpointNotFoundError as err:
            missing.append(err)
    return found, missing


def load_clip_models(config: ClipConfig, device: str | None = None) -> ClipModels:
    """Build the CLIP embedder and aesthetic head of `config` (raises the first missing file's error)."""
    from sapiens2.curate.clip import AestheticScorer, ClipEmbedder

    found, missing = clip_files(config)
    if missing:
        raise missing[0]
    device = device or config.device
    clip = ClipEmbedder.load(str(found[0]), device, config.batch_size)
    head = None
    if config.aesthetic:
        head = AestheticScorer.load(found[1], device)
        if head.in_dim != clip.dim:
            raise ValueError(f"{found[1]}: the aesthetic head takes {head.in_dim}-wide embeddings but {config.model} "
                             f"gives {clip.dim} (the LAION heads are for CLIP ViT-L/14; set [clip] aesthetic = "
                             "false for another model)")
    return ClipModels(clip, head)


def clip_loader(config: ClipConfig, device: str | None = None) -> Loader:
    """The `Loader` of `config`'s models."""
    return Loader.of(load_clip_models, config, device)


def _settings(config: ClipConfig) -> dict:
    """What changes the stage's results (not the device or the batch size)."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in ("device", "batch_size")}


@dataclass
class ClipStage:
    """Scores every image with one CLIP embedding: `photo_score` (P(photo prompts)), `text_score` (P(text
    overlay prompts), or the strokes detector's score), `aesthetic`, and `clip_label` (the best realism
    prompt). With `keep_embeddings` the unit embeddings are kept too (`[embed] source = "clip"`)."""

    models: ClipModels | Loader
    config: ClipConfig = field(default_factory=ClipConfig)
    keep_embeddings: bool = False
    name: str = "clip"
    fields: dict[str, pa.DataType] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.fields = {"aesthetic": pa.float32(), "photo_score": pa.float32(), "text_score": pa.float32(),
                       "clip_label": pa.string()}
        if self.keep_embeddings:
            self.fields["embedding"] = pa.list_(pa.float32())

    @property
    def settings(self) -> dict:
        return {**_settings(self.config), "keep_embeddings": self.keep_embeddings}

    holds_model: ClassVar[bool] = True

    def _models(self) -> ClipModels:
        self.models = built(self.models)
        return self.models

    def __call__(self, batch: Batch) -> dict[str, list]:
        c, models = self.config, self._models()
        out = _columns(self.fields, len(batch))
        images = [batch.image(i) for i in range(len(batch))]
        feats = np.asarray(models.clip.image_features(images), np.float32)
        if feats.ndim != 2 or len(feats) != len(images):
            raise ValueError(f"CLIP gave image features of shape {feats.shape} for {len(images)} images")
        feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        photo, label = self._zero_shot(models.clip, feats, c.photo_prompts, c.not_photo_prompts)
        if c.text_detector == "strokes":
            from sapiens2.curate.textdetect import text_overlay_score

            text = np.asarray([text_overlay_score(im) for im in images], np.float32)
        else:
            text, _ = self._zero_shot(models.clip, feats, c.text_prompts, c.no_text_prompts)
        aesthetic = models.aesthetic(feats) if models.aesthetic is not None else None
        for i in range(len(images)):
            out["photo_score"][i], out["text_score"][i] = float(photo[i]), float(text[i])
            out["clip_label"][i] = label[i]
            if aesthetic is not None:
                out["aesthetic"][i] = float(aesthetic[i])
            if photo[i] < c.min_photo_score:
                out["reason"][i] = NOT_PHOTO
                out["detail"][i] = f"P(photo) {photo[i]:.3f} < {c.min_photo_score}; closest prompt: {label[i]!r}"
            elif text[i] > c.max_text_score:
                out["reason"][i] = TEXT_OVERLAY
                out["detail"][i] = f"text score {text[i]:.3f} > {c.max_text_score} ({c.text_detector})"
            elif aesthetic is not None and aesthetic[i] < c.min_aesthetic:
                out["reason"][i] = LOW_AESTHETIC
                out["detail"][i] = f"aesthetic {aesthetic[i]:.2f} < {c.min_aesthetic}"
        if self.keep_embeddings:
            out["embedding"] = list(feats)
        return out

    @staticmethod
    def _zero_shot(clip: ClipLike, feats: np.ndarray, positive: Sequence[str], negative: Sequence[str]
                   ) -> tuple[np.ndarray, list[str]]:
        """P(any `positive` prompt) over the softmax of both sets, and the best prompt of each image."""
        from sapiens2.curate.clip import zero_shot

        prompts = (*positive, *negative)
        text = np.asarray(clip.text_features(prompts), np.float32)
        if text.shape != (len(prompts), feats.shape[1]):
            raise ValueError(f"CLIP gave text features of shape {text.shape} for {len(prompts)} prompts; expected "
                             f"({len(prompts)}, {feats.shape[1]})")
        probs = zero_shot(feats, text, clip.logit_scale)
        return probs[:, :len(positive)].sum(axis=1), [prompts[j] for j in probs.argmax(axis=1)]
