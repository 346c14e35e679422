"""One task of a run: its predictor, split into the pipeline's stages, and the files it writes.

Stages (see `sapiens2.runner.pipeline`): `prepare` runs in the reader threads (for pose: person detection
and the crops; for dense tasks: the resize to the network input), `infer` on the main thread (the
network, a batch at a time), `finish` and `save` in the writer threads (heatmap decoding, pictures,
files). Every file is written atomically.

What `--save` kinds mean per task (kinds a task does not have are ignored; the task's default when
--save is not given is marked *):

| task | json | npz (arrays) | png | ply | vis (picture) |
|---|---|---|---|---|---|
| pose | `_pose.json`* | `_pose.npz` | | | `_pose.jpg`* |
| seg | | `_seg.npy`* (int64 labels) | `_seg.png` (8-bit labels) | | `_seg.jpg`* |
| normal | | `_normal.npy`* | | | `_normal.jpg`* |
| pointmap | | `_depth.npy`*, `_points.npy`* | | `.ply`* | `_pointmap.jpg`* |
| albedo | | `_albedo.npy` | `_albedo.png`* | | `_albedo.jpg`* |
| matting | | `_matting.npz` | `_alpha.png`*, `_cutout.png`* | | `_matting.jpg`* |
| depth | | `_reldepth.npy`* | | | `_depth.jpg`* |

Pictures are [photo | result] side by side for dense tasks (as the reference saves them) and the
photo with skeletons for pose. For videos, `vis` is an annotated video (`_<task>.mp4`) and pose `json`
one file with every frame; other kinds are written per frame into a folder named after the video.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from sapiens2.io.writers import write_image, write_json, write_npy, write_npz
from sapiens2.keypoints.convert import convert_keypoints, keypoint_mapping
from sapiens2.runner.sources import Source
from sapiens2.tasks import dense_outputs
from sapiens2.tasks.dense import (
    DensePredictor,
    DepthResult,
    MattingResult,
    PointmapResult,
)
from sapiens2.tasks.pose import Person, Pose, PoseResult
from sapiens2.tasks.topdown import (
    INPUT_SIZE,
    TopdownCrops,
    crop_people,
    heatmaps_to_keypoints,
)
from sapiens2.vis.dense import side_by_side
from sapiens2.vis.pose import draw_pose

__all__ = ["DEFAULT_SAVES", "FORMATS", "SAVE_KINDS", "TASK_SAVES", "DenseJob", "Job", "PoseJob", "parse_saves"]

SAVE_KINDS = ("json", "npz", "png", "ply", "vis")
TASK_SAVES = {"pose": {"json", "npz", "vis"}, "seg": {"npz", "png", "vis"}, "normal": {"npz", "vis"},
              "pointmap": {"npz", "ply", "vis"}, "albedo": {"npz", "png", "vis"}, "matting": {"npz", "png", "vis"},
              "depth": {"npz", "vis"}}
DEFAULT_SAVES = {"pose": {"json", "vis"}, "seg": {"npz", "vis"}, "normal": {"npz", "vis"},
                 "pointmap": {"npz", "ply", "vis"}, "albedo": {"png", "vis"}, "matting": {"png", "vis"},
                 "depth": {"npz", "vis"}}
#: --format names -> `sapiens2.keypoints.convert` format names.
FORMATS = {"coco17": "coco17", "wholebody133": "coco_wholebody133", "openpose25": "openpose_body25",
           "openpose18": "openpose_body18"}
PICTURE = ".jpg"


def parse_saves(text: str | None, task: str) -> frozenset[str]:
    """The kinds `task` writes for a --save value (None: the task's defaults)."""
    if text is None:
        return frozenset(DEFAULT_SAVES[task])
    kinds = {k.strip().lower() for k in text.split(",") if k.strip()}
    kinds = {"npz" if k == "npy" else k for k in kinds}
    unknown = kinds - set(SAVE_KINDS)
    if unknown:
        raise ValueError(f"--save: unknown kind(s) {', '.join(sorted(unknown))}; expected some of {', '.join(SAVE_KINDS)}")
    return frozenset(kinds & TASK_SAVES[task])


class Job:
    """The interface every task job has; see the module docstring for which thread calls what."""

    task: str
    saves: frozenset[str]

    def prepare(self, image: np.ndarray, source: Source) -> Any:
        raise NotImplementedError

    def infer(self, prepared: list[Any]) -> list[Any]:
        raise NotImplementedError

    def finish(self, raw: Any, prepared: Any, image: np.ndarray, source: Source) -> Any:
        return raw

    def picture(self, result: Any, image: np.ndarray, **options: Any) -> np.ndarray:
        raise NotImplementedError

    def files(self, kinds: Iterable[str]) -> list[str]:
        """Output suffixes (after the stem) for these save kinds, in writing order."""
        raise NotImplementedError

    def outputs(self, source: Source, out_dir: Path) -> list[Path]:
        """Every file an image source gets."""
        return [source.out(out_dir, s) for s in self.files(self.saves)]

    def video_outputs(self, source: Source, out_dir: Path) -> list[Path]:
        """The files a video gets as a whole (per-frame files are not checked by --resume)."""
        return [source.out(out_dir, f"_{self.task}.mp4")] if "vis" in self.saves else []

    def save(self, result: Any, image: np.ndarray, source: Source, out_dir: Path,
             kinds: Iterable[str] | None = None) -> list[Path]:
        raise NotImplementedError


# ------------------------------------------------------------------------------------------------ pose


@dataclass
class PosePrepared:
    boxes: np.ndarray  # (N, 5)
    box_source: str
    crops: TopdownCrops | None


class PoseJob(Job):
    """Top-down pose through `sapiens2.Pose`'s pieces, split so that detection and cropping run in the
    reader threads and heatmap decoding in the writer threads. `boxes` maps an input's file name, its path
    relative to the input root, or its full path to given boxes, which skip the detector."""

    task = "pose"

    def __init__(self, pose: Pose, saves: frozenset[str], *, keypoint_format: str | None = None,
                 boxes: dict[str, Any] | None = None, kpt_thr: float = 0.3, radius: int = 3,
                 thickness: int = 1) -> None:
        self.pose = pose
        self.saves = saves
        self.format = FORMATS.get(keypoint_format, keypoint_format) if keypoint_format else None
        if self.format is not None:
            keypoint_mapping(self.format)  # unknown names fail here, before any work
            if len(pose.keypoint_set) != 308:
                raise ValueError(f"--format converts 308-keypoint predictions; this model gives {len(pose.keypoint_set)}")
        self.given = boxes or {}
        self.kpt_thr, self.radius, self.thickness = kpt_thr, radius, thickness
        self._detector_lock = threading.Lock()

    # -- stages
    def _given_boxes(self, source: Source) -> Any | None:
        if not self.given or source.path is None:
            return None
        for key in (str(source.path), source.path.name, source.rel.as_posix()):
            if key in self.given:
                return self.given[key]
        return None

    def prepare(self, image: np.ndarray, source: Source) -> PosePrepared:
        given = self._given_boxes(source)
        detected = None
        if given is None and self.pose.detector is not None:
            with self._detector_lock:  # one detection at a time: the detector shares the device with the pose network
                detected = self.pose.detect([image])[0]
        boxes, box_source = self.pose.choose_boxes(image, given, detected)
        crops = crop_people(image, boxes[:, :4], self.pose.box_padding, INPUT_SIZE) if len(boxes) else None
        return PosePrepared(boxes, box_source, crops)

    @torch.inference_mode()
    def infer(self, prepared: list[PosePrepared]) -> list[np.ndarray | None]:
        counts = [0 if p.crops is None else len(p.crops) for p in prepared]
        if not sum(counts):
            return [None] * len(prepared)
        crops = np.concatenate([p.crops.crops for p in prepared if p.crops is not None])
        bs = self.pose.batch_size
        heat = np.concatenate([self.pose.heatmaps(crops[s:s + bs]) for s in range(0, len(crops), bs)])
        out, start = [], 0
        for n in counts:
            out.append(heat[start:start + n] if n else None)
            start += n
        return out

    def finish(self, raw: np.ndarray | None, prepared: PosePrepared, image: np.ndarray, source: Source) -> PoseResult:
        people = []
        if raw is not None and prepared.crops is not None:
            crops = prepared.crops
            kp, scores = heatmaps_to_keypoints(raw, crops.centers, crops.scales, INPUT_SIZE)
            for j in range(len(crops)):
                people.append(Person(crops.boxes[j].copy(), float(prepared.boxes[j, 4]), kp[j].astype(np.float32),
                                     scores[j].astype(np.float32)))
        return PoseResult(people, image.shape[:2], self.pose.keypoint_set, prepared.box_source, source.path)

    # -- records and pictures
    @property
    def format_name(self) -> str:
        return self.format or self.pose.keypoint_set.name

    def format_names(self) -> tuple[str, ...]:
        return keypoint_mapping(self.format).names if self.format else self.pose.keypoint_set.names

    def keypoints_out(self, keypoints: np.ndarray) -> np.ndarray:
        """(N, K, 3) in the model's set -> (N, K', 3) in the output format."""
        if self.format is None or len(keypoints) == 0:
            if self.format is not None:
                return np.zeros((0, len(self.format_names()), 3), np.float32)
            return keypoints
        return convert_keypoints(keypoints[..., :2], keypoints[..., 2], to=self.format).as_triplets()

    def instances(self, result: PoseResult, keypoints: np.ndarray | None = None,
                  track_ids: list[int] | None = None) -> list[dict[str, Any]]:
        """JSON instances: box, box score, keypoints [[x, y], ...] and their scores (raw heatmap maxima)."""
        kp = self.keypoints_out(result.keypoints() if keypoints is None else keypoints)
        boxes = result.boxes()
        out = []
        for i in range(len(boxes)):
            entry: dict[str, Any] = {}
            if track_ids is not None:
                entry["track_id"] = track_ids[i]
            entry.update(bbox=[round(float(v), 2) for v in boxes[i, :4]], bbox_score=round(float(boxes[i, 4]), 5),
                         keypoints=np.round(kp[i, :, :2].astype(np.float64), 2).tolist(),
                         keypoint_scores=np.round(kp[i, :, 2].astype(np.float64), 5).tolist())
            out.append(entry)
        return out

    def header(self) -> dict[str, Any]:
        return {"keypoint_format": self.format_name, "num_keypoints": len(self.format_names()),
                "kpt_thr_used": self.kpt_thr}

    def metadata(self) -> dict[str, Any]:
        """Names (and skeleton, for the shipped sets) of the output keypoints: `pose_keypoints.json`."""
        meta: dict[str, Any] = {"keypoint_format": self.format_name, "names": list(self.format_names())}
        if self.format is None:
            meta["skeleton_links"] = [list(link) for link in self.pose.keypoint_set.skeleton_links]
        return meta

    def picture(self, result: PoseResult, image: np.ndarray, keypoints: np.ndarray | None = None,
                track_ids: list[int] | None = None, **options: Any) -> np.ndarray:
        kp = result.keypoints() if keypoints is None else keypoints
        canvas = np.ascontiguousarray(image).copy()
        if track_ids is not None:
            from sapiens2.runner.video import draw_track_boxes

            canvas = draw_track_boxes(canvas, result.boxes()[:, :4], track_ids, max(1, self.thickness))
        if len(kp) == 0:
            return canvas
        return draw_pose(canvas, kp[..., :2], kp[..., 2], kpt_thr=self.kpt_thr, radius=self.radius,
                         thickness=self.thickness, boxes=None if track_ids is not None else result.boxes()[:, :4],
                         keypoint_set=result.keypoint_set, channel_order="rgb")

    def files(self, kinds: Iterable[str]) -> list[str]:
        kinds = set(kinds)
        return [s for k, s in (("json", "_pose.json"), ("npz", "_pose.npz"), ("vis", f"_pose{PICTURE}")) if k in kinds]

    def video_outputs(self, source: Source, out_dir: Path) -> list[Path]:
        return [source.out(out_dir, s) for k, s in (("json", "_pose.json"), ("vis", "_pose.mp4")) if k in self.saves]

    def save(self, result: PoseResult, image: np.ndarray, source: Source, out_dir: Path,
             kinds: Iterable[str] | None = None) -> list[Path]:
        kinds = set(self.saves if kinds is None else kinds)
        paths = []
        if "json" in kinds:
            record = {"image": str(source.path) if source.path else None, "image_size": list(result.image_size),
                      **self.header(), "box_source": result.box_source, "instances": self.instances(result)}
            paths.append(write_json(source.out(out_dir, "_pose.json"), record, indent=None))
        if "npz" in kinds:
            kp = self.keypoints_out(result.keypoints())
            paths.append(write_npz(source.out(out_dir, "_pose.npz"), keypoints=kp[..., :2].astype(np.float32),
                                   scores=kp[..., 2].astype(np.float32), boxes=result.boxes()))
        if "vis" in kinds:
            paths.append(write_image(source.out(out_dir, f"_pose{PICTURE}"), self.picture(result, image)))
        return paths


# ------------------------------------------------------------------------------------------------ dense


class DenseJob(Job):
    """A dense predictor (`Segmenter`, `Normals`, `Pointmap`, `Albedo`, `Matting`, or Sapiens v1's `Depth`)."""

    def __init__(self, task: str, predictor: DensePredictor, saves: frozenset[str]) -> None:
        self.task = task
        self.predictor = predictor
        self.saves = saves

    def prepare(self, image: np.ndarray, source: Source) -> Any:
        return self.predictor.prepare(image)

    def infer(self, prepared: list[Any]) -> list[Any]:
        return self.predictor.run(prepared)

    def picture(self, result: Any, image: np.ndarray, depth_bounds: tuple[float, float] | None = None,
                **options: Any) -> np.ndarray:
        if isinstance(result, DepthResult):
            return side_by_side(image, result.picture())
        if isinstance(result, PointmapResult):
            return dense_outputs.picture(result, image, depth_bounds=depth_bounds)
        return dense_outputs.picture(result, image)

    _FILES: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {
        "seg": (("npz", "_seg.npy"), ("png", "_seg.png")),
        "normal": (("npz", "_normal.npy"),),
        "pointmap": (("npz", "_depth.npy"), ("npz", "_points.npy"), ("ply", ".ply")),
        "albedo": (("npz", "_albedo.npy"), ("png", "_albedo.png")),
        "matting": (("npz", "_matting.npz"), ("png", "_alpha.png"), ("png", "_cutout.png")),
        "depth": (("npz", "_reldepth.npy"),),
    }

    def files(self, kinds: Iterable[str]) -> list[str]:
        kinds = set(kinds)
        out = [s for k, s in self._FILES[self.task] if k in kinds]
        return out + ([f"_{self.task}{PICTURE}"] if "vis" in kinds else [])

    def save(self, result: Any, image: np.ndarray, source: Source, out_dir: Path,
             kinds: Iterable[str] | None = None) -> list[Path]:
        kinds = set(self.saves if kinds is None else kinds)
        out = lambda suffix: source.out(out_dir, suffix)
        paths: list[Path] = []
        t = self.task
        if t == "seg":
            if "npz" in kinds:
                paths.append(write_npy(out("_seg.npy"), result.labels.astype(np.int64)))
            if "png" in kinds:
                paths.append(write_image(out("_seg.png"), result.labels.astype(np.uint8)))
        elif t == "normal" and "npz" in kinds:
            paths.append(write_npy(out("_normal.npy"), result.normals.astype(np.float32)))
        elif t == "pointmap":
            if "npz" in kinds:
                paths.append(write_npy(out("_depth.npy"), result.depth.astype(np.float16)))
                paths.append(write_npy(out("_points.npy"), result.points.astype(np.float32)))
            if "ply" in kinds:
                paths.append(result.save_ply(out(".ply"), image))
        elif t == "albedo":
            if "npz" in kinds:
                paths.append(write_npy(out("_albedo.npy"), result.albedo.astype(np.float32)))
            if "png" in kinds:
                paths.append(write_image(out("_albedo.png"), (np.clip(result.albedo, 0, 1) * 255).astype(np.uint8)))
        elif t == "matting":
            assert isinstance(result, MattingResult)
            if "npz" in kinds:
                paths.append(write_npz(out("_matting.npz"), alpha=result.alpha.astype(np.float32),
                                       foreground=result.foreground.astype(np.float32)))
            if "png" in kinds:
                paths.append(write_image(out("_alpha.png"), (np.clip(result.alpha, 0, 1) * 65535 + 0.5).astype(np.uint16)))
                paths.append(write_image(out("_cutout.png"), result.rgba(image)))
        elif t == "depth" and "npz" in kinds:
            paths.append(write_npy(out("_reldepth.npy"), result.depth.astype(np.float32)))
        if "vis" in kinds:
            paths.append(write_image(out(f"_{t}{PICTURE}"), self.picture(result, image)))
        return paths


def attach_masks(results: dict[str, Any]) -> dict[str, Any]:
    """With segmentation in the run, its foreground masks the pictures and PLY of the other dense results
    (as the reference's --seg_dir does); the arrays are untouched."""
    seg = results.get("seg")
    if seg is None:
        return results
    return {task: (r.with_mask(seg) if task != "seg" and hasattr(r, "with_mask") else r) for task, r in results.items()}
