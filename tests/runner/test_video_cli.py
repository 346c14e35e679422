"""Videos through the CLI: per-frame results with stable track IDs, and annotated videos read back whole."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from sapiens2.io.video import VideoReader, VideoWriter
from tests.runner.conftest import DENSE_SIZE, cli, temp_leftovers

FRAMES = 10


def _two_people(path, n=FRAMES, h=96, w=128):
    """A red 'person' walking right on the left, a green one walking down on the right."""
    with VideoWriter(path, fps=10, codec="mp4v") as v:
        for i in range(n):
            f = np.full((h, w, 3), 60, np.uint8)
            cv2.rectangle(f, (6 + 3 * i, 20), (30 + 3 * i, 80), (230, 20, 20), -1)
            cv2.rectangle(f, (90, 4 + 2 * i), (114, 60 + 2 * i), (20, 230, 20), -1)
            v.write(f)
    return path


@pytest.mark.parametrize("stand_in_pose", [17], indirect=True)
def test_pose_video_tracks_people_and_writes_the_annotated_video(tmp_path, stand_in_pose, stand_in_detector):
    clip = _two_people(tmp_path / "in" / "walk.mp4")
    out = tmp_path / "out"
    assert cli("pose", clip, "--model", "x", "--out", out) == 0
    record = json.loads((out / "walk_pose.json").read_text())
    assert record["num_frames"] == FRAMES and len(record["frames"]) == FRAMES and record["smoothing"] == "one-euro"
    assert record["tracking"]["motion"] is True
    assert record["fps"] == 10 and record["image_size"] == [96, 128]
    ids_by_side = {"left": set(), "right": set()}
    for frame in record["frames"]:
        assert len(frame["instances"]) == 2
        for person in frame["instances"]:
            x1 = person["bbox"][0]
            ids_by_side["left" if x1 < 64 else "right"].add(person["track_id"])
            assert np.isfinite(person["keypoints"]).all() and len(person["keypoints"]) == 17
    assert len(ids_by_side["left"]) == 1 and len(ids_by_side["right"]) == 1
    assert ids_by_side["left"] != ids_by_side["right"]
    with VideoReader(out / "walk_pose.mp4") as r:
        frames = list(r)
    assert len(frames) == FRAMES and frames[0].shape == (96, 128, 3)
    assert not temp_leftovers(out)


@pytest.mark.parametrize("stand_in_pose", [17], indirect=True)
def test_smoothing_can_be_turned_off(tmp_path, stand_in_pose, stand_in_detector):
    clip = _two_people(tmp_path / "walk.mp4", n=4)
    out = tmp_path / "out"
    assert cli("pose", clip, "--model", "x", "--out", out, "--no-smooth", "--save", "json", "--no-track-motion",
               "--track-max-age", "7") == 0
    record = json.loads((out / "walk_pose.json").read_text())
    assert record["smoothing"] is None and not (out / "walk_pose.mp4").exists()
    assert record["tracking"] == {"metric": "iou", "motion": False, "max_age": 7}
    # unsmoothed, the stand-in network puts every keypoint at the box centre
    person = record["frames"][3]["instances"][0]
    x1, y1, x2, y2 = person["bbox"]
    np.testing.assert_allclose(person["keypoints"][0], [(x1 + x2) / 2, (y1 + y2) / 2], atol=1.0)


def test_dense_video_with_images_and_resume(tmp_path, checkpoints, capsys):
    src = tmp_path / "in"
    _two_people(src / "clip.mp4", n=6)
    cv2.imwrite(str(src / "still.png"), np.full((40, 30, 3), 128, np.uint8))
    out = tmp_path / "out"
    args = ["seg", src, "--model", checkpoints["seg"], "--input-size", DENSE_SIZE, "--out", out, "--batch-size", "4"]
    assert cli(*args, "--save", "npz,vis") == 0
    with VideoReader(out / "clip_seg.mp4") as r:
        frames = list(r)
    assert len(frames) == 6 and frames[0].shape == (96, 256, 3)  # [frame | overlay]
    assert sorted(p.name for p in (out / "clip").iterdir()) == [f"{i:06d}_seg.npy" for i in range(6)]
    assert (out / "still_seg.npy").is_file()
    capsys.readouterr()
    assert cli(*args, "--save", "npz,vis", "--resume") == 0
    assert "skipped 2 already done" in capsys.readouterr().err


class _FakeCamera:
    """cv2.VideoCapture stand-in for a webcam index: `frames` BGR frames, then the stream ends (as when a
    camera is unplugged); any path opens the real capture."""

    def __init__(self, source, frames: int = 5) -> None:
        self.index = source
        self.left = frames
        self.released = False

    def isOpened(self) -> bool:
        return self.index == 0

    def get(self, prop: int) -> float:
        return 0.0  # a webcam reports no frame count and often no fps

    def read(self):
        if self.left == 0:
            return False, None
        self.left -= 1
        frame = np.full((96, 128, 3), 60, np.uint8)
        cv2.rectangle(frame, (20, 20), (50, 80), (20, 20, 230), -1)
        return True, frame

    def release(self) -> None:
        self.released = True


def test_webcam_runs_until_the_stream_ends(tmp_path, checkpoints, monkeypatch):
    import sapiens2.io.video as video

    real = cv2.VideoCapture
    cameras: list[_FakeCamera] = []

    def capture(source, *args):
        if isinstance(source, int):
            cameras.append(_FakeCamera(source))
            return cameras[-1]
        return real(source, *args)

    monkeypatch.setattr(video.cv2, "VideoCapture", capture)
    out = tmp_path / "out"
    assert cli("seg", "--webcam", "0", "--model", checkpoints["seg"], "--input-size", DENSE_SIZE, "--out", out,
               "--save", "npz,vis") == 0
    assert cameras and cameras[0].released
    assert sorted(p.name for p in (out / "webcam0").iterdir()) == [f"{i:06d}_seg.npy" for i in range(5)]
    with VideoReader(out / "webcam0_seg.mp4") as r:
        assert len(list(r)) == 5 and r.fps == 30  # no fps from the camera: the default
    # a camera that does not open is reported, and the run fails
    code = cli("seg", "--webcam", "3", "--model", checkpoints["seg"], "--input-size", DENSE_SIZE, "--out",
               tmp_path / "out3")
    assert code != 0
    errors = json.loads((tmp_path / "out3" / "errors.json").read_text())
    assert "cannot open webcam" in json.dumps(errors)


@pytest.mark.parametrize("stand_in_pose", [17], indirect=True)
def test_a_truncated_video_keeps_its_outputs_marked_incomplete_and_is_reported(tmp_path, checkpoints, stand_in_pose):
    whole = tmp_path / "whole.avi"
    w = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(30):
        w.write(np.full((48, 64, 3), 8 * i, np.uint8))
    w.release()
    src = tmp_path / "in"
    src.mkdir()
    data = whole.read_bytes()
    (src / "clip.avi").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert cli("run", "--tasks", "pose,seg", src, "--model", f"seg={checkpoints['seg']}", "--model", "pose=x",
               "--input-size", DENSE_SIZE, "--detector", "none", "--out", out) == 1
    (entry,) = json.loads((out / "errors.json").read_text())["errors"]
    assert entry["file"].endswith("clip.avi") and "of the 30 frames" in entry["reason"]
    assert "marked incomplete" in entry["reason"]
    record = json.loads((out / "clip_pose.json").read_text())
    assert record["complete"] is False and "truncated" in record["problem"]
    assert 0 < record["num_frames"] < 30
    assert (out / "clip_seg.mp4").is_file() and (out / "clip_pose.mp4").is_file()
