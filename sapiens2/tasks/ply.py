"""PLY point clouds: write (binary little-endian or ASCII) and read back the files written here.

Vertices carry `x y z` as float32 and, when colours are given, `red green blue` as uint8, the layout
Open3D, MeshLab and CloudCompare read. Files are written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sapiens2.io.writers import atomic_open

_BINARY = "binary_little_endian"


def _vertex_dtype(colors: bool) -> np.dtype:
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    return np.dtype(fields)


def write_ply(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray | None = None, *,
              binary: bool = True) -> Path:
    """Write N x 3 points (and N x 3 uint8 RGB colours, or floats in [0, 1]) as a PLY file."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3) if np.size(points) else np.zeros((0, 3), np.float32)
    if colors is not None:
        col = np.asarray(colors)
        if col.dtype != np.uint8:
            col = np.clip(np.round(col.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        col = col.reshape(-1, 3)
        if len(col) != len(pts):
            raise ValueError(f"{len(pts)} points but {len(col)} colours")
    vertices = np.empty(len(pts), dtype=_vertex_dtype(colors is not None))
    vertices["x"], vertices["y"], vertices["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    if colors is not None:
        vertices["red"], vertices["green"], vertices["blue"] = col[:, 0], col[:, 1], col[:, 2]
    header = ["ply", f"format {_BINARY if binary else 'ascii'} 1.0", "comment written by sapiens2",
              f"element vertex {len(pts)}", "property float x", "property float y", "property float z"]
    if colors is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    with atomic_open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        if binary:
            f.write(vertices.tobytes())
        else:
            fmt = "%.9g %.9g %.9g" + (" %d %d %d" if colors is not None else "")
            rows = [vertices[name] for name in vertices.dtype.names]
            np.savetxt(f, np.stack(rows, axis=1) if len(pts) else np.zeros((0, len(rows))), fmt=fmt)
    return Path(path)


def read_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """(N x 3 float32 points, N x 3 uint8 colours or None) from a vertex-only PLY written by `write_ply`."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    body_start = data.index(b"\n", end) + 1
    lines = data[:end].decode("ascii").splitlines()
    fmt = next(line.split()[1] for line in lines if line.startswith("format"))
    count = next(int(line.split()[2]) for line in lines if line.startswith("element vertex"))
    props = [line.split()[-1] for line in lines if line.startswith("property")]
    has_colors = "red" in props
    dtype = _vertex_dtype(has_colors)
    if props != list(dtype.names):
        raise ValueError(f"{path}: unsupported vertex properties {props}")
    if fmt == _BINARY:
        vertices = np.frombuffer(data, dtype=dtype, count=count, offset=body_start)
        pts = np.stack([vertices["x"], vertices["y"], vertices["z"]], axis=1)
        col = np.stack([vertices["red"], vertices["green"], vertices["blue"]], axis=1) if has_colors else None
    elif fmt == "ascii":
        table = np.loadtxt(data[body_start:].decode("ascii").splitlines(), ndmin=2).reshape(count, len(props))
        pts = table[:, :3].astype(np.float32)
        col = table[:, 3:6].astype(np.uint8) if has_colors else None
    else:
        raise ValueError(f"{path}: unsupported PLY format {fmt!r}")
    return pts.astype(np.float32), col
