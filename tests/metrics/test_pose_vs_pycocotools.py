"""Keypoint AP/AR agree with pycocotools' COCOeval on generated datasets, for COCO-17 and the 308-point set.

pycocotools ignores a GT by its `num_keypoints` field and xtcocotools (the reference) by its labelled points;
the generated GT keeps the two equal, and every prediction has scored points, so both rules coincide.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from sapiens2.metrics import evaluate
from sapiens2.metrics.pose import METRIC_NAMES, KeypointAnnotations, KeypointDetections, keypoint_ap, keypoint_sigmas

from .synthetic_coco import cocoeval_keypoint_stats, make_keypoint_dataset


def _to_arrays(gt: dict, results: list[dict]) -> tuple[KeypointAnnotations, KeypointDetections]:
    anns = gt["annotations"]
    annotations = KeypointAnnotations(
        image_ids=[a["image_id"] for a in anns],
        keypoints=np.asarray([a["keypoints"] for a in anns]).reshape(len(anns), -1, 3),
        area=[a["area"] for a in anns],
        bbox=np.asarray([a["bbox"] for a in anns]).reshape(-1, 4),
        iscrowd=[a["iscrowd"] for a in anns],
        all_image_ids=[im["id"] for im in gt["images"]],
    )
    detections = KeypointDetections(
        image_ids=[r["image_id"] for r in results],
        keypoints=np.asarray([r["keypoints"] for r in results]).reshape(len(results), -1, 3),
        scores=[r["score"] for r in results],
    )
    return annotations, detections


def _ours(gt: dict, results: list[dict], sigmas: np.ndarray) -> np.ndarray:
    annotations, detections = _to_arrays(gt, results)
    out = keypoint_ap(annotations, detections, sigmas)
    return np.asarray([out[n] for n in METRIC_NAMES])


@pytest.mark.parametrize("seed", range(6))
def test_coco17_matches_cocoeval(seed):
    sigmas, _ = keypoint_sigmas("coco17")
    gt, results = make_keypoint_dataset(np.random.default_rng(seed), 120, 17, sigmas)
    expected = cocoeval_keypoint_stats(gt, results, sigmas)
    assert (expected[:5] > 0.05).all() and (expected[:5] < 0.95).all()  # the data is neither trivial nor hopeless
    np.testing.assert_allclose(_ours(gt, results, sigmas), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", range(2))
def test_308_matches_cocoeval_with_308_sigmas(seed):
    sigmas, _ = keypoint_sigmas("keypoints308")
    gt, results = make_keypoint_dataset(np.random.default_rng(100 + seed), 60, 308, sigmas)
    expected = cocoeval_keypoint_stats(gt, results, sigmas)
    np.testing.assert_allclose(_ours(gt, results, sigmas), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("subset", ["foot", "left_hand", "face"])
def test_308_subset_matches_cocoeval_on_the_subset(subset):
    """Subsets are evaluated by the same code on the subset's columns and sigmas."""
    sigmas, index = keypoint_sigmas("keypoints308", subset)
    gt, results = make_keypoint_dataset(np.random.default_rng(7), 60, len(index), sigmas)
    expected = cocoeval_keypoint_stats(gt, results, sigmas)
    np.testing.assert_allclose(_ours(gt, results, sigmas), expected, rtol=0, atol=1e-6)


def test_fewer_max_dets_matches_cocoeval():
    """Crowded images hold more detections than the cap; a cap of 3 makes the truncation matter everywhere."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    import contextlib
    import io

    sigmas, _ = keypoint_sigmas("coco17")
    gt, results = make_keypoint_dataset(np.random.default_rng(11), 100, 17, sigmas)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes([dict(r) for r in results]), "keypoints")
        ev.params.maxDets = [3]
        ev.evaluate()
        ev.accumulate()
    annotations, detections = _to_arrays(gt, results)
    ours = keypoint_ap(annotations, detections, sigmas, max_dets=3)
    np.testing.assert_allclose(ours["AP"], ev.eval["precision"][:, :, 0, 0, 0].mean(), atol=1e-6)
    np.testing.assert_allclose(ours["AR"], ev.eval["recall"][:, 0, 0, 0].mean(), atol=1e-6)


def _sliced(gt: dict, results: list[dict], index: np.ndarray) -> tuple[dict, list[dict]]:
    """The dataset restricted to some keypoints, with `num_keypoints` recounted as the reference does."""
    def cut(kp: list[float]) -> np.ndarray:
        return np.asarray(kp).reshape(-1, 3)[index]

    anns = []
    for a in gt["annotations"]:
        kp = cut(a["keypoints"])
        anns.append(dict(a, keypoints=kp.ravel().tolist(), num_keypoints=int(np.count_nonzero(kp[:, 2] > 0))))
    return dict(gt, annotations=anns), [dict(r, keypoints=cut(r["keypoints"]).ravel().tolist()) for r in results]


def test_evaluate_from_json_files_matches_cocoeval(tmp_path):
    """COCO JSON with the reference's 308-point field in; every group agrees with COCOeval on its points.

    Only the 'all' area range is compared here: the reference sizes detections by their body points (its
    `keypoints` field), while COCOeval fed the full points sizes them by all points; see test_pose.py.
    """
    sigmas, _ = keypoint_sigmas("keypoints308")
    gt, results = make_keypoint_dataset(np.random.default_rng(5), 40, 308, sigmas)
    gt308 = dict(gt, annotations=[dict(a, goliath_wholebody_kpts=a["keypoints"]) for a in gt["annotations"]])
    for a in gt308["annotations"]:
        del a["keypoints"]
    (tmp_path / "gt.json").write_text(json.dumps(gt308))
    (tmp_path / "pred.json").write_text(json.dumps([{**r, "goliath_wholebody_kpts": r["keypoints"]} for r in results]))
    out = evaluate("pose", tmp_path / "pred.json", tmp_path / "gt.json")
    assert list(out["metrics"]) == ["wholebody", "body", "foot", "face", "left_hand", "right_hand"]
    names = ["AP", "AP50", "AP75", "AR", "AR50", "AR75"]
    picks = [METRIC_NAMES.index(n) for n in names]
    for group in out["metrics"]:
        sub_sigmas, index = keypoint_sigmas("keypoints308", None if group == "wholebody" else group)
        expected = cocoeval_keypoint_stats(*_sliced(gt, results, index), sub_sigmas)[picks]
        ours = np.asarray([out["metrics"][group][n] for n in names])
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6, err_msg=group)
