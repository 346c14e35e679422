"""COCO-format results JSON."""

import json

import numpy as np
import pytest

from sapiens2.keypoints import instance_score, keypoints308, to_coco_results


def people(n=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 400, (n, 308, 2)), rng.uniform(0, 1, (n, 308))


def test_308_layout_has_the_reference_fields(tmp_path):
    kp, sc = people()
    path = tmp_path / "out" / "results.json"
    res = to_coco_results([7, 9], kp, sc, path=path)
    assert json.loads(path.read_text()) == res
    r = res[1]
    assert r["image_id"] == 9 and r["category_id"] == 1
    assert len(r["goliath_wholebody_kpts"]) == 308 * 3
    sizes = {k: len(r[k]) // 3 for k in ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")}
    assert sizes == {"keypoints": 17, "foot_kpts": 6, "face_kpts": 238, "lefthand_kpts": 20, "righthand_kpts": 20}
    # COCO body slot 9 (left wrist) is 308 point 62
    assert r["keypoints"][27:30] == pytest.approx([kp[1, 62, 0], kp[1, 62, 1], sc[1, 62]])
    assert r["goliath_wholebody_kpts"][3 * 5 : 3 * 5 + 3] == pytest.approx([*kp[1, 5], sc[1, 5]])


def test_instance_score_is_mean_of_scores_above_threshold():
    s = np.zeros(308)
    s[:4] = [0.1, 0.2, 0.5, 0.9]
    assert instance_score(s) == pytest.approx(0.7)
    assert instance_score(s, bbox_score=0.5) == pytest.approx(0.35)
    assert instance_score(np.full(308, 0.2)) == 0.0
    kp = np.zeros((1, 308, 2))
    assert to_coco_results(1, kp, s[None])[0]["score"] == pytest.approx(0.7)
    assert to_coco_results(1, kp, s[None], instance_scores=[0.25])[0]["score"] == 0.25


def test_coco17_and_wholebody_layouts():
    kp, sc = people(1, seed=3)
    r17 = to_coco_results(5, kp, sc, format="coco17", boxes=[[10, 20, 110, 220]])[0]
    assert len(r17["keypoints"]) == 51 and "goliath_wholebody_kpts" not in r17
    assert r17["bbox"] == [10.0, 20.0, 100.0, 200.0]
    assert r17["keypoints"][:3] == pytest.approx([kp[0, 0, 0], kp[0, 0, 1], sc[0, 0]])
    rwb = to_coco_results(5, kp, sc, format="coco_wholebody133")[0]
    sizes = [len(rwb[k]) // 3 for k in ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")]
    assert sizes == [17, 6, 68, 21, 21]
    assert rwb["face_kpts"] == [0.0] * (68 * 3)  # no counterpart: written as zeros
    m = keypoints308()
    assert rwb["lefthand_kpts"][:3] == pytest.approx([*kp[0, m.index("left_wrist")], sc[0, m.index("left_wrist")]])


def test_mismatched_lengths_raise():
    kp, sc = people(2)
    with pytest.raises(ValueError):
        to_coco_results([1], kp, sc)
    with pytest.raises(ValueError):
        to_coco_results(1, kp, sc, format="openpose")
