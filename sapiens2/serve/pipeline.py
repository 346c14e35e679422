"""One request through a predictor's own steps, and its result through its own writers.

Nothing here knows how a task crops, resizes or decodes: `decode` is `sapiens2.io.images.decode_image` with the
server's pixel limit, `prepare`/`finish` are the predictor's, the forward pass is the batcher's call of the
predictor's `run`, and the files are what `result.save` writes for the CLI (`sapiens2.tasks.outputs.FILES`),
read back as bytes.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.serve.limits import ServeError

__all__ = ["Options", "decode", "media_type", "parse_boxes", "parse_options", "respond_files", "write_files"]

_MEDIA = {".json": "application/json", ".npy": "application/x-npy", ".npz": "application/x-npz",
          ".png": "image/png", ".jpg": "image/jpeg", ".ply": "application/x-ply"}


@dataclass(frozen=True)
class Options:
    """What to answer: the save kinds (as `--save`), pose's keypoint options, or one file alone."""

    kinds: frozenset[str]
    writer_options: dict[str, Any]
    file: str | None = None  # a suffix of `outputs.FILES[task]`: answer with that file's bytes alone


def media_type(suffix: str) -> str:
    return _MEDIA.get(Path(suffix).suffix, "application/octet-stream")


def parse_options(task: str, *, save: str | None, vis: bool, keypoint_format: str | None, kpt_thr: float,
                  radius: int, thickness: int, file: str | None) -> Options:
    """Check the query options of `POST /v1/{task}`; a bad one is a 422 naming it."""
    from sapiens2.task_table import TASKS
    from sapiens2.tasks.outputs import FILES, parse_saves

    info = TASKS[task]
    if file is not None:
        by_suffix = dict((s, k) for k, s in FILES[task])
        wanted = next((s for k, s in FILES[task] if k == "vis"), None) if file == "vis" else file
        if wanted not in by_suffix:
            raise ServeError(422, "bad_option", f"file={file!r}: {task} writes {', '.join(by_suffix)} (or 'vis')")
        kinds = frozenset({by_suffix[wanted]})
    else:
        try:
            kinds = parse_saves(save, task) if save is not None else info.default_saves - {"vis"}
        except ValueError as e:
            raise ServeError(422, "bad_option", str(e).replace("--save", "save")) from None
        if save is not None and not kinds:
            raise ServeError(422, "bad_option", f"save={save!r}: nothing for {task} to write (it writes "
                             f"{', '.join(sorted(info.saves))})")
        kinds = kinds | {"vis"} if vis else kinds
        wanted = None
    writer_options: dict[str, Any] = {}
    if task == "pose":
        if keypoint_format is not None:
            from sapiens2.keypoints.convert import format_name

            try:
                keypoint_format = format_name(keypoint_format)
            except ValueError as e:
                raise ServeError(422, "bad_option", f"format: {e}") from None
        writer_options = {"keypoint_format": keypoint_format, "kpt_thr": kpt_thr, "radius": radius,
                          "thickness": thickness}
    elif keypoint_format is not None:
        raise ServeError(422, "bad_option", f"format={keypoint_format!r}: keypoint formats are for pose, not {task}")
    return Options(kinds, writer_options, wanted)


def decode(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """The upload as H x W x 3 RGB; too many pixels is a 413, anything undecodable a 422."""
    from sapiens2.io import images

    try:
        return images.decode_image(data, name, max_pixels=max_pixels)
    except images.ImageTooLargeError as e:
        raise ServeError(413, "image_too_large", f"{e} (the server's --max-pixels is {max_pixels})") from None
    except images.ImageDecodeError as e:
        code = {images.EmptyImageError: "empty_upload", images.NotAnImageError: "not_an_image",
                images.UnsupportedImageFormatError: "unsupported_image_format",
                images.TruncatedImageError: "truncated_image"}.get(type(e), "corrupt_image")
        raise ServeError(422, code, str(e)) from None


def parse_boxes(text: str | None) -> list[list[float]] | None:
    """The `boxes` form field: a JSON list of [x1, y1, x2, y2] or [x1, y1, x2, y2, score] (pose only)."""
    if text is None or not text.strip():
        return None
    try:
        boxes = json.loads(text)
    except json.JSONDecodeError as e:
        raise ServeError(422, "bad_boxes", f"boxes: not JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(boxes, list) or not all(isinstance(b, list) and len(b) in (4, 5) and
                                              all(isinstance(v, (int, float)) for v in b) for b in boxes):
        raise ServeError(422, "bad_boxes", "boxes: expected a JSON list of [x1, y1, x2, y2] or "
                         "[x1, y1, x2, y2, score] lists")
    return boxes


def with_name(result: Any, name: str | None) -> Any:
    """A pose result whose record names the upload, as the CLI's names the input file."""
    if name and hasattr(result, "path"):
        return dataclasses.replace(result, path=Path(name))
    return result


def write_files(result: Any, image: np.ndarray, options: Options) -> dict[str, bytes]:
    """suffix -> bytes of the files `result.save` writes for these kinds (the CLI's very files)."""
    from sapiens2.tasks.outputs import file_suffixes, output_path

    kinds = options.kinds
    if not kinds:
        return {}
    with tempfile.TemporaryDirectory(prefix="sapiens2-serve-") as tmp:
        prefix = Path(tmp) / "upload"
        result.save(prefix, image, kinds, **options.writer_options)
        suffixes = [options.file] if options.file else file_suffixes(result.task, kinds)
        return {s: output_path(prefix, s).read_bytes() for s in suffixes}


def respond_files(files: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    """The files as JSON: media type, size and base64 content."""
    return {s: {"media_type": media_type(s), "bytes": len(b), "base64": base64.b64encode(b).decode("ascii")}
            for s, b in files.items()}
