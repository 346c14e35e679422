"""`sapiens2 curate`: curate image sources into a manifest, WebDataset shards and a report.

`add_curate_parser(sub)` registers the sub-command. Building the parser imports nothing heavy; pyarrow,
faiss and torch are imported when the command runs (they come with `pip install "sapiens2[curate]"`).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Any

from sapiens2.option_types import whole

__all__ = ["add_curate_parser"]

EXIT_FAILED, EXIT_USAGE = 1, 2


def add_curate_parser(sub: Any) -> None:
    """Register `sapiens2 curate` on the `sapiens2` sub-parsers."""
    p = sub.add_parser(
        "curate", help="filter, deduplicate and balance images into pretraining shards",
        description="Curate images (folders, globs, .txt lists, .tar shards) as Humans-1B was: decode and keep "
                    "a short side >= 384 px, keep images with a prominent person (RTMDet), drop non-photos, "
                    "text overlays and low aesthetic scores (CLIP zero-shot + the LAION aesthetic head), measure "
                    "the head pose (Sapiens2 face keypoints; off by default), drop duplicates (perceptual hash, "
                    "then Sapiens2-feature neighbours), cluster the embeddings (hierarchical k-means) and sample "
                    "evenly. Writes DIR/manifest.parquet (one row per input: measurements, dedup group, "
                    "cluster, kept or the reason), DIR/shards/*.tar and DIR/report/index.html. Thresholds "
                    "and stages: --config curate.toml, one table per stage (see README, Data curation).")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image files, folders, globs, .txt lists, .tar")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    p.add_argument("--config", metavar="TOML", help="stage settings (default: the documented defaults)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in DIR: every stage result already written is reused")
    p.add_argument("--device", help="device of every model: detector, CLIP, embedder, pose (default: [clip] "
                                    "device for CLIP, [head] device for the pose model, [embed] device for the "
                                    "others)")
    p.add_argument("--allow-code", action="store_true",
                   help="open TorchScript / torch.export detector files, which carry code (only files you trust)")
    p.add_argument("--no-shards", dest="shards", action="store_false", help="write the manifest and report only")
    g = p.add_argument_group("engine (as `sapiens2 run --engine ray`)")
    g.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: batches one after the other in this process (default); ray: the same stages as "
                        "a Ray Data job (model stages as actor pools), the same parts, manifest and shards")
    g.add_argument("--ray-address", metavar="ADDRESS",
                   help="ray: the cluster to join (auto: this machine's); default: start a local Ray")
    g.add_argument("--actors", type=whole(1), default=1, metavar="N",
                   help="ray: actors per model stage (detector, CLIP, pose, embedder), each with its own copy "
                        "(default 1)")
    g.add_argument("--gpus-per-actor", type=float, default=None, metavar="G",
                   help="ray: GPUs each actor reserves (default: the cluster's GPUs shared by all the actors, "
                        "at most 1 each; 0 without GPUs)")
    g.add_argument("--cpus-per-actor", type=float, default=1.0, metavar="C",
                   help="ray: CPUs each actor reserves; leave some for decoding (default 1)")
    p.set_defaults(func=_cmd_curate)


DETECTOR = "rtmdet-m-person"


def load_detector(model: str, device: str, allow_code: bool):
    """The RTMDet person detector from a name or file (a `Loader` target: runs where the stage runs)."""
    from sapiens2.detect import PersonDetector
    from sapiens2.hub import resolve

    path, _ = resolve(model)
    return PersonDetector.from_file(path, device=device, allow_code=allow_code)


def _model_loaders(config: Any, device: str | None, allow_code: bool, check_here: bool) -> tuple[dict[str, Any], list]:
    """Loaders of the models `config` needs (detector, clip, head, embedder; None where a stage is off), and
    the missing files. `device`: --device (None: each table's own). `check_here`: the models are built on this
    machine, so resolve (and fetch) their files now and give the loaders the paths; a cluster's nodes resolve
    the names themselves."""
    from sapiens2.curate.clip_stage import clip_files, clip_loader
    from sapiens2.curate.embed import BackboneEmbedder
    from sapiens2.curate.headpose import load_pose_keypoints
    from sapiens2.curate.stages import Loader
    from sapiens2.fetch import CheckpointNotFoundError
    from sapiens2.hub import resolve
    from sapiens2.tasks.models import model_name

    missing: list[CheckpointNotFoundError] = []

    def where(name: str) -> str | None:
        if not check_here:
            return name
        try:
            return str(resolve(name)[0])
        except CheckpointNotFoundError as err:
            missing.append(err)
            return None

    models: dict[str, Any] = dict.fromkeys(("detector", "clip", "head", "embedder"))
    if config.person.enabled and (path := where(DETECTOR)):
        models["detector"] = Loader.of(load_detector, path, device or config.embed.device, allow_code)
    if config.clip.enabled:
        if check_here:  # every missing file is listed, and transformers is not imported for that
            missing += clip_files(config.clip)[1]
        models["clip"] = clip_loader(config.clip, device or config.clip.device)
    if config.head.enabled and (path := where(model_name("pose", config.head.model))):
        models["head"] = Loader.of(load_pose_keypoints, path, device or config.head.device,
                                   config.head.flip_test)
    if (config.needs_embeddings() and not config.embeddings_from_clip()
            and (path := where(config.embed.model))):
        models["embedder"] = Loader.of(BackboneEmbedder.load, path, config.embed.size,
                                       device or config.embed.device)
    return models, missing


def _cmd_curate(args: argparse.Namespace) -> int:
    from sapiens2.curate.config import load_config
    from sapiens2.io.inputs import MissingInputsError

    try:
        config = load_config(args.config)
    except ValueError as err:
        print(f"sapiens2 curate: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        import faiss  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as err:
        print(f"sapiens2 curate: {err.name} is missing: pip install 'sapiens2[curate]'", file=sys.stderr)
        return EXIT_FAILED
    from sapiens2.curate.engine import curate
    from sapiens2.curate.ray_engine import CurateJobFailed, RayEngine
    from sapiens2.curate.sources import collect_items
    from sapiens2.curate.stages import ModelLoadError

    try:
        ray = None if args.engine == "local" else RayEngine(args.ray_address, actors=args.actors,
                                                             cpus_per_actor=args.cpus_per_actor,
                                                             gpus_per_actor=args.gpus_per_actor)
        items = collect_items(args.sources)
    except (MissingInputsError, ValueError) as err:
        print(f"sapiens2 curate: {err}", file=sys.stderr)
        return EXIT_USAGE
    if ray is not None and importlib.util.find_spec("ray") is None:
        print("sapiens2 curate: ray is missing: pip install 'sapiens2[ray]'", file=sys.stderr)
        return EXIT_FAILED
    from sapiens2.fetch import missing_report
    from sapiens2.hub import UnknownModelError

    try:
        models, missing = _model_loaders(config, args.device, args.allow_code, check_here=not args.ray_address)
    except (UnknownModelError, OSError) as err:
        print(f"sapiens2 curate: {err}", file=sys.stderr)
        return EXIT_USAGE
    if missing:  # one line per file and one fix, as every command that needs weights says it
        print(missing_report(missing), file=sys.stderr)
        return EXIT_USAGE

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} images", end="" if done < total else "\n", file=sys.stderr, flush=True)

    try:
        result = curate(items, args.out, config, detector=models["detector"], embedder=models["embedder"],
                        resume=args.resume,
                        detector_batched=models["detector"] is not None, clip=models["clip"],
                        head=models["head"],
                        shards=args.shards, progress=progress, engine=ray)
    except FileExistsError as err:
        print(f"sapiens2 curate: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (ModelLoadError, CurateJobFailed) as err:
        print(f"sapiens2 curate: {err}", file=sys.stderr)
        return EXIT_FAILED
    reasons = result.table["reason"].value_counts().to_pylist()
    dropped = ", ".join(f"{r['values']} {r['counts']}" for r in reasons if r["values"] is not None)
    print(f"{len(items)} images, {result.kept} kept" + (f"; dropped: {dropped}" if dropped else ""))
    print(f"manifest: {result.manifest}")
    print(f"report: {result.manifest.parent / 'report' / 'index.html'}")
    return 0
