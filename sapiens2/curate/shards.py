"""The kept images as WebDataset shards that `sapiens2 pretrain` streams: ``shards/shard-NNNNNN.tar`` holding
``KEY.jpg`` (re-encoded, long side bounded) and ``KEY.json`` (its manifest row) per sample, and
``shards/index.json`` (shard names, sample counts, where they came from), written with
`sapiens2.training.shards` (`write_shard`, `write_index`): one layout for every shard the project writes, so
``data.source = ["curated/"]`` (the curate output folder, or its ``shards/``) is a pretraining source as it is.

Resume: shard `n` holds kept rows ``n * shard_size ...`` of the manifest; a shard already holding exactly
those members is left as it is, a stale one is rewritten. Each shard is independent of the others, so the
Ray engine writes them as parallel tasks (`write_shard_of`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from sapiens2.curate.config import OutputConfig
from sapiens2.curate.sources import Item
from sapiens2.curate.stages import Batch, bounded
from sapiens2.training.shards import shard_members, write_index, write_shard

PREFIX = "shard"
IMAGE, META = "jpg", "json"  # the sample's members: `sapiens2.pretrain.data.ShardViews` takes the image one


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


@dataclass(frozen=True)
class ShardJob:
    """One shard to write: its path, its manifest rows and their items (picklable, for a Ray task)."""

    path: Path
    rows: list[dict[str, Any]]
    items: list[Item]
    config: OutputConfig
    max_pixels: int | None

    def expected(self) -> list[str]:
        return [f"{r['key']}.{ext}" for r in self.rows for ext in (IMAGE, META)]


def _samples(job: ShardJob) -> Iterator[tuple[str, dict[str, bytes]]]:
    for item, row in zip(job.items, job.rows):  # one image decoded at a time
        image = bounded(Batch([item], job.max_pixels).image(0), job.config.max_side)
        meta = {**row, "shard_width": image.shape[1], "shard_height": image.shape[0]}
        yield row["key"], {IMAGE: encode_jpeg(image, job.config.jpeg_quality),
                           META: json.dumps(meta, sort_keys=True).encode()}


def write_shard_of(job: ShardJob) -> bool:
    """Write `job`'s shard unless it already holds exactly its members; returns whether it wrote."""
    if shard_members(job.path) == job.expected():
        return False
    write_shard(job.path, _samples(job))
    return True


def plan_shards(items: Sequence[Item], manifest: pa.Table, folder: Path, config: OutputConfig,
                max_pixels: int | None = None) -> list[ShardJob]:
    """The shards of the manifest's kept rows, `shard_size` each, in manifest order."""
    by_key = {it.key: it for it in items}
    rows = [r for r in manifest.to_pylist() if r["kept"]]
    return [ShardJob(folder / f"{PREFIX}-{n:06d}.tar", chunk, [by_key[r["key"]] for r in chunk], config, max_pixels)
            for n, chunk in enumerate(rows[s:s + config.shard_size] for s in range(0, len(rows), config.shard_size))]


def write_shards(items: Sequence[Item], manifest: pa.Table, folder: Path, config: OutputConfig,
                 max_pixels: int | None = None,
                 run: Callable[[Callable[[ShardJob], bool], list[ShardJob]], list[bool]] | None = None) -> list[Path]:
    """Write the kept rows' shards (those not already there) and `index.json`; stale shards are removed.
    `run(fn, jobs)` maps `write_shard_of` over the shards (default: one after the other, here)."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = plan_shards(items, manifest, folder, config, max_pixels)
    (run or (lambda fn, todo: [fn(j) for j in todo]))(write_shard_of, jobs)
    paths = [j.path for j in jobs]
    for stale in folder.glob(f"{PREFIX}-*.tar"):
        if stale not in paths:
            stale.unlink()
    write_index(folder, [{"name": j.path.name, "samples": len(j.rows)} for j in jobs], {
        "source": "sapiens2 curate", "manifest": "../manifest.parquet", "image": IMAGE, "metadata": META,
        "max_side": config.max_side, "jpeg_quality": config.jpeg_quality})
    return paths
