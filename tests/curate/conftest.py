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


def make_corpus(root: Path, n_distinct: int = 16, seed: int = 0) -> Corpus:
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


__all__ = ["Corpus", "Counting", "colour_detector", "load_broken_detector", "load_colour_detector",
           "load_thumb_embedder", "make_corpus", "scene", "thumb_embedder"]


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
