"""The kept images as WebDataset-style tar shards: ``KEY.jpg`` (re-encoded, long side bounded) and
``KEY.json`` (its manifest row), consecutive members per key, as `webdataset` and `sapiens2 pretrain` read."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

from sapiens2.curate.config import OutputConfig
from sapiens2.curate.sources import Item
from sapiens2.curate.stages import Batch, bounded


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def _members(path: Path) -> list[str] | None:
    try:
        with tarfile.open(path) as tar:
            return tar.getnames()
    except (OSError, tarfile.TarError):
        return None


def write_shards(items: Sequence[Item], manifest: pa.Table, folder: Path, config: OutputConfig,
                 max_pixels: int | None = None) -> list[Path]:
    """Write ``shard-NNNNNN.tar`` files of the manifest's kept rows; a shard already holding exactly the
    expected members is left as it is (resume), a stale one is replaced. Returns the shard paths."""
    by_key = {it.key: it for it in items}
    rows = [r for r in manifest.to_pylist() if r["kept"]]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, start in enumerate(range(0, len(rows), config.shard_size)):
        chunk = rows[start:start + config.shard_size]
        path = folder / f"shard-{n:06d}.tar"
        paths.append(path)
        expected = [name for r in chunk for name in (f"{r['key']}.jpg", f"{r['key']}.json")]
        if _members(path) == expected:
            continue
        batch = Batch([by_key[r["key"]] for r in chunk], max_pixels)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tarfile.open(tmp, "w") as tar:
            for i, row in enumerate(chunk):
                image = bounded(batch.image(i), config.max_side)
                _add(tar, f"{row['key']}.jpg", encode_jpeg(image, config.jpeg_quality))
                meta = {**row, "shard_width": image.shape[1], "shard_height": image.shape[0]}
                _add(tar, f"{row['key']}.json", json.dumps(meta, sort_keys=True).encode())
        os.replace(tmp, path)
    for stale in folder.glob("shard-*.tar"):
        if stale not in paths:
            stale.unlink()
    return paths
