"""`evaluate` on real files for every task, and `format_table`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sapiens2.metrics import MetricsInputError, evaluate, format_table


def _write_pose(tmp_path, k: int = 17, shift: float = 0.0):
    kp = [[100.0 + 5 * i, 200.0 + 3 * i, 2] for i in range(k)]
    gt = {
        "images": [{"id": 1}, {"id": 2}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "area": 150.0**2, "bbox": [90, 190, 100, 100],
                         "iscrowd": 0, "keypoints": sum(kp, [])}],
        "categories": [{"id": 1, "name": "person"}],
    }
    pred = [{"image_id": 1, "category_id": 1, "score": 0.9,
             "keypoints": sum([[x + shift, y, 0.8] for x, y, _ in kp], [])}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    return tmp_path / "pred.json", tmp_path / "gt.json"


def test_pose_end_to_end(tmp_path):
    out = evaluate("pose", *_write_pose(tmp_path))
    assert out["task"] == "pose" and out["images"] == 2 and out["keypoints"] == {"gt": 17, "pred": 17}
    assert out["metrics"]["coco17"]["AP"] == pytest.approx(1.0)
    assert out["metrics"]["coco17"]["APm"] == -1.0
    table = format_table(out)
    assert "coco17" in table and "100.00" in table and "AP50" in table
    json.dumps(out)  # JSON-ready


def test_pose_far_off_predictions_score_zero(tmp_path):
    out = evaluate("pose", *_write_pose(tmp_path, shift=500.0))
    assert out["metrics"]["coco17"]["AP"] == 0.0


def test_pose_on_unknown_images_names_both_files(tmp_path):
    pred, gt = _write_pose(tmp_path)
    pred.write_text(json.dumps([{"image_id": 9, "score": 1.0, "keypoints": [0, 0, 1] * 17}]))
    with pytest.raises(MetricsInputError, match=r"pred.json vs .*gt.json: .*\[9\]"):
        evaluate("pose", pred, gt)


def _label_png(path, labels):
    Image.fromarray(np.asarray(labels, np.uint8)).save(path)


def test_seg_end_to_end(tmp_path):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    gt = np.array([[0, 0, 1], [1, 1, 255]])
    _label_png(tmp_path / "gt" / "img1.png", gt)
    np.save(tmp_path / "pred" / "img1_seg.npy", np.array([[0, 1, 1], [1, 2, 2]]))
    out = evaluate("segmentation", tmp_path / "pred", tmp_path / "gt")
    assert out["task"] == "seg" and out["images"] == 1 and out["pixels"] == 5
    assert out["metrics"]["aAcc"] == pytest.approx(60.0)
    assert out["metrics"]["mIoU"] == pytest.approx(100 / 29)  # IoU 50, 50 and 27 zeros
    assert out["per_class"]["Apparel"]["IoU"] == pytest.approx(50.0)
    table = format_table(out)
    assert "mIoU" in table and "Tongue" in table and "3.45" in table


def test_seg_shape_mismatch_names_the_files(tmp_path):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    _label_png(tmp_path / "gt" / "a.png", np.zeros((4, 4)))
    _label_png(tmp_path / "pred" / "a.png", np.zeros((4, 5)))
    with pytest.raises(MetricsInputError, match=r"a.png vs .*a.png: prediction shape"):
        evaluate("seg", tmp_path / "pred", tmp_path / "gt")


def _reference_layout(root, name: str, maps: dict, masks: dict):
    (root / name).mkdir(parents=True)
    (root / "mask").mkdir()
    for stem, m in maps.items():
        np.save(root / name / f"{stem}.npy", m)
    for stem, m in masks.items():
        Image.fromarray(np.asarray(m, np.uint8) * 255).save(root / "mask" / f"{stem}.png")


def test_normal_end_to_end_with_the_reference_layout(tmp_path):
    gt = np.broadcast_to([0.0, 0.0, 1.0], (2, 2, 3)).astype(np.float32)
    pred = gt.copy()
    pred[0, 0] = [1.0, 0.0, 0.0]  # 90 degrees off, but outside the mask
    pred[1, 1] = [1.0, 0.0, 1.0]  # 45 degrees off
    _reference_layout(tmp_path / "gt", "normal", {"a": gt}, {"a": [[0, 1], [1, 1]]})
    (tmp_path / "pred").mkdir()
    np.save(tmp_path / "pred" / "a.npy", pred)
    out = evaluate("normal", tmp_path / "pred", tmp_path / "gt")
    assert out["pixels"] == 3
    assert out["metrics"]["normal_mae"] == pytest.approx(15.0, abs=1e-4)
    assert "normal_median_deg" in format_table(out)


def test_pointmap_end_to_end_with_npz_masks_and_alignment(tmp_path):
    y, x = np.mgrid[0:8, 0:8] * 0.05
    gt = np.stack([x, y, 2.0 + 0.1 * x], -1)
    mask = np.zeros((8, 8), bool)
    mask[1:7, 1:7] = True
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    np.savez(tmp_path / "gt" / "s1.npz", pointmap=gt, mask=mask)
    np.save(tmp_path / "pred" / "s1.npy", 2.0 * gt)
    plain = evaluate("pointmap", tmp_path / "pred", tmp_path / "gt")
    aligned = evaluate("pointmap", tmp_path / "pred", tmp_path / "gt", align="scale")
    assert plain["alignment"] == "none" and plain["pixels"] == 36 and plain["metrics"]["l2_mean"] > 1.0
    assert aligned["alignment"] == "scale" and aligned["metrics"]["l2_mean"] < 1e-9
    assert "alignment: scale" in format_table(aligned)


def test_albedo_end_to_end_from_pngs(tmp_path):
    gt = np.full((6, 6, 3), 100, np.uint8)
    _reference_layout(tmp_path / "gt", "albedo", {}, {"a": np.ones((6, 6))})
    Image.fromarray(gt).save(tmp_path / "gt" / "albedo" / "a.png")
    (tmp_path / "pred").mkdir()
    np.save(tmp_path / "pred" / "a.npy", np.full((6, 6, 3), 110 / 255, np.float32))
    out = evaluate("albedo", tmp_path / "pred", tmp_path / "gt")
    assert out["data_range"] == 1.0
    assert out["metrics"]["mae"] == pytest.approx(10 / 255, rel=1e-5)


def test_matting_end_to_end_with_trimaps(tmp_path):
    for d in ("gt", "pred", "trimap"):
        (tmp_path / d).mkdir()
    Image.fromarray(np.array([[0, 255], [255, 255]], np.uint8)).save(tmp_path / "gt" / "m.png")
    Image.fromarray(np.array([[51, 255], [255, 0]], np.uint8)).save(tmp_path / "pred" / "m.png")
    Image.fromarray(np.array([[128, 128], [255, 255]], np.uint8)).save(tmp_path / "trimap" / "m.png")
    out = evaluate("matting", tmp_path / "pred", tmp_path / "gt", trimap=tmp_path / "trimap")
    assert out["images"] == 1
    assert out["metrics"]["sad"] == pytest.approx(0.2 / 1000)  # only the top row is unknown


def test_empty_masks_are_an_error(tmp_path):
    _reference_layout(tmp_path / "gt", "normal", {"a": np.ones((2, 2, 3))}, {"a": np.zeros((2, 2))})
    (tmp_path / "pred").mkdir()
    np.save(tmp_path / "pred" / "a.npy", np.ones((2, 2, 3)))
    with pytest.raises(MetricsInputError, match="no valid pixels"):
        evaluate("normal", tmp_path / "pred", tmp_path / "gt")


def test_unknown_task_and_option():
    with pytest.raises(ValueError, match="unknown task"):
        evaluate("optical_flow", "a", "b")
    with pytest.raises(ValueError, match="unknown option"):
        evaluate("seg", "a", "b", align="scale")


def test_missing_folders(tmp_path):
    with pytest.raises(MetricsInputError, match="folder not found"):
        evaluate("seg", tmp_path / "nope", tmp_path / "nope_gt")
