"""Readers for ground truth and predictions: COCO keypoint JSON, label images, .npy / .npz maps, masks.

Every problem with a file is raised as `MetricsInputError` naming the file and what is wrong with it, before
anything large is allocated: image sizes are read from the header and `.npy` shapes from theirs.
Folders are searched recursively and files of a prediction tree and a GT tree are paired by relative path:
the folders under the root, then the name up to its first dot (the reference's output naming), with a task
suffix such as `_seg` on the prediction tolerated. So the tree `sapiens2 seg photos/ --out pred/` writes
(`pred/a/x_seg.npy` for `photos/a/x.jpg`) pairs with `labels/a/x.png`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from sapiens2.io.images import DEFAULT_MAX_PIXELS

from .pose import KeypointAnnotations, KeypointDetections
from .seg_classes import SEG29_PALETTE_RGB

# Keypoint fields, most complete first: the reference writes the 308 points to `goliath_wholebody_kpts` and
# the 17 COCO-order body points to `keypoints`.
KEYPOINT_FIELDS = ("goliath_wholebody_kpts", "keypoints")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Lossless image formats: label maps and predicted maps. A JPEG in a prediction tree is a picture (`vis`).
LOSSLESS_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
ARRAY_SUFFIXES = (".npy", ".npz")
MASK_KEYS = ("mask", "valid", "valid_mask")
#: Largest map read, in elements per channel (the image decoder's default pixel limit), checked from headers.
MAX_PIXELS = DEFAULT_MAX_PIXELS
# Array dtypes a map may have: bool, integers, floats (no complex, strings, objects or records).
_REAL_KINDS = "biuf"


class MetricsInputError(ValueError):
    """A ground-truth or prediction file that cannot be used, with the file named in the message."""


def _load_json(path: Path) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise MetricsInputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise MetricsInputError(f"{path}: is a folder, expected a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MetricsInputError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise MetricsInputError(f"{path}: JSON nested too deeply to be a COCO file") from None
    except OSError as e:
        raise MetricsInputError(f"{path}: cannot read ({e.strerror or e})") from None


def _pick_field(records: list[dict], field: str | None, path: Path) -> str:
    if field is not None:
        return field
    for name in KEYPOINT_FIELDS:
        if any(name in r for r in records):
            return name
    raise MetricsInputError(f"{path}: no keypoint field found (looked for {', '.join(KEYPOINT_FIELDS)})")


def _keypoint_array(records: list[dict], field: str, path: Path, what: str) -> np.ndarray:
    lengths = set()
    for r in records:
        kp = r.get(field)
        if not isinstance(kp, list) or len(kp) % 3:
            raise MetricsInputError(
                f"{path}: {what} {r.get('id', '?')} (image {r.get('image_id', '?')}) has no list of x, y, v "
                f"triples in '{field}'"
            )
        lengths.add(len(kp))
    if len(lengths) > 1:
        raise MetricsInputError(f"{path}: {what}s have different keypoint counts: {sorted(n // 3 for n in lengths)}")
    k = lengths.pop() // 3 if lengths else 0
    try:
        return np.asarray([r[field] for r in records], dtype=np.float64).reshape(len(records), k, 3)
    except (TypeError, ValueError, OverflowError):
        raise MetricsInputError(f"{path}: non-numeric (or out-of-range) values in '{field}'") from None


def _objects(data: dict, key: str, path: Path, required: bool) -> list[dict]:
    """`data[key]` as a list of JSON objects; anything else is an error naming the file and the entry."""
    if key not in data and not required:
        return []
    items = data.get(key)
    if not isinstance(items, list):
        raise MetricsInputError(f"{path}: '{key}' must be a list of objects, got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise MetricsInputError(f"{path}: {key}[{i}] must be an object, got {type(item).__name__}")
    return items


def _number(value: object, path: Path, where: str) -> float:
    try:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    except OverflowError:  # an integer beyond the float range
        ok = False
    if not ok:
        raise MetricsInputError(f"{path}: {where} must be a finite number, got {value!r}"[:300])
    return float(value)


def _image_id(value: object, path: Path, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise MetricsInputError(f"{path}: {where} must be an integer image id, got {value!r}"[:300])
    return value


def read_keypoint_annotations(
    path: str | Path, field: str | None = None, category_id: int = 1
) -> KeypointAnnotations:
    """COCO-format keypoint ground truth (308 points or any subset, e.g. the 17 COCO-order body points).

    Annotations need `image_id`, `area` (the OKS scale) and the keypoint field; `bbox` and `iscrowd` are
    optional. Only annotations of `category_id` (person) are read.
    """
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise MetricsInputError(f"{path}: expected a COCO dict with an 'annotations' list")
    anns = [a for a in _objects(data, "annotations", path, required=True)
            if a.get("category_id", category_id) == category_id]
    field = _pick_field(anns, field, path) if anns else (field or "keypoints")
    for a in anns:
        for key in ("image_id", "area"):
            if key not in a:
                raise MetricsInputError(f"{path}: annotation {a.get('id', '?')} has no '{key}'")
        where = f"annotation {a.get('id', '?')}"
        _image_id(a["image_id"], path, f"{where} 'image_id'")
        _number(a["area"], path, f"{where} 'area'")
        if "bbox" in a:
            _box(a["bbox"], path, f"{where} 'bbox'")
    images = [_image_id(im.get("id"), path, f"image {im.get('file_name', '?')!r} 'id'")
              for im in _objects(data, "images", path, required=False) if "id" in im]
    return KeypointAnnotations(
        image_ids=np.asarray([a["image_id"] for a in anns], dtype=np.int64),
        keypoints=_keypoint_array(anns, field, path, "annotation"),
        area=np.asarray([a["area"] for a in anns], dtype=np.float64),
        bbox=np.asarray([a.get("bbox", [0, 0, 0, 0]) for a in anns], dtype=np.float64).reshape(len(anns), 4),
        iscrowd=np.asarray([bool(a.get("iscrowd", 0)) for a in anns]),
        all_image_ids=np.asarray(images, dtype=np.int64),
    )


def _box(value: object, path: Path, where: str) -> list[float]:
    """A COCO box [x, y, w, h] of finite numbers."""
    if not isinstance(value, list) or len(value) != 4:
        raise MetricsInputError(f"{path}: {where} must be a list [x, y, width, height], got {value!r}"[:300])
    return [_number(v, path, where) for v in value]


def read_keypoint_results(path: str | Path, field: str | None = None, category_id: int = 1) -> KeypointDetections:
    """COCO results: a list of {image_id, score, keypoints...} (or a dict holding it under 'annotations')."""
    path = Path(path)
    data = _load_json(path)
    if isinstance(data, dict):
        data = data.get("annotations")
    if not isinstance(data, list):
        raise MetricsInputError(f"{path}: expected a list of detections (COCO results format)")
    dets = [d for d in data if isinstance(d, dict) and d.get("category_id", category_id) == category_id]
    if len(dets) != len(data):
        bad = [d for d in data if not isinstance(d, dict)]
        if bad:
            raise MetricsInputError(f"{path}: detections must be objects, found {type(bad[0]).__name__}")
    field = _pick_field(dets, field, path) if dets else (field or "keypoints")
    for d in dets:
        for key in ("image_id", "score"):
            if key not in d:
                raise MetricsInputError(f"{path}: a detection on image {d.get('image_id', '?')} has no '{key}'")
        _image_id(d["image_id"], path, "a detection's 'image_id'")
        _number(d["score"], path, f"a detection's 'score' (image {d['image_id']})")
    return KeypointDetections(
        image_ids=np.asarray([d["image_id"] for d in dets], dtype=np.int64),
        keypoints=_keypoint_array(dets, field, path, "detection"),
        scores=np.asarray([d["score"] for d in dets], dtype=np.float64),
    )


@dataclass(frozen=True)
class EvalImage:
    """One image of a COCO ground truth, to predict on: its id, its file and (with GT boxes) its boxes."""

    image_id: int
    path: Path
    boxes: np.ndarray | None  # N x 5 [x1, y1, x2, y2, score = 1] from the GT's xywh boxes, or None


def read_eval_images(gt: str | Path, images_dir: str | Path, gt_boxes: bool = False) -> list[EvalImage]:
    """The images a COCO keypoint ground truth lists, as files under `images_dir`, checked before any work.

    A `file_name` must be a relative path that stays inside `images_dir` (no absolute path, no `..` out of
    it). With `gt_boxes`, every person annotation needs a `bbox` [x, y, w, h]; images without one are left
    out (nothing to crop)."""
    gt, root = Path(gt), Path(images_dir)
    if not root.is_dir():
        raise MetricsInputError(f"{root}: images folder not found")
    data = _load_json(gt)
    if not isinstance(data, dict):
        raise MetricsInputError(f"{gt}: expected a COCO dict with 'images' and 'annotations' lists")
    boxes: dict[int, list[list[float]]] = {}
    if gt_boxes:
        for a in _objects(data, "annotations", gt, required=True):
            if a.get("category_id", 1) != 1:
                continue
            where = f"annotation {a.get('id', '?')}"
            if "bbox" not in a:
                raise MetricsInputError(f"{gt}: {where} has no 'bbox', which --gt-boxes crops")
            x, y, w, h = _box(a["bbox"], gt, f"{where} 'bbox'")
            image_id = _image_id(a.get("image_id"), gt, f"{where} 'image_id'")
            boxes.setdefault(image_id, []).append([x, y, x + w, y + h, 1.0])
    out = []
    for i, im in enumerate(_objects(data, "images", gt, required=True)):
        image_id = _image_id(im.get("id"), gt, f"images[{i}] 'id'")
        name = im.get("file_name")
        if not isinstance(name, str) or not name:
            raise MetricsInputError(f"{gt}: image {image_id} has no 'file_name' string")
        out.append(EvalImage(image_id, _inside(root, name, gt, image_id),
                             np.asarray(boxes.get(image_id, []), np.float32).reshape(-1, 5) if gt_boxes else None))
    return out


def _inside(root: Path, name: str, gt: Path, image_id: int) -> Path:
    """`root / name`, refusing a name that is absolute or climbs out of `root` (checked on the text, so a
    dataset folder reached through a symlink still works)."""
    norm = os.path.normpath(name.replace("\\", "/"))
    if os.path.isabs(norm) or norm == ".." or norm.startswith(".." + os.sep) or "\0" in name:
        raise MetricsInputError(
            f"{gt}: image {image_id} 'file_name' {name!r} points outside the images folder {root}")
    return root / norm


def _open_image(path: Path) -> Image.Image:
    """The image, its size checked from the header against `MAX_PIXELS` before any pixel is decoded."""
    if not path.is_file():
        raise MetricsInputError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():  # the size is checked below, against our own limit
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError:
        raise MetricsInputError(f"{path}: image header claims more pixels than Pillow opens, over the limit of "
                                f"{MAX_PIXELS} (a decompression bomb?)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MetricsInputError(f"{path}: unreadable image ({e})") from None
    width, height = img.size
    if width * height > MAX_PIXELS:
        img.close()
        raise MetricsInputError(f"{path}: image is {width}x{height} = {width * height} pixels, over the limit of "
                                f"{MAX_PIXELS} (a decompression bomb?)")
    try:
        img.load()
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, zlib.error, ...
        raise MetricsInputError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
    return img


def _npy_nbytes(f, path: Path, what: str) -> int:
    """The data size an .npy header announces, after refusing, from the header alone, an array that is not
    a real number map or is larger than a map can be (`MAX_PIXELS` x 4 channels)."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except (ValueError, SyntaxError, OSError, EOFError) as e:
        raise MetricsInputError(f"{path}: {what}unreadable array file ({e})") from None
    if dtype.kind not in _REAL_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise MetricsInputError(f"{path}: {what}dtype {dtype} is not a real number type (bool, integer or float)")
    count = int(np.prod(shape, dtype=object))
    if count > 4 * MAX_PIXELS:
        raise MetricsInputError(f"{path}: {what}shape {tuple(shape)} is larger than a map can be "
                                f"({4 * MAX_PIXELS} values)")
    return count * dtype.itemsize


def _check_array_file(path: Path) -> None:
    """Header checks of a .npy, or of every array in a .npz, before numpy allocates anything."""
    try:
        if path.suffix.lower() == ".npy":
            with open(path, "rb") as f:
                nbytes = _npy_nbytes(f, path, "")
                available = path.stat().st_size - f.tell()
            if nbytes > available:
                raise MetricsInputError(f"{path}: the header announces {nbytes} bytes of data, the file holds "
                                        f"{available} (truncated?)")
            return
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.filename.endswith(".npy"):
                    with z.open(info) as f:
                        what = f"array {info.filename[:-4]!r}: "
                        nbytes = _npy_nbytes(f, path, what)
                        if nbytes > info.file_size:
                            raise MetricsInputError(f"{path}: {what}the header announces {nbytes} bytes of "
                                                    f"data, the archive holds fewer (truncated?)")
    except zipfile.BadZipFile as e:
        raise MetricsInputError(f"{path}: unreadable .npz file ({e})") from None
    except OSError as e:
        raise MetricsInputError(f"{path}: cannot read ({e.strerror or e})") from None


def _load_npy(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    if not path.is_file():
        raise MetricsInputError(f"{path}: file not found")
    _check_array_file(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {k: loaded[k] for k in loaded.files}
        return loaded
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise MetricsInputError(f"{path}: unreadable array file ({e})") from None


def read_label_map(path: str | Path) -> np.ndarray:
    """An H x W integer label map from a label PNG (palette or grey values), a colour PNG, or a .npy."""
    path = Path(path)
    if path.suffix.lower() in ARRAY_SUFFIXES:
        arr = _load_npy(path)
        if isinstance(arr, dict):
            arr = _only_array(arr, path, ("labels", "seg", "label"))
        if arr.ndim != 2:
            raise MetricsInputError(f"{path}: a label map must be H x W, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.mod(arr, 1) == 0):
                raise MetricsInputError(f"{path}: labels must be integers, got dtype {arr.dtype}")
            arr = arr.astype(np.int64)
        return arr
    img = _open_image(path)
    if img.mode in ("P", "L", "I", "I;16", "1"):
        return np.asarray(img).astype(np.int64)
    if img.mode in ("RGB", "RGBA"):
        return _colours_to_labels(np.asarray(img.convert("RGB")), path)
    raise MetricsInputError(f"{path}: unsupported image mode {img.mode} for a label map")


def _colours_to_labels(rgb: np.ndarray, path: Path) -> np.ndarray:
    """Colour-coded labels (the dome29 palette; white = ignore) back to class ids."""
    # Images saved as RGB from grey label maps have three equal channels: read them as grey labels.
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0].astype(np.int64)
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    palette = np.asarray(SEG29_PALETTE_RGB, dtype=np.int64)
    keys = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    lut = dict(zip(keys.tolist(), range(len(keys)), strict=True))
    lut[0xFFFFFF] = 255
    uniq, inverse = np.unique(code, return_inverse=True)
    unknown = [u for u in uniq.tolist() if u not in lut]
    if unknown:
        u = unknown[0]
        raise MetricsInputError(
            f"{path}: colour ({u >> 16}, {(u >> 8) & 255}, {u & 255}) is not in the dome29 palette "
            f"({len(unknown)} unknown colours)"
        )
    return np.asarray([lut[u] for u in uniq.tolist()], dtype=np.int64)[inverse].reshape(code.shape)


def _only_array(arrays: dict[str, np.ndarray], path: Path, preferred: tuple[str, ...]) -> np.ndarray:
    for key in preferred:
        if key in arrays:
            return arrays[key]
    rest = [k for k in arrays if k not in MASK_KEYS]
    if len(rest) != 1:
        raise MetricsInputError(
            f"{path}: cannot tell which array to use among {sorted(arrays)}; expected one of {list(preferred)}"
        )
    return arrays[rest[0]]


def read_mask(path: str | Path) -> np.ndarray:
    """A boolean H x W mask: an image (channel 0 > 0, as the reference reads masks) or a .npy / .npz."""
    path = Path(path)
    if path.suffix.lower() in ARRAY_SUFFIXES:
        arr = _load_npy(path)
        if isinstance(arr, dict):
            arr = _only_array(arr, path, MASK_KEYS)
    else:
        arr = np.asarray(_open_image(path))
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise MetricsInputError(f"{path}: a mask must be H x W, got shape {arr.shape}")
    return arr > 0


def read_map(path: str | Path, keys: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray | None]:
    """A dense map and its mask if the file carries one.

    .npy: the array. .npz: the array under the first of `keys` present (or the only non-mask array) and the
    mask under 'mask' / 'valid' if present. Images: float values in [0, 1] (8- or 16-bit), RGB for colour.
    """
    path = Path(path)
    mask = None
    if path.suffix.lower() in ARRAY_SUFFIXES:
        arr = _load_npy(path)
        if isinstance(arr, dict):
            for k in MASK_KEYS:
                if k in arr:
                    mask = arr[k]
                    if mask.ndim == 3:
                        mask = mask[..., 0]
                    mask = mask > 0
                    break
            arr = _only_array(arr, path, keys)
        if not np.issubdtype(arr.dtype, np.number):
            raise MetricsInputError(f"{path}: expected a numeric array, got dtype {arr.dtype}")
        return arr.astype(np.float64 if arr.dtype == np.float64 else np.float32), mask
    img = _open_image(path)
    if img.mode in ("I;16", "I;16B", "I"):
        return np.asarray(img).astype(np.float32) / 65535.0, None
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    return np.asarray(img).astype(np.float32) / 255.0, None


def file_stem(path: Path) -> str:
    """The name up to its first dot, the key by which outputs are paired with inputs."""
    return path.name.split(".", 1)[0]


def walk_files(root: Path) -> list[Path]:
    """Every file under `root`, recursively, sorted; hidden files and folders skipped, symlinked folders not
    followed (no loops)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / f for f in files if not f.startswith(".")]
    return sorted(found)


def keyed_files(root: str | Path, suffixes: tuple[str, ...], tags: tuple[str, ...] = ()) -> dict[str, Path]:
    """key -> file for the files under `root` with one of `suffixes`. The key is the relative folder and the
    stem (`a/x` for `a/x.png`), less a `_<tag>` ending for a tag in `tags` (`a/x_seg.npy` -> `a/x`). When
    several files share a key, the one whose suffix comes first in `suffixes` is kept (`x_seg.npy` over
    `x_seg.png`)."""
    root = Path(root)
    rank = {s: i for i, s in enumerate(suffixes)}
    out: dict[str, Path] = {}
    for path in walk_files(root):
        suffix = path.suffix.lower()
        if suffix not in rank:
            continue
        stem = file_stem(path)
        for tag in tags:
            if stem.endswith("_" + tag):
                stem = stem[: -len(tag) - 1]
                break
        key = (path.parent.relative_to(root) / stem).as_posix()
        if key not in out or rank[suffix] < rank[out[key].suffix.lower()]:
            out[key] = path
    return out


def pair_files(
    pred_dir: str | Path,
    gt_dir: str | Path,
    gt_suffixes: tuple[str, ...],
    pred_suffixes: tuple[str, ...],
    pred_tags: tuple[str, ...] = (),
) -> list[tuple[str, Path, Path]]:
    """(key, prediction, GT) for every GT file under `gt_dir` (recursively, see `keyed_files`); a GT file
    without a prediction is an error.

    A prediction may be named `<stem><ext>` or `<stem>_<tag><ext>` for a tag in `pred_tags` (e.g. `_seg`), in
    the same relative folder as its GT file.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d, what in ((pred_dir, "prediction"), (gt_dir, "ground-truth")):
        if not d.is_dir():
            raise MetricsInputError(f"{d}: {what} folder not found")
    gts = keyed_files(gt_dir, gt_suffixes)
    if not gts:
        raise MetricsInputError(f"{gt_dir}: no ground-truth files ({', '.join(gt_suffixes)}) in it or its subfolders")
    preds = keyed_files(pred_dir, pred_suffixes, pred_tags)
    missing = [gts[k].relative_to(gt_dir).as_posix() for k in gts if k not in preds]
    if missing:
        tags = "/".join(f"_{t}" for t in pred_tags)
        raise MetricsInputError(
            f"{pred_dir}: no prediction for {len(missing)} of {len(gts)} ground-truth files, e.g. {missing[:3]} "
            f"(a prediction is found at the same relative path, named <stem>{f'[{tags}]' if tags else ''} with "
            f"one of {', '.join(pred_suffixes)}; {len(preds)} predictions found)"
        )
    return [(k, preds[k], gts[k]) for k in gts]
