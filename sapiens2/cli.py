"""The `sapiens2` command: parse, call the API, print. Each sub-command is one small function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import sapiens2


def _cmd_models(args: argparse.Namespace) -> int:
    """The zoo, and which checkpoints are already on this machine."""
    from sapiens2.hub import available_models, checkpoint_root
    from sapiens2.zoo import MODELS

    found = available_models()
    rows = [("name", "task", "arch", "input HxW", "hub repo", "local file")]
    for name, info in MODELS.items():
        if args.task and info.task != args.task:
            continue
        where = found[name]
        repo = info.repo + ("" if info.hub_confirmed else " (unconfirmed)")
        rows.append((name, info.task, info.arch, "x".join(map(str, info.input_size)), repo, str(where) if where else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(f"\nCheckpoint root: {checkpoint_root()} (set SAPIENS_CHECKPOINT_ROOT to change it); "
          "`sapiens2 download NAME` fetches a model into the Hugging Face cache.")
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
            layout = inspect(path, allow_pickle=args.allow_pickle)
        except (sapiens2.CheckpointError, FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
            continue
        print(f"{path}: {layout.describe()}")
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sapiens2", description="Sapiens2 human-centric vision models.")
    parser.add_argument("--version", action="version", version=f"sapiens2 {sapiens2.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help="list the official models and which are available locally")
    p.add_argument("--task", choices=["pretrain", "pose", "seg", "normal", "pointmap", "albedo"])
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("download", help="fetch official checkpoints into the Hugging Face cache")
    p.add_argument("names", nargs="+", metavar="NAME", help="e.g. sapiens2-pose-0.4b")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("inspect", help="say what a checkpoint file holds (arch, task, head)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--allow-pickle", action="store_true", help="read .pth/.bin files (weights only)")
    p.set_defaults(func=_cmd_inspect)
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
