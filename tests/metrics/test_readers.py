"""Readers: what they accept, and the errors they give for bad files (each naming the file)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sapiens2.metrics.readers import (
    MetricsInputError,
    pair_files,
    read_keypoint_annotations,
    read_keypoint_results,
    read_label_map,
    read_map,
    read_mask,
)
from sapiens2.metrics.seg_classes import SEG29_PALETTE_RGB


def _coco(anns: list[dict], images=(1, 2)) -> dict:
    return {"images": [{"id": i} for i in images], "annotations": anns, "categories": [{"id": 1}]}


def _ann(i: int, k: int = 17, **extra) -> dict:
    return {"id": i, "image_id": 1, "category_id": 1, "area": 100.0, "bbox": [0, 0, 10, 10], "iscrowd": 0,
            "keypoints": [1.0, 2.0, 2] * k, **extra}


def test_reads_coco_gt(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(_coco([_ann(1), _ann(2, iscrowd=1), {**_ann(3), "category_id": 2}])))
    gt = read_keypoint_annotations(path)
    assert gt.keypoints.shape == (2, 17, 3) and gt.iscrowd.tolist() == [False, True]
    assert gt.all_image_ids.tolist() == [1, 2]


def test_prefers_the_308_field(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(_coco([_ann(1, goliath_wholebody_kpts=[0.0, 0.0, 1] * 308)])))
    assert read_keypoint_annotations(path).num_keypoints == 308
    assert read_keypoint_annotations(path, field="keypoints").num_keypoints == 17


def test_reads_results_list_or_dict(tmp_path):
    dets = [{"image_id": 1, "category_id": 1, "score": 0.5, "keypoints": [1.0, 2.0, 0.9] * 17}]
    (tmp_path / "a.json").write_text(json.dumps(dets))
    (tmp_path / "b.json").write_text(json.dumps({"annotations": dets}))
    for name in ("a.json", "b.json"):
        r = read_keypoint_results(tmp_path / name)
        assert r.keypoints.shape == (1, 17, 3) and r.scores.tolist() == [0.5]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps([1, 2]), "expected a COCO dict"),
        (json.dumps(_coco([{k: v for k, v in _ann(1).items() if k != "area"}])), "annotation 1 has no 'area'"),
        (json.dumps(_coco([_ann(1), _ann(2, k=5)])), "different keypoint counts"),
        (json.dumps(_coco([{**_ann(1), "keypoints": [1, 2]}])), "x, y, v"),
        (json.dumps(_coco([{k: v for k, v in _ann(1).items() if k != "keypoints"}])), "no keypoint field"),
    ],
)
def test_bad_gt_files_name_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "bad_gt.json"
    path.write_text(content)
    with pytest.raises(MetricsInputError, match=message) as info:
        read_keypoint_annotations(path)
    assert "bad_gt.json" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(MetricsInputError, match="nope.json: file not found"):
        read_keypoint_results(tmp_path / "nope.json")


def test_result_without_score(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps([{"image_id": 1, "keypoints": [0, 0, 1]}]))
    with pytest.raises(MetricsInputError, match="no 'score'"):
        read_keypoint_results(tmp_path / "r.json")


def test_label_png_palette_grey_and_colour(tmp_path):
    labels = np.array([[0, 1, 28], [255, 3, 4]], dtype=np.uint8)
    Image.fromarray(labels, mode="L").save(tmp_path / "grey.png")
    p = Image.fromarray(labels, mode="P")
    p.putpalette([v for c in SEG29_PALETTE_RGB for v in c])
    p.save(tmp_path / "palette.png")
    colours = np.zeros((2, 3, 3), np.uint8)
    for (i, j), v in np.ndenumerate(labels):
        colours[i, j] = (255, 255, 255) if v == 255 else SEG29_PALETTE_RGB[v]
    Image.fromarray(colours).save(tmp_path / "colour.png")
    np.save(tmp_path / "labels_seg.npy", labels.astype(np.int64))
    for name in ("grey.png", "palette.png", "colour.png", "labels_seg.npy"):
        np.testing.assert_array_equal(read_label_map(tmp_path / name), labels, err_msg=name)


def test_unknown_colour_is_named(tmp_path):
    Image.fromarray(np.full((2, 2, 3), (1, 2, 3), np.uint8)).save(tmp_path / "c.png")
    with pytest.raises(MetricsInputError, match=r"c.png: colour \(1, 2, 3\)"):
        read_label_map(tmp_path / "c.png")


def test_truncated_png_is_unreadable(tmp_path):
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(MetricsInputError, match="cut.png: unreadable image"):
        read_label_map(tmp_path / "cut.png")


def test_bad_label_arrays(tmp_path):
    np.save(tmp_path / "three_d.npy", np.zeros((2, 2, 2), np.int64))
    with pytest.raises(MetricsInputError, match="three_d.npy: a label map must be H x W"):
        read_label_map(tmp_path / "three_d.npy")
    np.save(tmp_path / "frac.npy", np.full((2, 2), 0.5))
    with pytest.raises(MetricsInputError, match="frac.npy: labels must be integers"):
        read_label_map(tmp_path / "frac.npy")
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(MetricsInputError, match="junk.npy: unreadable array file"):
        read_label_map(tmp_path / "junk.npy")


def test_npz_maps_with_masks(tmp_path):
    normal = np.random.default_rng(0).normal(size=(3, 4, 3)).astype(np.float32)
    mask = np.array([[1, 0, 1, 0]] * 3, np.uint8)
    np.savez(tmp_path / "a.npz", normal=normal, mask=mask)
    arr, m = read_map(tmp_path / "a.npz", ("normal",))
    np.testing.assert_array_equal(arr, normal)
    np.testing.assert_array_equal(m, mask > 0)
    np.savez(tmp_path / "b.npz", x=normal, y=normal)
    with pytest.raises(MetricsInputError, match="b.npz: cannot tell which array"):
        read_map(tmp_path / "b.npz", ("normal",))


def test_masks_from_images_use_channel_zero(tmp_path):
    img = np.zeros((2, 2, 3), np.uint8)
    img[0, 0, 0] = 255
    img[1, 1, 1] = 255  # channel 1 only: not foreground, as the reference reads masks
    Image.fromarray(img).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), [[True, False], [False, False]])


def test_pairing_by_stem(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    for name in ("a.png", "b.c.png"):
        (tmp_path / "gt" / name).write_bytes(b"")
    (tmp_path / "pred" / "a_seg.npy").write_bytes(b"")
    (tmp_path / "pred" / "b.npy").write_bytes(b"")
    pairs = pair_files(tmp_path / "pred", tmp_path / "gt", (".png",), (".npy",), ("seg",))
    assert [(s, p.name, g.name) for s, p, g in pairs] == [("a", "a_seg.npy", "a.png"), ("b", "b.npy", "b.c.png")]
    (tmp_path / "gt" / "c.png").write_bytes(b"")
    with pytest.raises(MetricsInputError, match=r"no prediction for 1 of 3 .*c.png"):
        pair_files(tmp_path / "pred", tmp_path / "gt", (".png",), (".npy",), ("seg",))
