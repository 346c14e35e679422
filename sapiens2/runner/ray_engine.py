"""`sapiens2 run --engine ray`: the task predictors' own steps as stages of a Ray Data job, results as Parquet.

::

    inputs ──► decode (CPU tasks: read_image / decode_image)
           ──► predict (actor pool, one network per actor: Job.prepare on threads, Job.run batched, Job.finish,
               attach_masks — the very steps of the local runner, `sapiens2.runner.jobs`)
           ──► encode (CPU tasks: Result.save into the row's bytes or beside it, one Parquet shard per batch)
           ──► driver (progress, failures, summary)

`finish` stays with the network: its inputs are the raw network outputs (a seg logits map is 29 x 1024 x 768
floats), far larger than its result, and it resizes them on the network's device. Nothing here crops, resizes,
names or writes a file itself: the predictors, `Result.save` and `sapiens2.runner.sources` do, so the rows
hold exactly the local engine's files (`sapiens2.runner.ray_table` documents the columns).

Inputs: what the local runner takes (files, folders, globs, .txt lists; videos are left to the local engine),
plus Parquet tables of paths or URIs (a `path` or `uri` column), WebDataset shards (`.tar`: every image member
is an input, keyed `<shard>#<member>`), and URIs of images or folders (anything pyarrow's filesystems reach:
s3://, gs://, hdfs://, file://; a folder is listed recursively). A rerun into the same --out skips every input that has a results row (always: the table is
the record), and redoes the failed ones.
"""

from __future__ import annotations

import functools
import os
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.io.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, decode_image, read_image
from sapiens2.io.inputs import MissingInput
from sapiens2.runner import ray_table as T
from sapiens2.runner.errors import Failures
from sapiens2.runner.pipeline import RunSummary
from sapiens2.runner.progress import Progress
from sapiens2.runner.resume import sweep_temp_files
from sapiens2.runner.ray_stages import Failure, Stage, connect, dataset_of, iter_rows, run_stages
from sapiens2.runner.sources import Source, collect_sources, plan_outputs, previous_outputs, write_manifest
from sapiens2.tasks.outputs import FILES, file_suffixes, output_stem
from sapiens2.tasks.several import attach_masks

__all__ = ["JobFailed", "RateLog", "RayInput", "RayOptions", "collect_inputs", "run_ray"]


class JobFailed(RuntimeError):
    """The Ray job itself stopped (an actor could not load its network, the cluster went away); the shards
    already written stay, and a rerun goes on from them."""


@dataclass
class RayOptions:
    out: str  # a folder, or a URI when maps are bytes
    spec: T.TableSpec
    actors: int = 1  # network replicas (one per GPU on a GPU cluster)
    gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_actor: float = 1.0
    batch_size: int = 4  # images per `run` call of an actor (pose: crops per forward pass, as the local runner)
    shard_rows: int = 64  # images per Parquet shard (and per encode task)
    decode_batch: int = 8  # images per decode task
    prepare_threads: int = 2  # prepare (resize, detection, crops) threads inside each actor
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    address: str | None = None  # an existing Ray cluster; None starts a local one
    num_cpus: int | None = None  # of a local Ray (None: all)
    progress: bool | None = None  # None: a bar on a terminal, else a line every `report_every` seconds
    report_every: float = 30.0


@dataclass(frozen=True)
class RayInput:
    """One input: its key (see `ray_table`), the source (output name, boxes; `path` None for remote inputs),
    and where its bytes are: a local file (`source.path`), a URI, or a byte range of a WebDataset shard."""

    key: str
    source: Source
    uri: str | None = None
    offset: int | None = None
    size: int | None = None


@dataclass
class _Collected:
    inputs: list[RayInput] = field(default_factory=list)
    missing: list[MissingInput] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ inputs


def _is_uri(text: str) -> bool:
    return "://" in text


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def collect_inputs(entries: Sequence[str], out: str, suffixes: Callable[[Source], Sequence[str]]) -> _Collected:
    """Every input of the command line as a `RayInput`, output names planned as the local runner plans them
    (`plan_outputs`), plus what gave nothing. Videos are reported: they need the local engine."""
    found = _Collected()
    local: list[str] = []
    extra: list[RayInput] = []
    for entry in entries:
        low = entry.lower()
        if not (_is_uri(entry) or low.endswith((".parquet", ".tar"))):
            local.append(entry)
            continue
        try:
            if low.endswith(".parquet"):
                paths = _table_paths(entry)
                extra += [_remote_input(p) for p in paths if _is_uri(p)]
                local += [p for p in paths if not _is_uri(p)]
            elif low.endswith(".tar"):
                extra += _shard_inputs(entry)
            elif _is_image_name(entry):
                extra.append(_remote_input(entry))
            else:
                extra += _remote_folder(entry)
        except (OSError, ValueError, tarfile.TarError) as e:
            found.missing.append(MissingInput(entry, f"cannot read it: {e}"))
    exclude = previous_outputs(Path(out)) if not _is_uri(out) else set()
    sources, missing = collect_sources(local, None, exclude=exclude) if local else ([], [])
    found.missing += missing
    for s in sources:
        if s.kind != "image":
            found.missing.append(MissingInput(os.fspath(s.path), "videos need the local engine (--engine local)"))
    images = [RayInput(os.fspath(s.path), s) for s in sources if s.kind == "image"] + extra
    planned = plan_outputs([i.source for i in images], Path(out) if not _is_uri(out) else Path("."), suffixes)
    found.inputs = [replace(i, source=s) for i, s in zip(images, planned)]
    return found


def _table_paths(uri: str) -> list[str]:
    """The `path` (or `uri`) column of a Parquet table of inputs."""
    import pyarrow.parquet as pq

    filesystem, path = T.open_folder(uri)
    with filesystem.open_input_file(path) as f:
        table = pq.read_table(f)
    for column in ("path", "uri"):
        if column in table.column_names:
            return [v for v in table.column(column).to_pylist() if v]
    raise ValueError(f"{uri}: a table of inputs needs a 'path' or 'uri' column (it has "
                     f"{', '.join(table.column_names)})")


def _remote_input(uri: str) -> RayInput:
    tail = uri.split("://", 1)[1].rstrip("/")
    parent, _, name = tail.rpartition("/")
    rel = Path(parent.rpartition("/")[2] or "_") / output_stem(name)
    return RayInput(uri, Source("image", rel, rel_input=name), uri=uri)


def _remote_folder(uri: str) -> list[RayInput]:
    """Every image under a folder URI (recursively, hidden names skipped, in name order)."""
    from pyarrow import fs as pafs

    filesystem, path = T.open_folder(uri)
    if filesystem.get_file_info(path).type != pafs.FileType.Directory:
        raise ValueError("neither an image nor a folder")
    found = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    base = uri.rstrip("/")
    names = sorted(f.path[len(path.rstrip("/")) + 1:] for f in found
                   if f.type == pafs.FileType.File and _is_image_name(f.base_name)
                   and not any(part.startswith(".") for part in f.path[len(path):].split("/")))
    if not names:
        raise ValueError("no image in this folder")
    return [_remote_input(f"{base}/{name}") for name in names]


def _shard_inputs(uri: str) -> list[RayInput]:
    """Every image member of a WebDataset shard (a tar), by byte range: the decode tasks read only their part."""
    filesystem, path = T.open_folder(uri)
    shard = Path(uri.split("://", 1)[-1]).name.removesuffix(".tar")
    out = []
    with filesystem.open_input_file(path) as f, tarfile.open(fileobj=f, mode="r|") as tar:
        for member in tar:
            if member.isfile() and _is_image_name(member.name):
                # a WebDataset sample's key is the member's name up to its first dot, as `output_stem` cuts it
                rel = Path(shard) / Path(member.name).parent / output_stem(member.name)
                out.append(RayInput(f"{uri}#{member.name}", Source("image", rel, rel_input=member.name), uri=uri,
                                    offset=member.offset_data, size=member.size))
    return out


# ------------------------------------------------------------------------------------------ stages


@functools.lru_cache(maxsize=64)
def _filesystem(uri: str) -> tuple[Any, str]:
    """A shard's filesystem, opened once per worker for all its members."""
    return T.open_folder(uri)


def _read(item: RayInput, max_pixels: int | None) -> np.ndarray:
    """The photo, decoded exactly as the local runner decodes it."""
    if item.uri is None:
        return read_image(item.source.path, max_pixels=max_pixels)
    filesystem, path = _filesystem(item.uri)
    with filesystem.open_input_file(path) as f:
        if item.offset is not None:
            f.seek(item.offset)
            data = f.read(item.size)
        else:
            data = f.read()
    return decode_image(data, item.key, max_pixels=max_pixels)


def _decode_stage(max_pixels: int | None) -> Callable[[], Callable[[list[Any]], list[Any]]]:
    def make() -> Callable[[list[Any]], list[Any]]:
        def decode(items: list[RayInput]) -> list[Any]:
            out: list[Any] = []
            for item in items:
                try:
                    out.append((item, _read(item, max_pixels)))
                except Exception as e:  # noqa: BLE001 - one input's failure, reported
                    out.append(Failure.of("decode", e))
            return out
        return decode
    return make


class _Predict:
    """The jobs' networks, built once per actor; `__call__` is prepare → run → finish on a batch."""

    def __init__(self, make_jobs: Callable[[], list[Any]], batch_size: int, threads: int) -> None:
        self.jobs = make_jobs()
        self.batch_size = batch_size
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="sapiens2-prepare")

    def __call__(self, items: list[tuple[RayInput, np.ndarray]]) -> list[Any]:
        prepared = list(self.pool.map(self._prepare, items))
        out: list[Any] = [p if isinstance(p, Failure) else None for p in prepared]
        ready = [i for i, p in enumerate(prepared) if not isinstance(p, Failure)]
        for start in range(0, len(ready), self.batch_size):
            chunk = ready[start:start + self.batch_size]
            for i, value in zip(chunk, self._infer([items[i] for i in chunk], [prepared[i] for i in chunk])):
                out[i] = value
        return out

    def _prepare(self, item: tuple[RayInput, np.ndarray]) -> Any:
        entry, image = item
        try:
            return {job.task: job.prepare(image, entry.source) for job in self.jobs}
        except Exception as e:  # noqa: BLE001
            return Failure.of("prepare", e)

    def _infer(self, items: list[tuple[RayInput, np.ndarray]], prepared: list[dict[str, Any]]) -> list[Any]:
        try:
            raws = {job.task: job.run([p[job.task] for p in prepared]) for job in self.jobs}
        except Exception as e:  # noqa: BLE001 - as the local runner: the culprit alone fails
            if len(items) > 1:
                return [self._infer([it], [p])[0] for it, p in zip(items, prepared)]
            return [Failure.of("inference", e)]
        out: list[Any] = []
        for i, ((entry, image), p) in enumerate(zip(items, prepared)):
            try:
                results = attach_masks({job.task: job.finish(raws[job.task][i], p[job.task]) for job in self.jobs})
            except Exception as e:  # noqa: BLE001 - the local runner's writer threads call this "write"
                out.append(Failure.of("write", e))
                continue
            out.append((entry, image, results, {job.task: (job.saves, job.options) for job in self.jobs}))
        return out


def _predict_stage(make_jobs: Callable[[], list[Any]], batch_size: int, threads: int) -> Callable[[], Any]:
    def make() -> Any:
        return _Predict(make_jobs, batch_size, threads)
    return make


def _encode_stage(out: str, spec: T.TableSpec) -> Callable[[], Callable[[list[Any]], list[Any]]]:
    def make() -> Callable[[list[Any]], list[Any]]:
        def encode(items: list[Any]) -> list[Any]:
            records: list[dict[str, Any] | Failure] = []
            for entry, image, results, jobs in items:
                try:
                    records.append(_record(entry, image, results, jobs, out, spec))
                except Exception as e:  # noqa: BLE001
                    records.append(Failure.of("write", e))
            good = [r for r in records if not isinstance(r, Failure)]
            if not good:
                return records
            try:
                shard = T.write_shard(good, out, spec)
            except Exception as e:  # noqa: BLE001 - the whole shard is lost: every row of it failed
                return [r if isinstance(r, Failure) else Failure.of("write", e) for r in records]
            # the keypoint names (pose_keypoints.json) travel once per shard, with its first row
            first = next(i for i, r in enumerate(records) if not isinstance(r, Failure))
            meta = _keypoint_metadata(items[first][2], items[first][3])
            return [r if isinstance(r, Failure) else {"name": r["name"], "shard": shard,
                                                      "keypoints": meta if i == first else None}
                    for i, r in enumerate(records)]
        return encode
    return make


def _record(entry: RayInput, image: np.ndarray, results: dict[str, Any], jobs: dict[str, Any], out: str,
            spec: T.TableSpec) -> dict[str, Any]:
    """One results row: the files `Result.save` writes, as bytes in the row or beside it (`ray_table`)."""
    rel = entry.source.rel.as_posix()
    row: dict[str, Any] = {"key": entry.key, "name": rel, "height": int(image.shape[0]), "width": int(image.shape[1])}
    for task, (saves, options) in jobs.items():
        result = results[task]
        if task == "pose" and "json" in saves:
            row["pose"] = result.record(options.get("keypoint_format"), options.get("kpt_thr", 0.3))
        wanted = spec.files(task)
        if not wanted:
            continue
        if spec.maps == "files":
            paths = result.save(Path(out) / entry.source.rel, image, saves, **options)
            for suffix, path in zip(file_suffixes(task, saves), paths):
                row[T.column_name(suffix)] = os.path.relpath(path, out).replace(os.sep, "/")
            continue
        kinds = {k for k, s in FILES[task] if s in wanted}
        with tempfile.TemporaryDirectory(prefix="sapiens2-row-") as tmp:
            paths = result.save(Path(tmp) / "x", image, kinds, **options)
            for suffix, path in zip(file_suffixes(task, kinds), paths):
                if suffix in wanted:
                    row[T.column_name(suffix)] = Path(path).read_bytes()
    return row


def _keypoint_metadata(results: dict[str, Any], jobs: dict[str, Any]) -> dict[str, Any] | None:
    """What `pose_keypoints.json` says (the names of the keypoints saved), when pose writes JSON."""
    from sapiens2.tasks.pose import keypoint_metadata

    if "pose" not in results or "json" not in jobs["pose"][0]:
        return None
    return keypoint_metadata(results["pose"].keypoint_set, jobs["pose"][1].get("keypoint_format"))


def _write_keypoint_metadata(out: str, metadata: dict[str, Any]) -> bool:
    """`<out>/pose_keypoints.json`, as the local runner writes it (a local --out only)."""
    from sapiens2.io.writers import write_json

    if not _is_uri(out):
        write_json(Path(out) / "pose_keypoints.json", metadata)
    return True


# ------------------------------------------------------------------------------------------ the job


def run_ray(make_jobs: Callable[[], list[Any]], collected: _Collected, options: RayOptions) -> RunSummary:
    """Run the job on a Ray cluster (or a local Ray); returns what happened, in the local runner's terms.
    errors.parquet (and for a local --out errors.json) are written in every case."""
    import ray.data
    import ray.exceptions

    start = time.perf_counter()
    summary = RunSummary()
    done = T.done_keys(options.out, options.spec)
    if not _is_uri(options.out):
        sweep_temp_files(Path(options.out))  # what a killed job left half-written
    if options.spec.maps == "files":  # listed, so that no later run takes them for inputs (as the local runner)
        out_dir = Path(options.out)
        write_manifest(out_dir, [i.source.out(out_dir, s) for i in collected.inputs for task, kinds in
                                 options.spec.saves for s in file_suffixes(task, kinds)], [])
    todo = [i for i in collected.inputs if i.key not in done]
    summary.skipped = len(collected.inputs) - len(todo)
    progress = Progress(len(todo), options.progress)
    log = None
    if options.progress is None and not sys.stderr.isatty():
        log = RateLog(len(todo), options.report_every, progress.write)
    failures = _Failures(progress.write)
    for m in collected.missing:
        failures.add_missing(m)
    started = metadata_written = False
    try:
        if todo:
            started = connect(options.address, options.num_cpus)
            ray.data.DataContext.get_current().enable_progress_bars = False
            gpus = options.gpus_per_actor
            if gpus is None:
                gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
            stages = [
                Stage("decode", _decode_stage(options.max_pixels), batch_size=options.decode_batch),
                Stage("inference", _predict_stage(make_jobs, options.batch_size, options.prepare_threads),
                      actors=options.actors, batch_size=options.batch_size, num_cpus=options.cpus_per_actor,
                      num_gpus=gpus),
                Stage("write", _encode_stage(options.out, options.spec), batch_size=options.shard_rows),
            ]
            rows = run_stages(dataset_of([i.key for i in todo], todo, options.decode_batch), stages)
            for row in iter_rows(rows):
                if row.failure is None:
                    summary.images_done += 1
                    if row.value.get("keypoints") and not metadata_written:
                        metadata_written = _write_keypoint_metadata(options.out, row.value["keypoints"])
                else:
                    failures.add_failure(row.key, row.failure)
                progress.update(1)
                if log is not None:
                    log.update(1)
    except KeyboardInterrupt:
        summary.interrupted = True
    except ray.exceptions.RayError as e:
        raise JobFailed(f"the Ray job stopped after {summary.images_done} image(s): {_first_line(e)}") from e
    finally:
        progress.close()
        if started:
            import ray

            ray.shutdown()
    summary.failures = failures.entries
    T.write_errors(summary.failures, options.out)
    if not _is_uri(options.out):
        summary.errors_path = failures.write(options.out)
    summary.seconds = time.perf_counter() - start
    return summary


def _first_line(exc: BaseException) -> str:
    """The root cause's message: Ray wraps a worker's exception in several layers of traceback."""
    cause = getattr(exc, "cause", None) or exc
    lines = [line for line in str(cause).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


class RateLog:
    """Progress as log lines, for jobs whose stderr is a log file (no bar): done/total, rows/s, ETA."""

    def __init__(self, total: int, every: float, echo: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.every, self.echo, self.clock = total, every, echo, clock
        self.start = self.last = clock()
        self.count = 0

    def update(self, n: int = 1) -> None:
        self.count += n
        now = self.clock()
        if now - self.last >= self.every or self.count >= self.total:
            self.last = now
            self.echo(self.line(now))

    def line(self, now: float) -> str:
        rate = self.count / max(now - self.start, 1e-9)
        eta = (self.total - self.count) / rate if rate > 0 else float("inf")
        return (f"progress: {self.count}/{self.total} rows, {rate:.2f} rows/s, "
                f"ETA {_duration(eta)}")


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "unknown"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


class _Failures(Failures):
    """`Failures` that also take a worker's `Failure` (its exception type kept, not only its message)."""

    def add_failure(self, file: str, failure: Failure) -> None:
        self.add(file, failure.reason, failure.stage)
        with self._lock:
            self._entries[-1]["error_type"] = failure.error_type
