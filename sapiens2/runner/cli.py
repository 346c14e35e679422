"""The task sub-commands of `sapiens2`: pose, seg, normal, pointmap, albedo, matting, depth, run, demo.

`add_task_commands(sub)` registers them on the main parser. Each handler parses its options, builds the
jobs (`sapiens2.runner.jobs`), runs them (`sapiens2.runner.pipeline`) and prints a summary.

Exit codes: 0 everything done; 1 some inputs failed (listed in <out>/errors.json); 2 the run could not
start (bad option, missing weights, no input); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["TASKS", "add_task_commands", "demo_photo"]

TASKS = ("pose", "seg", "normal", "pointmap", "albedo", "matting", "depth")
DEMO_TASKS = ("pose", "seg", "normal")
EXIT_USAGE = 2
_HELP = {
    "pose": "308-keypoint whole-body pose (person detector, crops, heatmaps) with pictures and JSON",
    "seg": "29-class body-part segmentation",
    "normal": "surface normals",
    "pointmap": "metric pointmaps (depth, points, PLY)",
    "albedo": "albedo (RGB reflectance)",
    "matting": "alpha matte and cutout",
    "depth": "relative depth (Sapiens v1 models, sapiens-depth-<size>)",
}


def demo_photo() -> Path:
    """The bundled photo of a person (public domain, see sapiens2/data/demo/README.md)."""
    return Path(__file__).resolve().parents[1] / "data" / "demo" / "astronaut.jpg"


# ------------------------------------------------------------------------------------------------ parser


def _common(p: argparse.ArgumentParser, *, inputs: bool = True) -> None:
    if inputs:
        p.add_argument("inputs", nargs="*", metavar="INPUT",
                       help="image files, folders (recursive), globs, .txt lists of paths, videos")
        p.add_argument("--webcam", type=int, metavar="INDEX", help="also run on this webcam (Ctrl-C ends it)")
    p.add_argument("--out", "-o", default=None, metavar="DIR", help="output folder (default: sapiens2_output)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="images per forward pass (default 4)")
    p.add_argument("--save", metavar="KINDS", help="what to write, comma-separated: json,npz,png,ply,vis "
                   "(default: each task's own; see docs/CLI.md)")
    p.add_argument("--resume", action="store_true", help="skip inputs whose outputs all exist")
    p.add_argument("--allow-pickle", action="store_true", help="read .pth checkpoints (weights only, no code)")
    p.add_argument("--input-size", metavar="HxW",
                   help="network input (pose: crop) size of a custom model; default 1024x768, or the size a v1 "
                        "model was trained at")
    p.add_argument("--readers", type=int, default=min(4, os.cpu_count() or 1), metavar="N",
                   help="decoding threads (default: up to 4)")
    p.add_argument("--writers", type=int, default=2, metavar="N", help="post-processing/writing threads (default 2)")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse images larger than this many pixels (decompression bombs; default 2^27)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--codec", default="auto", choices=["auto", "h264", "mp4v"],
                   help="annotated videos: H.264 with PyAV when installed (auto), or OpenCV mp4v")
    # pose (ignored by the other tasks)
    g = p.add_argument_group("pose")
    g.add_argument("--detector", default="rtmdet", choices=["rtmdet", "none"],
                   help="person detector (none: the whole image is one person, or --boxes)")
    g.add_argument("--boxes", metavar="JSON", help="COCO-style detections JSON keyed by file_name: skip the detector")
    g.add_argument("--format", dest="keypoint_format", choices=["coco17", "wholebody133", "openpose25", "openpose18"],
                   help="write keypoints converted to this format (pictures keep all 308)")
    g.add_argument("--flip-test", action="store_true", help="average with the mirrored image's heatmaps")
    g.add_argument("--kpt-thr", type=float, default=0.3, help="draw keypoints scored at least this (default 0.3)")
    g.add_argument("--radius", type=int, default=3)
    g.add_argument("--thickness", type=int, default=1)
    g = p.add_argument_group("video")
    g.add_argument("--no-smooth", action="store_true", help="no One-Euro smoothing of video keypoints")
    g.add_argument("--track-max-age", type=int, default=30, metavar="FRAMES",
                   help="keep an unseen person's ID this many frames (default 30)")
    g.add_argument("--no-track-motion", action="store_true",
                   help="match people where they were last seen, not where their motion puts them")


def add_task_commands(sub: Any) -> None:
    """Register the task sub-commands on the `sapiens2` sub-parsers."""
    for task in TASKS:
        p = sub.add_parser(task, help=_HELP[task], description=_HELP[task])
        _common(p)
        p.add_argument("--model", "-m", metavar="SIZE|NAME|PATH",
                       help="model size (e.g. 0.4b, 1b), official name, hub id or checkpoint file")
        p.set_defaults(func=_cmd_task, tasks=task)

    p = sub.add_parser("run", help="several tasks in one pass over the inputs (each image decoded once)")
    p.add_argument("--tasks", "-t", required=True, help=f"comma-separated, from {','.join(TASKS)}")
    _common(p)
    p.add_argument("--model", "-m", action="append", default=[], metavar="[TASK=]MODEL",
                   help="a size for every task (--model 1b) or per task (--model seg=1b --model pose=PATH)")
    p.set_defaults(func=_cmd_task)

    p = sub.add_parser("demo", help="run the default models on the bundled photo and write pictures")
    p.add_argument("--tasks", "-t", default=",".join(DEMO_TASKS), help=f"default {','.join(DEMO_TASKS)}")
    _common(p, inputs=False)
    p.add_argument("--model", "-m", action="append", default=[], metavar="[TASK=]MODEL")
    p.set_defaults(func=_cmd_demo, inputs=[], webcam=None)


# ------------------------------------------------------------------------------------------------ handlers


def _tasks(text: str) -> list[str]:
    tasks = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown task(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(TASKS)}")
    return list(dict.fromkeys(tasks))


def _models(values: Any, tasks: list[str]) -> dict[str, str | None]:
    """--model values -> the spec per task (None: the default)."""
    if values is None or isinstance(values, str):
        values = [] if values is None else [values]
    out: dict[str, str | None] = {t: None for t in tasks}
    for v in values:
        task, sep, spec = v.partition("=")
        if sep and task in TASKS:
            if task not in out:
                raise ValueError(f"--model {v}: {task} is not among the tasks ({', '.join(tasks)})")
            out[task] = spec
        else:
            if len(tasks) > 1 and not _is_size(v):
                raise ValueError(f"--model {v}: with several tasks give a size or TASK=MODEL")
            for t in tasks:
                out[t] = v
    return out


def _is_size(text: str) -> bool:
    import re

    return re.fullmatch(r"\d+(\.\d+)?b", text.lower()) is not None


def _input_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--input-size {text}: expected HxW, e.g. 1024x768") from None
    return h, w


def _given_boxes(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    from sapiens2.tasks.pose import read_coco_detections

    found = read_coco_detections(path)
    if found and not any(isinstance(k, str) for k in found):
        raise ValueError(f"--boxes {path}: entries need a 'file_name' to be matched to the inputs")
    return {str(k): v for k, v in found.items()}


def build_jobs(tasks: list[str], args: argparse.Namespace, device: Any, dtype: Any) -> list[Any]:
    """Load every task's network and wrap it in its job (weights errors propagate)."""
    from sapiens2.runner import jobs as J
    from sapiens2.runner.models import load_network
    from sapiens2.tasks.dense import predictor_for
    from sapiens2.tasks.pose import Pose

    specs = _models(args.model, tasks)
    built = []
    size = _input_size(args.input_size)
    for task in tasks:
        saves = J.parse_saves(args.save, task)
        if not saves:
            raise ValueError(f"--save {args.save}: nothing for {task} to write (it writes {', '.join(sorted(J.TASK_SAVES[task]))})")
        net = load_network(task, specs[task], device, dtype, args.allow_pickle)
        if task == "pose":
            pose = Pose(net, detector=None if args.detector == "none" else "rtmdet", device=device, dtype=dtype,
                        flip_test=args.flip_test, batch_size=args.batch_size, input_size=size)
            built.append(J.PoseJob(pose, saves, keypoint_format=args.keypoint_format, boxes=_given_boxes(args.boxes),
                                   kpt_thr=args.kpt_thr, radius=args.radius, thickness=args.thickness))
        else:
            kwargs = {"device": device, "dtype": dtype, "batch_size": args.batch_size, "input_size": size}
            predictor = predictor_for(task)(net, **kwargs)
            built.append(J.DenseJob(task, predictor, saves))
    return built


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _cmd_task(args: argparse.Namespace) -> int:
    try:
        tasks = _tasks(args.tasks)
    except ValueError as e:
        return _error(str(e))
    if not args.inputs and args.webcam is None:
        return _error("give at least one INPUT (file, folder, glob, .txt list, video) or --webcam INDEX")
    return _run(tasks, args, args.inputs)


def _run(tasks: list[str], args: argparse.Namespace, inputs: list[str]) -> int:
    import sapiens2
    from sapiens2.runner.models import resolve_device, resolve_dtype
    from sapiens2.runner.pipeline import RunOptions, run_jobs
    from sapiens2.runner.sources import collect_sources

    sources, missing = collect_sources(inputs, args.webcam)
    if not sources:
        for m in missing:
            print(f"error: {m}", file=sys.stderr)
        return _error("no image or video to process")
    try:
        device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
        jobs = build_jobs(tasks, args, device, dtype)
    except sapiens2.UnsafeCheckpointError as e:
        return _error(f"{e}\nAdd --allow-pickle to read it weights-only, or convert it once with "
                      "`sapiens2 convert FILE.pth`.")
    except (sapiens2.CheckpointError, FileNotFoundError, ValueError) as e:
        return _error(str(e))
    out = Path(args.out or "sapiens2_output")
    _write_pose_metadata(jobs, out)
    options = RunOptions(out, batch_size=args.batch_size, readers=args.readers, writers=args.writers,
                         resume=args.resume, progress=False if args.no_progress else None,
                         max_pixels=args.max_pixels or _default_max_pixels(), codec=args.codec,
                         smooth=not args.no_smooth, track_max_age=args.track_max_age,
                         track_motion=not args.no_track_motion)
    print(f"sapiens2 {','.join(tasks)}: {len(sources)} input(s) on {device} ({args.dtype}), batch {args.batch_size}"
          f" -> {out}", file=sys.stderr)
    summary = run_jobs(jobs, sources, options, missing)
    _print_summary(summary, out)
    return summary.exit_code


def _default_max_pixels() -> int:
    from sapiens2.io.images import DEFAULT_MAX_PIXELS

    return DEFAULT_MAX_PIXELS


def _write_pose_metadata(jobs: list[Any], out: Path) -> None:
    from sapiens2.io.writers import write_json
    from sapiens2.runner.jobs import PoseJob

    for job in jobs:
        if isinstance(job, PoseJob) and "json" in job.saves:
            write_json(out / "pose_keypoints.json", job.metadata())


def _print_summary(summary: Any, out: Path) -> None:
    parts = [f"{summary.images_done} image(s)"]
    if summary.videos_done or summary.frames_done:
        parts.append(f"{summary.videos_done} video(s) ({summary.frames_done} frames)")
    items = summary.images_done + summary.frames_done
    rate = f", {items / summary.seconds:.2f} items/s" if summary.seconds > 0 and items else ""
    line = f"done: {', '.join(parts)} in {summary.seconds:.1f} s{rate}"
    if summary.skipped:
        line += f"; skipped {summary.skipped} already done"
    print(line, file=sys.stderr)
    for note in sorted(summary.video_notes):
        print(f"videos: {note}", file=sys.stderr)
    if summary.failures:
        print(f"failed: {len(summary.failures)} (see {summary.errors_path})", file=sys.stderr)
    if summary.interrupted:
        print("interrupted: run the same command with --resume to finish", file=sys.stderr)
    print(f"outputs: {out}")


def _cmd_demo(args: argparse.Namespace) -> int:
    from sapiens2.runner.models import missing_weights, model_name

    try:
        tasks = _tasks(args.tasks)
        specs = _models(args.model, tasks)
        names = [model_name(t, specs[t]) for t in tasks]
    except ValueError as e:
        return _error(str(e))
    if "pose" in tasks and args.detector == "rtmdet":
        names.append("rtmdet-m-person")
    missing = missing_weights(names)
    if missing:
        listed = "\n".join(f"  - {name}: {msg.splitlines()[0]}" for name, msg in missing)
        print(f"error: the demo needs weights that are not on this machine:\n{listed}\n\n"
              f"Get them (about 1 GB each for 0.4b) with:\n\n    sapiens2 download {' '.join(n for n, _ in missing)}\n\n"
              "or put the files in the reference layout under $SAPIENS_CHECKPOINT_ROOT (default ~/sapiens2_host), "
              "e.g. pose/sapiens2_0.4b_pose.safetensors and detector/rtmdet_m.pth; `sapiens2 models` shows "
              "what is found.", file=sys.stderr)
        return EXIT_USAGE
    photo = demo_photo()
    if not photo.is_file():
        return _error(f"the bundled demo photo is missing ({photo.name}); reinstall sapiens2")
    args.out = args.out or "sapiens2_demo"
    args.resume = False
    code = _run(tasks, args, [str(photo)])
    if code == 0:
        print(f"pictures: {', '.join(str(Path(args.out) / f'astronaut_{t}.jpg') for t in tasks)}")
    return code
