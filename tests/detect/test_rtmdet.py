"""RTMDet network: exact mmdet key layout and size, and the raw head outputs of mmdet's golden fixtures."""

from __future__ import annotations

import pytest
import torch

from sapiens2.detect.rtmdet import RTMDet, RTMDetConfig
from sapiens2.detect.checkpoint import infer_config
from tests.detect.conftest import SMALL_M, FixtureCase

# float32 tolerances for the raw head outputs. The fixtures' random weights and perturbed BatchNorm
# statistics amplify rounding: running the same weights in float64 lands as far from mmdet's float32
# outputs (up to 2e-3 on logits, 1e-3 relative on distances) as our float32 run does (up to 7e-4 and
# 7e-4), so differences of this size are float32 noise, not a modelling difference. Any structural slip
# (a missing block, eps, activation, exp on the distances) moves the outputs by orders of magnitude more.
LOGIT_ATOL = 2e-3
DIST_RTOL = 2e-3


def test_m_person_layout_matches_official_checkpoint_exactly(m_person_layout):
    with torch.device("meta"):
        model = RTMDet(RTMDetConfig.m(num_classes=1))
    ours = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    assert list(ours) == list(m_person_layout)  # same keys, same order as mmdet's state_dict()
    assert ours == m_person_layout
    assert len(ours) == 692


def test_m_person_parameter_count_is_24_66_million():
    with torch.device("meta"):
        model = RTMDet(RTMDetConfig.m())
    assert sum(p.numel() for p in model.parameters()) == 24_663_447  # shared head convs counted once


def test_head_convs_are_shared_across_levels_but_batchnorm_is_not():
    head = RTMDet(SMALL_M).bbox_head
    for tower in (head.cls_convs, head.reg_convs):
        for i in range(2):
            assert tower[1][i].conv is tower[0][i].conv and tower[2][i].conv is tower[0][i].conv
            assert tower[1][i].bn is not tower[0][i].bn


def test_fixture_weights_have_exactly_our_layout(fixture_case: FixtureCase):
    config = infer_config(fixture_case.weights)
    with torch.device("meta"):
        model = RTMDet(config)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in fixture_case.weights.items()}


def test_infer_config_recognises_the_fixture_sizes(fixture_case: FixtureCase):
    config = infer_config(fixture_case.weights)
    if fixture_case.name == "rtmdet_tiny_person":
        assert config == RTMDetConfig.tiny()
    else:
        assert config == SMALL_M


@pytest.fixture(scope="module")
def fixture_outputs(fixture_case: FixtureCase):
    model = RTMDet(infer_config(fixture_case.weights)).eval()
    model.load_state_dict(fixture_case.weights, strict=True)
    with torch.inference_mode():
        feats = model.backbone(fixture_case.inputs["input"])
        neck = model.neck(feats)
        cls_scores, bbox_preds = model.bbox_head(neck)
    return feats, neck, cls_scores, bbox_preds


def test_raw_class_logits_reproduce_mmdet(fixture_case: FixtureCase, fixture_outputs):
    _, _, cls_scores, _ = fixture_outputs
    for i, ours in enumerate(cls_scores):
        ref = fixture_case.expected[f"output_cls_{i}"]
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, atol=LOGIT_ATOL, rtol=0)


def test_raw_box_distances_reproduce_mmdet(fixture_case: FixtureCase, fixture_outputs):
    _, _, _, bbox_preds = fixture_outputs
    for i, ours in enumerate(bbox_preds):
        ref = fixture_case.expected[f"output_reg_{i}"]
        assert ours.shape == ref.shape
        rel = (ours - ref).abs() / ref.abs().clamp(min=1.0)
        assert rel.max() < DIST_RTOL, f"stride {8 << i}: relative error {rel.max():.2e}"


def test_backbone_and_neck_maps_reproduce_mmdet(fixture_case: FixtureCase, fixture_outputs):
    feats, neck, _, _ = fixture_outputs
    for name, maps in (("backbone", feats), ("neck", neck)):
        for i, ours in enumerate(maps):
            ref = fixture_case.expected[f"{name}_{i}"]
            assert ours.shape == ref.shape
            assert (ours - ref).abs().max() <= 2e-3 * ref.abs().max(), f"{name}_{i}"


def test_distances_use_exp_only_where_the_config_says(topology_case: FixtureCase):
    # The same weights with the tiny-style linear regression must NOT reproduce the m fixture.
    config = infer_config(topology_case.weights)
    linear = RTMDet(RTMDetConfig(**{**config.__dict__, "exp_on_reg": False})).eval()
    linear.load_state_dict(topology_case.weights)
    with torch.inference_mode():
        _, bbox_preds = linear(topology_case.inputs["input"])
    assert not torch.allclose(bbox_preds[0], topology_case.expected["output_reg_0"], rtol=0.1)


def test_forward_is_batch_independent(small_model: RTMDet):
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        both = small_model(x)
        first = small_model(x[:1])
    for a, b in zip(both[0] + both[1], first[0] + first[1]):
        torch.testing.assert_close(a[:1], b, atol=1e-5, rtol=1e-5)
    assert [t.shape[-2:] for t in both[0]] == [(8, 12), (4, 6), (2, 3)]
