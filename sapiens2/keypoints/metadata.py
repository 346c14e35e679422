"""Keypoint set metadata: names, flip indices, skeleton, colours, OKS sigmas, subsets.

Three sets ship as package data (``sapiens2/data/*.json``):

- ``keypoints308()``: the Sapiens2 308-point set (body, feet, hands, 238 face points);
  index = heatmap channel of the pose head.
- ``coco17()``: COCO body keypoints.
- ``coco_wholebody133()``: COCO-WholeBody (body 0-16, feet 17-22, face 23-90,
  left hand 91-111, right hand 112-132).

Colours are RGB tuples, exactly as in the official metadata. ``flip_indices[i]`` is the
index keypoint ``i`` becomes under a horizontal flip (an involution).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Mapping, Sequence


__all__ = [
    "KeypointSet",
    "keypoints308",
    "coco17",
    "coco_wholebody133",
    "load_keypoint_set",
]

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class KeypointSet:
    """Immutable description of one keypoint layout."""

    name: str
    names: tuple[str, ...]
    flip_indices: tuple[int, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    skeleton_links: tuple[tuple[int, int], ...]
    skeleton_link_colors: tuple[RGB, ...]
    keypoint_colors: tuple[RGB, ...]
    sigmas: tuple[float, ...]
    subsets: Mapping[str, tuple[int, ...]]
    upper_body_ids: tuple[int, ...]
    lower_body_ids: tuple[int, ...]

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Index of a keypoint by name (KeyError if absent)."""
        try:
            return self._name_to_index[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a keypoint of the {self.name} set") from None

    def __getstate__(self) -> dict:
        """Pickles (for worker processes) with its read-only subsets as the plain dict they wrap."""
        state = {k: v for k, v in self.__dict__.items() if k != "_n2i"}
        state["subsets"] = dict(self.subsets)
        return state

    def __setstate__(self, state: dict) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, MappingProxyType(value) if key == "subsets" else value)

    def indices(self, names: Sequence[str]) -> list[int]:
        return [self.index(n) for n in names]

    def __contains__(self, name: object) -> bool:
        return name in self._name_to_index

    @property
    def _name_to_index(self) -> dict[str, int]:
        # Cached on the instance; the dataclass is frozen, so bypass __setattr__.
        cache = self.__dict__.get("_n2i")
        if cache is None:
            cache = {n: i for i, n in enumerate(self.names)}
            object.__setattr__(self, "_n2i", cache)
        return cache


def _read_json(filename: str) -> dict:
    # The data folder is addressed through the parent package so that it needs no
    # __init__.py of its own.
    path = resources.files("sapiens2").joinpath("data", filename)
    with path.open("r", encoding="utf-8") as f:
        return json.load(f)


def _contiguous_subsets(bounds: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(range(a, b)) for k, (a, b) in bounds.items()}


_WHOLEBODY_SUBSETS = {
    "body": (0, 17),
    "foot": (17, 23),
    "face": (23, 91),
    "left_hand": (91, 112),
    "right_hand": (112, 133),
}

_FILES = {
    "keypoints308": "keypoints308.json",
    "coco17": "coco17.json",
    "coco_wholebody133": "coco_wholebody133.json",
}


@lru_cache(maxsize=None)
def load_keypoint_set(name: str) -> KeypointSet:
    """Load one of ``"keypoints308"``, ``"coco17"``, ``"coco_wholebody133"``."""
    if name not in _FILES:
        raise ValueError(f"unknown keypoint set {name!r}; expected one of {sorted(_FILES)}")
    d = _read_json(_FILES[name])
    names = tuple(d["keypoint_names"])
    k = len(names)
    if name == "keypoints308":
        subsets = {s: tuple(v) for s, v in d["subsets"].items()}
    elif name == "coco_wholebody133":
        subsets = _contiguous_subsets(_WHOLEBODY_SUBSETS)
    else:
        subsets = {"body": tuple(range(k))}
    types = d.get("keypoint_types", [""] * k)
    upper = tuple(d.get("upper_body_ids", [i for i, t in enumerate(types) if t == "upper"]))
    lower = tuple(d.get("lower_body_ids", [i for i, t in enumerate(types) if t == "lower"]))
    return KeypointSet(
        name=name,
        names=names,
        flip_indices=tuple(int(i) for i in d["flip_indices"]),
        flip_pairs=tuple((int(a), int(b)) for a, b in d["flip_pairs"]),
        skeleton_links=tuple((int(a), int(b)) for a, b in d["skeleton_links"]),
        skeleton_link_colors=tuple(tuple(int(c) for c in rgb) for rgb in d["skeleton_link_colors_rgb"]),
        keypoint_colors=tuple(tuple(int(c) for c in rgb) for rgb in d["keypoint_colors_rgb"]),
        sigmas=tuple(float(s) for s in d["sigmas"]),
        subsets=MappingProxyType(subsets),
        upper_body_ids=upper,
        lower_body_ids=lower,
    )


def keypoints308() -> KeypointSet:
    """The Sapiens2 308-keypoint set."""
    return load_keypoint_set("keypoints308")


def coco17() -> KeypointSet:
    """COCO-17 body keypoints."""
    return load_keypoint_set("coco17")


def coco_wholebody133() -> KeypointSet:
    """COCO-WholeBody 133 keypoints."""
    return load_keypoint_set("coco_wholebody133")


def keypoint_set_for(num_keypoints: int) -> KeypointSet:
    """The shipped keypoint set with this many points (308, 133 or 17)."""
    sets = {308: keypoints308, 133: coco_wholebody133, 17: coco17}
    if num_keypoints not in sets:
        raise ValueError(f"no shipped keypoint set has {num_keypoints} points; pass keypoint_set=")
    return sets[num_keypoints]()
