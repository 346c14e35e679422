"""308 -> COCO-17 / COCO-WholeBody-133 / OpenPose conversions on hand-made cases."""


import numpy as np
import pytest

from sapiens2.keypoints import (
    coco17,
    coco_wholebody133,
    convert_keypoints,
    keypoint_mapping,
    keypoints308,
    to_coco17,
    to_coco_wholebody133,
    to_openpose_body18,
    to_openpose_body25,
)
from sapiens2.keypoints.metadata import _read_json

SRC = keypoints308()


def person(seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 500, (308, 2)), rng.uniform(0.1, 1.0, 308).astype(np.float32)


def test_named_keypoints_land_on_the_right_index():
    kp, sc = person()
    out = to_coco17(kp, sc)
    assert out.keypoints.shape == (17, 2) and out.missing == ()
    for name in ("nose", "left_wrist", "right_wrist", "left_ankle", "right_hip"):
        t, s = coco17().index(name), SRC.index(name)
        np.testing.assert_array_equal(out.keypoints[t], kp[s])
        assert out.scores[t] == sc[s]
    assert coco17().index("left_wrist") == 9  # 308 index 62 -> COCO index 9
    np.testing.assert_array_equal(out.keypoints[9], kp[62])


def test_single_marked_point_moves_to_its_coco_slot():
    kp = np.zeros((308, 2))
    sc = np.zeros(308, np.float32)
    kp[SRC.index("right_wrist")] = (123.0, 456.0)
    sc[SRC.index("right_wrist")] = 0.9
    out = to_coco_wholebody133(kp, sc)
    hit = np.nonzero(out.scores)[0]
    # right wrist (10) and right hand root (112, alias of the wrist)
    assert hit.tolist() == [10, 112]
    np.testing.assert_array_equal(out.keypoints[10], [123.0, 456.0])


def test_openpose_neck_and_midhip_are_midpoints_with_min_score():
    kp, sc = person(1)
    ls, rs, lh, rh = (SRC.index(n) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip"))
    kp[ls], kp[rs] = (100.0, 200.0), (140.0, 210.0)
    sc[ls], sc[rs] = 0.9, 0.4
    out = to_openpose_body25(kp, sc)
    assert out.names[1] == "Neck"
    np.testing.assert_allclose(out.keypoints[1], [120.0, 205.0])
    assert out.scores[1] == pytest.approx(0.4)
    assert out.names[8] == "MidHip"
    np.testing.assert_allclose(out.keypoints[8], (kp[lh] + kp[rh]) / 2)
    assert out.scores[8] == min(sc[lh], sc[rh])
    # the 308 set's own neck point can be chosen instead
    own = to_openpose_body25(kp, sc, neck="keypoint")
    np.testing.assert_array_equal(own.keypoints[1], kp[SRC.index("neck")])


def test_openpose_layouts_follow_openpose_order():
    kp, sc = person(2)
    b25 = to_openpose_body25(kp, sc)
    b18 = to_openpose_body18(kp, sc)
    assert len(b25.names) == 25 and len(b18.names) == 18
    assert b25.missing == () and b18.missing == ()
    # OpenPose puts the right side first
    np.testing.assert_array_equal(b25.keypoints[2], kp[SRC.index("right_shoulder")])
    np.testing.assert_array_equal(b18.keypoints[8], kp[SRC.index("right_hip")])
    np.testing.assert_array_equal(b25.keypoints[24], kp[SRC.index("right_heel")])
    np.testing.assert_array_equal(b18.keypoints[17], kp[SRC.index("left_ear")])
    # BODY_18 is BODY_25 without MidHip and the feet
    common = [n for n in b25.names if n in b18.names]
    assert common == list(b18.names)


def test_missing_points_are_flagged_and_zeroed():
    kp, sc = person(3)
    out = to_coco_wholebody133(kp, sc)
    names = coco_wholebody133().names
    assert len(out.missing) == 78
    assert set(range(23, 91)) <= set(out.missing)  # the 68 face points
    assert "left_thumb1" in out.missing_names and "right_pinky_finger1" in out.missing_names
    assert "left_thumb2" not in out.missing_names
    assert not out.valid[list(out.missing)].any() and out.valid.sum() == 133 - 78
    assert np.all(out.keypoints[list(out.missing)] == 0)
    assert np.all(out.scores[list(out.missing)] == 0)
    assert np.all(out.scores[out.valid] > 0)
    assert out.names == names


def test_wholebody_mapping_agrees_with_the_reference_table():
    ref = _read_json("keypoints308.json")["coco_wholebody_to_goliath_mapping"]
    m = keypoint_mapping("coco_wholebody133")
    for wb, g in ref.items():
        assert m.sources[int(wb)] == (g,)
    extra = {t for t, s in enumerate(m.sources) if s} - {int(k) for k in ref}
    assert {m.names[t] for t in extra} == {"left_hand_root", "right_hand_root"}


def test_batched_input_and_triplets():
    kp = np.stack([person(i)[0] for i in range(3)])
    sc = np.stack([person(i)[1] for i in range(3)])
    out = convert_keypoints(np.concatenate([kp, sc[..., None]], -1), to="coco17")
    assert out.keypoints.shape == (3, 17, 2) and out.scores.shape == (3, 17)
    np.testing.assert_allclose(out.scores[1], to_coco17(kp[1], sc[1]).scores)
    assert out.as_triplets().shape == (3, 17, 3)


def test_bad_inputs():
    with pytest.raises(ValueError):
        convert_keypoints(np.zeros((17, 2)), to="coco17")
    with pytest.raises(ValueError):
        convert_keypoints(np.zeros((308, 2)), to="halpe26")
    with pytest.raises(ValueError):
        convert_keypoints(np.zeros((308, 2)), np.zeros(307), to="coco17")
