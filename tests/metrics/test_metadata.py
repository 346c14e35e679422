"""The keypoint and class tables baked into the metrics equal the spec's data files."""

from __future__ import annotations

import numpy as np

from sapiens2.metrics.keypoint_sets import SIGMAS_308, SIGMAS_COCO17, SUBSETS_308, coco17, keypoints308, subset308
from sapiens2.metrics.seg_classes import IGNORE_INDEX, SEG29_CLASSES, SEG29_PALETTE_RGB


def test_308_sigmas_match_spec(keypoints308_spec):
    assert list(SIGMAS_308) == keypoints308_spec["sigmas"]
    assert keypoints308().num_keypoints == 308


def test_308_subsets_match_spec(keypoints308_spec):
    for name in ("body", "foot", "face", "left_hand", "right_hand"):
        assert list(SUBSETS_308[name]) == keypoints308_spec["subsets"][name], name


def test_coco17_sigmas_match_spec(coco17_spec):
    assert list(SIGMAS_COCO17) == coco17_spec["sigmas"]


def test_body_subset_has_the_coco17_sigmas():
    kset, index = subset308("body")
    np.testing.assert_array_equal(kset.sigmas, coco17().sigmas)
    assert len(index) == 17


def test_seg_classes_match_spec(seg29_spec):
    assert list(SEG29_CLASSES) == seg29_spec["class_names"]
    assert [list(c) for c in SEG29_PALETTE_RGB] == seg29_spec["palette_rgb"]
    assert IGNORE_INDEX == seg29_spec["ignore_index"]
