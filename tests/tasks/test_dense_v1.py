"""The dense predictors run Sapiens v1 models with v1's own pre/post-processing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from sapiens2.models.sapiens1 import Sapiens1Config, V1HeadConfig, build_sapiens1
from sapiens2.tasks import Depth, Normals, Segmenter
from sapiens2.body_parts import seg28
from tests.conftest import random_photo

TINY = Sapiens1Config(embed_dim=32, depth=2, num_heads=2, pos_grid=(8, 6))
INPUT = (128, 96)


def _v1(task: str, out: int, deconvs: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_sapiens1(TINY, task, V1HeadConfig(32, (8,) * deconvs, (8, 8), out)).eval()


@pytest.mark.parametrize("size", [(333, 517), (517, 333)])
def test_v1_segmentation_has_28_classes_and_the_photo_size(size):
    seg = Segmenter(_v1("seg", 28, 3), input_size=INPUT)
    result = seg(random_photo(*size))
    assert seg.generation == 1 and seg.classes == seg28() and len(seg.classes) == 28
    assert result.labels.shape == size and result.labels.max() < 28
    assert seg.classes.names[2] == "Face_Neck"


def test_v1_stretches_bilinearly_even_when_shrinking():
    seg = Segmenter(_v1("seg", 28, 3), input_size=INPUT)
    assert seg.placement((400, 300)).interpolation == cv2.INTER_LINEAR
    assert seg.placement((400, 300)).pad == (0, 0, 0, 0)


def test_v1_normals_are_unit_after_resizing():
    result = Normals(_v1("normal", 3, 3), input_size=INPUT)(random_photo(101, 77))
    norms = np.linalg.norm(result.normals, axis=-1)
    assert result.normals.shape == (101, 77, 3)
    np.testing.assert_allclose(norms, 1.0, atol=1e-3)


def test_v1_depth_and_its_picture():
    depth = Depth(_v1("depth", 1, 4), input_size=INPUT)
    result = depth(random_photo(90, 70))
    assert result.depth.shape == (90, 70) and np.isfinite(result.depth).all()
    mask = np.zeros((90, 70), bool)
    mask[20:60, 10:50] = True
    pic = result.with_mask(mask).picture()
    assert pic.shape == (90, 70, 3) and (pic[~mask] == 100).all() and not (pic[mask] == 100).all()


def test_depth_refuses_a_sapiens2_model():
    from sapiens2.models import BackboneConfig, SegHeadConfig, build_model

    net = build_model(BackboneConfig(embed_dim=32, depth=2, num_heads=2), "seg", SegHeadConfig(32, (8, 8, 8, 8), conv_channels=(8, 8)))
    with pytest.raises(ValueError, match="not 'depth'"):
        Depth(net)


def test_v1_default_input_is_the_grid_it_was_trained_on():
    """A v1 model fine-tuned at another size (positions for an 8 x 6 grid here) is fed that size by default."""
    assert Segmenter(_v1("seg", 28, 3)).input_size == (128, 96)
    assert Segmenter(_v1("seg", 28, 3), input_size=(64, 48)).input_size == (64, 48)
