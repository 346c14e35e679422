"""Exported files run through the project's predictors and give the PyTorch network's results."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sapiens2.detect import PersonDetector
from sapiens2.detect.pipeline import SAPIENS2_SETTINGS
from sapiens2.export import load_exported
from sapiens2.tasks.normal import Normals
from sapiens2.tasks.pointmap import Pointmap
from sapiens2.tasks.pose import Pose
from sapiens2.tasks.seg import Segmenter
from tests.conftest import random_photo
from tests.export.conftest import input_size, tiny_network


def test_segmenter_runs_an_onnx_file_like_the_network(exports):
    photos = [random_photo(80, 60, seed=1), random_photo(50, 90, seed=2)]
    size = input_size("seg")
    got = Segmenter(str(exports.get("seg", dynamic=True)), input_size=size, batch_size=2)(photos)
    want = Segmenter(tiny_network("seg"), input_size=size, batch_size=2)(photos)
    for g, w in zip(got, want):
        assert g.labels.shape == w.labels.shape
        assert (g.labels == w.labels).mean() > 0.999  # a pixel may flip where two logits tie within 1e-4


def test_pose_runs_an_onnx_file_like_the_network(exports):
    photo = random_photo(120, 90, seed=3)
    size = input_size("pose")
    got = Pose(str(exports.get("pose")), detector=None, input_size=size)(photo)  # batch 1 file, flip test: 2 calls
    want = Pose(tiny_network("pose"), detector=None, input_size=size)(photo)
    assert got.keypoint_set.name == want.keypoint_set.name and len(got.people) == 1
    np.testing.assert_allclose(got.people[0].keypoints, want.people[0].keypoints, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(got.people[0].scores, want.people[0].scores, atol=1e-4)


def test_pose_runs_a_program_given_as_a_module(exports):
    photo = random_photo(120, 90, seed=3)
    program = load_exported(exports.get("pose", fmt="pt2"), allow_code=True)
    got = Pose(program, detector=None, input_size=input_size("pose"))(photo)
    want = Pose(tiny_network("pose"), detector=None, input_size=input_size("pose"))(photo)
    np.testing.assert_allclose(got.people[0].keypoints, want.people[0].keypoints, rtol=1e-4, atol=1e-2)


def test_an_exported_file_refuses_another_dtype(exports):
    with pytest.raises(ValueError, match="takes float32 input"):
        Segmenter(str(exports.get("seg", dynamic=True)), dtype="fp16")


def test_a_predictor_feeds_an_exported_file_its_own_size_and_names_it_when_told_otherwise(exports):
    path = str(exports.get("seg", dynamic=True))
    assert Segmenter(path).input_size == (64, 48)  # read from the file
    seg = Segmenter(path, input_size=(1024, 768))
    with pytest.raises(ValueError, match=r"input_size=\(64, 48\)"):
        seg(random_photo(40, 30))


@pytest.mark.slow
def test_normal_and_pointmap_run_onnx_files(exports):
    photo = random_photo(70, 50, seed=4)
    got = Normals(str(exports.get("normal")), input_size=input_size("normal"))(photo)
    want = Normals(tiny_network("normal"), input_size=input_size("normal"))(photo)
    np.testing.assert_allclose(got.normals, want.normals, atol=1e-3)
    got = Pointmap(str(exports.get("pointmap")), input_size=input_size("pointmap"))(photo)
    want = Pointmap(tiny_network("pointmap"), input_size=input_size("pointmap"))(photo)
    np.testing.assert_allclose(got.points, want.points, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_the_person_detector_runs_an_onnx_file(exports):
    photo = random_photo(100, 80, seed=5)
    settings = dict(score_threshold=0.0, nms_threshold=0.5)
    small = replace(SAPIENS2_SETTINGS, input_size=input_size("detect")[0])
    got = PersonDetector(load_exported(exports.get("detect")), small, **settings)(photo)
    want = PersonDetector(tiny_network("detect"), small, **settings)(photo)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-3)
