"""Video in and out: frames decoded with OpenCV, annotated videos encoded as H.264 MP4 with PyAV.

`VideoReader` yields upright RGB uint8 frames from a file or a webcam index (`cv2.VideoCapture` either way),
and says afterwards whether the file was whole: `VideoReader.report()` compares the frames decoded with the
container's frame count and lists the frames whose decode failed (`VideoReport`), so a truncated or damaged
video is not taken for a short one.
`VideoWriter` takes RGB frames and writes an MP4 that browsers play: H.264 (libx264, yuv420p) through PyAV
when `av` is installed (the `video` extra), otherwise OpenCV's MPEG-4 Part 2 (`mp4v`), which most desktop
players read but browsers do not; `VideoWriter.note` says which was used and why. OpenCV's own H.264
writer (`avc1`) is not tried: the wheels ship without an H.264 encoder.

Writing is atomic, like `sapiens2.io.writers`: frames go to a temporary file beside the target (its name
holds `TEMP_SUFFIX`), which replaces the target on `close()`; `abort()` (or an exception inside a `with`
block) deletes it, so a video is either complete or absent.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Self

import cv2
import numpy as np

from sapiens2.io.writers import TEMP_SUFFIX

__all__ = ["VideoError", "VideoReader", "VideoReport", "VideoWriter", "have_pyav"]

DEFAULT_FPS = 30.0
# A failed read before the container's last frame is retried this many times in a row before the video is
# taken to end there: a damaged frame is skipped, a cut file stops after a few instant failures.
MAX_CONSECUTIVE_FAILURES = 16


class VideoError(Exception):
    """A video could not be opened, read or written. ``path`` names it (a file or a webcam index)."""

    def __init__(self, path: str | os.PathLike | int, reason: str) -> None:
        self.path = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def have_pyav() -> bool:
    """True when PyAV (`av`) with an H.264 encoder can be imported."""
    try:
        import av
    except ImportError:
        return False
    try:
        av.codec.Codec("libx264", "w")
    except Exception:  # noqa: BLE001 - any failure means no usable encoder
        return False
    return True


@dataclass(frozen=True)
class VideoReport:
    """How a read of a video went: decoded frames against the container's count, and failed frames.

    ``expected_frames``: the container's frame count (0 when unknown: a webcam, some streams; for some
    formats it is an estimate from the duration). ``decoded_frames``: frames handed out. ``failed_frames``:
    container positions (0-based) whose decode failed while later frames decoded; those frames were skipped.
    ``finished``: the stream was read to its end (False when the consumer stopped early, which is no fault
    of the file).
    """

    expected_frames: int
    decoded_frames: int
    failed_frames: tuple[int, ...] = ()
    finished: bool = True

    @property
    def missing_frames(self) -> int:
        """Frames the container announced that were neither decoded nor reported failed: the file ends
        early (truncated) or the decoder dropped damaged frames silently. 0 when the count is unknown or the
        read was stopped early."""
        if not self.finished or self.expected_frames <= 0:
            return 0
        return max(0, self.expected_frames - self.decoded_frames - len(self.failed_frames))

    @property
    def complete(self) -> bool:
        """True when nothing is known to be missing or damaged."""
        return not self.failed_frames and self.missing_frames == 0

    def problem(self) -> str | None:
        """One sentence for an error report, or None when `complete`."""
        parts = []
        if self.missing_frames:
            parts.append(f"decoded {self.decoded_frames} of the {self.expected_frames} frames the container "
                         f"announces ({self.missing_frames} missing: the file is truncated or damaged)")
        if self.failed_frames:
            shown = ", ".join(map(str, self.failed_frames[:10])) + (", ..." if len(self.failed_frames) > 10 else "")
            parts.append(f"{len(self.failed_frames)} frame(s) could not be decoded and were skipped (frames {shown})")
        return "; ".join(parts) or None


class _PlainName:
    """A name OpenCV and FFmpeg can open for `path`: the path itself when it is valid UTF-8, else a symbolic
    link with a plain name in a private temporary folder. OpenCV crashes the whole process (a segmentation
    fault) on a file name that is not valid UTF-8, so such a name never reaches it."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._folder: str | None = None
        try:
            self.path.encode("utf-8")
        except UnicodeEncodeError:
            self._folder = tempfile.mkdtemp(prefix="sapiens2-name-")
            link = os.path.join(self._folder, "file" + os.path.splitext(self.path.encode("utf-8", "replace")
                                                                         .decode("utf-8"))[1])
            os.symlink(os.path.abspath(self.path), link)
            self.path = link

    def release(self) -> None:
        if self._folder is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self._folder, os.listdir(self._folder)[0]))
                os.rmdir(self._folder)
            self._folder = None


class VideoReader:
    """RGB frames of a video file, or of a webcam when given an integer index.

    ``fps`` falls back to 30 when the container does not say; ``frame_count`` is the container's estimate
    (0 when unknown, always for a webcam). Iterating reads frames until the stream ends; `frames` gives each
    frame with its position in the container (which counts skipped frames), and `report` says afterwards
    whether anything was missing or damaged.
    """

    def __init__(self, source: str | os.PathLike | int) -> None:
        self.source = source
        self.is_webcam = isinstance(source, int)
        if not self.is_webcam:
            path = Path(source)
            if not path.is_file():
                raise VideoError(source, "no such video file" if not path.exists() else "not a regular file")
            if path.stat().st_size == 0:
                raise VideoError(source, "file is empty (0 bytes)")
        self._name = None if self.is_webcam else _PlainName(source)
        self._cap = cv2.VideoCapture(source if self._name is None else self._name.path)
        if not self._cap.isOpened():
            self.close()
            what = "cannot open webcam" if self.is_webcam else "cannot open video (not a video, or an unsupported codec)"
            raise VideoError(source, what)
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.5 < fps < 1000 else DEFAULT_FPS
        self.frame_count = max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        self.frames_read = 0
        self.failed_frames: list[int] = []
        self.finished = False

    def __iter__(self) -> Iterator[np.ndarray]:
        for _, frame in self.frames():
            yield frame

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """(position, RGB frame) pairs. A failed read before the container's announced end is retried (up
        to `MAX_CONSECUTIVE_FAILURES` in a row); the positions that failed before a later frame decoded are
        recorded in `failed_frames`, failures at the end count as missing frames in `report`."""
        position = 0
        pending: list[int] = []  # failed positions not yet followed by a decoded frame
        while True:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                more = position < self.frame_count and len(pending) < MAX_CONSECUTIVE_FAILURES
                if not more or self.is_webcam:
                    self.finished = True
                    return
                pending.append(position)
                position += 1
                continue
            self.failed_frames += pending
            pending = []
            self.frames_read += 1
            yield position, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            position += 1

    def report(self) -> VideoReport:
        """What the read so far found (see `VideoReport`); ask after the iteration ends."""
        return VideoReport(self.frame_count, self.frames_read, tuple(self.failed_frames), self.finished)

    def close(self) -> None:
        self._cap.release()
        if self._name is not None:
            self._name.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoWriter:
    """Write RGB frames to an MP4 at ``path``; the frame size is taken from the first frame.

    ``codec``: "auto" (H.264 via PyAV when available, else OpenCV mp4v), "h264" (PyAV, an error without it)
    or "mp4v" (OpenCV). H.264 needs even sizes: odd frames get one black row / column added.
    """

    def __init__(self, path: str | os.PathLike, fps: float = DEFAULT_FPS, codec: str = "auto",
                 crf: int = 20) -> None:
        if codec not in ("auto", "h264", "mp4v"):
            raise ValueError(f"codec must be 'auto', 'h264' or 'mp4v', not {codec!r}")
        self.path = Path(path)
        self.fps = float(fps) if fps and fps > 0 else DEFAULT_FPS
        pyav = have_pyav()
        if codec == "h264" and not pyav:
            raise VideoError(path, "H.264 needs PyAV: pip install av (or sapiens2[video])")
        self.codec = "h264" if codec in ("auto", "h264") and pyav else "mp4v"
        if self.codec == "h264":
            self.note = "H.264 (PyAV libx264)"
        elif codec == "mp4v":
            self.note = "MPEG-4 Part 2 (OpenCV mp4v), as asked: desktop players read it, browsers may not"
        else:
            self.note = ("MPEG-4 Part 2 (OpenCV mp4v): PyAV is not installed, so browsers may not play it; "
                         "pip install av (sapiens2[video]) for H.264")
        self.crf = crf
        self.frames_written = 0
        self._size: tuple[int, int] | None = None  # (H, W) of the first frame
        self._tmp: Path | None = None
        self._name: _PlainName | None = None
        self._container = None
        self._stream = None
        self._cv2 = None

    def _open(self, h: int, w: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem[:100]}.", suffix=f"{TEMP_SUFFIX}{self.path.suffix}",
                                   dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._name = _PlainName(tmp)
        tmp = self._name.path
        self._size = (h, w)
        if self.codec == "h264":
            import av

            self._container = av.open(tmp, mode="w", format="mp4")
            stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            stream.width, stream.height = w + w % 2, h + h % 2
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(self.crf), "preset": "veryfast"}
            self._stream = stream
        else:
            self._cv2 = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._cv2.isOpened():
                self.abort()
                raise VideoError(self.path, "OpenCV could not open an mp4v writer")

    def write(self, frame: np.ndarray) -> None:
        """Append one H x W x 3 uint8 RGB frame (every frame the size of the first)."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames must be H x W x 3 uint8 RGB, got {frame.dtype} {frame.shape}")
        if self._size is None:
            self._open(*frame.shape[:2])
        if frame.shape[:2] != self._size:
            raise ValueError(f"frame {frame.shape[:2]} differs from the video's {self._size}")
        if self.codec == "h264":
            import av

            h, w = self._size
            if h % 2 or w % 2:
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                self._container.mux(packet)
        else:
            self._cv2.write(np.ascontiguousarray(frame[..., ::-1]))
        self.frames_written += 1

    def close(self) -> Path | None:
        """Finish the file and move it into place; returns its path (None when no frame was written)."""
        if self._tmp is None:
            return None
        try:
            if self._container is not None:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
                self._container.close()
            if self._cv2 is not None:
                self._cv2.release()
            self._name.release()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._tmp = self._container = self._stream = self._cv2 = None
        return self.path

    def abort(self) -> None:
        """Stop and delete the unfinished file; the target is untouched."""
        with contextlib.suppress(Exception):
            if self._container is not None:
                self._container.close()
        with contextlib.suppress(Exception):
            if self._cv2 is not None:
                self._cv2.release()
        if self._name is not None:
            self._name.release()
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
        self._tmp = self._container = self._stream = self._cv2 = self._name = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
