"""The command line and the Python API run the same pipeline: identical arrays with non-default options;
`--boxes` in each documented layout; output names that never collide; bad option values are usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sapiens2.io.video import VideoWriter
from sapiens2.runner.sources import Source, plan_outputs
from sapiens2.tasks import PREDICTORS, Pose
from tests.runner.conftest import DENSE_SIZE, cli, photo, write_photo

DENSE_HW = tuple(int(v) for v in DENSE_SIZE.split("x"))
DENSE_ARRAYS = {"seg": ("_seg.npy", "labels"), "normal": ("_normal.npy", "normals"), "albedo": ("_albedo.npy", "albedo"),
                "pointmap": ("_points.npy", "points"), "depth": ("_reldepth.npy", "depth"),
                "matting": ("_matting.npz", "alpha")}


@pytest.mark.parametrize("task", sorted(DENSE_ARRAYS))
def test_dense_cli_and_api_give_identical_arrays(tmp_path, checkpoints, task):
    photos = [write_photo(tmp_path / "in" / f"p{i}.png", 50 + 7 * i, 37, seed=i) for i in range(3)]
    out = tmp_path / "out"
    assert cli(task, tmp_path / "in", "--model", checkpoints[task], "--input-size", DENSE_SIZE, "--batch-size", "2",
               "--dtype", "fp32", "--save", "npz", "--out", out, "--allow-pickle") == 0
    predictor = PREDICTORS[task](checkpoints[task], input_size=DENSE_HW, batch_size=2, allow_pickle=True)
    suffix, field = DENSE_ARRAYS[task]
    for path, result in zip(photos, predictor([str(p) for p in photos])):
        saved = np.load(out / f"{path.stem}{suffix}")
        saved = saved[field] if suffix.endswith(".npz") else saved
        np.testing.assert_array_equal(saved, getattr(result, field).astype(saved.dtype))


@pytest.mark.parametrize("flip", [True, False])
def test_pose_cli_and_api_give_identical_keypoints_at_a_custom_crop_size(tmp_path, checkpoints, flip):
    img = write_photo(tmp_path / "in" / "p.png", 60, 44)
    out = tmp_path / "out"
    assert cli("pose", img, "--model", checkpoints["pose"], "--detector", "none", "--input-size", "64x48",
               "--format", "coco17", "--batch-size", "2", "--save", "npz,json",
               "--flip-test" if flip else "--no-flip-test", "--out", out) == 0
    result = Pose(checkpoints["pose"], detector=None, input_size=(64, 48), flip_test=flip, batch_size=2)(str(img))
    coco = result.convert("coco17")
    saved = np.load(out / "p_pose.npz")
    np.testing.assert_array_equal(saved["keypoints"], coco.keypoints.astype(np.float32))
    np.testing.assert_array_equal(saved["scores"], coco.scores)
    record = json.loads((out / "p_pose.json").read_text())
    assert record["keypoint_format"] == "coco17" and record["num_keypoints"] == 17
    np.testing.assert_array_equal(np.asarray(record["instances"][0]["keypoints"]), coco.keypoints[0].astype(np.float32))


def test_pose_cli_feeds_the_network_the_crop_size_asked_for(tmp_path, stand_in_pose):
    img = write_photo(tmp_path / "p.png", 60, 44)
    assert cli("pose", img, "--model", "x", "--detector", "none", "--input-size", "256x192", "--out",
               tmp_path / "out") == 0
    assert set(stand_in_pose.input_sizes) == {(256, 192)}


# ------------------------------------------------------------------------------------------------ --boxes


def _boxes_file(tmp_path, content) -> str:
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(content))
    return str(path)


@pytest.mark.parametrize("stand_in_pose", [17], indirect=True)
@pytest.mark.parametrize("layout", ["file_name", "images_table"])
def test_boxes_for_every_image_need_no_detector_weights(tmp_path, stand_in_pose, layout):
    src = tmp_path / "in"
    write_photo(src / "a.png", 60, 40)
    write_photo(src / "sub" / "b.png", 60, 40, seed=1)
    if layout == "file_name":
        dets = [{"file_name": "a.png", "bbox": [2, 3, 20, 30], "score": 0.9},
                {"file_name": "sub/b.png", "bbox": [5, 5, 10, 20]}]
    else:
        dets = {"images": [{"id": 7, "file_name": "a.png"}, {"id": 8, "file_name": "sub/b.png"}],
                "annotations": [{"image_id": 7, "bbox": [2, 3, 20, 30], "score": 0.9, "category_id": 1},
                                {"image_id": 8, "bbox": [5, 5, 10, 20], "category_id": 1}]}
    out = tmp_path / "out"
    # the default detector is asked for, but no weights exist anywhere: the given boxes cover every image
    assert cli("pose", src, "--model", "x", "--boxes", _boxes_file(tmp_path, dets), "--out", out) == 0
    a = json.loads((out / "a_pose.json").read_text())
    b = json.loads((out / "sub" / "b_pose.json").read_text())
    assert a["box_source"] == b["box_source"] == "given"
    np.testing.assert_allclose(a["instances"][0]["bbox"], [2, 3, 22, 33])
    assert a["instances"][0]["bbox_score"] == pytest.approx(0.9)
    np.testing.assert_allclose(b["instances"][0]["bbox"], [5, 5, 15, 25])


def test_a_missing_detector_names_the_ways_around_it(tmp_path, stand_in_pose, capsys):
    write_photo(tmp_path / "in" / "a.png")
    write_photo(tmp_path / "in" / "b.png")
    dets = _boxes_file(tmp_path, [{"file_name": "a.png", "bbox": [2, 3, 20, 30]}])  # b.png still needs detection
    assert cli("pose", tmp_path / "in", "--model", "x", "--boxes", dets, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "--detector none" in err and "--boxes" in err
    assert not (tmp_path / "out" / "a_pose.json").exists()


@pytest.mark.parametrize("entries, message", [
    ([{"file_name": "a.png", "bbox": [1, 1, 5, 5], "score": None}], "'score' must be a finite number"),
    ([{"file_name": ["a.png"], "bbox": [1, 1, 5, 5]}], "'file_name' must be a non-empty string"),
    ([{"file_name": "a.png"}], "lacks a valid 'bbox'"),
    ([{"image_id": 3, "bbox": [1, 1, 5, 5]}], "no 'images' table"),
    ({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 2, "bbox": [1, 1, 5, 5]}]},
     "image_id 2 is not in the 'images' table"),
    ([5], "detection 0 is not an object"),
    ({"boxes": []}, "expected a list of detections"),
])
def test_malformed_boxes_files_are_usage_errors(tmp_path, stand_in_pose, capsys, entries, message):
    write_photo(tmp_path / "in" / "a.png")
    assert cli("pose", tmp_path / "in", "--model", "x", "--boxes", _boxes_file(tmp_path, entries), "--detector",
               "none", "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert message in err and "dets.json" in err


def test_a_deeply_nested_boxes_file_is_a_clean_error(tmp_path, stand_in_pose, capsys):
    write_photo(tmp_path / "in" / "a.png")
    path = tmp_path / "dets.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    assert cli("pose", tmp_path / "in", "--model", "x", "--boxes", path, "--out", tmp_path / "out") == 2
    assert "not a readable detections JSON" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ output names


def test_names_that_would_collide_get_distinct_outputs(tmp_path, checkpoints):
    src = tmp_path / "in"
    for i, name in enumerate(("x.jpg", "x.png", "x_jpg.png", "a.b.jpg", "a.c.jpg", "a_b_jpg.png")):
        write_photo(src / name, seed=i)
    out = tmp_path / "out"
    assert cli("seg", src, "--model", checkpoints["seg"], "--input-size", DENSE_SIZE, "--save", "npz",
               "--out", out) == 0
    saved = sorted(p.name for p in out.glob("*_seg.npy"))
    assert len(saved) == 6, saved
    assert saved == sorted(["x_jpg_seg.npy", "x_png_seg.npy", "x_jpg_png_seg.npy", "a_b_jpg_seg.npy",
                            "a_c_jpg_seg.npy", "a_b_jpg_png_seg.npy"])


def test_out_inside_the_input_folder_never_overwrites_an_input_nor_reads_its_own_outputs(tmp_path, checkpoints):
    folder = tmp_path / "photos"
    write_photo(folder / "a.jpg", seed=1)
    mine = write_photo(folder / "a_seg.jpg", seed=2)  # the user's own photo, named like an output
    before = mine.read_bytes()
    args = ("seg", folder, "--model", checkpoints["seg"], "--input-size", DENSE_SIZE, "--out", folder)
    assert cli(*args) == 0
    assert mine.read_bytes() == before
    first = sorted(p.name for p in folder.iterdir())
    assert cli(*args) == 0  # the second run sees the same two photos, not the first run's pictures
    assert sorted(p.name for p in folder.iterdir()) == first
    assert len(list(folder.glob("*_seg.npy"))) == 2


def test_a_video_and_an_image_in_a_folder_of_its_name_do_not_share_files(tmp_path):
    sources = [Source("image", tmp_path.joinpath("clip", "000000").relative_to(tmp_path), tmp_path / "clip" / "000000.jpg"),
               Source("video", tmp_path.joinpath("clip").relative_to(tmp_path), tmp_path / "clip.mp4")]
    planned = plan_outputs(sources, tmp_path / "out", lambda s: ["_seg.npy"])
    assert [s.rel.as_posix() for s in planned] == ["clip/000000", "clip_mp4"]


def test_a_video_frame_folder_and_an_image_in_it_end_to_end(tmp_path, checkpoints):
    src = tmp_path / "in"
    src.mkdir()
    with VideoWriter(src / "clip.mp4", fps=5, codec="mp4v") as v:
        for i in range(2):
            v.write(photo(48, 36, seed=i))
    write_photo(src / "clip" / "000000.jpg", seed=9)
    out = tmp_path / "out"
    assert cli("seg", src, "--model", checkpoints["seg"], "--input-size", DENSE_SIZE, "--save", "npz",
               "--out", out) == 0
    image_labels = np.load(out / "clip" / "000000_seg.npy")
    assert image_labels.shape == (48, 36)
    assert sorted(p.name for p in (out / "clip_mp4").iterdir()) == ["000000_seg.npy", "000001_seg.npy"]


# ------------------------------------------------------------------------------------------------ option values


@pytest.mark.parametrize("args, message", [
    (["--max-pixels", "-5"], "--max-pixels: must be at least 1"),
    (["--input-size", "0x0"], "height and width must be positive"),
    (["--batch-size", "0"], "--batch-size: must be at least 1"),
    (["--kpt-thr", "nan"], "--kpt-thr: must be between 0 and 1"),
    (["--device", "tpu9"], "device 'tpu9'"),
])
def test_bad_option_values_are_usage_errors(tmp_path, checkpoints, capsys, args, message):
    img = write_photo(tmp_path / "a.png")
    try:
        code = cli("seg", img, "--model", checkpoints["seg"], "--out", tmp_path / "out", *args)
    except SystemExit as e:  # argparse's own refusal
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_out_naming_a_file_is_a_usage_error(tmp_path, checkpoints, capsys):
    img = write_photo(tmp_path / "a.png")
    (tmp_path / "taken").write_text("mine")
    assert cli("seg", img, "--model", checkpoints["seg"], "--out", tmp_path / "taken") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "taken").read_text() == "mine"


@pytest.mark.parametrize("stand_in_pose", [17], indirect=True)
def test_names_that_are_not_utf8_keep_their_results_and_errors(tmp_path, stand_in_pose):
    import os

    src = tmp_path / "in"
    src.mkdir()
    good = os.fsdecode(os.fsencode(str(src)) + b"/caf\xe9.png")
    bad = os.fsdecode(os.fsencode(str(src)) + b"/bad\xff.jpg")
    from sapiens2.io.writers import write_image

    write_image(good, photo())  # cv2.imwrite itself cannot take such a name; the project's writer can
    Path(bad).write_text("not an image")
    out = tmp_path / "out"
    assert cli("pose", src, "--model", "x", "--detector", "none", "--out", out) == 1
    errors = json.loads((out / "errors.json").read_text(encoding="utf-8"))["errors"]
    assert [os.fsencode(e["file"]) for e in errors] == [os.fsencode(bad)]
    (record_path,) = out.glob("*_pose.json")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    assert os.fsencode(record["image"]) == os.fsencode(good)


def test_numbers_too_large_for_a_box_are_refused_by_name(tmp_path):
    from sapiens2.tasks.given_boxes import read_coco_detections

    path = tmp_path / "d.json"
    path.write_text('[{"file_name": "a.png", "bbox": [1, 1, 1' + "0" * 400 + ', 5]}]')
    with pytest.raises(ValueError, match="bbox values must be a finite number"):
        read_coco_detections(path)
    path.write_text('[{"file_name": "a.png", "bbox": [1, 1, 1e39, 5]}]')
    with pytest.raises(ValueError, match="bbox values must be a finite number"):
        read_coco_detections(path)


def test_cli_and_api_agree_in_bf16_too(tmp_path, checkpoints):
    import torch

    img = write_photo(tmp_path / "in" / "p.png", 57, 41)
    out = tmp_path / "out"
    assert cli("seg", img, "--model", checkpoints["seg"], "--input-size", DENSE_SIZE, "--dtype", "bf16",
               "--save", "npz", "--out", out) == 0
    seg = PREDICTORS["seg"](checkpoints["seg"], input_size=DENSE_HW, dtype=torch.bfloat16)
    assert seg.dtype == torch.bfloat16
    np.testing.assert_array_equal(np.load(out / "p_seg.npy"), seg(str(img)).labels.astype(np.int64))
