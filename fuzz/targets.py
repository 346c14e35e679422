"""The fuzz targets: each turns bytes into one call of a parser of untrusted input.

A target's `clean` errors are the typed errors its parser documents for bad input; anything else raised
(TypeError, KeyError, RecursionError, MemoryError, an OSError from a seek, ...) is a crash.

- `images`: `sapiens2.io.images.decode_image`; clean: `ImageDecodeError` (every subclass).
- `checkpoint`: the first byte picks what the rest is: 0 a whole file for `sapiens2.weights.open_weights`
  (format recognition, then safetensors or the restricted unpickler, every tensor read); 1 the `data.pkl`
  of an otherwise valid `torch.save` archive; 2 a safetensors header (length prefix added). Clean:
  `sapiens2.CheckpointError`.
- `detections`: `sapiens2.tasks.pose.read_coco_detections` on the bytes as a file; clean: ValueError.
- `coco`: the first byte picks `read_keypoint_annotations` (even) or `read_keypoint_results` (odd) of
  `sapiens2.metrics.readers` on the rest as a file; clean: `MetricsInputError`.
"""

from __future__ import annotations

import atexit
import io
import json
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Images are decoded under a small pixel limit so that a mutated header cannot make every run slow.
FUZZ_MAX_PIXELS = 1 << 22


@dataclass(frozen=True)
class Target:
    name: str
    seeds: Callable[[], list[bytes]]
    run: Callable[[bytes], None]
    clean: Callable[[], tuple[type[BaseException], ...]]


_workdir: Path | None = None


def _scratch(name: str, data: bytes) -> Path:
    """`data` written to a file of this process's scratch folder (removed at exit)."""
    global _workdir
    if _workdir is None:
        _workdir = Path(tempfile.mkdtemp(prefix="sapiens2-fuzz-"))
        atexit.register(shutil.rmtree, _workdir, True)
    path = _workdir / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------------ images


def _image_seeds() -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    seeds = []
    for fmt, image, extra in [
        ("PNG", rgb, {}), ("PNG", rgb.convert("RGBA"), {}), ("PNG", rgb.convert("P"), {}),
        ("PNG", rgb.convert("L"), {}), ("PNG", Image.fromarray(np.arange(120, dtype=np.uint16).reshape(12, 10)), {}),
        ("JPEG", rgb, {"quality": 80}), ("BMP", rgb, {}), ("GIF", rgb.convert("P"), {}),
        ("TIFF", rgb, {}), ("TIFF", rgb, {"compression": "tiff_deflate"}),
        ("TIFF", Image.fromarray(rng.random((12, 10), dtype=np.float32)), {}), ("WEBP", rgb, {"quality": 80}),
        ("PPM", rgb, {}),
    ]:
        buf = io.BytesIO()
        image.save(buf, fmt, **extra)
        seeds.append(buf.getvalue())
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", exif=exif.tobytes())
    seeds.append(buf.getvalue())
    return seeds


def _image_run(data: bytes) -> None:
    from sapiens2.io.images import decode_image

    decode_image(data, "fuzz-input", max_pixels=FUZZ_MAX_PIXELS)


def _image_clean() -> tuple[type[BaseException], ...]:
    from sapiens2.io.images import ImageDecodeError

    return (ImageDecodeError,)


# -------------------------------------------------------------------------------------------- checkpoints


def _torch_archive(pickled: bytes | None = None) -> bytes:
    """A small `torch.save` archive; with `pickled`, its data.pkl replaced (the zip stays valid)."""
    import torch

    buf = io.BytesIO()
    torch.save({"state_dict": {"w": torch.arange(4, dtype=torch.float32)}, "meta": {"epoch": np.int64(3)}}, buf)
    if pickled is None:
        return buf.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            dst.writestr(item.filename, pickled if item.filename.endswith("/data.pkl") else src.read(item))
    return out.getvalue()


def _archive_pickle() -> bytes:
    with zipfile.ZipFile(io.BytesIO(_torch_archive())) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))


def _checkpoint_seeds() -> list[bytes]:
    import torch
    from safetensors.torch import save

    header = {"__metadata__": {"format": "pt"}, "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
              "b": {"dtype": "BF16", "shape": [4], "data_offsets": [16, 24]}}
    bare = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, bare, _use_new_zipfile_serialization=False)
    return [
        b"\x00" + save({"a": torch.ones(2, 2), "b": torch.arange(3)}, metadata={"task": "pose"}),
        b"\x00" + _torch_archive(),
        b"\x00" + bare.getvalue(),
        b"\x01" + _archive_pickle(),
        b"\x02" + json.dumps(header).encode(),
    ]


def _checkpoint_run(data: bytes) -> None:
    from sapiens2.checkpoint import SafetensorsFile
    from sapiens2.safe_pickle import read_pickle_checkpoint
    from sapiens2.weights import open_weights

    mode, rest = (data[0] % 3, data[1:]) if data else (0, b"")
    if mode == 0:
        for _ in open_weights(_scratch("ckpt", rest), allow_pickle=True).tensors():
            pass
    elif mode == 1:
        read_pickle_checkpoint(_scratch("ckpt.pth", _torch_archive(rest)))
    else:
        path = _scratch("ckpt.safetensors", struct.pack("<Q", len(rest)) + rest + bytes(64))
        for _ in SafetensorsFile(path).iter_tensors():
            pass


def _checkpoint_clean() -> tuple[type[BaseException], ...]:
    from sapiens2.checkpoint import CheckpointError

    return (CheckpointError,)


# ------------------------------------------------------------------------------------------- detections


def _detections_seeds() -> list[bytes]:
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10.0, 20.0, 30.5, 40.0], "score": 0.9},
            {"image_id": 2, "file_name": "a/b.jpg", "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.3}]
    return [json.dumps(dets).encode(), json.dumps({"annotations": dets}).encode(), b"[]"]


def _detections_run(data: bytes) -> None:
    from sapiens2.tasks.pose import read_coco_detections

    read_coco_detections(_scratch("detections.json", data))


def _detections_clean() -> tuple[type[BaseException], ...]:
    return (ValueError,)


# ------------------------------------------------------------------------------------------------- coco


def _coco_seeds() -> list[bytes]:
    kps = [float(v) for i in range(17) for v in (10 + i, 20 + i, 2)]
    gt = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
          "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "area": 900.0, "bbox": [5, 5, 30, 30],
                           "iscrowd": 0, "num_keypoints": 17, "keypoints": kps}],
          "categories": [{"id": 1, "name": "person"}]}
    results = [{"image_id": 1, "category_id": 1, "score": 0.8, "keypoints": kps}]
    return [b"\x00" + json.dumps(gt).encode(), b"\x01" + json.dumps(results).encode(),
            b"\x01" + json.dumps({"annotations": results}).encode()]


def _coco_run(data: bytes) -> None:
    from sapiens2.metrics.readers import read_keypoint_annotations, read_keypoint_results

    mode, rest = (data[0], data[1:]) if data else (0, b"")
    path = _scratch("coco.json", rest)
    (read_keypoint_results if mode % 2 else read_keypoint_annotations)(path)


def _coco_clean() -> tuple[type[BaseException], ...]:
    from sapiens2.metrics.readers import MetricsInputError

    return (MetricsInputError,)


TARGETS: dict[str, Target] = {
    t.name: t for t in (
        Target("images", _image_seeds, _image_run, _image_clean),
        Target("checkpoint", _checkpoint_seeds, _checkpoint_run, _checkpoint_clean),
        Target("detections", _detections_seeds, _detections_run, _detections_clean),
        Target("coco", _coco_seeds, _coco_run, _coco_clean),
    )
}
