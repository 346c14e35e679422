"""`sapiens2.io.video`: RGB frames in and out, H.264 with PyAV or mp4v with OpenCV, atomic files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sapiens2.io.video import VideoError, VideoReader, VideoWriter, have_pyav

CODECS = ["mp4v", pytest.param("h264", marks=pytest.mark.skipif(not have_pyav(), reason="PyAV (av) not installed"))]


def _frames(n: int, h: int = 48, w: int = 64) -> list[np.ndarray]:
    out = []
    for i in range(n):
        f = np.full((h, w, 3), 20, np.uint8)
        cv2.rectangle(f, (4 + 3 * i, 8), (20 + 3 * i, 40), (230, 30, 30), -1)  # red, in RGB
        out.append(f)
    return out


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_keeps_count_size_and_colours(tmp_path, codec):
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, fps=12.5, codec=codec) as w:
        for f in _frames(9):
            w.write(f)
    assert w.frames_written == 9 and w.codec == codec and w.note.startswith("H.264" if codec == "h264" else "MPEG-4")
    with VideoReader(path) as r:
        frames = list(r)
        assert r.fps == pytest.approx(12.5, abs=0.01)
    assert len(frames) == 9 and frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    # RGB in, RGB out: the rectangle is still red, not blue
    assert frames[4][24, 20].tolist() == pytest.approx([230, 30, 30], abs=25)
    assert not [p for p in tmp_path.iterdir() if "sapiens2-tmp" in p.name]


@pytest.mark.skipif(not have_pyav(), reason="PyAV (av) not installed")
def test_h264_pads_odd_sizes(tmp_path):
    path = tmp_path / "odd.mp4"
    with VideoWriter(path, codec="h264") as w:
        for f in _frames(3, 47, 63):
            w.write(f)
    with VideoReader(path) as r:
        assert [f.shape for f in r] == [(48, 64, 3)] * 3


def test_an_error_while_writing_leaves_nothing(tmp_path):
    path = tmp_path / "clip.mp4"
    with pytest.raises(RuntimeError), VideoWriter(path, codec="mp4v") as w:
        w.write(_frames(1)[0])
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


def test_frames_must_match_the_first(tmp_path):
    w = VideoWriter(tmp_path / "c.mp4", codec="mp4v")
    w.write(_frames(1)[0])
    with pytest.raises(ValueError, match="differs"):
        w.write(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        w.write(np.zeros((48, 64, 3), np.float32))
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_unreadable_videos_are_named(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video")
    for name, reason in (("empty.mp4", "empty"), ("text.mp4", "cannot open"), ("none.mp4", "no such")):
        with pytest.raises(VideoError, match=reason) as e:
            VideoReader(tmp_path / name)
        assert e.value.path.endswith(name)
