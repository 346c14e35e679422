"""`sapiens2 <task> INPUT...` on image folders, with tiny checkpoints: outputs, layout, options, messages."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tests.runner.conftest import DENSE_SIZE, cli, temp_leftovers, write_photo


def test_seg_on_a_folder_mirrors_the_tree(tmp_path, checkpoints, capsys):
    src = tmp_path / "in"
    for rel in ("a/x.jpg", "b/x.jpg", "b/deeper/y.PNG", "z.JPEG"):
        write_photo(src / rel, seed=len(rel))
    out = tmp_path / "out"
    assert cli("seg", src, "--model", checkpoints["seg"], "--input-size", DENSE_SIZE, "--out", out,
               "--save", "npz,png,vis", "--batch-size", "3") == 0
    for stem in ("a/x", "b/x", "b/deeper/y", "z"):
        labels = np.load(out / f"{stem}_seg.npy")
        assert labels.shape == (48, 36) and labels.dtype == np.int64
        assert (cv2.imread(str(out / f"{stem}_seg.png"), cv2.IMREAD_UNCHANGED) == labels).all()
        assert cv2.imread(str(out / f"{stem}_seg.jpg")).shape == (48, 72, 3)  # [photo | overlay]
    assert json.loads((out / "errors.json").read_text()) == {"count": 0, "errors": []}
    assert not temp_leftovers(out)
    assert "done: 4 image(s)" in capsys.readouterr().err


def test_same_stem_in_one_folder_is_told_apart_by_extension(tmp_path, checkpoints):
    write_photo(tmp_path / "in" / "x.jpg")
    write_photo(tmp_path / "in" / "x.png", seed=1)
    out = tmp_path / "out"
    assert cli("normal", tmp_path / "in", "--model", checkpoints["normal"], "--input-size", DENSE_SIZE,
               "--out", out) == 0
    assert {p.name for p in out.glob("*_normal.npy")} == {"x_jpg_normal.npy", "x_png_normal.npy"}


def test_run_several_tasks_in_one_pass(tmp_path, checkpoints):
    img = write_photo(tmp_path / "p.jpg", 60, 40)
    out = tmp_path / "out"
    models = [f"--model={t}={checkpoints[t]}" for t in ("seg", "normal", "pointmap", "albedo", "matting", "depth")]
    assert cli("run", "--tasks", "seg,normal,pointmap,albedo,matting,depth", img, *models,
               "--input-size", DENSE_SIZE, "--out", out, "--allow-pickle") == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([
        "errors.json", "p_seg.npy", "p_seg.jpg", "p_normal.npy", "p_normal.jpg", "p_depth.npy", "p_points.npy",
        "p.ply", "p_pointmap.jpg", "p_albedo.png", "p_albedo.jpg", "p_alpha.png", "p_cutout.png", "p_matting.jpg",
        "p_reldepth.npy", "p_reldepth.jpg", ".sapiens2-outputs"])
    assert np.load(out / "p_normal.npy").shape == (60, 40, 3)
    assert np.load(out / "p_reldepth.npy").shape == (60, 40)
    assert cv2.imread(str(out / "p_alpha.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16


def test_pose_with_a_tiny_checkpoint_writes_json_and_picture(tmp_path, checkpoints):
    img = write_photo(tmp_path / "in" / "person.jpg", 64, 48)
    out = tmp_path / "out"
    assert cli("pose", img, "--model", checkpoints["pose"], "--detector", "none", "--out", out) == 0
    record = json.loads((out / "person_pose.json").read_text())
    assert record["image_size"] == [64, 48] and record["box_source"] == "whole image"
    assert record["keypoint_format"] == "keypoints308" and record["num_keypoints"] == 308
    (person,) = record["instances"]
    assert person["bbox"] == [0.0, 0.0, 47.0, 63.0]
    assert np.asarray(person["keypoints"]).shape == (308, 2) and len(person["keypoint_scores"]) == 308
    meta = json.loads((out / "pose_keypoints.json").read_text())
    assert meta["names"][0] == "nose" and len(meta["names"]) == 308 and meta["skeleton_links"]
    assert cv2.imread(str(out / "person_pose.jpg")).shape == (64, 48, 3)


@pytest.mark.parametrize("fmt, k, first", [("coco17", 17, "nose"), ("openpose25", 25, "Nose"),
                                           ("wholebody133", 133, "nose"), ("openpose18", 18, "Nose")])
def test_pose_format_conversion(tmp_path, stand_in_pose, stand_in_detector, fmt, k, first):
    img = write_photo(tmp_path / "p.png", 80, 60)
    out = tmp_path / "out"
    assert cli("pose", img, "--model", "stand-in", "--format", fmt, "--out", out, "--save", "json,npz") == 0
    record = json.loads((out / "p_pose.json").read_text())
    assert record["keypoint_format"] != "keypoints308" and record["num_keypoints"] == k
    (person,) = record["instances"]
    assert record["box_source"] == "detector" and person["bbox"] == [15.0, 13.0, 45.0, 66.0]
    assert np.asarray(person["keypoints"]).shape == (k, 2)
    np.testing.assert_allclose(person["keypoints"][0], [30, 39.5], atol=1.0)  # the box centre (stand-in net)
    assert json.loads((out / "pose_keypoints.json").read_text())["names"][0] == first
    assert np.load(out / "p_pose.npz")["keypoints"].shape == (1, k, 2)


def test_given_boxes_skip_the_detector(tmp_path, stand_in_pose):
    img = write_photo(tmp_path / "p.jpg", 80, 60)
    boxes = tmp_path / "dets.json"
    boxes.write_text(json.dumps([{"file_name": "p.jpg", "image_id": 1, "category_id": 1, "bbox": [5, 6, 20, 30],
                                  "score": 0.8}]))
    out = tmp_path / "out"
    assert cli("pose", img, "--model", "x", "--boxes", boxes, "--detector", "none", "--out", out) == 0
    record = json.loads((out / "p_pose.json").read_text())
    assert record["box_source"] == "given" and record["instances"][0]["bbox"] == [5.0, 6.0, 25.0, 36.0]


def test_missing_detector_weights_say_how_to_get_them(tmp_path, checkpoints, capsys):
    img = write_photo(tmp_path / "p.jpg")
    assert cli("pose", img, "--model", checkpoints["pose"], "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "rtmdet_m.pth" in err and "sapiens2 download rtmdet-m-person" in err and "offline" in err


def test_missing_model_weights_say_how_to_get_them(tmp_path, capsys):
    img = write_photo(tmp_path / "p.jpg")
    assert cli("seg", img, "--model", "1b", "--out", tmp_path / "out") == 2
    assert "sapiens2 download sapiens2-seg-1b" in capsys.readouterr().err


def test_demo_without_weights_lists_what_to_download(tmp_path, capsys):
    assert cli("demo", "--out", tmp_path / "demo") == 2
    err = capsys.readouterr().err
    assert "sapiens2 download sapiens2-pose-0.4b sapiens2-seg-0.4b sapiens2-normal-0.4b rtmdet-m-person" in err
    assert not (tmp_path / "demo").exists()


def test_demo_photo_is_bundled():
    from sapiens2.io import read_image
    from sapiens2.runner.cli import demo_photo

    assert read_image(demo_photo()).shape == (512, 512, 3)


@pytest.mark.parametrize("args, message", [
    (["seg", "IMG", "--save", "json"], "nothing for seg to write"),
    (["seg", "IMG", "--save", "npz,gif"], "unknown kind"),
    (["seg", "IMG", "--model", "9b"], "no official seg model of size '9b'"),
    (["run", "--tasks", "seg,dance", "IMG"], "unknown task 'dance'"),
    (["depth", "IMG", "--model", "DEPTH"], "--allow-pickle"),
    (["seg"], "give at least one INPUT"),
    (["seg", "nowhere/*.jpg"], "no image or video to process"),
    (["pose", "IMG", "--model", "POSE", "--detector", "none", "--format", "coco17", "--device", "cuda:7"], "CUDA"),
])
def test_bad_options_fail_before_any_work(tmp_path, checkpoints, capsys, args, message):
    import torch

    if "cuda:7" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    img = write_photo(tmp_path / "p.jpg")
    import sapiens2
    from sapiens2.models.sapiens1 import Sapiens1Config, V1HeadConfig, build_sapiens1

    pth = tmp_path / "depth.pth"
    net = build_sapiens1(Sapiens1Config(embed_dim=64, depth=1, num_heads=1, pos_grid=(8, 6)), "depth",
                         V1HeadConfig(64, (8,), (8,), 1))
    import torch as t

    t.save({"state_dict": net.state_dict()}, pth)
    subs = {"IMG": str(img), "DEPTH": str(pth), "POSE": str(checkpoints["pose"])}
    assert cli(*[subs.get(a, a) for a in args], "--out", tmp_path / "out") == 2
    assert message in capsys.readouterr().err
    assert sapiens2  # imported for its side effects on the error classes


def test_demo_runs_on_the_bundled_photo_when_weights_are_there(tmp_path, checkpoints, stand_in_pose, monkeypatch,
                                                               capsys):
    from sapiens2.tasks import models

    monkeypatch.setattr(models, "missing_weights", lambda names: [])
    out = tmp_path / "demo"
    assert cli("demo", "--tasks", "pose,seg", "--model", f"seg={checkpoints['seg']}", "--input-size", DENSE_SIZE,
               "--detector", "none", "--out", out) == 0
    assert cv2.imread(str(out / "astronaut_pose.jpg")).shape == (512, 512, 3)
    assert cv2.imread(str(out / "astronaut_seg.jpg")).shape == (512, 1024, 3)
    assert json.loads((out / "astronaut_pose.json").read_text())["box_source"] == "whole image"
    assert "pictures:" in capsys.readouterr().out
