"""`sapiens2 pretrain CONFIG` / `python -m sapiens2.pretrain CONFIG` (also under torchrun)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("config", help="a TOML pretraining config (see configs/pretrain/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set train.num_iters=1000 (repeatable)")
    parser.add_argument("--work-dir", help="shorthand for --set train.work_dir=DIR")
    parser.add_argument("--no-resume", action="store_true",
                        help="start from scratch even if the work dir holds checkpoints")
    parser.add_argument("--export", metavar="CHECKPOINT",
                        help="do not train: write CHECKPOINT's backbone (a checkpoints/iter_N folder or an older "
                             "step_N.pt; train.export picks teacher or student) as a pretrain safetensors file in "
                             "the work dir, and exit")
    parser.set_defaults(func=run_pretrain)
    return parser


DESCRIPTION = ("Pretrain a Sapiens2 backbone: masked reconstruction + self-distillation of the [cls] token. "
               "Runs alone or under `torchrun --nproc_per_node N -m sapiens2.pretrain CONFIG`; resumes from the "
               "newest checkpoint in the work dir; saves the backbone as a pretrain safetensors file.")


def add_pretrain_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `pretrain` sub-command."""
    parser = subparsers.add_parser(
        "pretrain", help="pretrain a backbone with the Sapiens2 objective (MAE + DINO-style distillation)",
        description=DESCRIPTION,
    )
    return _configure(parser)


def run_pretrain(args: argparse.Namespace) -> int:
    """Load and check the config, then train (or export); 0 on success, 2 on a config error, 1 when a file it
    names (images, a checkpoint) is missing or unusable."""
    from sapiens2.checkpoint import CheckpointError
    from sapiens2.pretrain.config import load_config
    from sapiens2.training.config import ConfigError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = list(args.overrides)
    if args.work_dir:
        overrides.append(f"train.work_dir={_toml_string(args.work_dir)}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from sapiens2.pretrain.trainer import EXPORT_NAME, export_checkpoint, pretrain

    try:
        if args.export:
            print(export_checkpoint(args.export, Path(cfg.train.work_dir) / EXPORT_NAME, cfg.train.export))
        else:
            pretrain(cfg, resume=not args.no_resume)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _toml_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main(argv: list[str] | None = None) -> int:
    parser = _configure(argparse.ArgumentParser(prog="python -m sapiens2.pretrain",
                                                description=DESCRIPTION))
    return run_pretrain(parser.parse_args(argv))
