"""The local engine: batch stages in order over batches, then the corpus-wide dedup and clustering, then the
manifest, the shards and the report. Every stage result is a Parquet part (see `parts`), so `--resume`
recomputes nothing already written. The Ray engine (`ray_engine`, a `BatchEngine`) runs the same batch stages
through the same `stage_part` on the same batches, and everything after them is this module's code for both.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sapiens2.curate import cluster as clustering
from sapiens2.curate import dedup
from sapiens2.curate.clip_stage import ClipModels, ClipStage
from sapiens2.curate.config import CurateConfig, fingerprint
from sapiens2.curate.headpose import HeadPoseStage, KeypointPredictor
from sapiens2.curate.parts import columns_table, keys_hash, read_part, write_part
from sapiens2.curate.phash import hashes_to_bytes
from sapiens2.curate.sources import Item
from sapiens2.curate.stages import (
    BALANCE, DUPLICATE, Batch, DecodeStage, Detector, EmbedStage, Embedder, Loader, PersonStage, PhashStage, Stage,
)

logger = logging.getLogger(__name__)

#: The manifest's columns, whichever stages ran (a skipped stage leaves its columns null).
MANIFEST_SCHEMA = pa.schema([
    ("key", pa.string()), ("path", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()),
    ("person_count", pa.int32()), ("person_score", pa.float32()), ("person_area", pa.float32()),
    ("person_x1", pa.float32()), ("person_y1", pa.float32()), ("person_x2", pa.float32()), ("person_y2", pa.float32()),
    ("aesthetic", pa.float32()), ("photo_score", pa.float32()), ("text_score", pa.float32()),
    ("clip_label", pa.string()),  # the realism prompt CLIP found closest
    ("head_yaw", pa.float32()), ("head_pitch", pa.float32()), ("head_roll", pa.float32()),  # degrees
    ("face_keypoints", pa.int32()), ("head_error", pa.float32()), ("head_status", pa.string()),
    ("phash", pa.string()),
    ("dedup_group", pa.string()),  # key of the member its duplicate group keeps
    ("cluster", pa.int32()),  # leaf (level-1) cluster
    ("cluster_top", pa.int32()),  # its top-level cluster (the same as `cluster` with one level)
    ("kept", pa.bool_()), ("reason", pa.string()), ("detail", pa.string()),
])


@dataclass
class CurateResult:
    """Where things went and what was (re)computed: `computed` / `reused` count parts per stage."""

    manifest: Path
    table: pa.Table
    computed: dict[str, int] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)
    cluster_sizes: dict[int, tuple[int, int]] = field(default_factory=dict)  # leaf -> (before, after) balancing
    level_sizes: list[dict[int, tuple[int, int]]] = field(default_factory=list)  # the same per level, leaves first
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage's computed parts
    rows: dict[str, int] = field(default_factory=dict)  # rows those parts covered

    def record(self, name: str, rows: int, seconds: float | None) -> None:
        """A part of stage `name` over `rows` rows: computed in `seconds`, or reused (None)."""
        if seconds is None:
            self.reused[name] = self.reused.get(name, 0) + 1
        else:
            self._timed(name, rows, seconds)

    def _timed(self, name: str, rows: int, seconds: float) -> None:
        self.computed[name] = self.computed.get(name, 0) + 1
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.rows[name] = self.rows.get(name, 0) + rows

    def throughput(self) -> dict[str, float]:
        """Images per second of each stage computed in this run (resumed parts do not count)."""
        return {k: self.rows[k] / max(self.seconds[k], 1e-9) for k in self.seconds}

    @property
    def kept(self) -> int:
        return int(pc.sum(self.table["kept"]).as_py() or 0)


class BatchEngine(Protocol):
    """Runs the batch stages and the shard writing elsewhere (`ray_engine.RayEngine`); `curate` does the rest.
    Without one, `curate` runs them here, one batch after the other."""

    def session(self) -> AbstractContextManager[Any]: ...

    def run_batch_stages(self, items: Sequence[Item], stages: Sequence[Stage], parts: Path, config: CurateConfig,
                         result: CurateResult, progress: Callable[[int, int], None] | None
                         ) -> dict[str, pa.Table | None]: ...

    def map_shards(self, fn: Callable[[Any], bool], jobs: list[Any]) -> list[bool]: ...


def build_stages(config: CurateConfig, detector: Detector | Loader | None, embedder: Embedder | Loader | None,
                 detector_batched: bool = False, clip: ClipModels | Loader | None = None,
                 head: KeypointPredictor | Loader | None = None) -> list[Stage]:
    """The batch stages `config` asks for, in order; a stage's model (itself or its `Loader`) must be given
    when it is enabled. `detector_batched`: the detector takes a list of images (see `PersonStage`). `clip`:
    the CLIP stage's models (`clip_stage.clip_loader` builds them); `head`: the head stage's keypoint
    predictor (`headpose.load_pose_keypoints` builds the default). CLIP runs before the head stage: it is the
    cheaper of the two, so the pose network sees only the images CLIP kept."""
    stages: list[Stage] = [DecodeStage(config.decode)]
    if config.person.enabled:
        if detector is None:
            raise ValueError("the person stage needs a detector ([person] enabled = false to skip it)")
        stages.append(PersonStage(detector, config.person, detector_batched))
    if config.clip.enabled:
        if clip is None:
            raise ValueError("the clip stage needs CLIP models ([clip] enabled = false to skip it)")
        stages.append(ClipStage(clip, config.clip, keep_embeddings=config.embeddings_from_clip()))
    if config.head.enabled:
        if head is None:
            raise ValueError("the head stage needs a keypoint predictor ([head] enabled = false to skip it)")
        stages.append(HeadPoseStage(head, config.head))
    if config.dedup.enabled:
        stages.append(PhashStage())
    if config.needs_embeddings() and not config.embeddings_from_clip():
        if embedder is None:
            raise ValueError("deep dedup and clustering need an embedder ([dedup] deep = false and "
                             "[cluster] enabled = false to skip them)")
        stages.append(EmbedStage(embedder, config.embed))
    return stages


def stage_chain(stages: Sequence[Stage], work_side: int | None) -> str:
    """The fingerprint of these stages' names and settings (and of the working resolution they saw)."""
    return fingerprint(work_side, *[(s.name, s.settings) for s in stages])


def part_folders(stages: Sequence[Stage], parts: Path, work_side: int | None) -> list[Path]:
    """Each stage's parts folder: its position, name and the fingerprint of the chain up to it."""
    return [parts / f"{i:02d}-{stage.name}-{stage_chain(stages[: i + 1], work_side)}" for i, stage in enumerate(stages)]


def batch_items(items: Sequence[Item], batch_size: int) -> list[tuple[str, list[Item]]]:
    """The batches both engines cut `items` into, each with its part file name (a hash of its keys): the
    same sources and batch size give the same names, so either engine resumes the other's parts."""
    out = []
    for start in range(0, len(items), batch_size):
        chunk = list(items[start:start + batch_size])
        out.append((f"{keys_hash([it.key for it in chunk])}.parquet", chunk))
    return out


def stage_part(stage: Stage, alive: Batch, path: Path) -> tuple[pa.Table, Batch, float | None]:
    """`stage` on the rows `alive`: its part at `path` when written, else computed and written. Returns the
    rows, the rows it kept (for the next stage, with this stage's scalar values recorded on them, e.g. the
    person box the head stage reads) and the seconds it computed (None: read from the part)."""
    table = read_part(path)
    seconds = None
    if table is None:
        t0 = time.perf_counter()
        table = columns_table([it.key for it in alive.items], stage(alive), stage.fields)
        seconds = time.perf_counter() - t0
        write_part(path, table)
    alive.record(table)
    kept = np.flatnonzero(table["reason"].is_null().to_numpy(zero_copy_only=False)).tolist()
    return table, alive.subset(kept), seconds


def decode_threads(workers: int) -> int:
    """`[engine] decode_workers`, 0 meaning one per CPU, at most 4."""
    return workers or min(4, os.cpu_count() or 1)


def run_batch_stages(items: Sequence[Item], stages: Sequence[Stage], parts: Path, batch_size: int,
                     max_pixels: int | None, result: CurateResult, work_side: int | None = None,
                     progress: Callable[[int, int], None] | None = None, decode_workers: int = 0
                     ) -> dict[str, pa.Table]:
    """Each batch through each stage (on the rows the earlier ones kept); returns each stage's rows.

    A pool of `decode_workers` threads decodes each batch's images, and the next batch's while the stages
    work on this one; a batch whose parts are all written is not decoded at all (a resumed run reads only
    Parquet)."""
    folders = part_folders(stages, parts, work_side)
    tables: dict[str, list[pa.Table]] = {s.name: [] for s in stages}
    batches: list[tuple[str, Batch | None]] = [(name, Batch(chunk, max_pixels, work_side))
                                               for name, chunk in batch_items(items, batch_size)]
    done = 0
    with ThreadPoolExecutor(decode_threads(decode_workers), thread_name_prefix="curate-decode") as pool:

        def decode(k: int) -> list[Future]:
            name, batch = batches[k]
            if batch is None or all((folder / name).exists() for folder in folders):
                return []
            return [pool.submit(batch.prefetch, i) for i in range(len(batch))]

        ahead = decode(0) if batches else []
        for k, (name, batch) in enumerate(batches):
            current, ahead = ahead, decode(k + 1) if k + 1 < len(batches) else []
            for job in current:
                job.result()
            batches[k] = (name, None)  # its pixels leave memory with the last subset of it
            alive = batch
            for stage, folder in zip(stages, folders):
                if not len(alive):
                    break
                rows = len(alive)
                table, alive, seconds = stage_part(stage, alive, folder / name)
                result.record(stage.name, rows, seconds)
                tables[stage.name].append(table)
            done += len(batch)
            if progress:
                progress(done, len(items))
    return {name: pa.concat_tables(ts) if ts else None for name, ts in tables.items()}


def _global_part(parts: Path, name: str, settings: tuple, keys: list[str]) -> Path:
    return parts / f"{name}-{fingerprint(*settings)}" / f"{keys_hash(keys)}.parquet"


def run_dedup(rows: pa.Table, config: CurateConfig, parts: Path, result: CurateResult, chain: str = "") -> pa.Table:
    """Duplicate groups among `rows` (the images every batch stage kept): key, dedup_group, reason, detail."""
    keys = rows["key"].to_pylist()
    path = _global_part(parts, "dedup", (chain, config.dedup), keys)
    table = read_part(path)
    if table is not None:
        result.reused["dedup"] = 1
        return table
    t0 = time.perf_counter()
    pairs = dedup.phash_pairs(hashes_to_bytes(rows["phash"].to_pylist()), config.dedup.hamming_radius)
    if config.dedup.deep:
        pairs += dedup.embedding_pairs(_embeddings(rows), config.dedup.cosine_threshold)
    pixels = rows["width"].to_numpy().astype(np.float64) * rows["height"].to_numpy()
    score = rows["person_score"].fill_null(0).to_numpy() if "person_score" in rows.column_names else 0
    group, keep = dedup.duplicate_groups(len(keys), pairs, pixels + np.clip(score, 0, 1) * 0.5)
    group_keys = [keys[g] for g in group]
    table = columns_table(keys, {
        "dedup_group": group_keys,
        "reason": [None if k else DUPLICATE for k in keep],
        "detail": [None if k else f"duplicate of {group_keys[i]}" for i, k in enumerate(keep)],
    }, {"dedup_group": pa.string()})
    result._timed("dedup", len(keys), time.perf_counter() - t0)
    write_part(path, table)
    return table


def run_cluster(rows: pa.Table, config: CurateConfig, parts: Path, result: CurateResult, chain: str = ""
                ) -> pa.Table:
    """(Hierarchical) k-means cluster ids and the balanced sample among `rows`: key, cluster, cluster_top,
    cluster_levels (every level's id, leaves first; parts only), reason, detail."""
    keys = rows["key"].to_pylist()
    c = config.cluster
    path = _global_part(parts, "cluster", (chain, config.dedup, c), keys)
    table = read_part(path)
    if table is None:
        t0 = time.perf_counter()
        features = _embeddings(rows)
        tree = clustering.hierarchical_kmeans(features, c.levels, c.iterations, c.seed, c.restarts)
        groups = None
        if c.balance_yaw_bins:
            yaw = rows["head_yaw"].to_numpy(zero_copy_only=False).astype(np.float64)  # nulls -> NaN
            groups = clustering.yaw_bins(yaw, c.balance_yaw_bins)
        keep = clustering.hierarchical_sample(tree.labels, c.target, c.seed,
                                              tree.closeness(features) if c.sampling == "centroid" else None, groups)
        leaf, top = tree.labels[0], tree.labels[-1]
        table = columns_table(keys, {
            "cluster": leaf.tolist(), "cluster_top": top.tolist(),
            "cluster_levels": np.stack(tree.labels, axis=1).tolist() if len(keys) else [],
            "reason": [None if k else BALANCE for k in keep],
            "detail": [None if k else f"cluster {a} (top {b}) over its quota" for k, a, b in zip(keep, leaf, top)],
        }, {"cluster": pa.int32(), "cluster_top": pa.int32(), "cluster_levels": pa.list_(pa.int32())})
        result._timed("cluster", len(keys), time.perf_counter() - t0)
        write_part(path, table)
    else:
        result.reused["cluster"] = 1
    kept = table["reason"].is_null().to_numpy(zero_copy_only=False)
    ids = table["cluster_levels"].combine_chunks().flatten().to_numpy().reshape(len(table), len(c.levels))
    result.level_sizes = []
    for labels in ids.T.astype(np.int64):
        before, after = np.bincount(labels), np.bincount(labels[kept], minlength=labels.max(initial=-1) + 1)
        result.level_sizes.append({int(k): (int(before[k]), int(after[k])) for k in np.flatnonzero(before)})
    result.cluster_sizes = result.level_sizes[0]
    return table


def _embeddings(rows: pa.Table) -> np.ndarray:
    emb = rows["embedding"]
    return np.stack(emb.to_numpy(zero_copy_only=False)).astype(np.float32) if len(emb) else np.zeros((0, 1), np.float32)


def _kept(table: pa.Table) -> pa.Table:
    return table.filter(pc.is_null(table["reason"]))


def _merge(by_key: dict[str, dict], table: pa.Table | None) -> None:
    """Fold a stage's rows into the per-key manifest rows; the first stage to give a reason sets it."""
    if table is None:
        return
    for row in table.to_pylist():
        out = by_key[row.pop("key")]
        reason, detail = row.pop("reason"), row.pop("detail")
        out.update({k: v for k, v in row.items() if k in out})  # parts may hold more (embeddings, levels)
        if out["reason"] is None and reason is not None:
            out["reason"], out["detail"] = reason, detail


def assemble_manifest(items: Sequence[Item], tables: Sequence[pa.Table | None]) -> pa.Table:
    """One row per input, in input order, with `MANIFEST_SCHEMA`'s columns."""
    blank = {f.name: None for f in MANIFEST_SCHEMA}
    by_key = {it.key: {**blank, "key": it.key, "path": it.path} for it in items}
    for table in tables:
        _merge(by_key, table)
    rows = list(by_key.values())
    for row in rows:
        row["kept"] = row["reason"] is None
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def curate(items: Sequence[Item], out: str | Path, config: CurateConfig | None = None, *,
           detector: Detector | Loader | None = None, embedder: Embedder | Loader | None = None,
           resume: bool = False,
           detector_batched: bool = False, clip: ClipModels | Loader | None = None,
           head: KeypointPredictor | Loader | None = None,
           shards: bool = True, report: bool = True,
           progress: Callable[[int, int], None] | None = None, engine: BatchEngine | None = None) -> CurateResult:
    """Curate `items` into `out`: ``manifest.parquet``, ``shards/*.tar``, ``report/index.html`` and the
    resumable ``parts/``. Without `resume` an `out` that already holds parts is refused, so two runs
    never mix by accident. A model is the callable itself or a `stages.Loader` that builds it.

    `engine`: where the batch stages and the shard writing run, e.g. `ray_engine.RayEngine(...)` for a Ray Data
    job; None: here. Everything else (parts, dedup, clustering, manifest, report) is the same code either way."""
    config = config or CurateConfig()
    out = Path(out)
    parts = out / "parts"
    if parts.exists() and any(parts.iterdir()) and not resume:
        raise FileExistsError(f"{out} already holds a curation run: pass --resume (resume=True) to continue "
                              "it, or choose another --out")
    stages = build_stages(config, detector, embedder, detector_batched, clip, head)
    if engine is None:
        return _finish(items, out, config, stages, shards, report, progress, None)
    with engine.session():
        return _finish(items, out, config, stages, shards, report, progress, engine)


def _finish(items: Sequence[Item], out: Path, config: CurateConfig, stages: Sequence[Stage], shards: bool,
            report: bool, progress: Callable[[int, int], None] | None, engine: BatchEngine | None) -> CurateResult:
    """The batch stages (on either engine), then the same corpus-wide steps, manifest, shards and report."""
    parts = out / "parts"
    result = CurateResult(out / "manifest.parquet", pa.table({}))
    if engine is None:
        tables = run_batch_stages(items, stages, parts, config.engine.batch_size, config.decode.max_pixels,
                                  result, config.engine.work_side, progress, config.engine.decode_workers)
    else:
        tables = engine.run_batch_stages(items, stages, parts, config, result, progress)
    merged = list(tables.values())
    survivors = _survivors(tables, stages)
    chain = stage_chain(stages, config.engine.work_side)  # the global stages' inputs come from all of them
    if config.dedup.enabled and survivors is not None:
        dd = run_dedup(survivors, config, parts, result, chain)
        merged.append(dd)
        survivors = survivors.filter(pc.is_null(dd["reason"]))
    if config.cluster.enabled and survivors is not None:
        merged.append(run_cluster(survivors, config, parts, result, chain))
    result.table = assemble_manifest(items, merged)
    tmp = out / ".manifest.parquet.tmp"
    pq.write_table(result.table, tmp)
    tmp.replace(result.manifest)
    if shards:
        from sapiens2.curate.shards import write_shards

        write_shards(items, result.table, out / "shards", config.output, config.decode.max_pixels,
                     engine.map_shards if engine is not None else None)
    if report:
        from sapiens2.curate.report import write_report

        write_report(items, result, out / "report", config)
    return result


def _survivors(tables: dict[str, pa.Table | None], stages: Sequence[Stage]) -> pa.Table | None:
    """Rows every batch stage kept (those the last stage kept), with the columns of all stages."""
    last = tables.get(stages[-1].name)
    if last is None:
        return None
    keys = _kept(last)["key"]
    columns = {"key": keys}
    for stage in stages:
        t = tables[stage.name]
        rows = t.take(pc.index_in(keys, value_set=t["key"]))
        columns.update({name: rows[name] for name in stage.fields})
    return pa.table(columns)
