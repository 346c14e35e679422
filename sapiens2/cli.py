"""The `sapiens2` command: parse, call the API, print. Each sub-command is one small function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import sapiens2


def _cmd_models(args: argparse.Namespace) -> int:
    """The zoo with each model's licence and file format, and which checkpoints are already on this machine."""
    from sapiens2.hub import available_models, checkpoint_root
    from sapiens2.zoo import MODELS

    found = available_models()
    rows = [("name", "task", "arch", "input HxW", "format", "licence", "hub repo", "local file")]
    for name, info in MODELS.items():
        if args.task and info.task != args.task:
            continue
        where = found[name]
        repo = info.repo or "- (not published)"
        rows.append((name, info.task, info.arch, "x".join(map(str, info.input_size)), info.format, info.license,
                     repo, str(where) if where else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(f"\nCheckpoint root: {checkpoint_root()} (set SAPIENS_CHECKPOINT_ROOT to change it); "
          "`sapiens2 download NAME` fetches a model into the Hugging Face cache. Formats: pth = pickle, "
          "loaded with --allow-pickle (weights only); torchscript / bfloat16 = .pt2 programs that carry code, "
          "loaded only with the code opt-in (allow_code=True). Read each licence before using the weights.")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from sapiens2.hub import CheckpointNotFoundError, download
    from sapiens2.zoo import find_model, suggest

    status = 0
    for name in args.names:
        info = find_model(name)
        if info is None:
            close = suggest(name)
            print(f"error: unknown model {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""),
                  file=sys.stderr)
            status = 2
            continue
        try:
            print(download(info))
        except CheckpointNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
    return status


def _cmd_inspect(args: argparse.Namespace) -> int:
    """What a checkpoint file holds, from its header: no tensor is read."""
    from sapiens2.hub import inspect, resolve

    status = 0
    for name in args.files:
        try:
            path, _ = resolve(name)
            layout = inspect(path, allow_pickle=args.allow_pickle, allow_code=args.allow_code)
        except (sapiens2.CheckpointError, FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
            continue
        print(f"{path}: {layout.describe()}")
    return status


def _cmd_convert(args: argparse.Namespace) -> int:
    """A pickle checkpoint (.pth) to .safetensors, read with the restricted unpickler."""
    from sapiens2.weights import convert_to_safetensors

    try:
        print(convert_to_safetensors(args.input, args.output, allow_code=args.allow_code))
    except (sapiens2.CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    """Metrics for saved predictions, or (pose) predict with a model first, then score."""
    from sapiens2.metrics.report import evaluate, format_table

    pred = args.pred
    if args.model is not None and (args.task != "pose" or not args.images):
        print("error: --model needs task 'pose' and --images (a folder of the ground truth's images)",
              file=sys.stderr)
        return 2
    if pred is None and args.model is None:
        print("error: give --pred (saved predictions) or --model with --images", file=sys.stderr)
        return 2
    options = {"max_dets": args.max_dets, "num_classes": args.num_classes, "align": args.align,
               "mask": args.mask, "trimap": args.trimap, "absent": args.absent_classes}
    try:
        if args.model is not None:
            pred = _predict_pose_for_eval(args)
        results = evaluate(args.task, pred, args.gt, **{k: v for k, v in options.items() if v is not None})
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_table(results))
    if args.out:
        from sapiens2.io.writers import write_json

        write_json(Path(args.out), results)
    return 0


def _predict_pose_for_eval(args: argparse.Namespace) -> Path:
    """Run `Pose` on every image the ground truth lists and write COCO results next to --out."""
    from sapiens2.io.writers import write_json
    from sapiens2.metrics.predict import predict_keypoints
    from sapiens2.metrics.readers import read_eval_images

    images = read_eval_images(args.gt, args.images, gt_boxes=args.gt_boxes)  # checked before loading a model
    pose = sapiens2.Pose(args.model, detector=None if args.gt_boxes else "rtmdet", device=args.device,
                         flip_test=args.flip_test)
    results = predict_keypoints(images, pose)
    out = Path(args.out).with_suffix(".predictions.json") if args.out else Path("pose_predictions.json")
    write_json(out, results)
    print(f"predictions: {out}")
    return out


def build_parser() -> argparse.ArgumentParser:
    """Every sub-command; building it imports neither torch nor the training code."""
    from sapiens2.task_table import TASKS
    from sapiens2.zoo import MODELS

    parser = argparse.ArgumentParser(prog="sapiens2", description="Sapiens2 human-centric vision models.",
                                     epilog="Every command and option: docs/CLI.md (or `sapiens2 COMMAND --help`).")
    parser.add_argument("--version", action="version", version=f"sapiens2 {sapiens2.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help="list the official models and which are available locally",
                       description="The official models (task, size, input, hub repo) and the local file of each "
                                   "that is already on this machine.")
    p.add_argument("--task", choices=sorted({m.task for m in MODELS.values()}), help="only the models of this task")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("download", help="fetch official checkpoints into the Hugging Face cache",
                       description="Fetch official checkpoints by name into the Hugging Face cache, where every "
                                   "command finds them.")
    p.add_argument("names", nargs="+", metavar="NAME", help="e.g. sapiens2-pose-0.4b")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("inspect", help="say what a checkpoint file holds (arch, task, head)",
                       description="Say what checkpoint files hold (generation, arch, task, head) from their "
                                   "headers, without reading any tensor.")
    p.add_argument("files", nargs="+", metavar="FILE", help="checkpoint files or official model names")
    p.add_argument("--allow-pickle", action="store_true", help="read .pth/.bin files (weights only)")
    p.add_argument("--allow-code", action="store_true",
                   help="open TorchScript / torch.export programs, which carry code (only files you trust)")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("convert", help="convert a .pth checkpoint to .safetensors (no code from it is run)",
                       description="Convert a pickle checkpoint (.pth) to .safetensors once, reading it with a "
                                   "restricted unpickler: nothing in the file can run.")
    p.add_argument("input", metavar="IN.pth", help="the pickle checkpoint")
    p.add_argument("output", nargs="?", metavar="OUT.safetensors", help="default: beside the input")
    p.add_argument("--allow-code", action="store_true",
                   help="take the weights out of a TorchScript program: loading it runs its code (only files "
                        "you trust)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("eval", help="score predictions against ground truth (pose, seg, normal, pointmap, ...)",
                       description="Score saved predictions against ground truth with the reference's metrics, "
                                   "or (pose) predict with a model first, then score.")
    p.add_argument("task", choices=list(TASKS), help="what the predictions are")
    p.add_argument("--gt", required=True, help="COCO keypoint JSON (pose) or a folder of ground-truth maps")
    p.add_argument("--pred", help="COCO results JSON (pose) or a folder of predicted maps")
    p.add_argument("--model", help="pose: predict with this model first (size, name or file)")
    p.add_argument("--images", help="pose with --model: the folder holding the ground truth's images")
    p.add_argument("--gt-boxes", action="store_true", help="pose with --model: crop the ground-truth boxes")
    p.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=True,
                   help="pose with --model: average with the mirrored crops' heatmaps (default on, as the reference)")
    p.add_argument("--device", default=None, help="pose with --model: auto, cpu, cuda, cuda:N or mps (default cpu)")
    p.add_argument("--out", help="write the metrics as JSON here")
    p.add_argument("--max-dets", type=int, help="pose: detections kept per image (default: COCO's 20)")
    p.add_argument("--num-classes", type=int, help="seg: the number of classes (29; 28 for Sapiens v1 models)")
    p.add_argument("--absent-classes", choices=["zero", "ignore"],
                   help="seg: a class absent from both prediction and ground truth (IoU), or from the ground "
                        "truth (Acc), counts as 0 in the means (zero: default, as the reference's evaluator) or "
                        "is left out of them (ignore)")
    p.add_argument("--align", choices=["none", "scale", "scale_shift", "median"],
                   help="pointmap: none (default), scale, scale_shift; depth: median (default), scale_shift, none")
    p.add_argument("--mask", help="folder of masks (normal, pointmap, albedo, depth)")
    p.add_argument("--trimap", help="folder of trimaps (matting)")
    p.set_defaults(func=_cmd_eval)

    from sapiens2.runner.cli import add_task_commands

    add_task_commands(sub)

    from sapiens2.train.cli import add_train_parser

    add_train_parser(sub)

    from sapiens2.pretrain.cli import add_pretrain_parser

    add_pretrain_parser(sub)

    from sapiens2.serve.cli import add_serve_parser

    add_serve_parser(sub)

    from sapiens2.train.cli import add_shard_parser

    add_shard_parser(sub)

    from sapiens2.curate.cli import add_curate_parser

    add_curate_parser(sub)

    from sapiens2.export.cli import add_export_parser

    add_export_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
