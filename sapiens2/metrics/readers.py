"""Readers for ground truth and predictions: COCO keypoint JSON, label images, .npy / .npz maps, masks.

Every problem with a file is raised as `MetricsInputError` naming the file and what is wrong with it.
Files of a prediction folder and a GT folder are paired by stem: the name up to its first dot (the reference's
output naming), with a task suffix such as `_seg` on the prediction tolerated.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .pose import KeypointAnnotations, KeypointDetections
from .seg_classes import SEG29_PALETTE_RGB

# Keypoint fields, most complete first: the reference writes the 308 points to `goliath_wholebody_kpts` and
# the 17 COCO-order body points to `keypoints`.
KEYPOINT_FIELDS = ("goliath_wholebody_kpts", "keypoints")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ARRAY_SUFFIXES = (".npy", ".npz")
MASK_KEYS = ("mask", "valid", "valid_mask")


class MetricsInputError(ValueError):
    """A ground-truth or prediction file that cannot be used, with the file named in the message."""


def _load_json(path: Path) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise MetricsInputError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MetricsInputError(f"{path}: not valid JSON ({e})") from None


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
    except (TypeError, ValueError):
        raise MetricsInputError(f"{path}: non-numeric values in '{field}'") from None


def read_keypoint_annotations(
    path: str | Path, field: str | None = None, category_id: int = 1
) -> KeypointAnnotations:
    """COCO-format keypoint ground truth (308 points or any subset, e.g. the 17 COCO-order body points).

    Annotations need `image_id`, `area` (the OKS scale) and the keypoint field; `bbox` and `iscrowd` are
    optional. Only annotations of `category_id` (person) are read.
    """
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise MetricsInputError(f"{path}: expected a COCO dict with an 'annotations' list")
    anns = [a for a in data["annotations"] if a.get("category_id", category_id) == category_id]
    field = _pick_field(anns, field, path) if anns else (field or "keypoints")
    for a in anns:
        for key in ("image_id", "area"):
            if key not in a:
                raise MetricsInputError(f"{path}: annotation {a.get('id', '?')} has no '{key}'")
    images = [im["id"] for im in data.get("images", []) if isinstance(im, dict) and "id" in im]
    return KeypointAnnotations(
        image_ids=np.asarray([a["image_id"] for a in anns], dtype=np.int64),
        keypoints=_keypoint_array(anns, field, path, "annotation"),
        area=np.asarray([a["area"] for a in anns], dtype=np.float64),
        bbox=np.asarray([a.get("bbox", [0, 0, 0, 0]) for a in anns], dtype=np.float64).reshape(len(anns), 4),
        iscrowd=np.asarray([bool(a.get("iscrowd", 0)) for a in anns]),
        all_image_ids=np.asarray(images, dtype=np.int64),
    )


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
    return KeypointDetections(
        image_ids=np.asarray([d["image_id"] for d in dets], dtype=np.int64),
        keypoints=_keypoint_array(dets, field, path, "detection"),
        scores=np.asarray([d["score"] for d in dets], dtype=np.float64),
    )


def _open_image(path: Path) -> Image.Image:
    if not path.is_file():
        raise MetricsInputError(f"{path}: file not found")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise MetricsInputError(f"{path}: unreadable image ({e})") from None
    return img


def _load_npy(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    if not path.is_file():
        raise MetricsInputError(f"{path}: file not found")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {k: loaded[k] for k in loaded.files}
        return loaded
    except (ValueError, OSError, EOFError) as e:
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


def pair_files(
    pred_dir: str | Path,
    gt_dir: str | Path,
    gt_suffixes: tuple[str, ...],
    pred_suffixes: tuple[str, ...],
    pred_tags: tuple[str, ...] = (),
) -> list[tuple[str, Path, Path]]:
    """(stem, prediction, GT) for every GT file; a GT without a prediction is an error.

    A prediction may be named `<stem><ext>` or `<stem>_<tag><ext>` for a tag in `pred_tags` (e.g. `_seg`).
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d, what in ((pred_dir, "prediction"), (gt_dir, "ground-truth")):
        if not d.is_dir():
            raise MetricsInputError(f"{d}: {what} folder not found")
    gts = sorted(p for p in gt_dir.iterdir() if p.is_file() and p.suffix.lower() in gt_suffixes)
    if not gts:
        raise MetricsInputError(f"{gt_dir}: no ground-truth files ({', '.join(gt_suffixes)})")
    preds: dict[str, Path] = {}
    for p in sorted(pred_dir.iterdir()):
        if not p.is_file() or p.suffix.lower() not in pred_suffixes:
            continue
        stem = file_stem(p)
        for tag in pred_tags:
            if stem.endswith("_" + tag):
                stem = stem[: -len(tag) - 1]
                break
        preds.setdefault(stem, p)
    pairs, missing = [], []
    for g in gts:
        stem = file_stem(g)
        if stem in preds:
            pairs.append((stem, preds[stem], g))
        else:
            missing.append(g.name)
    if missing:
        raise MetricsInputError(
            f"{pred_dir}: no prediction for {len(missing)} of {len(gts)} ground-truth files, e.g. {missing[:3]}"
        )
    return pairs
