"""`sapiens2 train CONFIG [--resume [PATH]] [--set key=value ...]` and `python -m sapiens2.train ...`
(the form `torchrun --nproc_per_node N -m sapiens2.train CONFIG` launches); and `sapiens2 shard SOURCE... --out
DIR [--task TASK]`, which packs images (pretraining) or a labelled dataset (fine-tuning) into tar shards that
training streams. Building the parsers imports nothing heavy; each command's imports happen when it runs."""

from __future__ import annotations

import argparse
import json
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


SHARD_DESCRIPTION = (
    "Pack data into tar shards for streaming training. Without --task: images from folders (recursive), list "
    "files or globs, stored as they are (for `sapiens2 pretrain`, data.source = the output folder). With --task: "
    "one dataset root read as a fine-tuning config's [[data.train]] entry would be (--set its fields, e.g. "
    "--set annotations=train.json), each sample stored losslessly (for data.train root = the output folder). "
    "The output folder gets NAME-000000.tar, ... and index.json (shard names, sample counts).")


def add_shard_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `shard` sub-command."""
    from sapiens2.task_table import TASKS

    p = subparsers.add_parser("shard", help="pack images or a labelled dataset into tar shards for streaming training",
                              description=SHARD_DESCRIPTION)
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="image folders / list files / globs; with --task, one dataset root")
    p.add_argument("--out", required=True, help="the folder to write the shards into (new or empty)")
    p.add_argument("--task", choices=list(TASKS), help="pack a labelled dataset of this task")
    p.add_argument("--set", dest="fields", action="append", default=[], metavar="FIELD=VALUE",
                   help="with --task: a dataset field (annotations, images, labels, mask, target, class_map, ...)")
    p.add_argument("--max-count", type=int, default=1000, help="samples per shard (default 1000)")
    p.add_argument("--max-size", type=float, default=1024, metavar="MB", help="megabytes per shard (default 1024)")
    p.add_argument("--prefix", default="shard", help="shard file name prefix (default shard)")
    p.set_defaults(func=run_shard)
    return p


def run_shard(args: argparse.Namespace) -> int:
    """0 on success; 2 for bad options or dataset fields; 1 when inputs are missing or the output is not empty."""
    from sapiens2.io.inputs import expand_inputs
    from sapiens2.train.datasets.shards import pack_source
    from sapiens2.train.schema import DatasetConfig
    from sapiens2.train.specs import TASK_SPECS
    from sapiens2.training.config import ConfigError, apply_override, from_dict
    from sapiens2.training.shards import check_shard_folder, pack_files

    if args.max_count < 1 or args.max_size <= 0:
        print("error: --max-count and --max-size must be positive", file=sys.stderr)
        return 2
    max_bytes = int(args.max_size * 2**20)
    try:
        check_shard_folder(args.out, args.prefix)  # before any reading
        if args.task is None:
            if args.fields:
                raise ConfigError("--set", "dataset fields need --task")
            found = expand_inputs(args.sources, strict=True)
            if not found.images:
                raise FileNotFoundError(f"no images found in {' '.join(args.sources)}")
            index = pack_files(found.images, args.out, args.max_count, max_bytes, progress=_progress)
        else:
            if len(args.sources) != 1:
                raise ConfigError("SOURCE", "with --task, give one dataset root")
            table: dict = {"root": args.sources[0]}
            for item in args.fields:
                apply_override(table, item)
            dataset = from_dict(DatasetConfig, table, "dataset")
            source = TASK_SPECS[args.task].source(dataset, "dataset")
            index = pack_source(args.task, source, args.out, args.max_count, max_bytes, progress=_progress)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    info = json.loads(index.read_text(encoding="utf-8"))
    print(f"\nwrote {info['samples']} samples in {len(info['shards'])} shard(s): {index}")
    return 0


def _progress(done: int, total: int) -> None:
    if done == total or done % 500 == 0:
        print(f"\r{done}/{total}", end="", file=sys.stderr, flush=True)
