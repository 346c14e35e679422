"""One entry point per task for the CLI: `evaluate(task, pred, gt, **options)` and `format_table(results)`.

Inputs: pairs of files, or two folder trees searched recursively and matched by relative path and stem (see
`readers.pair_files`), so the tree the CLI writes pairs with a GT tree of the same shape. Pictures (JPEG) in a
prediction tree are never read as predictions.
- pose: COCO results JSON vs COCO keypoint GT JSON (308 points, or 17 in COCO order);
- seg: label maps (`<stem>_seg.npy` as the predictor saves them, label PNGs, colour PNGs) vs label PNGs/.npy;
  classes absent from both (IoU) or from the GT (Acc) count as 0, as the reference's evaluator does
  (`absent="zero"`), or are left out of the means (`absent="ignore"`);
- normal / pointmap / albedo: `.npy` / `.npz` maps (albedo also PNG) vs GT maps; masks from a `mask` array in
  the `.npz`, a `mask/` folder beside a `normal/` (`pointmap/`, `albedo/`) folder as in the reference datasets,
  or the `mask=` option (a folder of mask images or arrays);
- matting: alpha mattes (PNG or .npy, in [0, 1]) vs GT mattes, optional `trimap=` folder;
- depth (Sapiens v1, relative): `.npy` / `.npz` depth maps (`<stem>_reldepth.npy` as the predictor saves them)
  vs GT depth, aligned per image first (`align=` "median", "scale_shift" or "none"), masks as for normals.
The result is a JSON-ready dict: {"task", "metrics", ...}; `format_table` renders it as plain text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .albedo import AlbedoMetrics
from .depth import DepthMetrics
from .matting import MattingMetrics
from .normals import NormalMetrics
from .pointmap import PointmapMetrics
from .pose import METRIC_NAMES, evaluate_keypoints
from .readers import (
    ARRAY_SUFFIXES,
    IMAGE_SUFFIXES,
    LOSSLESS_SUFFIXES,
    MetricsInputError,
    file_stem,
    keyed_files,
    pair_files,
    read_keypoint_annotations,
    read_keypoint_results,
    read_label_map,
    read_map,
    read_mask,
)
from .segmentation import SegmentationMetrics
from ..task_table import task_name

# Array keys tried in .npz files, and the GT sub-folder name of the reference dataset layout.
_MAP_KEYS = {
    "normal": ("normal", "normals"),
    "pointmap": ("pointmap", "points", "xyz"),
    "albedo": ("albedo",),
    "matting": ("alpha", "matte"),
    "depth": ("depth", "reldepth"),
}

_OPTIONS = {
    "pose": {"max_dets", "gt_field", "pred_field"},
    "seg": {"num_classes", "ignore_index", "absent"},
    "normal": {"mask"},
    "pointmap": {"mask", "align"},
    "albedo": {"mask", "data_range"},
    "matting": {"trimap"},
    "depth": {"mask", "align"},
}


def evaluate(task: str, pred: str | Path, gt: str | Path, **options: object) -> dict:
    """Evaluate predictions against ground truth for one task; returns a JSON-ready dict.

    Options: pose `max_dets` (20), `gt_field` / `pred_field` (keypoint field names); seg `num_classes` (29),
    `ignore_index` (255), `absent` ("zero" as the reference, or "ignore"); normal / pointmap / albedo `mask`
    (folder); pointmap `align` ("none", "scale", "scale_shift"); albedo `data_range`; matting `trimap` (folder);
    depth `mask` (folder) and `align` ("median", "scale_shift", "none").
    Options set to None are treated as not given.
    """
    task = task_name(task)
    pred, gt = Path(pred), Path(gt)
    options = {k: v for k, v in options.items() if v is not None}  # a CLI can pass unset flags as None
    unknown = set(options) - _OPTIONS[task]
    if unknown:
        raise ValueError(f"unknown option(s) for {task}: {sorted(unknown)}; allowed: {sorted(_OPTIONS[task])}")
    if task == "pose":
        results = _evaluate_pose(pred, gt, **options)
    elif task == "seg":
        results = _evaluate_seg(pred, gt, **options)
    elif task == "matting":
        results = _evaluate_matting(pred, gt, **options)
    else:
        results = _evaluate_dense(task, pred, gt, **options)
    return {"task": task, "pred": str(pred), "gt": str(gt), **results}


def _evaluate_pose(
    pred: Path, gt: Path, max_dets: int = 20, gt_field: str | None = None, pred_field: str | None = None
) -> dict:
    annotations = read_keypoint_annotations(gt, gt_field)
    detections = read_keypoint_results(pred, pred_field)
    try:
        metrics = evaluate_keypoints(annotations, detections, max_dets)
    except ValueError as e:
        raise MetricsInputError(f"{pred} vs {gt}: {e}") from None
    return {
        "keypoints": {"gt": annotations.num_keypoints, "pred": detections.num_keypoints},
        "images": len(annotations.all_image_ids),
        "instances": {"gt": len(annotations.image_ids), "pred": len(detections.image_ids)},
        "metrics": metrics,
    }


def _files(
    pred: Path, gt: Path, gt_suffixes: tuple[str, ...], pred_suffixes: tuple[str, ...], tags: tuple[str, ...]
) -> list[tuple[str, Path, Path]]:
    """A single pair of files, or the pairs of two folder trees."""
    if pred.is_file() and gt.is_file():
        return [(file_stem(gt), pred, gt)]
    if pred.is_file() or gt.is_file():
        file, folder = (pred, gt) if pred.is_file() else (gt, pred)
        raise MetricsInputError(f"{file} is a file but {folder} is not: give two files or two folders")
    return pair_files(pred, gt, gt_suffixes, pred_suffixes, tags)


# Label maps: arrays first (exact), then lossless images; never a JPEG (lossy: a picture, not labels).
_LABEL_SUFFIXES = (".npy", ".npz", *LOSSLESS_SUFFIXES)


def _evaluate_seg(
    pred: Path, gt: Path, num_classes: int = 29, ignore_index: int = 255, absent: str = "zero"
) -> dict:
    acc = SegmentationMetrics(num_classes, ignore_index)
    acc.check_absent(absent)
    pairs = _files(pred, gt, _LABEL_SUFFIXES, _LABEL_SUFFIXES, ("seg", "label", "labels"))
    for _, p, g in pairs:
        pred_labels, gt_labels = read_label_map(p), read_label_map(g)
        try:
            acc.update(pred_labels, gt_labels)
        except ValueError as e:
            raise MetricsInputError(f"{p} vs {g}: {e}") from None
    out = acc.compute(absent=absent)
    per_class = {name: {"IoU": _defined(out["IoU"][name]), "Acc": _defined(out["Acc"][name])} for name in out["IoU"]}
    return {
        "images": len(pairs),
        "pixels": out["pixels"],
        "absent_classes": absent,
        "absent_from_both": out["absent_from_both"],
        "absent_from_gt": out["absent_from_gt"],
        "metrics": {k: _defined(out[k]) for k in ("aAcc", "mIoU", "mAcc")},
        "per_class": per_class,
    }


def _defined(value: float) -> float | None:
    """None (JSON null, shown as '-') for an undefined ratio, e.g. the IoU of a class left out of the means."""
    return None if np.isnan(value) else value


_DenseSample = tuple[Path, Path, np.ndarray, np.ndarray, "np.ndarray | None"]


def _dense_samples(task: str, pred: Path, gt: Path, mask: object | None) -> Iterator[_DenseSample]:
    """(pred file, GT file, pred map, GT map, mask) for every GT sample of a dense task."""
    keys = _MAP_KEYS[task]
    gt_maps, mask_dir = gt, Path(mask) if mask is not None else None
    if gt.is_dir() and (gt / keys[0]).is_dir():  # reference layout: <root>/<task>/ and <root>/mask/
        gt_maps = gt / keys[0]
        if mask_dir is None and (gt / "mask").is_dir():
            mask_dir = gt / "mask"
    gt_suffixes = ARRAY_SUFFIXES + (IMAGE_SUFFIXES if task == "albedo" else ())
    pred_suffixes = ARRAY_SUFFIXES + (LOSSLESS_SUFFIXES if task == "albedo" else ())
    masks: dict[str, Path] = {}
    if mask_dir is not None:
        if not mask_dir.is_dir():
            raise MetricsInputError(f"{mask_dir}: mask folder not found")
        masks = keyed_files(mask_dir, ARRAY_SUFFIXES + LOSSLESS_SUFFIXES + IMAGE_SUFFIXES)
    for stem, p, g in _files(pred, gt_maps, gt_suffixes, pred_suffixes, keys):
        pred_map, _ = read_map(p, keys)
        gt_map, m = read_map(g, keys)
        if stem in masks:
            m = read_mask(masks[stem])
        elif mask_dir is not None:
            raise MetricsInputError(f"{mask_dir}: no mask for {g.name}")
        yield p, g, pred_map, gt_map, m


def _evaluate_dense(
    task: str, pred: Path, gt: Path, mask: object | None = None, align: str | None = None,
    data_range: float | None = None
) -> dict:
    acc: NormalMetrics | PointmapMetrics | AlbedoMetrics | DepthMetrics
    if task == "normal":
        acc = NormalMetrics()
    elif task == "pointmap":
        acc = PointmapMetrics(align or "none")
    elif task == "depth":
        acc = DepthMetrics(align or "median")
    else:
        acc = AlbedoMetrics(data_range)
    images = 0
    for p, g, pm, gm, m in _dense_samples(task, pred, gt, mask):
        try:
            acc.update(pm, gm, m)
        except ValueError as e:
            raise MetricsInputError(f"{p} vs {g}: {e}") from None
        images += 1
    try:
        metrics = acc.compute()
    except ValueError as e:
        raise MetricsInputError(f"{gt}: {e}") from None
    extra = {k: metrics.pop(k) for k in ("pixels", "alignment", "data_range") if k in metrics}
    return {"images": images, **extra, "metrics": metrics}


def _evaluate_matting(pred: Path, gt: Path, trimap: object | None = None) -> dict:
    acc = MattingMetrics()
    trimaps: dict[str, Path] = {}
    if trimap is not None:
        tdir = Path(trimap)
        if not tdir.is_dir():
            raise MetricsInputError(f"{tdir}: trimap folder not found")
        trimaps = keyed_files(tdir, LOSSLESS_SUFFIXES + IMAGE_SUFFIXES)
    suffixes = ARRAY_SUFFIXES + LOSSLESS_SUFFIXES
    for stem, p, g in _files(pred, gt, suffixes + (".jpg", ".jpeg"), suffixes, (*_MAP_KEYS["matting"], "matting")):
        pm, _ = read_map(p, _MAP_KEYS["matting"])
        gm, _ = read_map(g, _MAP_KEYS["matting"])
        pm, gm = _single_channel(pm, p), _single_channel(gm, g)
        tri = None
        if trimap is not None:
            if stem not in trimaps:
                raise MetricsInputError(f"{trimap}: no trimap for {g.name}")
            tri = np.round(read_map(trimaps[stem])[0] * 255).astype(np.int64)
        try:
            acc.update(pm, gm, tri)
        except ValueError as e:
            raise MetricsInputError(f"{p} vs {g}: {e}") from None
    metrics = acc.compute()
    return {"images": metrics.pop("images"), "metrics": metrics}


def _single_channel(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim == 3 and x.shape[-1] in (1, 3, 4):
        x = x[..., 0]
    if x.ndim != 2:
        raise MetricsInputError(f"{path}: an alpha matte must be H x W, got shape {x.shape}")
    return x


# Decimals per task: seg and normal values are percentages and degrees (the reference rounds seg to 2).
_DECIMALS = {"seg": 2, "normal": 2}


def _fmt(v: object, decimals: int = 4, percent: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if percent:
            return "-" if v == -1.0 else f"{100 * v:.2f}"
        return f"{v:.{decimals}f}" if abs(v) < 1e4 else f"{v:.4g}"
    return str(v)


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *map(line, rows)])


def _absent_note(results: dict) -> str:
    """One line on the classes with no pixels, and what the policy did with them."""
    both, gt_only = results.get("absent_from_both", []), results.get("absent_from_gt", [])
    n = len(results.get("per_class", {}))
    if not gt_only:
        return f"all {n} classes occur in the ground truth"
    counts = (f"{len(both)} of {n} classes have no pixel in prediction or ground truth, {len(gt_only)} none in "
              "the ground truth")
    if results["absent_classes"] == "zero":
        return (f"{counts}: they count as 0 in mIoU and mAcc respectively, as in the reference's evaluator "
                "(--absent-classes ignore leaves them out)")
    return (f"{counts}: they are left out of mIoU and mAcc respectively (--absent-classes zero counts them as 0, "
            "as the reference's evaluator does)")


def format_table(results: dict) -> str:
    """A plain-text table of an `evaluate` result (pose AP/AR shown in percent; -1 = undefined shown as '-')."""
    task = results.get("task", "?")
    metrics = results.get("metrics", {})
    parts = [f"task: {task}"]
    for key in ("images", "pixels", "alignment", "data_range", "absent_classes"):
        if key in results:
            parts.append(f"{key}: {results[key]}")
    title = "  ".join(parts)
    if "absent_classes" in results:
        title += "\n" + _absent_note(results)
    if task == "pose":
        rows = [[group] + [_fmt(vals.get(n), percent=True) for n in METRIC_NAMES] for group, vals in metrics.items()]
        return title + "\n" + _grid(["keypoints"] + list(METRIC_NAMES), rows)
    decimals = _DECIMALS.get(task, 4)
    summary = _grid(["metric", "value"], [[k, _fmt(v, decimals)] for k, v in metrics.items()])
    out = title + "\n" + summary
    if "per_class" in results:
        rows = [[name, _fmt(v["IoU"], decimals), _fmt(v["Acc"], decimals)] for name, v in results["per_class"].items()]
        out += "\n\n" + _grid(["class", "IoU", "Acc"], rows)
    return out
