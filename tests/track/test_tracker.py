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
