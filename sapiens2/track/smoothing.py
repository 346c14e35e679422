"""The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) for keypoint jitter in videos.

A low-pass filter whose cutoff rises with speed: still points are smoothed hard (jitter goes), fast ones
lightly (little lag). ``min_cutoff`` (Hz) sets the smoothing at rest, ``beta`` how fast the cutoff grows
with speed (per pixel per second), ``d_cutoff`` the smoothing of the speed estimate itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["KeypointSmoother", "OneEuroFilter"]


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Element-wise One-Euro filter over arrays of a fixed shape: ``smoothed = f(values, t)``."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.01, d_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("min_cutoff and d_cutoff must be > 0, beta >= 0")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def reset(self) -> None:
        self._x = self._dx = self._t = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self._x is None or self._t is None or self._x.shape != x.shape or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        dx = (x - self._x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        dx_hat = a_d * dx + (1 - a_d) * self._dx
        a = _alpha(self.min_cutoff + self.beta * np.abs(dx_hat), dt)
        x_hat = a * x + (1 - a) * self._x
        self._x, self._dx, self._t = x_hat, dx_hat, t
        return x_hat.copy()


class KeypointSmoother:
    """One filter per track ID over its (K, 2) keypoint positions; scores pass through unchanged.

    Points scored below ``score_threshold`` are not fed to the filter (their position is noise), and a
    track's filter is dropped when the track is (``forget``).
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.01, d_cutoff: float = 1.0,
                 score_threshold: float = 0.3) -> None:
        self.settings = (min_cutoff, beta, d_cutoff)
        self.score_threshold = score_threshold
        self._filters: dict[int, OneEuroFilter] = {}
        self._last: dict[int, np.ndarray] = {}

    def __call__(self, track_id: int, keypoints: np.ndarray, t: float) -> np.ndarray:
        """(K, 3) x, y, score -> the same with x, y smoothed."""
        kp = np.asarray(keypoints, np.float64).copy()
        f = self._filters.setdefault(track_id, OneEuroFilter(*self.settings))
        low = kp[:, 2] < self.score_threshold
        last = self._last.get(track_id)
        if last is not None and last.shape == kp[:, :2].shape:
            kp[low, :2] = last[low]  # hold unreliable points where they were, so they do not disturb the filter
        smoothed = f(kp[:, :2], t)
        self._last[track_id] = smoothed
        out = kp.copy()
        out[:, :2] = smoothed
        out[low, :2] = np.asarray(keypoints, np.float64)[low, :2]
        return out

    def forget(self, live_ids: Iterable[int]) -> None:
        live = set(live_ids)
        for tid in [t for t in self._filters if t not in live]:
            del self._filters[tid]
            self._last.pop(tid, None)
