"""The One-Euro filter: jitter goes at rest, fast motion follows with little lag."""

from __future__ import annotations

import numpy as np

from sapiens2.track import KeypointSmoother, OneEuroFilter


def test_still_noisy_point_is_smoothed():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.01)
    raw = 100 + rng.normal(0, 2.0, (120, 2))
    out = np.stack([f(x, i / 30) for i, x in enumerate(raw)])
    assert out[30:].std(0).max() < 0.5 * raw[30:].std(0).min()


def test_fast_motion_is_followed():
    f = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    xs = np.arange(60) * 10.0  # 300 px/s at 30 fps
    out = [f(np.array([x]), i / 30)[0] for i, x in enumerate(xs)]
    assert abs(out[-1] - xs[-1]) < 15  # lag of a frame or so, not tens of frames


def test_first_value_and_constants_pass_through():
    f = OneEuroFilter()
    assert f(np.array([3.0, 4.0]), 0.0).tolist() == [3.0, 4.0]
    assert np.allclose(f(np.array([3.0, 4.0]), 1 / 30), [3.0, 4.0])


def test_keypoint_smoother_keeps_tracks_apart_and_scores_unchanged():
    s = KeypointSmoother()
    a = np.array([[10.0, 10.0, 0.9], [20.0, 20.0, 0.1]])
    b = np.array([[500.0, 500.0, 0.8], [510.0, 510.0, 0.8]])
    s(0, a, 0.0)
    s(1, b, 0.0)
    out_a = s(0, a + [1.0, 1.0, 0.0], 1 / 30)
    assert 10 < out_a[0, 0] < 11 and out_a[:, 2].tolist() == [0.9, 0.1]
    assert out_a[1, :2].tolist() == [21.0, 21.0]  # a low-score point is passed through, not smoothed
    out_b = s(1, b, 1 / 30)
    assert np.allclose(out_b[:, :2], b[:, :2])
    s.forget([1])
    assert list(s._filters) == [1]
