"""The sigmas and subsets the pose metrics use, and the class table of the seg metrics, equal the spec's."""

from __future__ import annotations

import numpy as np

from sapiens2.metrics.pose import keypoint_sigmas
from sapiens2.metrics.seg_classes import IGNORE_INDEX, SEG29_CLASSES, SEG29_PALETTE_RGB


def test_308_sigmas_match_spec(keypoints308_spec):
    sigmas, index = keypoint_sigmas("keypoints308")
    assert sigmas.dtype == np.float64
    assert sigmas.tolist() == keypoints308_spec["sigmas"]
    assert index.tolist() == list(range(308))


def test_308_subsets_match_spec(keypoints308_spec):
    for name in ("body", "foot", "face", "left_hand", "right_hand"):
        sigmas, index = keypoint_sigmas("keypoints308", name)
        assert index.tolist() == keypoints308_spec["subsets"][name], name
        assert sigmas.tolist() == [keypoints308_spec["sigmas"][i] for i in index]


def test_coco17_sigmas_match_spec(coco17_spec):
    assert keypoint_sigmas("coco17")[0].tolist() == coco17_spec["sigmas"]


def test_body_subset_has_the_coco17_sigmas(coco17_spec):
    assert keypoint_sigmas("keypoints308", "body")[0].tolist() == coco17_spec["sigmas"]


def test_seg_classes_match_spec(seg29_spec):
    assert list(SEG29_CLASSES) == seg29_spec["class_names"]
    assert [list(c) for c in SEG29_PALETTE_RGB] == seg29_spec["palette_rgb"]
    assert IGNORE_INDEX == seg29_spec["ignore_index"]
