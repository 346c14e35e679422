"""`sapiens2.track.Tracker`: stable IDs by greedy matching, new IDs for new people, a maximum age."""

from __future__ import annotations

import numpy as np
import pytest

from sapiens2.track import Tracker, box_iou, keypoint_similarity


def test_box_iou():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0]])


def test_two_people_keep_their_ids_while_moving():
    t = Tracker()
    left, right = np.array([0, 0, 20, 50.0]), np.array([60, 0, 80, 50.0])
    first = t.update(np.stack([left, right]))
    assert first == [0, 1]
    for step in range(1, 10):
        shift = np.array([2.0 * step, 0, 2.0 * step, 0])
        # listed in the other order: IDs follow the people, not the list position
        ids = t.update(np.stack([right - shift, left + shift]))
        assert ids == [1, 0]


def test_a_newcomer_gets_a_new_id_and_ids_are_not_reused():
    t = Tracker(max_age=2)
    assert t.update([[0, 0, 10, 10]]) == [0]
    assert t.update([[0, 0, 10, 10], [50, 50, 60, 60]]) == [0, 1]
    for _ in range(3):
        t.update(np.zeros((0, 4)))  # nobody for 3 frames: older than max_age
    assert t.update([[0, 0, 10, 10]]) == [2]


def test_a_person_missing_for_a_short_while_keeps_the_id():
    t = Tracker(max_age=5)
    t.update([[0, 0, 10, 10], [40, 40, 50, 50]])
    for _ in range(3):
        assert t.update([[40, 40, 50, 50]]) == [1]
    assert t.update([[1, 0, 11, 10], [40, 40, 50, 50]]) == [0, 1]


def test_oks_metric_matches_by_keypoints():
    kp_a = np.array([[[10, 10, 1.0], [20, 30, 1.0]]])
    kp_b = kp_a + np.array([1.0, 1.0, 0.0])
    assert keypoint_similarity(kp_a, kp_b, np.array([400.0]))[0, 0] == pytest.approx(np.exp(-2 / 8))
    t = Tracker(metric="oks", threshold=0.5)
    boxes = np.array([[0, 0, 30, 40.0]])
    assert t.update(boxes, kp_a) == [0]
    assert t.update(boxes + 1, kp_b) == [0]
    far = kp_a + np.array([200.0, 0, 0])
    assert t.update(boxes, far) == [1]
    with pytest.raises(ValueError):
        Tracker(metric="euclid")


def _walker(x: float) -> np.ndarray:
    return np.array([[x, 0, x + 20, 50.0]])


@pytest.mark.parametrize("motion", [True, False])
def test_a_walker_hidden_for_a_while_is_found_further_along(motion):
    """6 px a frame, hidden for 8 frames: 54 px on, no overlap with the last box seen, but the predicted one."""
    t = Tracker(motion=motion)
    for i in range(5):
        assert t.update(_walker(6.0 * i)) == [0]
    for _ in range(8):
        t.update(np.zeros((0, 4)))
    again = t.update(_walker(6.0 * 13))
    assert again == ([0] if motion else [1])
    if motion:
        assert np.allclose(t.tracks[0].velocity, [6, 0, 6, 0])


def test_velocity_follows_a_speeding_up_walker_and_keeps_the_id():
    t = Tracker()
    x, ids = 0.0, []
    for i in range(12):
        x += 2.0 + 1.5 * i  # from 2 to 18.5 px per frame; the box is 20 px wide
        ids += t.update(_walker(x))
    assert set(ids) == {0}
    plain = Tracker(motion=False)
    x, plain_ids = 0.0, []
    for i in range(12):
        x += 2.0 + 1.5 * i
        plain_ids += plain.update(_walker(x))
    assert len(set(plain_ids)) > 1  # without motion, the overlap is lost once the steps get long


@pytest.mark.parametrize("motion", [True, False])
def test_oks_matching_uses_the_predicted_keypoints(motion):
    """3 px a frame, one frame unseen: 6 px from the last keypoints (OKS 0.22 < 0.5), 0 from the predicted."""
    kp = np.array([[[10, 10, 1.0], [20, 30, 1.0]]])
    box = np.array([[0, 0, 30, 40.0]])
    t = Tracker(metric="oks", threshold=0.5, motion=motion)
    for i in range(3):
        assert t.update(box + [3.0 * i, 0, 3.0 * i, 0], kp + [3.0 * i, 0, 0]) == [0]
    t.update(np.zeros((0, 4)), np.zeros((0, 2, 3)))
    assert t.update(box + [12.0, 0, 12.0, 0], kp + [12.0, 0, 0]) == ([0] if motion else [1])


def test_velocity_smoothing_is_checked():
    with pytest.raises(ValueError, match="velocity_smoothing"):
        Tracker(velocity_smoothing=0)
