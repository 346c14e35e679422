"""Behaviour of the UDP codec beyond the golden fixture."""

import numpy as np
import pytest
import torch

from sapiens2.keypoints.udp import heatmap_maximum, udp_decode, udp_encode


def test_encode_peak_is_one_at_the_exact_location():
    # Heatmap pixel (50, 70) corresponds to crop pixel 50 * 767/191, 70 * 1023/255.
    kp = np.array([[[50 * 767 / 191, 70 * 1023 / 255]]], dtype=np.float32)
    hm, w = udp_encode(kp)
    assert hm.shape == (1, 256, 192)
    assert hm[0].argmax() == 70 * 192 + 50
    assert hm[0, 70, 50] == pytest.approx(1.0, abs=1e-5)
    assert w.tolist() == [[1.0]]
    # window of +-18 px (3 sigma) and nothing beyond it
    assert hm[0, 70, 50 + 18] > 0 and hm[0, 70, 50 + 19] == 0
    assert hm[0, 70, 50 + 18] == pytest.approx(np.exp(-(18**2) / 72), rel=1e-4)


def test_encode_weight_zero_only_when_window_misses_the_map():
    # x = -25 heatmap px: window [-43, -7] entirely left of the map -> weight 0.
    # x = -10 heatmap px: window reaches into the map -> weight kept, partial gaussian.
    f = 767 / 191
    kp = np.array([[[-25 * f, 100.0], [-10 * f, 100.0], [300 * f, 100.0]]], dtype=np.float32)
    hm, w = udp_encode(kp, np.ones((1, 3)))
    assert w.tolist() == [[0.0, 1.0, 0.0]]
    assert hm[0].max() == 0 and hm[2].max() == 0
    assert 0 < hm[1].max() < 1


def test_encode_merges_instances_by_max():
    kp = np.array([[[100.0, 100.0]], [[600.0, 900.0]]], dtype=np.float32)
    hm, w = udp_encode(kp)
    single_a, _ = udp_encode(kp[:1])
    single_b, _ = udp_encode(kp[1:])
    np.testing.assert_array_equal(hm, np.maximum(single_a, single_b))
    assert w.shape == (2, 1)


@pytest.mark.parametrize("xy", [(383.3, 511.7), (35.25, 40.5), (730.9, 985.1), (100.0, 900.0)])
def test_decode_recovers_encoded_location(xy):
    kp = np.array([[xy]], dtype=np.float32)
    hm, _ = udp_encode(kp)
    out, score = udp_decode(hm)
    # decode maps heatmap -> input with input/(heatmap-1), encode uses (input-1)/(heatmap-1)
    expected = np.array(xy) * (np.array([191, 255]) / [767, 1023]) / [191, 255] * [768, 1024]
    np.testing.assert_allclose(out[0], expected, atol=1e-3)
    assert 0.9 < score[0] <= 1.0


def test_decode_near_the_border_is_pulled_inward_like_the_reference():
    # The modulation blur is zero-padded, so within ~5 heatmap px of the edge the peak
    # moves inward. Top-down crops keep people >= 10 % away from the crop border.
    kp = np.array([[[12.0, 500.0]]], dtype=np.float32)
    out, _ = udp_decode(udp_encode(kp)[0])
    assert out[0, 0] > 12.0 * 768 / 767 + 1.0


def test_decode_accepts_torch_and_leaves_input_untouched():
    kp = np.array([[[300.0, 400.0], [500.0, 100.0]]], dtype=np.float32)
    hm, _ = udp_encode(kp)
    before = hm.copy()
    out_np, sc_np = udp_decode(hm)
    np.testing.assert_array_equal(hm, before)
    out_t, sc_t = udp_decode(torch.from_numpy(hm))
    np.testing.assert_array_equal(out_np, out_t)
    np.testing.assert_array_equal(sc_np, sc_t)


def test_non_positive_maximum_is_reported_unrefined():
    hm = np.full((2, 256, 192), -0.5, dtype=np.float32)
    hm[1, 10, 20] = 0.7
    locs, vals = heatmap_maximum(hm)
    assert locs[0].tolist() == [-1, -1] and vals[0] == pytest.approx(-0.5)
    out, scores = udp_decode(hm)
    np.testing.assert_allclose(out[0], [-768 / 191, -1024 / 255])
    assert scores[0] <= 0 and scores[1] == pytest.approx(0.7)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        udp_decode(np.zeros((256, 192), np.float32))
    with pytest.raises(ValueError):
        udp_encode(np.zeros((3,), np.float32))
