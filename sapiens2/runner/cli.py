"""The task sub-commands of `sapiens2`: pose, seg, normal, pointmap, albedo, matting, depth, run, demo.

`add_task_commands(sub)` registers them on the main parser. Each handler parses its options, builds the
jobs (`sapiens2.runner.jobs`), runs them (`sapiens2.runner.pipeline`) and prints a summary.

Exit codes: 0 everything done; 1 some inputs failed (listed in <out>/errors.json); 2 the run could not
start (bad option, missing weights, no input); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path
from typing import Any

from sapiens2.option_types import height_width, number, whole

__all__ = ["add_task_commands", "demo_photo", "parse_models", "parse_tasks"]

DEMO_TASKS = ("pose", "seg", "normal")
EXIT_USAGE = 2
DEFAULT_OUT = "sapiens2_output"
DEMO_OUT = "sapiens2_demo"
#: --format choices: the canonical names of `sapiens2.keypoints.convert.FORMATS`, then their short aliases
#: (kept here as literals so that building the parser imports nothing heavy; a test checks they agree).
FORMAT_CHOICES = ("coco17", "coco_wholebody133", "openpose_body25", "openpose_body18", "wholebody133", "openpose25",
                  "openpose18")


def demo_photo() -> Path:
    """The bundled photo of a person (public domain, see sapiens2/data/demo/README.md)."""
    return Path(__file__).resolve().parents[1] / "data" / "demo" / "astronaut.jpg"


# ------------------------------------------------------------------------------------------------ parser


def _common(p: argparse.ArgumentParser, *, inputs: bool = True, out_default: str = DEFAULT_OUT) -> None:
    if inputs:
        p.add_argument("inputs", nargs="*", metavar="INPUT",
                       help="image files, folders (recursive), globs, .txt lists of paths, videos")
        p.add_argument("--webcam", type=whole(0), metavar="INDEX",
                       help="also run on this webcam (Ctrl-C ends it)")
    p.add_argument("--out", "-o", default=None, metavar="DIR", help=f"output folder (default: {out_default})")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="network precision (default fp32; bf16/fp16 are for GPUs)")
    p.add_argument("--batch-size", type=whole(1), default=4, metavar="N",
                   help="images (pose: person crops) per forward pass (default 4)")
    p.add_argument("--save", metavar="KINDS", help="what to write, comma-separated: json,npz,png,ply,vis "
                   "(default: each task's own; see docs/CLI.md)")
    p.add_argument("--resume", action="store_true", help="skip inputs whose outputs all exist")
    p.add_argument("--allow-pickle", action="store_true", help="read .pth checkpoints (weights only, no code)")
    p.add_argument("--allow-code", action="store_true",
                   help="run TorchScript / torch.export model files (v1 lite releases): they carry code, so only "
                        "for files you trust")
    p.add_argument("--input-size", metavar="HxW", type=height_width,
                   help="network input (pose: crop) size of a custom model; default 1024x768, or the size a v1 "
                        "model was trained at")
    p.add_argument("--readers", type=whole(1), default=min(4, os.cpu_count() or 1), metavar="N",
                   help="decoding threads (default: up to 4)")
    p.add_argument("--writers", type=whole(1), default=2, metavar="N",
                   help="post-processing/writing threads (default 2)")
    p.add_argument("--max-pixels", type=whole(1), default=None, metavar="N",
                   help="refuse images larger than this many pixels (decompression bombs; default 2^27)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--codec", default="auto", choices=["auto", "h264", "mp4v"],
                   help="annotated videos: H.264 with PyAV when installed (auto), or OpenCV mp4v")
    g = p.add_argument_group("pose (ignored by the other tasks)")
    g.add_argument("--detector", default="rtmdet", choices=["rtmdet", "none"],
                   help="person detector (none: the whole image is one person, unless --boxes gives boxes)")
    g.add_argument("--boxes", metavar="JSON",
                   help="person boxes per image, skipping the detector: entries keyed by file_name, or COCO "
                        "results keyed by image_id with an images table")
    g.add_argument("--format", dest="keypoint_format", choices=FORMAT_CHOICES,
                   help="write keypoints converted to this format (pictures keep all 308)")
    g.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=True,
                   help="average with the mirrored crop's heatmaps (default on, as the reference)")
    g.add_argument("--kpt-thr", type=number(0.0, 1.0), default=0.3,
                   help="draw keypoints scored at least this (default 0.3)")
    g.add_argument("--radius", type=whole(0), default=3, help="keypoint circle radius in pixels (default 3)")
    g.add_argument("--thickness", type=whole(1), default=1,
                   help="skeleton line and box thickness in pixels (default 1)")
    g = p.add_argument_group("video")
    g.add_argument("--no-smooth", action="store_true", help="no One-Euro smoothing of video keypoints")
    g.add_argument("--track-max-age", type=whole(0), default=30, metavar="FRAMES",
                   help="keep an unseen person's ID this many frames (default 30)")
    g.add_argument("--no-track-motion", action="store_true",
                   help="match people where they were last seen, not where their motion puts them")


def _ray_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine (see README, \"Millions of images\")")
    g.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: this machine, files per image (default); ray: a Ray Data job writing Parquet "
                        "rows under --out (inputs may also be Parquet tables of paths/URIs, WebDataset .tar shards "
                        "and URIs)")
    g.add_argument("--ray-address", metavar="ADDRESS",
                   help="ray: the cluster to join (auto: this machine's); default: start a local Ray")
    g.add_argument("--actors", type=whole(1), default=1, metavar="N",
                   help="ray: network replicas, each in its own actor (one per GPU; default 1)")
    g.add_argument("--gpus-per-actor", type=float, default=None, metavar="G",
                   help="ray: GPUs each actor reserves (default 1 when the cluster has GPUs, else 0)")
    g.add_argument("--cpus-per-actor", type=float, default=1.0, metavar="C",
                   help="ray: CPUs each actor reserves; a CPU network computes with that many threads (default 1)")
    g.add_argument("--maps", default="bytes", choices=["bytes", "files"],
                   help="ray: dense maps, pictures and arrays as bytes columns of the rows (default), or as the "
                        "local engine's files beside them (their paths in the rows)")
    g.add_argument("--shard-rows", type=whole(1), default=64, metavar="N",
                   help="ray: images per Parquet shard (default 64)")


def add_task_commands(sub: Any) -> None:
    """Register the task sub-commands on the `sapiens2` sub-parsers (one per task of the task table)."""
    from sapiens2.task_table import TASKS

    for task, info in TASKS.items():
        p = sub.add_parser(task, help=info.summary, description=f"{info.summary}. Writes, by default: "
                           f"{', '.join(sorted(info.default_saves))} (see docs/CLI.md).")
        _common(p)
        p.add_argument("--model", "-m", metavar="SIZE|NAME|PATH",
                       help=f"model size (e.g. 0.4b, 1b), official name, hub id or checkpoint file "
                            f"(default {info.default_model})")
        p.set_defaults(func=_cmd_task, tasks=task)

    p = sub.add_parser("run", help="several tasks in one pass over the inputs (each image decoded once)",
                       description="Several tasks in one pass over the inputs: each image is decoded once, "
                                   "and segmentation's foreground masks the other tasks' pictures and PLY.")
    p.add_argument("--tasks", "-t", required=True, help=f"comma-separated, from {','.join(TASKS)}")
    _common(p)
    p.add_argument("--model", "-m", action="append", default=[], metavar="[TASK=]MODEL",
                   help="a size for every task (--model 1b) or per task (--model seg=1b --model pose=PATH)")
    _ray_options(p)
    p.set_defaults(func=_cmd_task)

    p = sub.add_parser("demo", help="run the default models on the bundled photo and write pictures",
                       description="Run the default models on the bundled photo and write the pictures; "
                                   "checks first that the weights are on this machine and says how to get them.")
    p.add_argument("--tasks", "-t", default=",".join(DEMO_TASKS), help=f"default {','.join(DEMO_TASKS)}")
    _common(p, inputs=False, out_default=DEMO_OUT)
    p.add_argument("--model", "-m", action="append", default=[], metavar="[TASK=]MODEL",
                   help="a size for every task or TASK=MODEL per task (default: each task's default)")
    p.set_defaults(func=_cmd_demo, inputs=[], webcam=None)


# ------------------------------------------------------------------------------------------------ handlers


def parse_tasks(text: str) -> list[str]:
    """A --tasks value -> the table's task names, in order, each once (aliases forgiven)."""
    from sapiens2.task_table import task_name

    tasks = [task_name(t) for t in text.split(",") if t.strip()]
    if not tasks:
        raise ValueError("no task given")
    return list(dict.fromkeys(tasks))


def parse_models(values: Any, tasks: list[str]) -> dict[str, str | None]:
    """--model values -> the spec per task (None: the default)."""
    from sapiens2.task_table import TASKS

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


def _given_boxes(path: str | None) -> dict[str, Any]:
    """--boxes as file name -> boxes (ids without an images table cannot be matched to inputs)."""
    if not path:
        return {}
    from sapiens2.tasks.given_boxes import read_coco_detections

    found = read_coco_detections(path)
    ids = [k for k in found if not isinstance(k, str)]
    if ids:
        raise ValueError(f"--boxes {path}: detections are keyed by image_id ({ids[0]!r}, ...) but the file has no "
                         "'images' table mapping ids to file names; add one, or key each entry by 'file_name'")
    return dict(found)


def build_jobs(tasks: list[str], args: argparse.Namespace, sources: list[Any]) -> list[Any]:
    """Every task's predictor (its network loaded; weights errors propagate), wrapped in its job."""
    from sapiens2.runner.jobs import Job
    from sapiens2.tasks import PREDICTORS
    from sapiens2.tasks.outputs import parse_saves

    specs = parse_models(args.model, tasks)
    common = {"device": args.device, "dtype": args.dtype, "batch_size": args.batch_size,
              "input_size": args.input_size, "allow_pickle": args.allow_pickle,
              "allow_code": args.allow_code}
    built = []
    for task in tasks:
        saves = parse_saves(args.save, task)
        if not saves:
            from sapiens2.task_table import TASKS

            raise ValueError(f"--save {args.save}: nothing for {task} to write (it writes "
                             f"{', '.join(sorted(TASKS[task].saves))})")
        if task != "pose":
            built.append(Job(task, PREDICTORS[task](specs[task], **common), saves))
            continue
        boxes = _given_boxes(args.boxes)
        job = Job(task, None, saves, boxes=boxes,
                  options={"keypoint_format": args.keypoint_format, "kpt_thr": args.kpt_thr,
                           "radius": args.radius, "thickness": args.thickness})
        covered = bool(boxes) and all(s.kind == "image" and job.given_boxes(s) is not None for s in sources)
        detector = None if args.detector == "none" or covered else "rtmdet"
        job.predictor = _pose(specs[task], detector, args, common)
        if args.keypoint_format and len(job.predictor.keypoint_set) != 308:
            raise ValueError(f"--format converts 308-keypoint predictions; this model gives "
                             f"{len(job.predictor.keypoint_set)}")
        built.append(job)
    return built


def _pose(spec: str | None, detector: str | None, args: argparse.Namespace, common: dict[str, Any]) -> Any:
    """The pose predictor; a missing detector says how to do without it."""
    from sapiens2.hub import CheckpointNotFoundError
    from sapiens2.tasks import Pose

    try:
        return Pose(spec, detector, flip_test=args.flip_test, **common)
    except CheckpointNotFoundError as e:
        if detector is None or getattr(getattr(e, "info", None), "task", None) != "detect":
            raise
        raise CheckpointNotFoundError(f"{e}\nOr run without the person detector: --detector none (the whole "
                                      "image is one person), or --boxes JSON with a box for every image.") from e


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _cmd_task(args: argparse.Namespace) -> int:
    try:
        tasks = parse_tasks(args.tasks)
    except ValueError as e:
        return _error(str(e))
    if not args.inputs and args.webcam is None:
        return _error("give at least one INPUT (file, folder, glob, .txt list, video) or --webcam INDEX")
    if getattr(args, "engine", "local") == "ray":
        return _run_ray(tasks, args, args.inputs)
    return _run(tasks, args, args.inputs)


def _check_options(args: argparse.Namespace, out: Path) -> None:
    """Option values that argparse cannot check alone; a ValueError is a usage error (exit 2)."""
    from sapiens2.tasks.models import resolve_device

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, not a folder")
    args.device = resolve_device(args.device)


def _run(tasks: list[str], args: argparse.Namespace, inputs: list[str]) -> int:
    import sapiens2
    from sapiens2.checkpoint import ProgramCheckpointError
    from sapiens2.io.images import DEFAULT_MAX_PIXELS
    from sapiens2.runner import sources as S
    from sapiens2.runner.pipeline import RunOptions, run_jobs

    out = Path(args.out or DEFAULT_OUT)
    try:
        _check_options(args, out)
    except ValueError as e:
        return _error(str(e))
    sources, missing = S.collect_sources(inputs, args.webcam, exclude=S.previous_outputs(out))
    if not sources:
        for m in missing:
            print(f"error: {m}", file=sys.stderr)
        return _error("no image or video to process")
    try:
        jobs = build_jobs(tasks, args, sources)
    except ProgramCheckpointError as e:
        return _error(str(e))
    except sapiens2.UnsafeCheckpointError as e:
        return _error(f"{e}\nAdd --allow-pickle to read it weights-only, or convert it once with "
                      "`sapiens2 convert FILE.pth`.")
    except (sapiens2.CheckpointError, FileNotFoundError, ValueError) as e:
        return _error(str(e))
    sources = S.plan_outputs(sources, out, lambda s: _suffixes(jobs, s))
    out.mkdir(parents=True, exist_ok=True)
    S.write_manifest(out, [p for s in sources if s.kind == "image" for job in jobs for p in job.outputs(s, out)],
                     [out / s.rel for s in sources if s.kind != "image"])
    _write_pose_metadata(jobs, out)
    options = RunOptions(out, batch_size=args.batch_size, readers=args.readers, writers=args.writers,
                         resume=args.resume, progress=False if args.no_progress else None,
                         max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, codec=args.codec,
                         smooth=not args.no_smooth, track_max_age=args.track_max_age,
                         track_motion=not args.no_track_motion)
    print(f"sapiens2 {','.join(tasks)}: {len(sources)} input(s) on {args.device} ({args.dtype}), batch "
          f"{args.batch_size} -> {out}", file=sys.stderr)
    summary = run_jobs(jobs, sources, options, missing)
    _print_summary(summary, out)
    return summary.exit_code


def _run_ray(tasks: list[str], args: argparse.Namespace, inputs: list[str]) -> int:
    """`--engine ray`: the same jobs (`build_jobs`, built in each actor) as stages of a Ray Data job."""
    from sapiens2.runner import ray_engine as R
    from sapiens2.runner.ray_table import TableSpec
    from sapiens2.runner.sources import Source
    from sapiens2.tasks.outputs import file_suffixes, parse_saves

    if args.webcam is not None:
        return _error("--engine ray reads files, not a webcam")
    out = args.out or DEFAULT_OUT
    try:
        saves = tuple((t, parse_saves(args.save, t)) for t in tasks)
        for task, kinds in saves:
            if not kinds:
                raise ValueError(f"--save {args.save}: nothing for {task} to write")
        spec = TableSpec(saves, args.maps, args.keypoint_format)
        if "://" in out and args.maps == "files":
            raise ValueError(f"--out {out}: --maps files writes files beside the rows, on a local --out only")
        if "://" not in out and Path(out).exists() and not Path(out).is_dir():
            raise ValueError(f"--out {out}: is a file, not a folder")
        parse_models(args.model, tasks)
        given = _given_boxes(args.boxes)
    except ValueError as e:
        return _error(str(e))
    kinds = dict(saves)
    collected = R.collect_inputs(inputs, out, lambda s: [x for t in tasks for x in file_suffixes(t, kinds[t])])
    if not collected.inputs:
        for m in collected.missing:
            print(f"error: {m}", file=sys.stderr)
        return _error("no image to process")
    # the actors build the jobs; one uncovered stand-in source keeps the detector unless --boxes covers all
    from sapiens2.runner.jobs import Job

    probe = Job("pose", None, frozenset(), boxes=given)
    covered = bool(given) and all(probe.given_boxes(i.source) is not None for i in collected.inputs)
    stand_in = [] if covered else [Source("image", Path("_"), path=Path("_"))]
    if not args.ray_address:  # a local Ray: check the weights here (a cluster's nodes may hold their own)
        missing = _missing_weights(tasks, parse_models(args.model, tasks), args.detector == "rtmdet" and not covered,
                                   "the job")
        if missing:
            return _error(missing)
    from sapiens2.io.images import DEFAULT_MAX_PIXELS

    options = R.RayOptions(out, spec, actors=args.actors, gpus_per_actor=args.gpus_per_actor,
                           cpus_per_actor=args.cpus_per_actor,
                           batch_size=args.batch_size, shard_rows=args.shard_rows, prepare_threads=args.readers,
                           max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, address=args.ray_address,
                           progress=False if args.no_progress else None)
    print(f"sapiens2 {','.join(tasks)} (ray): {len(collected.inputs)} input(s), {args.actors} actor(s), batch "
          f"{args.batch_size} -> {out}", file=sys.stderr)
    if "://" not in out:
        Path(out).mkdir(parents=True, exist_ok=True)
    try:
        summary = R.run_ray(functools.partial(build_jobs, tasks, args, stand_in), collected, options)
    except (ValueError, R.JobFailed) as e:
        return _error(str(e))
    _print_summary(summary, Path(out) if "://" not in out else out)
    return summary.exit_code


def _suffixes(jobs: list[Any], source: Any) -> list[str]:
    from sapiens2.tasks.outputs import file_suffixes, video_suffixes

    pick = file_suffixes if source.kind == "image" else video_suffixes
    return [s for job in jobs for s in pick(job.task, job.saves)]


def _write_pose_metadata(jobs: list[Any], out: Path) -> None:
    from sapiens2.io.writers import write_json
    from sapiens2.tasks.pose import keypoint_metadata

    for job in jobs:
        if job.task == "pose" and "json" in job.saves:
            write_json(out / "pose_keypoints.json",
                       keypoint_metadata(job.predictor.keypoint_set, job.options.get("keypoint_format")))


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


def _missing_weights(tasks: list[str], specs: dict[str, str | None], detector: bool, needed_by: str) -> str | None:
    """What to say when official weights these tasks need (and the person detector, when pose uses it) are
    neither here nor obtainable now; None when everything is there. Paths and hub ids are left to loading."""
    from sapiens2.tasks.models import missing_weights, missing_weights_message, model_name

    names = [model_name(t, specs[t]) for t in tasks]
    if "pose" in tasks and detector:
        names.append("rtmdet-m-person")
    missing = missing_weights(names)
    return missing_weights_message(missing, needed_by) if missing else None


def _cmd_demo(args: argparse.Namespace) -> int:
    from sapiens2.tasks.outputs import file_suffixes

    try:
        tasks = parse_tasks(args.tasks)
        missing = _missing_weights(tasks, parse_models(args.model, tasks), args.detector == "rtmdet", "the demo")
    except ValueError as e:
        return _error(str(e))
    if missing:
        return _error(missing)
    photo = demo_photo()
    if not photo.is_file():
        return _error(f"the bundled demo photo is missing ({photo.name}); reinstall sapiens2")
    args.out = args.out or DEMO_OUT
    args.resume = False
    code = _run(tasks, args, [str(photo)])
    if code == 0:
        pictures = [Path(args.out) / f"{photo.stem}{file_suffixes(t, {'vis'})[0]}" for t in tasks]
        print(f"pictures: {', '.join(map(str, pictures))}")
    return code
