"""`sapiens2 eval` on folder trees: recursive pairing by relative path, the CLI's own output tree, and the
policy for classes with no pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file

from sapiens2.cli import main
from sapiens2.metrics import MetricsInputError, evaluate
from sapiens2.metrics.readers import pair_files
from sapiens2.metrics.segmentation import ABSENT_POLICIES
from tests.runner.conftest import DENSE_SIZE, _tiny, cli, write_photo

LABELS = (".npy", ".npz", ".png")


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_trees_pair_by_relative_path_and_stem(tmp_path):
    for rel in ("a/x.png", "b/x.png", "b/c/y.v2.png"):
        _touch(tmp_path / "gt" / rel)
    for rel in ("a/x_seg.npy", "a/x_seg.png", "a/x_seg.jpg", "b/x_seg.png", "b/c/y_seg.npy", "errors.json",
                ".hidden/x_seg.npy"):
        _touch(tmp_path / "pred" / rel)
    pairs = pair_files(tmp_path / "pred", tmp_path / "gt", LABELS, LABELS, ("seg",))
    got = {k: (p.relative_to(tmp_path / "pred").as_posix(), g.relative_to(tmp_path / "gt").as_posix())
           for k, p, g in pairs}
    # same relative folder; the exact array is preferred to the PNG; the JPEG picture is never a candidate
    assert got == {"a/x": ("a/x_seg.npy", "a/x.png"), "b/x": ("b/x_seg.png", "b/x.png"),
                   "b/c/y": ("b/c/y_seg.npy", "b/c/y.v2.png")}


def test_a_prediction_in_another_folder_does_not_pair(tmp_path):
    _touch(tmp_path / "gt" / "a" / "x.png")
    _touch(tmp_path / "pred" / "b" / "x_seg.npy")
    with pytest.raises(MetricsInputError, match=r"no prediction for 1 of 1 .*'a/x.png'.*same relative path"):
        pair_files(tmp_path / "pred", tmp_path / "gt", LABELS, LABELS, ("seg",))


def test_gt_tree_without_files_says_subfolders_were_searched(tmp_path):
    (tmp_path / "gt" / "a").mkdir(parents=True)
    (tmp_path / "pred").mkdir()
    with pytest.raises(MetricsInputError, match="no ground-truth files .* subfolders"):
        pair_files(tmp_path / "pred", tmp_path / "gt", LABELS, LABELS)


def test_a_file_against_a_folder_is_refused(tmp_path):
    (tmp_path / "gt").mkdir()
    np.save(tmp_path / "p.npy", np.zeros((2, 2), np.int64))
    with pytest.raises(MetricsInputError, match="is a file but .* is not"):
        evaluate("seg", tmp_path / "p.npy", tmp_path / "gt")


def _perfect_two_class_set(tmp_path):
    labels = np.zeros((4, 6), np.int64)
    labels[1:3, 2:5] = 1
    for name in ("pred", "gt"):
        (tmp_path / name / "s").mkdir(parents=True)
    np.save(tmp_path / "pred" / "s" / "a_seg.npy", labels)
    Image.fromarray(labels.astype(np.uint8)).save(tmp_path / "gt" / "s" / "a.png")


def test_absent_classes_zero_by_default_as_the_reference_or_ignored(tmp_path, capsys):
    _perfect_two_class_set(tmp_path)
    zero = evaluate("seg", tmp_path / "pred", tmp_path / "gt")
    assert zero["absent_classes"] == "zero"
    assert zero["metrics"]["mIoU"] == pytest.approx(100 * 2 / 29) and zero["metrics"]["aAcc"] == 100.0
    assert len(zero["absent_from_both"]) == 27 and len(zero["absent_from_gt"]) == 27
    ignore = evaluate("seg", tmp_path / "pred", tmp_path / "gt", absent="ignore")
    assert ignore["metrics"]["mIoU"] == 100.0 and ignore["metrics"]["mAcc"] == 100.0
    with pytest.raises(ValueError, match="absent classes: expected one of zero, ignore"):
        evaluate("seg", tmp_path / "pred", tmp_path / "gt", absent="skip")

    assert main(["eval", "seg", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]) == 0
    out = capsys.readouterr().out
    assert "absent_classes: zero" in out and "27 of 29 classes" in out and "--absent-classes ignore" in out
    assert main(["eval", "seg", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--absent-classes", "ignore", "--out", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "absent_classes: ignore" in out and "left out" in out
    assert json.loads((tmp_path / "m.json").read_text())["metrics"]["mIoU"] == 100.0


def test_eval_help_documents_the_absent_class_policy(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"--absent-classes {{{','.join(ABSENT_POLICIES)}}}" in out and "as the reference's evaluator" in out


def test_round_trip_cli_predictions_on_a_tree_then_eval(tmp_path, capsys):
    """`sapiens2 seg photos/ --out pred/`, then `sapiens2 eval seg --pred pred --gt labels` on the same tree."""
    net = _tiny("seg").eval()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "seg.safetensors")
    photos = tmp_path / "photos"
    for i, rel in enumerate(("a/x.jpg", "a/deeper/y.png", "z.jpeg")):
        write_photo(photos / rel, seed=i)
    assert cli("seg", photos, "--model", tmp_path / "seg.safetensors", "--input-size", DENSE_SIZE,
               "--out", tmp_path / "pred") == 0
    written = sorted(p.relative_to(tmp_path / "pred").as_posix() for p in (tmp_path / "pred").rglob("*_seg.*"))
    assert written == ["a/deeper/y_seg.jpg", "a/deeper/y_seg.npy", "a/x_seg.jpg", "a/x_seg.npy",
                       "z_seg.jpg", "z_seg.npy"]
    # Ground truth: label PNGs in a tree of the photos' shape; two agree with the predictions, one does not.
    for rel in ("a/x", "a/deeper/y", "z"):
        labels = np.load(tmp_path / "pred" / f"{rel}_seg.npy")
        if rel == "z":
            labels = np.where(labels == labels.flat[0], 28, labels.flat[0])  # every pixel wrong
        (tmp_path / "labels" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(labels.astype(np.uint8)).save(tmp_path / "labels" / f"{rel}.png")
    capsys.readouterr()
    assert main(["eval", "seg", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "labels"),
                 "--out", str(tmp_path / "m.json")]) == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["images"] == 3
    pixels = 48 * 36
    assert result["pixels"] == 3 * pixels
    assert result["metrics"]["aAcc"] == pytest.approx(100 * 2 / 3)


def test_dense_reference_layout_in_subfolders_with_masks_by_relative_path(tmp_path):
    """GT `<root>/normal/<rel>.npy` with masks `<root>/mask/<rel>.png`; predictions `<rel>_normal.npy` beside
    their `_normal.jpg` pictures. Two folders hold the same stem: each pairs with its own GT and mask."""
    up = np.zeros((4, 4, 3), np.float32)
    up[..., 2] = 1.0
    side = np.zeros((4, 4, 3), np.float32)
    side[..., 0] = 1.0
    for rel, gt_map, mask_rows in (("a/x", up, 4), ("b/x", up, 2)):
        for path in (tmp_path / "gt" / "normal" / f"{rel}.npy", tmp_path / "gt" / "mask" / f"{rel}.png",
                     tmp_path / "pred" / f"{rel}_normal.npy"):
            path.parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "gt" / "normal" / f"{rel}.npy", gt_map)
        mask = np.zeros((4, 4), np.uint8)
        mask[:mask_rows] = 255
        Image.fromarray(mask).save(tmp_path / "gt" / "mask" / f"{rel}.png")
        (tmp_path / "pred" / f"{rel}_normal.jpg").write_bytes(b"a picture, never read")
    pred_b = up.copy()
    pred_b[2:] = side[2:]  # wrong only where b's mask is off
    np.save(tmp_path / "pred" / "a" / "x_normal.npy", up)
    np.save(tmp_path / "pred" / "b" / "x_normal.npy", pred_b)
    result = evaluate("normal", tmp_path / "pred", tmp_path / "gt")
    assert result["images"] == 2 and result["pixels"] == 16 + 8
    assert result["metrics"]["normal_mae"] == pytest.approx(0.0, abs=1e-4)  # b is wrong only outside its mask
