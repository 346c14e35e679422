"""Keypoint sets the pose metrics know: the Sapiens2 308-point set, its evaluation subsets, and COCO-17.

The numbers are facts of the reference release (its `keypoints308.py` and COCO's `cocoeval`); they sit here,
not in a data file, so the metrics work from a plain install. `tests/metrics` checks them against the spec.
OKS uses (2*sigma)^2 as the per-point variance factor, as in COCO.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Sigmas of points 0..69 (body, feet, hands, wrists, extras); the 238 face points 70..307 use the default 0.010.
_SIGMAS_308_HEAD: tuple[float, ...] = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.107,
    0.107, 0.087, 0.087, 0.089, 0.089, 0.068, 0.066, 0.066, 0.092, 0.094,
    0.094, 0.047, 0.037, 0.035, 0.022, 0.035, 0.024, 0.025, 0.026, 0.026,
    0.022, 0.024, 0.018, 0.032, 0.021, 0.021, 0.017, 0.031, 0.022, 0.019,
    0.02, 0.062, 0.047, 0.037, 0.035, 0.022, 0.035, 0.024, 0.025, 0.026,
    0.026, 0.022, 0.024, 0.018, 0.032, 0.021, 0.021, 0.017, 0.031, 0.022,
    0.019, 0.02, 0.062, 0.072, 0.072, 0.072, 0.072, 0.079, 0.079, 0.079,
)
SIGMAS_308: tuple[float, ...] = _SIGMAS_308_HEAD + (0.010,) * 238

SUBSETS_308: dict[str, tuple[int, ...]] = {
    # body is in COCO-17 order (wrists are 62 / 41 in the 308 layout).
    "body": (0, 1, 2, 3, 4, 5, 6, 7, 8, 62, 41, 9, 10, 11, 12, 13, 14),
    "foot": tuple(range(15, 21)),
    "face": tuple(range(70, 308)),
    "left_hand": tuple(range(42, 62)),
    "right_hand": tuple(range(21, 41)),
}

SIGMAS_COCO17: tuple[float, ...] = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)


@dataclass(frozen=True)
class KeypointSet:
    """A named list of keypoints with their OKS sigmas."""

    name: str
    sigmas: np.ndarray

    @property
    def num_keypoints(self) -> int:
        return len(self.sigmas)


def keypoints308() -> KeypointSet:
    return KeypointSet("keypoints308", np.asarray(SIGMAS_308, dtype=np.float64))


def coco17() -> KeypointSet:
    return KeypointSet("coco17", np.asarray(SIGMAS_COCO17, dtype=np.float64))


def subset308(name: str) -> tuple[KeypointSet, np.ndarray]:
    """The subset's sigmas and the indices that pick its points out of a 308-point array."""
    if name not in SUBSETS_308:
        raise KeyError(f"unknown 308-keypoint subset {name!r}; known: {sorted(SUBSETS_308)}")
    idx = np.asarray(SUBSETS_308[name], dtype=np.int64)
    return KeypointSet(name, np.asarray(SIGMAS_308, dtype=np.float64)[idx]), idx
