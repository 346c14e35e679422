"""One video (or webcam stream) being written: tracks, smoothing, the annotated videos and the pose JSON.

Frames arrive here in order (the pipeline's sink thread). Pose: people get stable IDs from
`sapiens2.track.Tracker`; with smoothing on (the default for video) each track's keypoints go through a
One-Euro filter before they are drawn and saved. Every task with `vis` gets its own annotated video;
pose with `json` one `_pose.json` holding every frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.io.video import VideoWriter
from sapiens2.io.writers import write_json
from sapiens2.runner.jobs import Job
from sapiens2.runner.sources import Source
from sapiens2.tasks.outputs import video_suffixes
from sapiens2.tasks.pose import format_header
from sapiens2.track import KeypointSmoother, Tracker
from sapiens2.vis.dense import depth_bounds

__all__ = ["VideoSession"]


class VideoSession:
    def __init__(self, source: Source, jobs: list[Job], out_dir: Path, fps: float, *, codec: str = "auto",
                 smooth: bool = True, track_threshold: float = 0.3, track_max_age: int = 30,
                 track_metric: str = "iou", track_motion: bool = True) -> None:
        self.source, self.jobs, self.out_dir, self.fps = source, jobs, out_dir, fps
        self.writers = {job.task: VideoWriter(source.out(out_dir, next(s for s in video_suffixes(job.task, {"vis"}))),
                                              fps, codec)
                        for job in jobs if "vis" in job.saves}
        self.tracker = Tracker(threshold=track_threshold, max_age=track_max_age, metric=track_metric,
                               motion=track_motion)
        self.smoother = KeypointSmoother() if smooth else None
        self.smooth = smooth
        self.pose_frames: list[dict[str, Any]] = []
        self.image_size: tuple[int, int] | None = None
        self.bounds: tuple[float, float] | None = None  # pointmap colours: fixed by the first frame with a foreground
        self.frames = 0

    @property
    def note(self) -> str | None:
        return next((w.note for w in self.writers.values()), None)

    def add(self, frame: int, time: float, image: np.ndarray, results: dict[str, Any] | None) -> None:
        """One frame's results (None: the frame failed; its picture is the plain frame)."""
        self.frames += 1
        self.image_size = self.image_size or tuple(image.shape[:2])
        for job in self.jobs:
            result = None if results is None else results.get(job.task)
            if job.task == "pose":
                picture = self._pose(job, frame, time, image, result)
            elif result is None:
                picture = np.concatenate([image, np.zeros_like(image)], axis=1)
            else:
                if job.task == "pointmap" and self.bounds is None:
                    self.bounds = depth_bounds(result.depth, result.mask)
                picture = job.picture(result, image, depth_bounds=self.bounds)
            if job.task in self.writers:
                self.writers[job.task].write(picture)

    def _pose(self, job: Job, frame: int, time: float, image: np.ndarray, result: Any) -> np.ndarray:
        if result is None:
            self.pose_frames.append({"frame": frame, "time": round(time, 4), "error": True, "instances": []})
            return image
        kp = result.keypoints().astype(np.float64)
        ids = self.tracker.update(result.boxes()[:, :4], kp)
        if self.smoother is not None:
            kp = np.stack([self.smoother(tid, kp[i], time) for i, tid in enumerate(ids)]) if ids else kp
            self.smoother.forget(t.id for t in self.tracker.tracks)
        self.pose_frames.append({"frame": frame, "time": round(time, 4), "box_source": result.box_source,
                                 "instances": result.instances(job.options.get("keypoint_format"), kp, ids)})
        if "vis" not in job.saves:
            return image
        return job.picture(result, image, keypoints=kp, track_ids=ids)

    def close(self, problem: str | None = None) -> list[Path]:
        """Finish every video and write the pose JSON (with `problem`, it says the video is incomplete and
        why); returns the files."""
        paths = [p for p in (w.close() for w in self.writers.values()) if p is not None]
        for job in self.jobs:
            if job.task == "pose" and "json" in job.saves:
                header = format_header(job.predictor.keypoint_set, job.options.get("keypoint_format"),
                                       job.options.get("kpt_thr", 0.3))
                record = {"video": self.source.name, "fps": self.fps,
                          "image_size": list(self.image_size) if self.image_size else None, **header,
                          "smoothing": "one-euro" if self.smooth else None,
                          "tracking": {"metric": self.tracker.metric, "motion": self.tracker.motion,
                                       "max_age": self.tracker.max_age},
                          "num_frames": self.frames,
                          "complete": problem is None,
                          **({"problem": problem} if problem else {}),
                          "frames": self.pose_frames}
                paths.append(write_json(self.source.out(self.out_dir, video_suffixes("pose", {"json"})[0]), record, indent=None))
        return paths

    def abort(self) -> None:
        """Delete the unfinished videos (nothing of this video is left)."""
        for w in self.writers.values():
            w.abort()
