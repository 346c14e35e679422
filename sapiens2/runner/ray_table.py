"""The Parquet tables of `sapiens2 run --engine ray`: one row per image done, one per input that failed.

Layout under `--out` (a folder, or any URI pyarrow reaches when maps are bytes)::

    results/part-<id>.parquet   one shard per batch of finished images (written whole, then renamed)
    errors.parquet, errors.json inputs that failed in the latest run (the same entries as the local runner's)
    pose_keypoints.json         (pose with json) the keypoint names, as the local runner writes it

`results` columns, in this order:

| column | type | what |
|---|---|---|
| `key` | string | the input's identity: its absolute path, its URI, or `<shard.tar>#<member>` |
| `name` | string | its output prefix under --out, exactly as the local runner names files (`a/x`) |
| `height`, `width` | int32 | the decoded photo's size |
| `pose` | struct | (pose, `--save json`) the `_pose.json` record: `image`, `image_size`, `keypoint_format`, `num_keypoints`, `kpt_thr_used`, `box_source`, `instances` (list of `bbox`, `bbox_score`, `keypoints` [[x, y], ...], `keypoint_scores`), the same fields and float64 values as the file |
| one per file | binary, or string | every other file the local runner would write for the `--save` kinds (`sapiens2.tasks.outputs.FILES`), named by its suffix without the leading `_` or `.`: `seg.npy`, `seg.png`, `pose.npz`, `pose.jpg`, `normal.npy`, `depth.npy`, `points.npy`, `ply`, `albedo.png`, `alpha.png`, `matting.npz`, ... With `--maps bytes` (default) the cell holds the file's bytes, byte for byte what the local runner writes (`np.load(io.BytesIO(cell))`, `cv2.imdecode`); with `--maps files` the file is written beside, under the local runner's name, and the cell holds its path relative to --out (then `pose.json` is a column too). |

`errors.parquet` columns: `file` (the input, as in errors.json), `stage` (input, decode, prepare, inference,
write), `reason`, `error_type` (all strings).

The tasks, save kinds, maps and keypoint format of a run are stored in the schema's metadata (`sapiens2`
key); a rerun into the same --out must ask for the same columns, so every shard of a table reads as one.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from sapiens2.io.writers import TEMP_SUFFIX
from sapiens2.tasks.outputs import FILES, file_suffixes

__all__ = ["ERRORS", "POSE_RECORD", "RESULTS", "TableSpec", "column_name", "done_keys", "open_folder",
           "write_errors", "write_shard"]

RESULTS = "results"
ERRORS = "errors.parquet"
METADATA_KEY = b"sapiens2"

POSE_INSTANCE = pa.struct([
    ("bbox", pa.list_(pa.float64())), ("bbox_score", pa.float64()),
    ("keypoints", pa.list_(pa.list_(pa.float64()))), ("keypoint_scores", pa.list_(pa.float64())),
])
#: The `_pose.json` record (`PoseResult.record`) as an Arrow struct.
POSE_RECORD = pa.struct([
    ("image", pa.string()), ("image_size", pa.list_(pa.int64())), ("keypoint_format", pa.string()),
    ("num_keypoints", pa.int64()), ("kpt_thr_used", pa.float64()), ("box_source", pa.string()),
    ("instances", pa.list_(POSE_INSTANCE)),
])
ERRORS_SCHEMA = pa.schema([("file", pa.string()), ("stage", pa.string()), ("reason", pa.string()),
                           ("error_type", pa.string())])


def column_name(suffix: str) -> str:
    """A file suffix's column: `_seg.npy` -> `seg.npy`, `.ply` -> `ply`."""
    return suffix.lstrip("_.")


@dataclass(frozen=True)
class TableSpec:
    """What a run writes: the tasks with their save kinds (in order), where maps go, the keypoint format."""

    saves: tuple[tuple[str, frozenset[str]], ...]
    maps: str = "bytes"  # "bytes": file contents in the row; "files": written beside, path in the row
    keypoint_format: str | None = None

    def __post_init__(self) -> None:
        if self.maps not in ("bytes", "files"):
            raise ValueError(f"--maps {self.maps}: expected bytes or files")

    def files(self, task: str) -> list[str]:
        """The suffixes of `task` that become file columns (pose's JSON is the `pose` struct in bytes mode)."""
        kinds = dict(self.saves)[task]
        return [s for s in file_suffixes(task, kinds)
                if not (task == "pose" and s == "_pose.json" and self.maps == "bytes")]

    def schema(self) -> pa.Schema:
        fields = [pa.field("key", pa.string(), nullable=False), pa.field("name", pa.string()),
                  pa.field("height", pa.int32()), pa.field("width", pa.int32())]
        cell = pa.binary() if self.maps == "bytes" else pa.string()
        for task, kinds in self.saves:
            if task == "pose" and "json" in kinds:
                fields.append(pa.field("pose", POSE_RECORD))
            fields += [pa.field(column_name(s), cell) for s in self.files(task)]
        meta = {"tasks": [t for t, _ in self.saves], "saves": {t: sorted(k) for t, k in self.saves},
                "maps": self.maps, "keypoint_format": self.keypoint_format}
        return pa.schema(fields, metadata={METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})


def _check_columns() -> None:
    """Column names must not collide across tasks (they are suffixes, unique by construction)."""
    names = [column_name(s) for rows in FILES.values() for _, s in rows]
    assert len(names) == len(set(names)), names


_check_columns()


# ------------------------------------------------------------------------------------------ files


def open_folder(uri: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) of a local folder or a URI (s3://, gs://, hdfs://, file://)."""
    text = os.fspath(uri)
    if "://" in text:
        return pafs.FileSystem.from_uri(text)
    return pafs.LocalFileSystem(), os.path.abspath(text)


def write_shard(records: Sequence[Mapping[str, Any]], out: str | os.PathLike, spec: TableSpec) -> str:
    """Write one results shard atomically (a hidden temporary name, renamed when complete, so a killed job
    never leaves a shard that a reader or a rerun takes for whole); returns its file name."""
    filesystem, root = open_folder(out)
    folder = f"{root}/{RESULTS}"
    filesystem.create_dir(folder, recursive=True)
    name = f"part-{uuid.uuid4().hex}.parquet"
    tmp = f"{folder}/.{name}{TEMP_SUFFIX}"
    table = pa.Table.from_pylist(list(records), schema=spec.schema())
    with filesystem.open_output_stream(tmp) as f:
        pq.write_table(table, f)
    filesystem.move(tmp, f"{folder}/{name}")
    return name


def _shards(filesystem: pafs.FileSystem, folder: str) -> list[str]:
    info = filesystem.get_file_info(folder)
    if info.type == pafs.FileType.NotFound:
        return []
    found = filesystem.get_file_info(pafs.FileSelector(folder, recursive=False))
    return sorted(f.path for f in found if f.type == pafs.FileType.File and f.base_name.endswith(".parquet")
                  and not f.base_name.startswith((".", "_")))


def done_keys(out: str | os.PathLike, spec: TableSpec) -> set[str]:
    """The keys that already have a results row under `out`. A ValueError when an earlier run there wrote
    other columns (other tasks, --save, --maps or --format): one table holds one kind of row."""
    filesystem, root = open_folder(out)
    expected = spec.schema()
    keys: set[str] = set()
    for path in _shards(filesystem, f"{root}/{RESULTS}"):
        with filesystem.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            found = pf.schema_arrow
            if not found.equals(expected, check_metadata=True):
                raise ValueError(f"--out {out}: {os.path.basename(path)} holds rows of another run "
                                 f"({_describe(found)}), not {_describe(expected)}; use another --out")
            keys.update(pf.read(columns=["key"]).column("key").to_pylist())
    return keys


def _describe(schema: pa.Schema) -> str:
    meta = (schema.metadata or {}).get(METADATA_KEY)
    if meta is None:
        return "columns " + ", ".join(schema.names)
    m = json.loads(meta)
    saves = "; ".join(f"{t}: {','.join(k)}" for t, k in m["saves"].items())
    return f"{saves}; maps {m['maps']}; format {m['keypoint_format']}"


def write_errors(entries: Iterable[Mapping[str, Any]], out: str | os.PathLike) -> str:
    """`errors.parquet`: the failed inputs of this run (replacing an earlier run's, like errors.json)."""
    filesystem, root = open_folder(out)
    filesystem.create_dir(root, recursive=True)
    rows = [{k: None if e.get(k) is None else str(e[k]) for k in ERRORS_SCHEMA.names} for e in entries]
    path = f"{root}/{ERRORS}"
    tmp = f"{root}/.{ERRORS}{TEMP_SUFFIX}"
    with filesystem.open_output_stream(tmp) as f:
        pq.write_table(pa.Table.from_pylist(rows, schema=ERRORS_SCHEMA), f)
    filesystem.move(tmp, path)
    return path
