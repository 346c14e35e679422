"""Convert Sapiens2 308-keypoint predictions to other keypoint formats.

Every target keypoint is defined by *name* against the 308-point set, in one of three ways:
copied from the keypoint of the same name, copied from an alias, or derived as the
midpoint of two keypoints (score = the smaller of the two scores). Target keypoints with
no counterpart get coordinates (0, 0) and score 0, and are listed in
``ConvertedKeypoints.missing`` / ``missing_names``.

Formats
-------

``coco17`` (17 points): every point has a same-name source::

    idx  name             308 source
    0    nose             0  nose
    1-4  eyes, ears       1-4 (same names)
    5-8  shoulders, elbows 5-8
    9    left_wrist       62 left_wrist
    10   right_wrist      41 right_wrist
    11-16 hips, knees, ankles 9-14

``coco_wholebody133`` (133 points; 55 filled, 78 missing)::

    idx      name                         308 source
    0-16     body                         as coco17
    17-22    feet (big/small toe, heel)   15-20 (same names)
    23-90    face-0 .. face-67            MISSING (the 308 face points are a different
                                          landmark scheme; no name correspondence)
    91       left_hand_root               62 left_wrist (alias)
    92       left_thumb1                  MISSING
    93-95    left_thumb2..4               44, 43, 42 (same names)
    96,100,104,108  left_<finger>1        MISSING (see note)
    97-99    left_forefinger2..4          48, 47, 46
    101-103  left_middle_finger2..4       52, 51, 50
    105-107  left_ring_finger2..4         56, 55, 54
    109-111  left_pinky_finger2..4        60, 59, 58
    112      right_hand_root              41 right_wrist (alias)
    113      right_thumb1                 MISSING
    114-116  right_thumb2..4              23, 22, 21
    117,121,125,129 right_<finger>1       MISSING
    118-120  right_forefinger2..4         27, 26, 25
    122-124  right_middle_finger2..4      31, 30, 29
    126-128  right_ring_finger2..4        35, 34, 33
    130-132  right_pinky_finger2..4       39, 38, 37

  Note: the 308 set has ``*_third_joint`` hand points instead of COCO-WholeBody's
  ``*1`` points. The reference's own COCO-WholeBody -> 308 table leaves them unpaired
  (and gives them their own OKS sigmas), so they are reported missing here too. The
  same-name pairs above are exactly that reference table.

``openpose_body25`` (25 points) and ``openpose_body18`` (18 points, the COCO-style
OpenPose layout)::

    BODY_25  BODY_18  name        308 source
    0        0        Nose        0  nose
    1        1        Neck        midpoint of 5 left_shoulder, 6 right_shoulder
    2        2        RShoulder   6  right_shoulder
    3        3        RElbow      8  right_elbow
    4        4        RWrist      41 right_wrist
    5        5        LShoulder   5  left_shoulder
    6        6        LElbow      7  left_elbow
    7        7        LWrist      62 left_wrist
    8        -        MidHip      midpoint of 9 left_hip, 10 right_hip
    9        8        RHip        10 right_hip
    10       9        RKnee       12 right_knee
    11       10       RAnkle      14 right_ankle
    12       11       LHip        9  left_hip
    13       12       LKnee       11 left_knee
    14       13       LAnkle      13 left_ankle
    15       14       REye        2  right_eye
    16       15       LEye        1  left_eye
    17       16       REar        4  right_ear
    18       17       LEar        3  left_ear
    19       -        LBigToe     15 left_big_toe
    20       -        LSmallToe   16 left_small_toe
    21       -        LHeel       17 left_heel
    22       -        RBigToe     18 right_big_toe
    23       -        RSmallToe   19 right_small_toe
    24       -        RHeel       20 right_heel

  OpenPose defines its neck as the shoulder midpoint, so that is the default even though
  the 308 set has its own ``neck`` point (69); pass ``neck="keypoint"`` to use point 69.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from .metadata import coco17, coco_wholebody133, keypoints308

__all__ = [
    "FORMATS",
    "OPENPOSE_BODY25_NAMES",
    "OPENPOSE_BODY18_NAMES",
    "KeypointMapping",
    "ConvertedKeypoints",
    "keypoint_mapping",
    "convert_keypoints",
    "to_coco17",
    "to_coco_wholebody133",
    "to_openpose_body25",
    "to_openpose_body18",
]

FORMATS = ("coco17", "coco_wholebody133", "openpose_body25", "openpose_body18")
#: Short spellings accepted everywhere a format is named (the CLI's `--format` shows them too).
FORMAT_ALIASES = {"wholebody133": "coco_wholebody133", "openpose25": "openpose_body25", "openpose18": "openpose_body18"}


def format_name(name: str) -> str:
    """The canonical name of a keypoint format, from itself or an alias (`openpose25` -> `openpose_body25`)."""
    low = str(name).strip().lower()
    low = FORMAT_ALIASES.get(low, low)
    if low not in FORMATS:
        choices = ", ".join(f"{f} ({a})" if (a := _alias_of(f)) else f for f in FORMATS)
        raise ValueError(f"unknown keypoint format {name!r}; expected one of {choices}")
    return low


def _alias_of(fmt: str) -> str | None:
    return next((a for a, f in FORMAT_ALIASES.items() if f == fmt), None)

OPENPOSE_BODY25_NAMES = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist",
    "MidHip", "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye",
    "REar", "LEar", "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel",
)  # fmt: skip
OPENPOSE_BODY18_NAMES = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist",
    "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
)  # fmt: skip

# OpenPose name -> 308 name (a tuple of two names means their midpoint).
_OPENPOSE_SOURCES: dict[str, str | tuple[str, str]] = {
    "Nose": "nose",
    "Neck": ("left_shoulder", "right_shoulder"),
    "RShoulder": "right_shoulder",
    "RElbow": "right_elbow",
    "RWrist": "right_wrist",
    "LShoulder": "left_shoulder",
    "LElbow": "left_elbow",
    "LWrist": "left_wrist",
    "MidHip": ("left_hip", "right_hip"),
    "RHip": "right_hip",
    "RKnee": "right_knee",
    "RAnkle": "right_ankle",
    "LHip": "left_hip",
    "LKnee": "left_knee",
    "LAnkle": "left_ankle",
    "REye": "right_eye",
    "LEye": "left_eye",
    "REar": "right_ear",
    "LEar": "left_ear",
    "LBigToe": "left_big_toe",
    "LSmallToe": "left_small_toe",
    "LHeel": "left_heel",
    "RBigToe": "right_big_toe",
    "RSmallToe": "right_small_toe",
    "RHeel": "right_heel",
}

# COCO-WholeBody names that mean the same point as a differently named 308 point.
_WHOLEBODY_ALIASES = {
    "left_hand_root": "left_wrist",
    "right_hand_root": "right_wrist",
}


@dataclass(frozen=True)
class KeypointMapping:
    """How each target keypoint is built from the 308 points.

    ``sources[t]`` is ``()`` (no counterpart), ``(i,)`` (copy point i) or ``(i, j)``
    (midpoint of i and j, score min).
    """

    format: str
    names: tuple[str, ...]
    sources: tuple[tuple[int, ...], ...]

    @property
    def missing(self) -> tuple[int, ...]:
        return tuple(t for t, s in enumerate(self.sources) if not s)

    @property
    def missing_names(self) -> tuple[str, ...]:
        return tuple(self.names[t] for t in self.missing)

    @property
    def valid(self) -> np.ndarray:
        return np.array([bool(s) for s in self.sources])


@dataclass(frozen=True)
class ConvertedKeypoints:
    """Result of a conversion. Arrays keep the leading (instance) dimensions of the input."""

    keypoints: np.ndarray  # (..., K, 2) float64; (0, 0) where missing
    scores: np.ndarray  # (..., K) float32; 0 where missing
    mapping: KeypointMapping

    @property
    def names(self) -> tuple[str, ...]:
        return self.mapping.names

    @property
    def missing(self) -> tuple[int, ...]:
        """Target indices with no counterpart in the 308 set."""
        return self.mapping.missing

    @property
    def missing_names(self) -> tuple[str, ...]:
        return self.mapping.missing_names

    @property
    def valid(self) -> np.ndarray:
        """(K,) bool, False where the target keypoint has no counterpart."""
        return self.mapping.valid

    def as_triplets(self) -> np.ndarray:
        """(..., K, 3): x, y, score."""
        return np.concatenate([self.keypoints, self.scores[..., None].astype(np.float64)], -1)


def _resolve(spec: str | tuple[str, str] | None) -> tuple[int, ...]:
    src = keypoints308()
    if spec is None:
        return ()
    if isinstance(spec, tuple):
        return tuple(src.index(n) for n in spec)
    return (src.index(spec),)


@lru_cache(maxsize=None)
def keypoint_mapping(
    format: str, neck: Literal["shoulders", "keypoint"] = "shoulders"
) -> KeypointMapping:
    """The 308 -> ``format`` mapping (one of ``FORMATS``, or an alias of one)."""
    format = format_name(format)
    src = keypoints308()
    if format in ("coco17", "coco_wholebody133"):
        target = coco17() if format == "coco17" else coco_wholebody133()
        specs = []
        for name in target.names:
            name = _WHOLEBODY_ALIASES.get(name, name)
            specs.append(name if name in src else None)
        names = target.names
    elif format in ("openpose_body25", "openpose_body18"):
        names = OPENPOSE_BODY25_NAMES if format == "openpose_body25" else OPENPOSE_BODY18_NAMES
        specs = []
        for n in names:
            spec = _OPENPOSE_SOURCES[n]
            if n == "Neck" and neck == "keypoint":
                spec = "neck"
            elif n == "Neck" and neck != "shoulders":
                raise ValueError(f"neck must be 'shoulders' or 'keypoint', got {neck!r}")
            specs.append(spec)
    return KeypointMapping(format=format, names=tuple(names), sources=tuple(_resolve(s) for s in specs))


def convert_keypoints(
    keypoints: Any,
    scores: Any | None = None,
    *,
    to: str,
    neck: Literal["shoulders", "keypoint"] = "shoulders",
) -> ConvertedKeypoints:
    """Convert (..., 308, 2) keypoints (and (..., 308) scores) to another format.

    ``keypoints`` may also be (..., 308, 3) with the score in the last column when
    ``scores`` is omitted. Scores default to 1.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim < 2 or kp.shape[-2] != 308 or kp.shape[-1] not in (2, 3):
        raise ValueError(f"expected (..., 308, 2) or (..., 308, 3) keypoints, got {kp.shape}")
    if scores is None:
        sc = kp[..., 2].astype(np.float32) if kp.shape[-1] == 3 else np.ones(kp.shape[:-1], np.float32)
    else:
        sc = np.asarray(scores, dtype=np.float32)
        if sc.shape != kp.shape[:-1]:
            raise ValueError(f"scores {sc.shape} do not match keypoints {kp.shape}")
    kp = kp[..., :2]

    mapping = keypoint_mapping(to, neck)
    k_out = len(mapping.names)
    out_kp = np.zeros((*kp.shape[:-2], k_out, 2), dtype=np.float64)
    out_sc = np.zeros((*kp.shape[:-2], k_out), dtype=np.float32)

    single = [(t, s[0]) for t, s in enumerate(mapping.sources) if len(s) == 1]
    if single:
        t_idx, s_idx = map(list, zip(*single))
        out_kp[..., t_idx, :] = kp[..., s_idx, :]
        out_sc[..., t_idx] = sc[..., s_idx]
    for t, s in enumerate(mapping.sources):
        if len(s) == 2:
            a, b = s
            out_kp[..., t, :] = 0.5 * (kp[..., a, :] + kp[..., b, :])
            out_sc[..., t] = np.minimum(sc[..., a], sc[..., b])
    return ConvertedKeypoints(keypoints=out_kp, scores=out_sc, mapping=mapping)


def to_coco17(keypoints: Any, scores: Any | None = None) -> ConvertedKeypoints:
    return convert_keypoints(keypoints, scores, to="coco17")


def to_coco_wholebody133(keypoints: Any, scores: Any | None = None) -> ConvertedKeypoints:
    return convert_keypoints(keypoints, scores, to="coco_wholebody133")


def to_openpose_body25(
    keypoints: Any, scores: Any | None = None, *, neck: Literal["shoulders", "keypoint"] = "shoulders"
) -> ConvertedKeypoints:
    return convert_keypoints(keypoints, scores, to="openpose_body25", neck=neck)


def to_openpose_body18(
    keypoints: Any, scores: Any | None = None, *, neck: Literal["shoulders", "keypoint"] = "shoulders"
) -> ConvertedKeypoints:
    return convert_keypoints(keypoints, scores, to="openpose_body18", neck=neck)

