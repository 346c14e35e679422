"""`sapiens2 curate`: curate image sources into a manifest, WebDataset shards and a report.

`add_curate_parser(sub)` registers the sub-command. Building the parser imports nothing heavy; pyarrow,
faiss and torch are imported when the command runs (they come with `pip install "sapiens2[curate]"`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

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
    p.set_defaults(func=_cmd_curate)


def _detector(device: str, allow_code: bool):
    from sapiens2.detect import PersonDetector
    from sapiens2.hub import resolve

    path, _ = resolve("rtmdet-m-person")
    return PersonDetector.from_file(path, device=device, allow_code=allow_code)


def _head(settings, device: str | None):
    """The head stage's pose model, loaded now so that a missing or wrong checkpoint stops the run before
    it starts (`HeadLoader` is what another process would be given to build it there)."""
    from sapiens2.curate.headpose import HeadLoader
    from sapiens2.hub import resolve
    from sapiens2.tasks.models import model_name

    path, _ = resolve(model_name("pose", settings.model))
    return HeadLoader(str(path), device or settings.device, settings.flip_test)()


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
    from sapiens2.curate.embed import BackboneEmbedder
    from sapiens2.curate.engine import curate
    from sapiens2.curate.sources import collect_items

    device = args.device or config.embed.device
    try:
        items = collect_items(args.sources)
    except (MissingInputsError, ValueError) as err:
        print(f"sapiens2 curate: {err}", file=sys.stderr)
        return EXIT_USAGE
    from sapiens2.fetch import CheckpointNotFoundError, missing_report

    detector = embedder = clip = head = None
    missing: list[CheckpointNotFoundError] = []
    try:
        if config.person.enabled:
            try:
                detector = _detector(device, args.allow_code)
            except CheckpointNotFoundError as err:
                missing.append(err)
        if config.clip.enabled:
            from sapiens2.curate.clip_stage import clip_files, load_clip_models

            _, absent = clip_files(config.clip)  # every missing file first, before importing transformers
            missing += absent
            if not absent and not missing:
                clip = load_clip_models(config.clip, args.device or config.clip.device)
        if config.head.enabled:
            try:
                head = _head(config.head, args.device)
            except CheckpointNotFoundError as err:
                missing.append(err)
        if config.needs_embeddings() and not config.embeddings_from_clip():
            try:
                embedder = BackboneEmbedder.load(config.embed.model, config.embed.size, device)
            except CheckpointNotFoundError as err:
                missing.append(err)
    except (OSError, ValueError, TypeError, ImportError) as err:
        print(f"sapiens2 curate: cannot load a model: {err}", file=sys.stderr)
        return EXIT_FAILED
    if missing:  # one line per file and one fix, as every command that needs weights says it
        print(missing_report(missing), file=sys.stderr)
        return EXIT_USAGE

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} images", end="" if done < total else "\n", file=sys.stderr, flush=True)

    try:
        result = curate(items, args.out, config, detector=detector, embedder=embedder, resume=args.resume,
                        detector_batched=detector is not None, clip=clip, head=head,
                        shards=args.shards, progress=progress)
    except FileExistsError as err:
        print(f"sapiens2 curate: {err}", file=sys.stderr)
        return EXIT_USAGE
    reasons = result.table["reason"].value_counts().to_pylist()
    dropped = ", ".join(f"{r['values']} {r['counts']}" for r in reasons if r["values"] is not None)
    print(f"{len(items)} images, {result.kept} kept" + (f"; dropped: {dropped}" if dropped else ""))
    print(f"manifest: {result.manifest}")
    print(f"report: {result.manifest.parent / 'report' / 'index.html'}")
    return 0
