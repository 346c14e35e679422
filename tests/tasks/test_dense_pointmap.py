"""Pointmaps: points / scale, the focal length from the points and from the scale, PLY export read back."""

from __future__ import annotations

import numpy as np
import pytest

from sapiens2.tasks.camera import CANONICAL_FOCAL, estimate_focal, focal_from_scale
from sapiens2.tasks import Pointmap
from sapiens2.tasks.ply import read_ply, write_ply
from tests.conftest import random_photo
from tests.tasks._dense_tiny import SMALL_INPUT, Coordinates


def test_points_are_the_network_points_divided_by_the_scale():
    one = Pointmap(Coordinates(1.0), input_size=SMALL_INPUT)(random_photo(40, 25))
    # The stand-in multiplies its points by the scale it reports, so metric points do not depend on it...
    four = Pointmap(Coordinates(4.0), input_size=SMALL_INPUT)(random_photo(40, 25))
    np.testing.assert_allclose(four.points, one.points, atol=1e-5)
    assert four.scale == 4.0
    np.testing.assert_array_equal(one.depth, one.points[..., 2])
    np.testing.assert_allclose(one.depth, 1.0)  # batch index 0 -> z = 1


def test_each_image_of_a_batch_keeps_its_own_scale_and_points():
    results = Pointmap(Coordinates(2.0), input_size=SMALL_INPUT, batch_size=3)([random_photo(40, 25)] * 3)
    for i, r in enumerate(results):
        np.testing.assert_allclose(r.depth, 1.0 + i, atol=1e-6)


def _synthetic_points(h, w, f, cx, cy, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.uniform(1.5, 4.0, (h, w))
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([(u - cx) * z / f, (v - cy) * z / f, z], axis=-1).astype(np.float32)


def test_focal_estimate_recovers_a_known_camera():
    pts = _synthetic_points(60, 80, f=523.0, cx=41.5, cy=27.0)
    est = estimate_focal(pts)
    assert est.focal == pytest.approx(523.0, rel=1e-4)
    assert (est.cx, est.cy) == (pytest.approx(41.5, abs=1e-2), pytest.approx(27.0, abs=1e-2))
    assert est.rms < 1e-2 and est.num_points == 60 * 80
    fixed = estimate_focal(pts, principal_point=(41.5, 27.0))
    assert fixed.focal == pytest.approx(523.0, rel=1e-4)
    np.testing.assert_allclose(est.matrix(), [[est.focal, 0, est.cx], [0, est.focal, est.cy], [0, 0, 1]])


def test_focal_estimate_uses_the_mask_and_skips_invalid_points():
    pts = _synthetic_points(40, 50, f=300.0, cx=25.0, cy=20.0)
    pts[:10] = np.array([1.0, 1.0, 1.0], np.float32)  # garbage rows, masked out below
    pts[10, :5] = np.nan
    pts[11, :5, 2] = -1.0
    mask = np.ones((40, 50), bool)
    mask[:10] = False
    est = estimate_focal(pts, mask)
    assert est.focal == pytest.approx(300.0, rel=1e-4)
    assert est.num_points == 30 * 50 - 10
    with pytest.raises(ValueError, match="at least 3 valid points"):
        estimate_focal(pts, np.zeros((40, 50), bool))


def test_focal_from_scale_converts_to_photo_pixels():
    assert focal_from_scale(2.0, 0.5) == CANONICAL_FOCAL / 2.0 / 0.5
    result = Pointmap(Coordinates(2.0), input_size=SMALL_INPUT)(random_photo(128, 96))  # resize factor 0.5
    assert result.placement.scale == (0.5, 0.5)
    assert result.focal_from_scale == pytest.approx(768.0 / 2.0 / 0.5)


@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip(tmp_path, binary):
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(57, 3)).astype(np.float32)
    cols = rng.integers(0, 256, (57, 3), dtype=np.uint8)
    path = write_ply(tmp_path / "c.ply", pts, cols, binary=binary)
    back, back_cols = read_ply(path)
    np.testing.assert_array_equal(back, pts) if binary else np.testing.assert_allclose(back, pts, rtol=1e-6)
    np.testing.assert_array_equal(back_cols, cols)
    header = path.read_bytes()[:200]
    assert (b"binary_little_endian" in header) == binary and b"element vertex 57" in header


def test_ply_without_colours_and_empty(tmp_path):
    back, cols = read_ply(write_ply(tmp_path / "a.ply", np.ones((3, 3)), None))
    assert cols is None and back.shape == (3, 3)
    back, cols = read_ply(write_ply(tmp_path / "e.ply", np.zeros((0, 3)), np.zeros((0, 3), np.uint8)))
    assert back.shape == (0, 3) and cols.shape == (0, 3)


def test_pointmap_ply_holds_the_foreground_points_with_photo_colours(tmp_path):
    img = random_photo(40, 25)
    result = Pointmap(Coordinates(), input_size=SMALL_INPUT)(img)
    mask = np.zeros((40, 25), bool)
    mask[5:15, 3:9] = True
    masked = result.with_mask(mask)
    pts, cols = read_ply(masked.save_ply(tmp_path / "p.ply", img))
    np.testing.assert_array_equal(pts, result.points[mask])
    np.testing.assert_array_equal(cols, img[mask])
    pts, cols = read_ply(masked.save_ply(tmp_path / "m.ply", img, camera_marker=True))
    assert len(pts) == mask.sum() + 500
    np.testing.assert_allclose(np.linalg.norm(pts[-500:], axis=1), 0.05, rtol=1e-5)
    assert (cols[-500:] == [0, 0, 255]).all()
    assert masked.estimate_focal().num_points == mask.sum()
    with pytest.raises(ValueError, match="mask is 3x3"):
        result.with_mask(np.ones((3, 3), bool))
