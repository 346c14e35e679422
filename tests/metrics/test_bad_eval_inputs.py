"""Bad evaluation inputs end in one clean error naming the file (exit 1), never a traceback, and nothing is
read from outside the folders named."""

from __future__ import annotations

import json
import re
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sapiens2.cli import main
from sapiens2.metrics import MetricsInputError, read_label_map, read_map
from sapiens2.models import BackboneConfig, PoseHeadConfig, build_model


def _gt(tmp_path, **overrides) -> str:
    gt = {"images": [{"id": 1, "file_name": "img.png"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "area": 100.0, "bbox": [2, 2, 20, 30],
                           "keypoints": [10, 10, 2] * 17}],
          "categories": [{"id": 1, "name": "person"}]}
    gt.update(overrides)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    return str(tmp_path / "gt.json")


def _pred(tmp_path) -> str:
    (tmp_path / "pred.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "score": 1.0,
                                                     "keypoints": [10, 10, 2] * 17}]))
    return str(tmp_path / "pred.json")


def _eval(*args) -> int:
    return main(["eval", *map(str, args)])


def _error(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


@pytest.mark.parametrize(("overrides", "message"), [
    ({"annotations": [5]}, r"annotations\[0\] must be an object, got int"),
    ({"images": 5}, "'images' must be a list of objects, got int"),
    ({"images": [7]}, r"images\[0\] must be an object"),
    ({"annotations": [{"id": 3, "image_id": "one", "area": 1.0, "keypoints": [1, 1, 2] * 17}]},
     "annotation 3 'image_id' must be an integer"),
    ({"annotations": [{"id": 3, "image_id": 1, "area": None, "keypoints": [1, 1, 2] * 17}]},
     "annotation 3 'area' must be a finite number"),
])
def test_malformed_pose_ground_truth_is_named(tmp_path, capsys, overrides, message):
    gt = _gt(tmp_path, **overrides)
    assert _eval("pose", "--gt", gt, "--pred", _pred(tmp_path)) == 1
    err = _error(capsys)
    assert "gt.json" in err and re.search(message, err), err


def test_deeply_nested_json_is_an_error_not_a_recursion_crash(tmp_path, capsys):
    (tmp_path / "gt.json").write_text("[" * 200_000 + "]" * 200_000)
    assert _eval("pose", "--gt", tmp_path / "gt.json", "--pred", _pred(tmp_path)) == 1
    assert "gt.json: JSON nested too deeply" in _error(capsys)


def test_prediction_with_a_non_numeric_score_is_named(tmp_path, capsys):
    (tmp_path / "pred.json").write_text(json.dumps([{"image_id": 1, "score": "high", "keypoints": [1, 1, 2] * 17}]))
    assert _eval("pose", "--gt", _gt(tmp_path), "--pred", tmp_path / "pred.json") == 1
    assert "pred.json: a detection's 'score' (image 1) must be a finite number" in _error(capsys)


# --- eval pose --model: the ground truth's image list is checked before any model is loaded -------------

def _with_model(tmp_path, gt, *extra) -> int:
    (tmp_path / "images").mkdir(exist_ok=True)
    return _eval("pose", "--gt", gt, "--model", tmp_path / "no_such_model.safetensors", "--images",
                 tmp_path / "images", *extra)


def test_images_not_a_list_with_a_model(tmp_path, capsys):
    assert _with_model(tmp_path, _gt(tmp_path, images=5)) == 1
    assert "gt.json: 'images' must be a list of objects, got int" in _error(capsys)


def test_gt_boxes_entry_without_bbox(tmp_path, capsys):
    gt = _gt(tmp_path, annotations=[{"id": 9, "image_id": 1, "area": 1.0, "keypoints": [1, 1, 2] * 17}])
    assert _with_model(tmp_path, gt, "--gt-boxes") == 1
    assert "gt.json: annotation 9 has no 'bbox', which --gt-boxes crops" in _error(capsys)


@pytest.mark.parametrize("name", ["../outside.png", "a/../../outside.png", "/tmp/outside.png"])
def test_a_file_name_outside_the_images_folder_is_refused(tmp_path, capsys, monkeypatch, name):
    cv2.imwrite(str(tmp_path / "outside.png"), np.full((8, 8, 3), 90, np.uint8))
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    assert _with_model(tmp_path, _gt(tmp_path, images=[{"id": 1, "file_name": name}])) == 1
    assert "points outside the images folder" in _error(capsys)
    assert not [f for f in opened if f.endswith("outside.png")]


def test_an_unreadable_ground_truth_image_is_named(tmp_path, capsys):
    torch.manual_seed(0)
    net = build_model(BackboneConfig(embed_dim=32, depth=2, num_heads=2), "pose",
                      PoseHeadConfig(32, (8, 8), conv_channels=(8, 8, 8), num_keypoints=17))
    save_file(net.state_dict(), tmp_path / "tiny17.safetensors")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "img.png").write_bytes(b"<html>not an image</html>")
    assert _eval("pose", "--gt", _gt(tmp_path), "--model", tmp_path / "tiny17.safetensors", "--images",
                 tmp_path / "images", "--gt-boxes") == 1
    err = _error(capsys)
    assert "img.png: ground-truth image 1 cannot be read" in err


# --- eval seg: sizes from headers, real numbers only ------------------------------------------------------

def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header claims width x height (8-bit grey) followed by a tiny, truncated IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(100_000, 100_000), (12_000, 12_000)])  # beyond Pillow's own limit; beyond ours
def test_a_huge_png_header_is_refused_before_decoding(tmp_path, capsys, size):
    for d in ("pred", "gt"):
        (tmp_path / d).mkdir()
    _png_header_only(tmp_path / "gt" / "a.png", *size)
    np.save(tmp_path / "pred" / "a_seg.npy", np.zeros((4, 4), np.int64))
    assert _eval("seg", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt") == 1
    err = _error(capsys)
    assert "a.png" in err and "decompression bomb" in err and "Warning" not in err


def test_complex_npy_is_refused(tmp_path, capsys):
    for d in ("pred", "gt"):
        (tmp_path / d).mkdir()
    np.save(tmp_path / "pred" / "a_seg.npy", np.zeros((4, 4), np.complex64))
    np.save(tmp_path / "gt" / "a.npy", np.zeros((4, 4), np.int64))
    assert _eval("seg", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt") == 1
    assert "a_seg.npy: dtype complex64 is not a real number type" in _error(capsys)
    with pytest.raises(MetricsInputError, match="not a real number type"):
        read_map(tmp_path / "pred" / "a_seg.npy")


def test_npy_headers_are_checked_before_allocating(tmp_path):
    path = tmp_path / "big.npy"
    with open(path, "wb") as f:  # a header announcing 10^10 int64 values, and no data
        np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": (100_000, 100_000)})
    with pytest.raises(MetricsInputError, match="larger than a map can be"):
        read_label_map(path)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (64, 64)})
        f.write(b"\0" * 100)
    with pytest.raises(MetricsInputError, match="truncated"):
        read_map(path)
    np.savez(tmp_path / "m.npz", normal=np.zeros((2, 2, 3), np.complex128))
    with pytest.raises(MetricsInputError, match="array 'normal': dtype complex128"):
        read_map(tmp_path / "m.npz")
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(MetricsInputError, match="not a real number type"):
        read_label_map(tmp_path / "s.npy")
