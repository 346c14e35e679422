"""Stable person IDs across frames by greedy matching, with a motion model and a maximum age.

Each frame's people are matched to the live tracks by similarity: box IoU, or, when keypoints are given
and ``metric="oks"``, an object-keypoint similarity (a Gaussian of the keypoint distances relative to the
track's box size). The best pair is taken first, then the next best among the rest, down to
``threshold``; every person left over starts a new track. A track not matched for more than ``max_age``
frames is dropped, so a person who leaves and comes back within that time keeps their ID. IDs are
integers from 0, never reused.

Motion (``motion=True``): each track keeps a constant-velocity estimate of its box (an exponential average
of the per-frame displacement, `velocity_smoothing` the weight of the newest), and is compared where it
should be now, its last box moved by the velocity times the frames since it was seen. So a person who is
hidden for a few frames while walking is found again further along, and fast movers keep their overlap.
Crowded scenes with crossing people would need appearance features, which this does not have.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Track", "Tracker", "box_iou", "keypoint_similarity"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of xyxy boxes (N, 4) and (M, 4)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def keypoint_similarity(a: np.ndarray, b: np.ndarray, areas: np.ndarray, kappa: float = 0.1,
                        score_threshold: float = 0.3) -> np.ndarray:
    """(N, M) OKS-like similarity of keypoints a (N, K, 3) and b (M, K, 3) (x, y, score).

    exp(-d^2 / (2 * area * kappa^2)) averaged over the points confident in both; ``areas`` (N,) are the
    reference boxes' areas. Pairs with no point confident in both score 0.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    d2 = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(-1)
    both = (a[:, None, :, 2] >= score_threshold) & (b[None, :, :, 2] >= score_threshold)
    scale = 2.0 * np.maximum(np.asarray(areas, np.float64), 1.0)[:, None, None] * kappa**2
    sim = np.exp(-d2 / scale) * both
    count = both.sum(-1)
    return np.where(count > 0, sim.sum(-1) / np.maximum(count, 1), 0.0)


@dataclass
class Track:
    id: int
    box: np.ndarray  # (4,) last seen
    keypoints: np.ndarray | None = None  # (K, 3) last seen
    missed: int = 0  # frames since last matched
    hits: int = 1
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # box change per frame

    def predicted_box(self) -> np.ndarray:
        """Where the box should be in the frame being matched (the last box, moved on by the velocity)."""
        return self.box + self.velocity * (self.missed + 1)

    def predicted_keypoints(self) -> np.ndarray | None:
        if self.keypoints is None:
            return None
        shift = (self.velocity[:2] + self.velocity[2:]) / 2 * (self.missed + 1)  # the box centre's motion
        return np.concatenate([self.keypoints[:, :2] + shift, self.keypoints[:, 2:]], axis=1)


@dataclass
class Tracker:
    """Assign IDs frame by frame: ``ids = tracker.update(boxes, keypoints)``."""

    threshold: float = 0.3
    max_age: int = 30
    metric: str = "iou"  # "iou" or "oks" (needs keypoints)
    motion: bool = True
    velocity_smoothing: float = 0.5
    tracks: list[Track] = field(default_factory=list)
    next_id: int = 0

    def __post_init__(self) -> None:
        if self.metric not in ("iou", "oks"):
            raise ValueError(f"metric must be 'iou' or 'oks', not {self.metric!r}")
        if not 0 < self.velocity_smoothing <= 1:
            raise ValueError(f"velocity_smoothing must be in (0, 1], not {self.velocity_smoothing}")

    def similarity(self, boxes: np.ndarray, keypoints: np.ndarray | None) -> np.ndarray:
        if not self.tracks or len(boxes) == 0:
            return np.zeros((len(self.tracks), len(boxes)))
        old = np.stack([t.predicted_box() if self.motion else t.box for t in self.tracks])
        if self.metric == "oks" and keypoints is not None and all(t.keypoints is not None for t in self.tracks):
            areas = (old[:, 2] - old[:, 0]) * (old[:, 3] - old[:, 1])
            kps = [t.predicted_keypoints() if self.motion else t.keypoints for t in self.tracks]
            return keypoint_similarity(np.stack(kps), keypoints, areas)
        return box_iou(old, boxes)

    def update(self, boxes: np.ndarray, keypoints: np.ndarray | None = None) -> list[int]:
        """The track ID of each of this frame's people (boxes (N, 4+), keypoints (N, K, 3) or None)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, np.shape(boxes)[-1] if np.size(boxes) else 4)[:, :4]
        kps = None if keypoints is None else np.asarray(keypoints, np.float64)
        sim = self.similarity(boxes, kps)
        ids: list[int | None] = [None] * len(boxes)
        used_tracks: set[int] = set()
        if sim.size:
            order = np.argsort(-sim, axis=None, kind="stable")
            for flat in order:
                ti, di = np.unravel_index(flat, sim.shape)
                if sim[ti, di] < self.threshold:
                    break
                if ti in used_tracks or ids[di] is not None:
                    continue
                used_tracks.add(int(ti))
                track = self.tracks[ti]
                step = (boxes[di] - track.box) / (track.missed + 1)
                a = self.velocity_smoothing if track.hits > 1 else 1.0  # the first displacement is all there is
                track.velocity = a * step + (1 - a) * track.velocity
                track.box, track.missed, track.hits = boxes[di].copy(), 0, track.hits + 1
                track.keypoints = None if kps is None else kps[di].copy()
                ids[di] = track.id
        for ti, track in enumerate(self.tracks):
            if ti not in used_tracks:
                track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_age]
        for di in range(len(boxes)):
            if ids[di] is None:
                track = Track(self.next_id, boxes[di].copy(), None if kps is None else kps[di].copy())
                self.next_id += 1
                self.tracks.append(track)
                ids[di] = track.id
        return [int(i) for i in ids]  # type: ignore[arg-type]
