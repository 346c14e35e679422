"""The body-part classes: Sapiens2's 29 ("dome29") and Sapiens v1's 28 (Goliath), names and palettes.

Shipped as package data (`sapiens2/data/seg29.json`, `seg28.json`, generated from the reference releases):
class names in id order, RGB palette, the ignore index 255 and background id 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np


@dataclass(frozen=True)
class SegClasses:
    names: tuple[str, ...]
    palette: np.ndarray  # num_classes x 3 uint8, RGB
    background: int = 0
    ignore_index: int = 255

    def __len__(self) -> int:
        return len(self.names)

    @property
    def flip_pairs(self) -> tuple[tuple[int, int], ...]:
        """(left id, right id) for every `Left_X` class with a `Right_X`: the labels a horizontal flip swaps."""
        ids = {n.lower(): i for i, n in enumerate(self.names)}
        return tuple((i, ids["right_" + n[5:].lower()]) for i, n in enumerate(self.names)
                     if n.lower().startswith("left_") and "right_" + n[5:].lower() in ids)

    def index(self, name: str) -> int:
        """The id of a class name (case-insensitive; '-' and ' ' match '_')."""
        key = name.strip().lower().replace("-", "_").replace(" ", "_")
        for i, n in enumerate(self.names):
            if n.lower() == key:
                return i
        raise KeyError(f"no class named {name!r}; classes: {', '.join(self.names)}")


@lru_cache(maxsize=1)
def seg29() -> SegClasses:
    """The 29 classes, loaded once from the package data."""
    raw = json.loads(resources.files("sapiens2").joinpath("data", "seg29.json").read_text(encoding="utf-8"))
    palette = np.asarray(raw["palette_rgb"], dtype=np.uint8)
    palette.setflags(write=False)
    return SegClasses(tuple(raw["class_names"]), palette, int(raw.get("background_index", 0)),
                      int(raw.get("ignore_index", 255)))


@lru_cache(maxsize=1)
def seg28() -> SegClasses:
    """Sapiens v1's 28 classes (background included), loaded once from the package data."""
    raw = json.loads(resources.files("sapiens2").joinpath("data", "seg28.json").read_text(encoding="utf-8"))
    palette = np.asarray(raw["palette"], dtype=np.uint8)
    palette.setflags(write=False)
    return SegClasses(tuple(raw["class_names"]), palette)
