"""A small stage runner on Ray Data: rows flow through stages, each run as CPU tasks or as a pool of actors.

::

    rows (key, value) ──► stage 1 (CPU tasks: decode) ──► stage 2 (actor pool: a network) ──► ... ──► driver

A row is a `key` (the input's identity: a path, a URI, `shard.tar#member`) and a `value`, any Python object
the stages agree on (a decoded photo, a task's results, a Parquet record). A stage is a function over a list of
values, built once per worker by `Stage.make` (an actor keeps its network loaded between batches). It returns
one value per input, or a `Failure` for the inputs it could not handle; a failed row skips every later stage
and reaches the driver as it is, so one bad input never fails the job. A stage that raises is retried one row
at a time, so only the culprit fails (as the local runner isolates a failing batch).

Values travel between stages as pickled bytes in a binary column: Ray's own Arrow conversion cannot hold
ragged arrays next to arbitrary objects. The bytes never leave the job (nothing pickled is written to disk),
and they are produced and read only by this package's own workers.

Nothing here knows about tasks: `sapiens2 run --engine ray` (`sapiens2.runner.ray_engine`) builds its
decode → predict → encode stages on it, and data curation can build its own.
"""

from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sapiens2.runner.errors import describe

__all__ = ["Failure", "Row", "Stage", "StageFn", "connect", "dataset_of", "iter_rows", "run_stages"]

#: Column names of the rows between stages.
KEY, VALUE, STAGE, REASON, ERROR_TYPE = "key", "value", "stage", "reason", "error_type"


@dataclass(frozen=True)
class Failure:
    """Why one row stopped: the stage (decode, prepare, inference, write, ...), a one-line reason, the error's
    type name (the fields of an `errors.json` entry)."""

    stage: str
    reason: str
    error_type: str

    @classmethod
    def of(cls, stage: str, exc: BaseException) -> Failure:
        return cls(stage, describe(exc), type(exc).__name__)


StageFn = Callable[[list[Any]], list[Any]]


@dataclass(frozen=True)
class Stage:
    """One step of a job. `make()` builds the function (once per worker process or actor); `actors` > 0 runs it
    in a pool of that many actors (state such as a loaded network stays between batches), 0 as stateless CPU
    tasks. `batch_size` rows reach the function at a time; `num_cpus` / `num_gpus` are reserved per task or
    actor (a fraction of a GPU shares it). `name` is the failure stage of a function that raises."""

    name: str
    make: Callable[[], StageFn]
    actors: int = 0
    batch_size: int = 16
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    #: tells this stage from another one of the same name: worker processes outlive jobs, and a CPU stage's
    #: function is kept per worker under this token
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class Row:
    """A row as the driver sees it at the end: its key, its value (None when it failed) and its failure."""

    key: str
    value: Any
    failure: Failure | None


def connect(address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> bool:
    """Join the Ray cluster at `address` ("auto": the one this machine belongs to), or start a local one with
    `num_cpus` (None: all). Returns whether this call started Ray (then the caller shuts it down). Workers of
    a local Ray import this same sapiens2 (its folder goes first on their PYTHONPATH)."""
    import logging

    import ray

    if quiet:  # the job's own progress and summary say what matters; Ray Data's plan logs go to its log files
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=not quiet)
        return True
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=not quiet, configure_logging=not quiet,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    return True


def dataset_of(keys: Sequence[str], values: Sequence[Any], rows_per_block: int = 64) -> Any:
    """A Ray dataset of (key, value) rows, cut into blocks of `rows_per_block` (the unit of parallelism)."""
    import ray.data

    if len(keys) != len(values):
        raise ValueError(f"{len(keys)} keys but {len(values)} values")
    items = [{KEY: k, VALUE: _dump(v), STAGE: "", REASON: "", ERROR_TYPE: ""} for k, v in zip(keys, values)]
    blocks = max(1, -(-len(items) // max(1, rows_per_block)))
    return ray.data.from_items(items, override_num_blocks=blocks)


def run_stages(dataset: Any, stages: Sequence[Stage]) -> Any:
    """The dataset after every stage (lazy: rows flow when the caller iterates, `iter_rows`)."""
    import ray.data

    for stage in stages:
        if stage.actors > 0:
            dataset = dataset.map_batches(
                _ActorStage, fn_constructor_args=(stage,), compute=ray.data.ActorPoolStrategy(size=stage.actors),
                batch_size=stage.batch_size, batch_format="numpy", num_cpus=stage.num_cpus,
                num_gpus=stage.num_gpus or None, zero_copy_batch=False)
        else:
            dataset = dataset.map_batches(
                _apply_task, fn_args=(stage,), batch_size=stage.batch_size, batch_format="numpy",
                num_cpus=stage.num_cpus, num_gpus=stage.num_gpus or None, zero_copy_batch=False)
    return dataset


def iter_rows(dataset: Any) -> Iterator[Row]:
    """The finished rows, as they come (streaming: the first rows arrive while later ones are still decoded)."""
    for row in dataset.iter_rows():
        stage = row[STAGE]
        failure = Failure(stage, row[REASON], row[ERROR_TYPE]) if stage else None
        yield Row(row[KEY], None if failure else _load(row[VALUE]), failure)


# ---------------------------------------------------------------------------------------- inside workers


_BUILT: dict[str, StageFn] = {}  # per worker process: CPU stages are built once per job, not once per batch
_KEEP = 8  # functions kept per worker (the latest stages)


def _apply_task(batch: dict[str, Any], stage: Stage) -> dict[str, Any]:
    fn = _BUILT.get(stage.token)
    if fn is None:
        while len(_BUILT) >= _KEEP:
            _BUILT.pop(next(iter(_BUILT)))
        fn = _BUILT[stage.token] = stage.make()
    return _apply(fn, stage.name, batch)


class _ActorStage:
    def __init__(self, stage: Stage) -> None:
        self.name = stage.name
        self.fn = stage.make()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return _apply(self.fn, self.name, batch)


def _apply(fn: StageFn, name: str, batch: dict[str, Any]) -> dict[str, Any]:
    """Run `fn` on the batch's rows that have not failed; the others pass through unchanged."""
    n = len(batch[KEY])
    values = list(batch[VALUE])
    stages, reasons, types = list(batch[STAGE]), list(batch[REASON]), list(batch[ERROR_TYPE])
    todo = [i for i in range(n) if not stages[i]]
    outputs = _call(fn, name, [_load(values[i]) for i in todo])
    for i, out in zip(todo, outputs):
        if isinstance(out, Failure):
            stages[i], reasons[i], types[i], values[i] = out.stage, out.reason, out.error_type, b""
        else:
            try:
                values[i] = _dump(out)
            except Exception as e:  # noqa: BLE001 - a value that cannot travel fails its row only
                stages[i], reasons[i], types[i], values[i] = name, describe(e), type(e).__name__, b""
    return {KEY: batch[KEY], VALUE: _column(values), STAGE: _strings(stages), REASON: _strings(reasons),
            ERROR_TYPE: _strings(types)}


def _call(fn: StageFn, name: str, values: list[Any]) -> list[Any]:
    if not values:
        return []
    try:
        out = fn(values)
        if len(out) != len(values):
            raise RuntimeError(f"stage {name} returned {len(out)} values for {len(values)} rows")
        return out
    except Exception as e:  # noqa: BLE001 - isolate the culprit, one row at a time
        if len(values) == 1:
            return [Failure.of(name, e)]
        return [_call(fn, name, [v])[0] for v in values]


def _dump(value: Any) -> bytes:
    return pickle.dumps(value, protocol=5)


def _load(data: Any) -> Any:
    return pickle.loads(bytes(data)) if len(data) else None


def _column(values: list[bytes]) -> Any:
    import numpy as np

    out = np.empty(len(values), dtype=object)
    out[:] = [bytes(v) for v in values]
    return out


def _strings(values: list[Any]) -> Any:
    import numpy as np

    return np.asarray([str(v) for v in values], dtype=object)
