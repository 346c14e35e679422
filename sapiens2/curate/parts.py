"""Resumable results: one Parquet file per (stage, batch), written atomically and never rewritten.

A part's folder is named by the stage and a fingerprint of its settings and of every stage before it; the
file by a hash of the batch's keys. A rerun with the same sources and settings finds every part and
computes nothing; a changed threshold gives new folders for that stage and the later ones only.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def keys_hash(keys: list[str]) -> str:
    return hashlib.sha1("\n".join(keys).encode()).hexdigest()[:16]


def read_part(path: Path) -> pa.Table | None:
    """The part at `path`, or None when it is not there yet."""
    return pq.read_table(path) if path.is_file() else None


def write_part(path: Path, table: pa.Table) -> None:
    """Write through a temporary name and rename, so an interrupted run leaves no half part behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def columns_table(keys: list[str], columns: dict[str, list], fields: dict[str, pa.DataType]) -> pa.Table:
    """`columns` (the stage's fields + reason + detail) as a typed table with a leading `key`."""
    arrays = {"key": pa.array(keys, pa.string())}
    for name, dtype in {**fields, "reason": pa.string(), "detail": pa.string()}.items():
        values = columns[name]
        if len(values) != len(keys):
            raise ValueError(f"column {name!r} has {len(values)} values for {len(keys)} rows")
        arrays[name] = pa.array(values, dtype)
    return pa.table(arrays)
