"""`sapiens2 train CONFIG [--resume [PATH]] [--set key=value ...]` and `python -m sapiens2.train ...`
(the form `torchrun --nproc_per_node N -m sapiens2.train CONFIG` launches)."""

from __future__ import annotations

import argparse
import logging
import sys


def add_train_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("config", help="a training config (.toml); see configs/ for one per task")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="PATH",
                   help="continue from a checkpoint folder, or the latest one in the work dir when no PATH is given")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=1e-4 --set train.num_iters=100 (repeatable)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    return p


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Register the `train` sub-command on an argparse sub-parsers object."""
    p = subparsers.add_parser("train", help="fine-tune a Sapiens2 model on a task (single process or torchrun)",
                              description=__doc__)
    add_train_arguments(p)
    p.set_defaults(func=run_train)
    return p


def run_train(args: argparse.Namespace) -> int:
    """Run the `train` command; returns the process exit code."""
    # Imported here, not at the top: `sapiens2 --help` registers this parser without loading torch.
    from sapiens2.train.config import load_config
    from sapiens2.training.config import ConfigError

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"sapiens2 train: config error: {e}", file=sys.stderr)
        return 2
    from sapiens2.train.loop import Trainer
    from sapiens2.training.distributed import cleanup, parse_device

    if args.device is not None:
        try:
            parse_device(args.device)
        except ValueError as e:
            print(f"sapiens2 train: --device: {e}", file=sys.stderr)
            return 2
    try:
        trainer = Trainer(cfg, resume=args.resume, device=args.device, progress=not args.no_progress)
        trainer.fit()
    except ConfigError as e:
        print(f"sapiens2 train: config error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"sapiens2 train: {e}", file=sys.stderr)
        return 1
    finally:
        cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = add_train_arguments(argparse.ArgumentParser(prog="python -m sapiens2.train", description=__doc__))
    return run_train(parser.parse_args(argv))
