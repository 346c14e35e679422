"""`sapiens2.io.video`: RGB frames in and out, H.264 with PyAV or mp4v with OpenCV, atomic files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sapiens2.io.video import VideoError, VideoReader, VideoReport, VideoWriter, have_pyav

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
        assert r.report().complete, r.report()
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


# ------------------------------------------------------------------ whole or not: VideoReport


def _avi(path, n: int = 30):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(n):
        w.write(np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    w.release()
    return path


def test_a_whole_video_reports_complete(tmp_path):
    with VideoReader(_avi(tmp_path / "whole.avi")) as r:
        positions = [i for i, _ in r.frames()]
        report = r.report()
    assert positions == list(range(30))
    assert report == VideoReport(30, 30, (), True)
    assert report.complete and report.missing_frames == 0 and report.problem() is None


def test_an_avi_cut_at_half_reports_the_missing_frames(tmp_path):
    data = _avi(tmp_path / "whole.avi").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    with VideoReader(cut) as r:
        frames = list(r)
        report = r.report()
    assert 0 < len(frames) < 30
    assert report.expected_frames == 30 and report.decoded_frames == len(frames) and report.finished
    assert report.missing_frames == 30 - len(frames) and not report.complete
    assert f"decoded {len(frames)} of the 30 frames" in report.problem() and "truncated" in report.problem()


def test_stopping_early_is_not_a_damaged_file(tmp_path):
    with VideoReader(_avi(tmp_path / "whole.avi")) as r:
        for i, _ in enumerate(r):
            if i == 2:
                break
        report = r.report()
    assert report.decoded_frames == 3 and not report.finished
    assert report.complete and report.problem() is None


class _ScriptedCapture:
    """A stand-in for cv2.VideoCapture whose reads succeed or fail as scripted (1 = a frame, 0 = a failure)."""

    def __init__(self, script: str, count: int) -> None:
        self.script, self.count, self.reads = script, count, 0

    def isOpened(self) -> bool:
        return True

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FPS: 10.0, cv2.CAP_PROP_FRAME_COUNT: float(self.count)}.get(prop, 0.0)

    def read(self):
        ok = self.reads < len(self.script) and self.script[self.reads] == "1"
        self.reads += 1
        return ok, (np.full((4, 4, 3), self.reads, np.uint8) if ok else None)

    def release(self) -> None:
        pass


@pytest.mark.parametrize(
    ("script", "count", "positions", "failed", "missing"),
    [
        ("1101100", 6, [0, 1, 3, 4], (2,), 1),  # frame 2 damaged, frame 5 missing at the end
        ("0011", 4, [2, 3], (0, 1), 0),  # the first frames damaged
        ("111", 0, [0, 1, 2], (), 0),  # no count announced: nothing can be called missing
        ("1" + "0" * 40 + "1", 100, [0], (), 99),  # gives up after MAX_CONSECUTIVE_FAILURES in a row
    ],
)
def test_failed_reads_are_skipped_and_recorded(tmp_path, monkeypatch, script, count, positions, failed, missing):
    from sapiens2.io import video

    (tmp_path / "v.avi").write_bytes(b"x")
    monkeypatch.setattr(video.cv2, "VideoCapture", lambda source: _ScriptedCapture(script, count))
    with VideoReader(tmp_path / "v.avi") as r:
        assert [i for i, _ in r.frames()] == positions
        report = r.report()
    assert report.failed_frames == failed and report.missing_frames == missing
    assert report.complete == (not failed and not missing)
    if failed:
        assert "could not be decoded" in report.problem()
    assert video.MAX_CONSECUTIVE_FAILURES < 40


def test_names_that_are_not_utf8_are_read_and_written(tmp_path):
    """OpenCV crashes the process on such names; they reach it through a plainly named link."""
    import os

    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/vid\xff.mp4")
    with VideoWriter(name, fps=10, codec="mp4v") as w:
        for frame in _frames(3):
            w.write(frame)
    assert os.path.isfile(name) and not [p for p in os.listdir(tmp_path) if p.startswith(".")]
    with VideoReader(name) as r:
        assert len(list(r)) == 3 and r.report().complete
