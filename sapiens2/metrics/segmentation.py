"""Body-part segmentation metrics: per-class IoU and accuracy, mIoU, mAcc, aAcc.

As in the reference, counts are pooled over all pixels of the dataset (not averaged per image), GT pixels equal
to the ignore index are dropped, and a class whose ratio is undefined (IoU: absent from both prediction and GT;
accuracy: absent from the GT) scores 0 and still counts in the mean over all classes, background included: the
reference's `SegEvaluator` is configured with `nan_to_num=0.0` (spec TASKS.md, section 5.3). On a small set that
lacks some classes this lowers the means even for perfect predictions; `absent="ignore"` leaves such classes out
of the means instead (mmseg's `IoUMetric` default, nanmean). Values are percentages.
"""

from __future__ import annotations

import numpy as np

from .seg_classes import IGNORE_INDEX, SEG29_CLASSES

#: What to do with a class that has no pixels: count it as 0 (the reference) or leave it out of the means.
ABSENT_POLICIES = ("zero", "ignore")


class SegmentationMetrics:
    """Accumulates a confusion matrix over images; `compute()` turns it into the metrics."""

    def __init__(self, num_classes: int = len(SEG29_CLASSES), ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        # confusion[g, p]: pixels of GT class g predicted as p.
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image: integer label maps of the same shape."""
        pred, gt = np.asarray(pred), np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from GT shape {gt.shape}")
        for name, x in (("prediction", pred), ("GT", gt)):
            if not np.issubdtype(x.dtype, np.integer) and not np.issubdtype(x.dtype, np.bool_):
                raise ValueError(f"{name} labels must be integers, got dtype {x.dtype}")
        keep = gt != self.ignore_index
        g = gt[keep].astype(np.int64)
        p = pred[keep].astype(np.int64)
        c = self.num_classes
        if g.size and (g.min() < 0 or g.max() >= c):
            raise ValueError(f"GT labels must be in [0, {c}) or {self.ignore_index}; found {_bad(g, c)}")
        if p.size and (p.min() < 0 or p.max() >= c):
            raise ValueError(f"predicted labels must be in [0, {c}); found {_bad(p, c)}")
        self.confusion += np.bincount(g * c + p, minlength=c * c).reshape(c, c)

    @staticmethod
    def check_absent(absent: str) -> None:
        if absent not in ABSENT_POLICIES:
            raise ValueError(f"absent classes: expected one of {', '.join(ABSENT_POLICIES)}, got {absent!r}")

    def compute(self, absent: str = "zero", class_names: tuple[str, ...] | None = None) -> dict:
        """aAcc, mIoU, mAcc (percent), per-class IoU / Acc keyed by class name, and the classes with no pixels
        (`absent_from_both`: undefined IoU; `absent_from_gt`: undefined Acc)."""
        self.check_absent(absent)
        names = class_names or default_class_names(self.num_classes)
        inter = np.diag(self.confusion).astype(np.float64)
        gt_area = self.confusion.sum(axis=1).astype(np.float64)
        pred_area = self.confusion.sum(axis=0).astype(np.float64)
        union = gt_area + pred_area - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / union
            acc = inter / gt_area
        total = gt_area.sum()
        a_acc = inter.sum() / total if total else float("nan")
        if absent == "zero":
            iou, acc = np.nan_to_num(iou, nan=0.0), np.nan_to_num(acc, nan=0.0)
            miou, macc = float(np.mean(iou)), float(np.mean(acc))
        else:
            miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
            macc = float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")
        return {
            "aAcc": 100.0 * float(a_acc),
            "mIoU": 100.0 * miou,
            "mAcc": 100.0 * macc,
            "IoU": {n: 100.0 * float(v) for n, v in zip(names, iou, strict=True)},
            "Acc": {n: 100.0 * float(v) for n, v in zip(names, acc, strict=True)},
            "pixels": int(total),
            "absent_from_both": [n for n, u in zip(names, union, strict=True) if u == 0],
            "absent_from_gt": [n for n, g in zip(names, gt_area, strict=True) if g == 0],
        }


def default_class_names(num_classes: int) -> tuple[str, ...]:
    """Sapiens2's 29 body parts, Sapiens v1's 28, or the ids as text for any other class count."""
    if num_classes == len(SEG29_CLASSES):
        return SEG29_CLASSES
    if num_classes == 28:
        from sapiens2.body_parts import seg28

        return seg28().names
    return tuple(str(i) for i in range(num_classes))


def segmentation_metrics(
    pred: np.ndarray, gt: np.ndarray, num_classes: int = len(SEG29_CLASSES), ignore_index: int = IGNORE_INDEX
) -> dict:
    """The metrics of a single label map (see `SegmentationMetrics` for many)."""
    acc = SegmentationMetrics(num_classes, ignore_index)
    acc.update(pred, gt)
    return acc.compute()


def _bad(x: np.ndarray, c: int) -> list[int]:
    return np.unique(x[(x < 0) | (x >= c)])[:5].tolist()
