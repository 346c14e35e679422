"""The UDP codec reproduces the reference's golden tensors (encode and decode)."""

import numpy as np

from sapiens2.keypoints.udp import UDPHeatmapCodec, udp_decode, udp_encode


def test_encode_matches_reference(udp_fixture):
    inp, exp = udp_fixture["input"], udp_fixture["expected"]
    heatmaps, weights = udp_encode(inp["keypoints"], inp["keypoints_visible"])
    assert heatmaps.shape == exp["heatmaps"].shape == (17, 256, 192)
    assert heatmaps.dtype == np.float32
    np.testing.assert_allclose(heatmaps, exp["heatmaps"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(weights, exp["keypoint_weights"])


def test_encode_hides_invisible_points(udp_fixture):
    inp = udp_fixture["input"]
    heatmaps, _ = udp_encode(inp["keypoints"], inp["keypoints_visible"])
    hidden = np.nonzero(inp["keypoints_visible"][0] < 0.5)[0]
    assert hidden.size > 0
    assert np.all(heatmaps[hidden] == 0)


def test_decode_matches_reference(udp_fixture):
    inp, exp = udp_fixture["input"], udp_fixture["expected"]
    keypoints, scores = udp_decode(inp["heatmaps_noisy"])
    np.testing.assert_allclose(keypoints, exp["decoded_keypoints"][0], rtol=0, atol=1e-4)
    np.testing.assert_allclose(scores, exp["decoded_scores"][0], rtol=0, atol=1e-6)


def test_decode_without_refinement_would_not_match(udp_fixture):
    # Guards the test above: plain argmax is off by up to ~2 px, far outside the tolerance.
    inp, exp = udp_fixture["input"], udp_fixture["expected"]
    hm = inp["heatmaps_noisy"]
    idx = hm.reshape(len(hm), -1).argmax(1)
    argmax = np.stack([idx % 192, idx // 192], -1) / [191, 255] * [768, 1024]
    assert np.abs(argmax - exp["decoded_keypoints"][0]).max() > 0.1


def test_codec_object_and_batch_dimension(udp_fixture):
    inp, exp = udp_fixture["input"], udp_fixture["expected"]
    codec = UDPHeatmapCodec()
    batch = np.stack([inp["heatmaps_noisy"], inp["heatmaps_noisy"][:, :, :]])
    keypoints, scores = codec.decode(batch)
    assert keypoints.shape == (2, 17, 2) and scores.shape == (2, 17)
    np.testing.assert_allclose(keypoints[1], exp["decoded_keypoints"][0], atol=1e-3)
