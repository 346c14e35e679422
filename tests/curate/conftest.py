"""A generated corpus with planted cases, and stand-in detector / embedder (no weights, milliseconds)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("faiss")

from tests.runner.conftest import colour_detector  # noqa: E402  the saturated-blob stand-in detector


def scene(rng: np.random.Generator, h: int, w: int, person: bool = True) -> np.ndarray:
    """A smooth grey-ish random scene (no saturated colour) with, when `person`, a red upright block
    covering ~8% of it: the stand-in detector's person."""
    low = rng.uniform(40, 210, (6, 6)).astype(np.float32)
    base = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    tint = rng.uniform(-20, 20, 3).astype(np.float32)
    img = np.clip(base[..., None] + tint, 0, 255).astype(np.uint8)
    if person:
        bh, bw = int(h * 0.4), int(w * 0.2)
        y, x = rng.integers(0, h - bh), rng.integers(0, w - bw)
        img[y:y + bh, x:x + bw] = (220, 30, 30)
    return img


def save(path: Path, rgb: np.ndarray, quality: int = 95) -> None:
    ok = cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok


@dataclass
class Corpus:
    root: Path
    originals: list[Path] = field(default_factory=list)
    copies: dict[Path, Path] = field(default_factory=dict)  # planted near copy -> its original
    small: list[Path] = field(default_factory=list)
    no_person: list[Path] = field(default_factory=list)
    corrupt: list[Path] = field(default_factory=list)
    cartoons: list[Path] = field(default_factory=list)  # flat saturated colours, hard outlines
    text_overlays: list[Path] = field(default_factory=list)  # meme text / caption bar / watermark (cv2.putText)
    dull: list[Path] = field(default_factory=list)  # dark, flat: what an aesthetic score drops


def cartoon(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A cartoon-like picture: flat saturated sky and grass, a sun, black outlines, and a red figure (the
    stand-in detector's person)."""
    img = np.empty((h, w, 3), np.uint8)
    horizon = int(h * rng.uniform(0.55, 0.7))
    img[:horizon], img[horizon:] = (90, 160, 240), (60, 190, 70)
    cv2.line(img, (0, horizon), (w, horizon), (0, 0, 0), 4)
    centre, radius = (int(w * rng.uniform(0.6, 0.85)), int(h * 0.18)), int(min(h, w) * 0.09)
    cv2.circle(img, centre, radius, (250, 215, 40), -1)
    cv2.circle(img, centre, radius, (0, 0, 0), 3)
    bh, bw = int(h * 0.45), int(w * 0.2)
    y, x = horizon - bh + int(h * 0.1), int(w * rng.uniform(0.1, 0.3))
    cv2.rectangle(img, (x, y), (x + bw, y + bh), (220, 30, 30), -1)
    cv2.rectangle(img, (x, y), (x + bw, y + bh), (0, 0, 0), 3)
    return img


def outlined_text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, thickness: int) -> None:
    """White meme-style text with a black outline, in place."""
    font = cv2.FONT_HERSHEY_DUPLEX
    cv2.putText(img, text, org, font, scale, (0, 0, 0), thickness + 4, cv2.LINE_AA)
    cv2.putText(img, text, org, font, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def text_overlay(rng: np.random.Generator, h: int, w: int, kind: str) -> np.ndarray:
    """A scene with a person and rendered text: `meme` (top and bottom lines), `caption` (a black bar with a
    line of white text) or `watermark` (a smaller line in a corner)."""
    img = scene(rng, h, w)
    if kind == "meme":
        outlined_text(img, "WHEN THE TESTS", (int(w * 0.05), int(h * 0.13)), w / 420, 3)
        outlined_text(img, "FINALLY PASS", (int(w * 0.12), int(h * 0.94)), w / 420, 3)
    elif kind == "caption":
        img[int(h * 0.85):] = 0
        cv2.putText(img, "Breaking news: local man curates data", (int(w * 0.03), int(h * 0.94)),
                    cv2.FONT_HERSHEY_SIMPLEX, w / 900, (255, 255, 255), 2, cv2.LINE_AA)
    else:
        outlined_text(img, "(c) stockphotos.example", (int(w * 0.45), int(h * 0.95)), w / 1100, 2)
    return img


def dull(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A scene with its person, the rest dark and nearly flat."""
    img = scene(rng, h, w)
    grey = ~((img[..., 0] > 150) & (img[..., 1] < 90))
    img[grey] = (img[grey].astype(np.float32) * 0.08 + 20).astype(np.uint8)
    return img


def make_corpus(root: Path, n_distinct: int = 16, seed: int = 0, clip_cases: bool = False) -> Corpus:
    """`n_distinct` scenes with a person and planted copies of the first 8, small images, images without a
    person, corrupt files; with `clip_cases` also cartoons, text overlays and dull images (all with a person,
    big enough, distinct)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    c = Corpus(root)
    for i in range(n_distinct):
        h, w = int(rng.integers(560, 640)), int(rng.integers(560, 700))
        img = scene(rng, h, w)
        p = root / f"orig_{i:02d}.jpg"
        save(p, img)
        c.originals.append(p)
        if i < 8:  # planted copies of half the originals
            exact = root / f"copy_{i:02d}_exact.jpg"
            shutil.copyfile(p, exact)
            small = cv2.resize(img, (int(w * 0.7), int(h * 0.7)), interpolation=cv2.INTER_AREA)
            save(root / f"copy_{i:02d}_resized.jpg", small)
            save(root / f"copy_{i:02d}_q30.jpg", img, quality=30)
            dy, dx = int(h * 0.03), int(w * 0.03)
            save(root / f"copy_{i:02d}_crop.jpg", img[dy:h - dy, dx:w - dx])
            for kind in ("exact", "resized", "q30", "crop"):
                c.copies[root / f"copy_{i:02d}_{kind}.jpg"] = p
    for i in range(3):
        p = root / f"small_{i}.jpg"
        save(p, scene(rng, 300, 380))
        c.small.append(p)
    for i in range(3):
        p = root / f"noperson_{i}.jpg"
        save(p, scene(rng, 500, 600, person=False))
        c.no_person.append(p)
    good = (root / "orig_00.jpg").read_bytes()
    (root / "corrupt_truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "corrupt_text.jpg").write_bytes(b"this is not an image\n")
    c.corrupt = [root / "corrupt_truncated.jpg", root / "corrupt_text.jpg"]
    if clip_cases:
        for i in range(3):
            c.cartoons.append(root / f"cartoon_{i}.png")  # drawings are often PNGs; flat colours stay flat
            ok = cv2.imwrite(str(c.cartoons[-1]), cv2.cvtColor(cartoon(rng, 520, 640), cv2.COLOR_RGB2BGR))
            assert ok
        for kind in ("meme", "caption", "watermark"):
            c.text_overlays.append(root / f"text_{kind}.jpg")
            save(c.text_overlays[-1], text_overlay(rng, 540, 660, kind))
        for i in range(2):
            c.dull.append(root / f"dull_{i}.jpg")
            save(c.dull[-1], dull(rng, 500, 620))
    return c


def thumb_embedder(images) -> np.ndarray:
    """Stand-in embedder: the mean-centred 16 x 16 grey thumbnail (near copies stay near, distinct scenes
    are nearly orthogonal)."""
    out = []
    for im in images:
        g = cv2.resize(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), (16, 16), interpolation=cv2.INTER_AREA)
        v = g.astype(np.float32).ravel()
        out.append(v - v.mean())
    return np.stack(out)


class Counting:
    """Wraps a callable and counts the images it was given."""

    def __init__(self, fn) -> None:
        self.fn, self.calls, self.images = fn, 0, 0

    def __call__(self, x):
        self.calls += 1
        self.images += len(x) if isinstance(x, list) else 1
        return self.fn(x)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Corpus:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def clip_corpus(tmp_path_factory) -> Corpus:
    """A smaller corpus with the CLIP stage's planted cases too."""
    return make_corpus(tmp_path_factory.mktemp("clip_corpus"), n_distinct=6, seed=1, clip_cases=True)


class StandInClip:
    """A CLIP whose image features we control, for the zero-shot decisions: 768-d unit vectors along
    axis 0 (photo) or 1 (drawing: over 30% of saturated pixels), axis 2 (text: any pure-white pixels; the
    scenes stay below 231) or 3 (no text), and axis 4 by the grey contrast (what `aesthetic_state`'s head
    scores). A prompt's text feature is the axis of the `ClipConfig` list it is in."""

    logit_scale = 100.0

    def __init__(self, config) -> None:
        self.axis = {p: a for a, ps in enumerate((config.photo_prompts, config.not_photo_prompts,
                                                   config.text_prompts, config.no_text_prompts)) for p in ps}
        self.text_calls = 0

    def image_features(self, images) -> np.ndarray:
        out = np.zeros((len(images), 768), np.float32)
        for i, im in enumerate(images):
            im16 = im.astype(np.int16)
            saturated = (im16.max(axis=2) - im16.min(axis=2)) > 100
            out[i, 1 if saturated.mean() > 0.3 else 0] = 1
            out[i, 2 if (im.min(axis=2) > 245).mean() > 0.0005 else 3] = 1
            grey = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)[~saturated]
            out[i, 4] = min(1.0, grey.std() / 64) if grey.size else 0.0
        return out

    def text_features(self, prompts) -> np.ndarray:
        self.text_calls += 1
        out = np.zeros((len(prompts), 768), np.float32)
        for j, p in enumerate(prompts):
            out[j, self.axis[p]] = 1
        return out


def aesthetic_state(bias: float = 3.0, gain: float = 10.0) -> dict:
    """A state dict in the improved aesthetic predictor's exact layout whose (linear) network scores
    `bias + gain * x[4]`: the stand-in CLIP's contrast axis."""
    import torch

    from sapiens2.curate.clip import expected_aesthetic_shapes

    state = {k: torch.zeros(v) for k, v in expected_aesthetic_shapes(768, linear=False).items()}
    state["layers.0.weight"][0, 4] = 1
    for k in ("layers.2.weight", "layers.4.weight", "layers.6.weight"):
        state[k][0, 0] = 1
    state["layers.7.weight"][0, 0] = gain
    state["layers.7.bias"][0] = bias
    return state


__all__ = ["Corpus", "Counting", "StandInClip", "aesthetic_state", "cartoon", "colour_detector", "dull",
           "load_broken_detector", "load_colour_detector", "load_face_predictor", "load_stand_in_clip",
           "load_thumb_embedder", "make_corpus", "scene",
           "text_overlay", "thumb_embedder"]


def load_colour_detector():
    """A `Loader` target for the stand-in detector (module-level, so Ray workers import it by name)."""
    return colour_detector


def load_thumb_embedder():
    """A `Loader` target for the stand-in embedder."""
    return thumb_embedder


def load_broken_detector():
    """A `Loader` target whose detector fails on every batch."""
    def broken(images):
        raise ValueError("the stand-in detector is broken")
    return broken


def load_stand_in_clip():
    """A `Loader` target for the stand-in CLIP with the synthetic aesthetic head (default prompts)."""
    from sapiens2.curate.clip import AestheticScorer, build_aesthetic_head
    from sapiens2.curate.clip_stage import ClipModels
    from sapiens2.curate.config import ClipConfig

    return ClipModels(StandInClip(ClipConfig()), AestheticScorer(build_aesthetic_head(aesthetic_state(), "synthetic")))


def load_face_predictor():
    """A `Loader` target for the head stage's stand-in keypoint model."""
    from tests.curate.test_headpose import FacePredictor

    return FacePredictor()
