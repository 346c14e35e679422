"""Saved dense outputs read back; foreground masks from every kind of source."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sapiens2.io import read_image
from sapiens2.io.writers import write_image, write_npy
from sapiens2.tasks import (
    AlbedoResult,
    MattingResult,
    NormalsResult,
    Pointmap,
    Segmenter,
)
from sapiens2.tasks.outputs import output_stem
from sapiens2.tasks.masks import find_saved_mask, foreground_mask
from sapiens2.tasks.ply import read_ply
from tests.conftest import random_photo
from tests.tasks._dense_tiny import SMALL_INPUT, Coordinates, HalvesLogits


def test_output_stem_cuts_at_the_first_dot():
    assert output_stem("a/b/img.v2.final.jpg") == "img"


def test_segmentation_files_read_back(tmp_path):
    seg = Segmenter(HalvesLogits(3, 28), input_size=SMALL_INPUT, probabilities=True)(random_photo(30, 40))
    paths = seg.save(tmp_path / "x", kinds={"npz", "png"}) + [seg.save_probabilities(tmp_path / "x")]
    assert [p.name for p in paths] == ["x_seg.npy", "x_seg.png", "x_seg_probs.npz"]
    labels = np.load(tmp_path / "x_seg.npy")
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, seg.labels)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "x_seg.png"), cv2.IMREAD_UNCHANGED), seg.labels)
    probs = np.load(tmp_path / "x_seg_probs.npz")
    assert probs["probabilities"].shape == (30, 40, 29) and list(probs["classes"])[28] == "Tongue"


def test_array_outputs_read_back(tmp_path):
    n = np.random.default_rng(0).normal(size=(6, 5, 3)).astype(np.float32)
    NormalsResult(n).save(tmp_path / "n", kinds={"npz"})
    np.testing.assert_array_equal(np.load(tmp_path / "n_normal.npy"), n)
    a = np.random.default_rng(1).random((6, 5, 3)).astype(np.float32)
    AlbedoResult(a).save(tmp_path / "a", kinds={"npz", "png"})
    np.testing.assert_array_equal(np.load(tmp_path / "a_albedo.npy"), a)
    np.testing.assert_array_equal(read_image(tmp_path / "a_albedo.png"), (a * 255).astype(np.uint8))


def test_pointmap_outputs(tmp_path):
    img = random_photo(40, 25)
    pm = Pointmap(Coordinates(), input_size=SMALL_INPUT)(img)
    paths = pm.save(tmp_path / "p", img, kinds={"npz", "ply"})
    assert [p.name for p in paths] == ["p_depth.npy", "p_points.npy", "p.ply"]
    depth = np.load(tmp_path / "p_depth.npy")
    assert depth.dtype == np.float16 and depth.shape == (40, 25)
    pts, cols = read_ply(tmp_path / "p.ply")
    assert len(pts) == 40 * 25 and cols is not None


def test_matting_outputs(tmp_path):
    alpha = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    result = MattingResult(alpha, alpha[..., None] * np.array([1.0, 0.5, 0.0], np.float32))
    img = random_photo(3, 4)
    result.save(tmp_path / "m", img, kinds={"npz", "png"})
    a16 = cv2.imread(str(tmp_path / "m_alpha.png"), cv2.IMREAD_UNCHANGED)
    assert a16.dtype == np.uint16
    np.testing.assert_allclose(a16 / 65535, alpha, atol=1e-5)
    cutout = cv2.imread(str(tmp_path / "m_cutout.png"), cv2.IMREAD_UNCHANGED)
    assert cutout.shape == (3, 4, 4)
    np.testing.assert_array_equal(cutout[..., 2::-1], img)
    assert np.load(tmp_path / "m_matting.npz")["foreground"].shape == (3, 4, 3)
    with pytest.raises(ValueError, match="needs the photo"):
        result.save(tmp_path / "m2", kinds={"png"})


def test_pictures_are_photo_and_result_side_by_side(tmp_path):
    img = random_photo(30, 40)
    seg = Segmenter(HalvesLogits(0, 5), input_size=SMALL_INPUT)(img)
    pic = seg.figure(img)
    assert pic.shape == (30, 80, 3)
    np.testing.assert_array_equal(pic[:, :40], img)
    (path,) = NormalsResult(np.zeros((30, 40, 3), np.float32)).save(tmp_path / "n", img, kinds={"vis"})
    assert path.name == "n_normal.jpg" and read_image(path).shape == (30, 80, 3)


def test_every_result_writes_exactly_the_files_the_output_table_names(tmp_path):
    from sapiens2.task_table import SAVE_KINDS, TASKS
    from sapiens2.tasks import (AlbedoResult, DepthResult, NormalsResult, PointmapResult, PoseResult,
                                SegmentationResult)
    from sapiens2.tasks.outputs import FILES
    from sapiens2.keypoints.metadata import keypoints308
    from sapiens2.tasks.resize import placement

    img = random_photo(6, 5)
    z = np.zeros((6, 5, 3), np.float32)
    results = [SegmentationResult(np.zeros((6, 5), np.uint8)), NormalsResult(z), AlbedoResult(z),
               PointmapResult(z + 1, 1.0, placement("pad", (6, 5), (8, 8), "cubic")),
               MattingResult(z[..., 0], z), DepthResult(z[..., 0]),
               PoseResult([], (6, 5), keypoints308(), "given")]
    assert sorted(r.task for r in results) == sorted(TASKS) == sorted(FILES)
    for r in results:
        paths = r.save(tmp_path / r.task / "x", img, kinds=SAVE_KINDS)
        assert [p.name for p in paths] == [f"x{s}" for _, s in FILES[r.task]]
        assert all(p.stat().st_size > 0 for p in paths)


def test_foreground_mask_sources(tmp_path):
    labels = np.array([[0, 3], [5, 0]], np.int64)
    expected = labels > 0
    np.testing.assert_array_equal(foreground_mask(labels), expected)
    np.testing.assert_array_equal(foreground_mask(expected), expected)
    np.testing.assert_array_equal(foreground_mask(np.array([[0.2, 0.7], [0.5, 0.1]], np.float32)), expected)
    write_npy(tmp_path / "a_seg.npy", labels)
    np.testing.assert_array_equal(foreground_mask(tmp_path / "a_seg.npy"), expected)
    picture_mask = np.zeros((2, 2, 3), np.uint8)
    picture_mask[expected] = (255, 0, 0)
    write_image(tmp_path / "b.png", picture_mask)
    np.testing.assert_array_equal(foreground_mask(tmp_path / "b.png"), expected)
    with pytest.raises(ValueError, match="prediction is 3x3"):
        foreground_mask(labels, (3, 3))


def test_saved_mask_lookup_follows_the_reference_order(tmp_path):
    assert find_saved_mask(tmp_path, "a.jpg") is None
    write_image(tmp_path / "a.jpg", np.zeros((2, 2, 3), np.uint8))
    assert find_saved_mask(tmp_path, "a.jpg").name == "a.jpg"
    write_npy(tmp_path / "a_seg.npy", np.zeros((2, 2), np.int64))
    assert find_saved_mask(tmp_path, "a.jpg").name == "a_seg.npy"
    write_npy(tmp_path / "a.npy", np.zeros((2, 2), bool))
    assert find_saved_mask(tmp_path, "dir/a.jpg").name == "a.npy"
