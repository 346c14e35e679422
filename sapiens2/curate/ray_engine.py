"""`sapiens2 curate --engine ray`: the batch stages as a Ray Data job, on a local Ray or a cluster.

::

    batches of items ──► decode (CPU tasks) ──► person (actor pool: one detector per actor)
                     ──► clip, head (actor pools, when enabled: one CLIP / pose model per actor)
                     ──► phash (CPU tasks)  ──► embed (actor pool: one embedder per actor) ──► driver
    driver: dedup, clustering, manifest, shards, report (`sapiens2.curate.engine`, as the local engine)

A Ray row is one engine batch (`engine.batch_items`: the same cut, the same part names as the local engine),
and each Ray stage is one curate stage run through `engine.stage_part` on the rows the earlier stages kept: it
reads the batch's part when it is written, else computes the stage and writes the part. So the parts on disk
are exactly the local engine's, and `--resume` continues a run whichever engine started it. The stage objects
are those of `engine.build_stages`, pickled into the workers; a model stage (``holds_model``) runs in a pool
of actors, each building its model once from the stage's `Loader` (see `sapiens2.curate.stages`), the others
as CPU tasks. Decoded pixels (shrunk to ``[engine] work_side``) travel with the batch to the later stages and
are dropped before the driver collects the batch's tables.

The corpus-wide steps need every row at once and stay on the driver: `engine.curate` runs them on the tables
this returns, then writes the shards with one Ray task per shard (`shard_tasks`) and the report. The reusable
stage runner, `connect` and the failure rows come from `sapiens2.runner.ray_stages` (as for `sapiens2 run
--engine ray`): a batch whose stage raises fails alone, every other batch still writes
its parts, and the job then stops with `CurateJobFailed` naming the batch, the stage and why.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from sapiens2.curate.config import CurateConfig
from sapiens2.curate.engine import CurateResult, batch_items, part_folders, stage_part
from sapiens2.curate.sources import Item
from sapiens2.curate.stages import Batch, Stage
from sapiens2.runner.ray_stages import Stage as RayStage
from sapiens2.runner.ray_stages import connect, dataset_of, iter_rows, run_stages

__all__ = ["CurateJobFailed", "RayEngine", "map_tasks", "run_batch_stages_ray", "session", "shard_tasks"]


class CurateJobFailed(RuntimeError):
    """Batches failed (or the cluster went away); every part already written stays, for `--resume`."""


@dataclass(frozen=True)
class RayEngine:
    """The Ray engine, for `engine.curate(..., engine=RayEngine(...))` (an `engine.BatchEngine`). Where and how
    wide: `address` of a cluster ("auto": this machine's; None: start a local Ray with `num_cpus`), `actors`
    per model stage, and what each actor reserves (`gpus_per_actor` None: the cluster's GPUs shared by all
    actors, at most one each; see `gpus_per_actor`)."""

    address: str | None = None
    num_cpus: int | None = None
    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float | None = None

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise ValueError(f"actors must be >= 1, got {self.actors}")
        if self.cpus_per_actor <= 0:
            raise ValueError(f"cpus_per_actor must be > 0, got {self.cpus_per_actor}")
        if self.gpus_per_actor is not None and self.gpus_per_actor < 0:
            raise ValueError(f"gpus_per_actor must be >= 0, got {self.gpus_per_actor}")

    def session(self) -> contextlib.AbstractContextManager[None]:
        return session(self)

    def run_batch_stages(self, items: Sequence[Item], stages: Sequence[Stage], parts: Path, config: CurateConfig,
                         result: CurateResult, progress: Callable[[int, int], None] | None = None
                         ) -> dict[str, pa.Table | None]:
        return run_batch_stages_ray(items, stages, parts, config, result, self, progress)

    def map_shards(self, fn: Callable[[Any], bool], jobs: list[Any]) -> list[bool]:
        return shard_tasks(fn, jobs)


@dataclass
class _Flow:
    """One engine batch on its way through the stages: the rows still alive and each stage's table."""

    index: int
    name: str  # its part file name
    size: int
    alive: Batch | None
    tables: dict[str, pa.Table] = field(default_factory=dict)
    timings: list[tuple[str, int, float | None]] = field(default_factory=list)  # (stage, rows, seconds)


def _make(stage: Stage, folder: Path, last: bool) -> Callable[[list[_Flow]], list[_Flow]]:
    """The Ray stage function of `stage` (built once per worker or actor: the stage keeps its model there)."""
    def run(flows: list[_Flow]) -> list[_Flow]:
        for flow in flows:
            if flow.alive is not None and len(flow.alive):
                rows = len(flow.alive)
                table, flow.alive, seconds = stage_part(stage, flow.alive, folder / flow.name)
                flow.tables[stage.name] = table
                flow.timings.append((stage.name, rows, seconds))
            if last:
                flow.alive = None  # the driver needs the tables, not the pixels
        return flows
    return run


def ray_stages(stages: Sequence[Stage], folders: Sequence[Path], options: RayEngine, gpus: float) -> list[RayStage]:
    """The curate stages as stages of the Ray stage runner: model stages as actor pools, the rest as tasks."""
    out = []
    for i, (stage, folder) in enumerate(zip(stages, folders)):
        make = functools.partial(_make, stage, folder, i == len(stages) - 1)
        if getattr(stage, "holds_model", False):
            out.append(RayStage(stage.name, make, actors=options.actors, batch_size=1,
                                num_cpus=options.cpus_per_actor, num_gpus=gpus))
        else:
            out.append(RayStage(stage.name, make, batch_size=1))
    return out


def gpus_per_actor(options: RayEngine, model_stages: int, cluster_gpus: float) -> float:
    """`options.gpus_per_actor`, or by default the cluster's GPUs shared evenly by every actor of every model
    stage, at most one each (8 GPUs, 8 actors, detector + embedder: half a GPU per actor)."""
    if options.gpus_per_actor is not None:
        return options.gpus_per_actor
    if cluster_gpus <= 0 or model_stages == 0:
        return 0.0
    return min(1.0, cluster_gpus / (options.actors * model_stages))


def _check_resources(stages: Sequence[RayStage], cpus: float, gpus: float) -> None:
    """Actor pools hold their CPUs and GPUs for the whole job: they must fit, with a CPU left for the tasks
    (an actor pool that does not fit would wait for resources forever)."""
    held = sum(s.actors * s.num_cpus for s in stages if s.actors)
    if held and held > cpus - 1:
        raise CurateJobFailed(f"the model stages' actors reserve {held:g} CPUs of the cluster's {cpus:g}, leaving "
                              "less than one for decoding and hashing: use fewer --actors or a smaller "
                              "--cpus-per-actor (a fraction is fine)")
    asked = sum(s.actors * s.num_gpus for s in stages if s.actors)
    if asked > gpus + 1e-9:
        raise CurateJobFailed(f"the model stages' actors ask for {asked:g} GPUs, the cluster has {gpus:g}: use "
                              "fewer --actors or a fractional --gpus-per-actor (actors then share a GPU)")


def run_batch_stages_ray(items: Sequence[Item], stages: Sequence[Stage], parts: Path, config: CurateConfig,
                         result: CurateResult, options: RayEngine,
                         progress: Callable[[int, int], None] | None = None) -> dict[str, pa.Table | None]:
    """`engine.run_batch_stages` as a Ray job: the same parts, the same tables (in input order)."""
    import ray
    import ray.data
    import ray.exceptions

    work_side, max_pixels = config.engine.work_side, config.decode.max_pixels
    folders = part_folders(stages, parts, work_side)
    flows = [_Flow(i, name, len(chunk), Batch(chunk, max_pixels, work_side))
             for i, (name, chunk) in enumerate(batch_items(items, config.engine.batch_size))]
    sizes = {f.name: f.size for f in flows}
    got: dict[str, _Flow] = {}
    failed: list[str] = []
    started = False
    try:
        if flows:
            started = connect(options.address, options.num_cpus)
            ray.data.DataContext.get_current().enable_progress_bars = False
            resources = ray.cluster_resources()
            models = sum(bool(getattr(s, "holds_model", False)) for s in stages)
            plan = ray_stages(stages, folders, options, gpus_per_actor(options, models, resources.get("GPU", 0)))
            _check_resources(plan, resources.get("CPU", 0), resources.get("GPU", 0))
            done = 0
            for row in iter_rows(run_stages(dataset_of([f.name for f in flows], flows, rows_per_block=1), plan)):
                if row.failure is None:
                    got[row.key] = row.value
                else:
                    first = next(it.path for it in next(f for f in flows if f.name == row.key).alive.items)
                    failed.append(f"the batch starting at {first}: stage {row.failure.stage}: "
                                  f"{row.failure.error_type}: {row.failure.reason}")
                done += sizes[row.key]
                if progress:
                    progress(done, len(items))
    except ray.exceptions.RayError as err:
        from sapiens2.runner.ray_engine import _first_line  # the root cause under Ray's layers of traceback

        raise CurateJobFailed(f"the Ray job stopped ({_first_line(err)}); the parts written so far stay: "
                              "rerun with --resume") from err
    finally:
        if started:
            ray.shutdown()
    if failed:
        raise CurateJobFailed(f"{len(failed)} of {len(flows)} batches failed (the other batches' parts are "
                              f"written: fix the cause and rerun with --resume); {failed[0]}")
    tables: dict[str, list[pa.Table]] = {s.name: [] for s in stages}
    for flow in sorted(got.values(), key=lambda f: f.index):
        for name, table in flow.tables.items():
            tables[name].append(table)
        for name, rows, seconds in flow.timings:
            result.record(name, rows, seconds)
    return {name: pa.concat_tables(ts) if ts else None for name, ts in tables.items()}



@contextlib.contextmanager
def session(options: RayEngine) -> Iterator[None]:
    """Ray for the length of a curation run: joined (`options.address`) or started here, and then stopped."""
    import ray
    import ray.data

    started = connect(options.address, options.num_cpus)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield
    finally:
        if started:
            ray.shutdown()


def _each(fn: Callable[[Any], Any]) -> Callable[[list[Any]], list[Any]]:
    return lambda values: [fn(v) for v in values]


def map_tasks(name: str, fn: Callable[[Any], Any], jobs: Sequence[Any], keys: Sequence[str]) -> list[Any]:
    """`[fn(job) for job in jobs]` as Ray tasks, one job each (`fn` importable by name, jobs picklable); a job
    that raises fails alone, and then `CurateJobFailed` names it after the others are done."""
    import ray.exceptions

    if not jobs:
        return []
    results: dict[str, Any] = {}
    failed: list[str] = []
    try:
        for row in iter_rows(run_stages(dataset_of(list(keys), list(jobs), rows_per_block=1),
                                        [RayStage(name, functools.partial(_each, fn), batch_size=1)])):
            if row.failure is None:
                results[row.key] = row.value
            else:
                failed.append(f"{row.key}: {row.failure.error_type}: {row.failure.reason}")
    except ray.exceptions.RayError as err:
        from sapiens2.runner.ray_engine import _first_line

        raise CurateJobFailed(f"the Ray job stopped while writing ({_first_line(err)})") from err
    if failed:
        raise CurateJobFailed(f"{len(failed)} of {len(jobs)} {name} tasks failed; {failed[0]}")
    return [results[k] for k in keys]


def shard_tasks(fn: Callable[[Any], Any], jobs: Sequence[Any]) -> list[Any]:
    """`shards.write_shards`'s `run` on Ray: each shard written by its own task (`shards.write_shard_of`)."""
    return map_tasks("shard", fn, jobs, [job.path.name for job in jobs])
