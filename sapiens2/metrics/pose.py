"""COCO-style keypoint AP / AR from OKS, for the 308-point set, its subsets and COCO-17.

The rules are those of COCO's keypoint evaluation as the reference runs it (xtcocotools):
- per image, detections are sorted by score and only the best `max_dets` (20) count;
- a GT is ignored when it is a crowd or has no labelled point in the evaluated set, and, for an area range,
  when its `area` is outside the range; a detection with no point scored > 0 is dropped (xtcocotools);
- at each OKS threshold (0.50:0.05:0.95) every detection, best score first, takes the unmatched GT with the
  highest OKS >= threshold, preferring non-ignored GTs; crowds may be matched many times;
- a detection matched to an ignored GT, or unmatched with its own area (the box around its predicted points;
  around its 17 body points for the 308 and 133 sets, as in the reference) outside the range, is neither a true
  nor a false positive;
- precision is made monotone and read at 101 recall points; AP and AR average over thresholds.
A setting with no non-ignored GT reports -1, as COCO does.

Deliberate differences from pycocotools' COCOeval (the tests keep their data clear of them): it ignores a GT
by its `num_keypoints` field instead of its labelled points, keeps detections with no scored point, and, as it
records matches by annotation id, takes a match to a GT whose id is 0 for no match.

The work is vectorized: OKS for whole batches of padded images at once, and greedy matching steps one detection
rank at a time over all images, thresholds and area ranges together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..keypoints.metadata import load_keypoint_set
from .oks import oks

OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e10),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e10),
}
MAX_DETS = 20
METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")

# Elements per float64 temporary in the batched OKS (about 32 MB).
_OKS_BUDGET = 4_000_000


def _as_keypoints(x: object, n: int) -> np.ndarray:
    """(n, K, 3) float64; an empty set keeps its K when it has one."""
    arr = np.asarray(x, dtype=np.float64)
    if n == 0:
        return arr.reshape(0, arr.shape[1] if arr.ndim == 3 else 0, 3)
    return arr.reshape(n, -1, 3)


@dataclass
class KeypointAnnotations:
    """Ground-truth people of a keypoint dataset (one row per annotation)."""

    image_ids: np.ndarray  # (N,) int
    keypoints: np.ndarray  # (N, K, 3) x, y, visibility
    area: np.ndarray  # (N,) the OKS scale, also used for the area ranges
    bbox: np.ndarray  # (N, 4) x, y, w, h
    iscrowd: np.ndarray  # (N,) bool
    all_image_ids: np.ndarray  # every image of the set, including those with nobody in them

    def __post_init__(self) -> None:
        n = len(self.image_ids)
        self.image_ids = np.asarray(self.image_ids, dtype=np.int64).reshape(n)
        self.keypoints = _as_keypoints(self.keypoints, n)
        self.area = np.asarray(self.area, dtype=np.float64).reshape(n)
        self.bbox = np.asarray(self.bbox, dtype=np.float64).reshape(n, 4)
        self.iscrowd = np.asarray(self.iscrowd, dtype=bool).reshape(n)
        self.all_image_ids = np.unique(np.concatenate([np.asarray(self.all_image_ids, np.int64), self.image_ids]))

    @property
    def num_keypoints(self) -> int:
        return self.keypoints.shape[1]

    def select(self, index: np.ndarray) -> KeypointAnnotations:
        """The same people with only the keypoints at `index` (a subset evaluation)."""
        return KeypointAnnotations(
            self.image_ids, self.keypoints[:, index], self.area, self.bbox, self.iscrowd, self.all_image_ids
        )


@dataclass
class KeypointDetections:
    """Predicted people (one row per detection)."""

    image_ids: np.ndarray  # (M,) int
    keypoints: np.ndarray  # (M, K, 3) x, y, score
    scores: np.ndarray  # (M,) instance scores
    # Area of the box around all predicted points, as COCO computes it when it loads results. Kept from the
    # full prediction when a subset is selected.
    area: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        m = len(self.image_ids)
        self.image_ids = np.asarray(self.image_ids, dtype=np.int64).reshape(m)
        self.keypoints = _as_keypoints(self.keypoints, m)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(m)
        if self.area is None:
            if m and self.keypoints.shape[1]:
                span = self.keypoints[..., :2].max(axis=1) - self.keypoints[..., :2].min(axis=1)
                self.area = span[:, 0] * span[:, 1]
            else:
                self.area = np.zeros(m)
        self.area = np.asarray(self.area, dtype=np.float64).reshape(m)

    @property
    def num_keypoints(self) -> int:
        return self.keypoints.shape[1]

    def select(self, index: np.ndarray) -> KeypointDetections:
        return KeypointDetections(self.image_ids, self.keypoints[:, index], self.scores, self.area)


def _group_positions(sorted_keys: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal keys (keys already grouped)."""
    n = len(sorted_keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    return np.arange(n) - run_start


def _last_argmax(values: np.ndarray) -> np.ndarray:
    """Index of the last maximum along the last axis (COCO replaces its best match on ties)."""
    g = values.shape[-1]
    return g - 1 - np.argmax(values[..., ::-1], axis=-1)


def _chunks(img_g: np.ndarray, img_d: np.ndarray, k: int) -> list[np.ndarray]:
    """Split images (sorted by GT count) into batches whose padded OKS tensors stay within budget."""
    order = np.lexsort((img_d, img_g))
    chunks: list[np.ndarray] = []
    start, max_g, max_d = 0, 0, 0
    for pos, i in enumerate(order):
        g, d = max(max_g, img_g[i]), max(max_d, img_d[i])
        if pos > start and (pos - start + 1) * g * d * max(k, 1) > _OKS_BUDGET:
            chunks.append(order[start:pos])
            start, g, d = pos, img_g[i], img_d[i]
        max_g, max_d = g, d
    if start < len(order):
        chunks.append(order[start:])
    return chunks


def _match(
    ious: np.ndarray,
    d_valid: np.ndarray,
    g_valid: np.ndarray,
    g_ignore: np.ndarray,
    g_crowd: np.ndarray,
    thresholds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy COCO matching for a batch of padded images.

    ious (B, D, G) with detections in score order; d_valid (B, D); g_valid, g_crowd (B, G);
    g_ignore (B, A, G). Returns matched and matched-to-ignored flags, both (B, T, A, D).
    """
    b, d_max, g_max = ious.shape
    t, a = len(thresholds), g_ignore.shape[1]
    taken = np.zeros((b, t, a, g_max), dtype=bool)
    matched = np.zeros((b, t, a, d_max), dtype=bool)
    to_ignored = np.zeros((b, t, a, d_max), dtype=bool)
    ign = g_ignore[:, None, :, :]  # (B, 1, A, G)
    reusable = g_crowd[:, None, None, :]
    gv = g_valid[:, None, None, :]
    thr = thresholds[None, :, None, None]
    for d in range(d_max):
        o = ious[:, d, None, None, :]  # (B, 1, 1, G)
        ok = (o >= thr) & gv & (~taken | reusable)
        ok_regular = ok & ~ign
        has_regular = ok_regular.any(axis=-1, keepdims=True)
        pool = np.where(has_regular, ok_regular, ok & ign)
        found = pool.any(axis=-1) & d_valid[:, d, None, None]
        best = _last_argmax(np.where(pool, o, -1.0))  # (B, T, A)
        matched[..., d] = found
        to_ignored[..., d] = found & np.take_along_axis(np.broadcast_to(ign, taken.shape), best[..., None], -1)[..., 0]
        taken |= found[..., None] & (np.arange(g_max) == best[..., None])
    return matched, to_ignored


def _precision_recall(
    scores: np.ndarray, matched: np.ndarray, ignored: np.ndarray, num_gt: int, recall_points: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated precision (T, R) and final recall (T,) of one area range; -1 when there is no GT."""
    t = matched.shape[0]
    if num_gt == 0:
        return -np.ones((t, len(recall_points))), -np.ones(t)
    order = np.argsort(-scores, kind="stable")
    matched, ignored = matched[:, order], ignored[:, order]
    tp = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
    fp = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
    nd = tp.shape[1]
    precision = np.zeros((t, len(recall_points)))
    recall = np.zeros(t)
    if nd == 0:
        return precision, recall
    rc = tp / num_gt
    pr = tp / (tp + fp + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # precision envelope
    recall[:] = rc[:, -1]
    for i in range(t):
        idx = np.searchsorted(rc[i], recall_points, side="left")
        inside = idx < nd
        precision[i, inside] = pr[i, idx[inside]]
    return precision, recall


def keypoint_ap(
    gt: KeypointAnnotations,
    det: KeypointDetections,
    sigmas: np.ndarray,
    max_dets: int = MAX_DETS,
    thresholds: np.ndarray = OKS_THRESHOLDS,
    area_ranges: dict[str, tuple[float, float]] = AREA_RANGES,
    recall_points: np.ndarray = RECALL_POINTS,
) -> dict[str, float]:
    """AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl (fractions in [0, 1], or -1 when undefined)."""
    sigmas = np.asarray(sigmas, dtype=np.float64)
    k = len(sigmas)
    # An empty side may not know its keypoint count (e.g. read from a file with no annotations).
    if len(gt.image_ids) == 0:
        gt = KeypointAnnotations(gt.image_ids, np.zeros((0, k, 3)), gt.area, gt.bbox, gt.iscrowd, gt.all_image_ids)
    if len(det.image_ids) == 0:
        det = KeypointDetections(det.image_ids, np.zeros((0, k, 3)), det.scores, det.area)
    if gt.num_keypoints != k or det.num_keypoints != k:
        raise ValueError(
            f"{k} sigmas but {gt.num_keypoints} GT and {det.num_keypoints} predicted keypoints per person"
        )
    images = gt.all_image_ids  # sorted, unique
    unknown = np.setdiff1d(det.image_ids, images)
    if len(unknown):
        raise ValueError(f"predictions refer to image ids absent from the ground truth: {unknown[:10].tolist()}")
    ranges = np.asarray(list(area_ranges.values()), dtype=np.float64)  # (A, 2)
    n_t, n_a = len(thresholds), len(ranges)

    # Detections: drop unscored ones, sort by (image, score desc, input order), keep the best max_dets per image.
    keep = (det.keypoints[..., 2] > 0).any(axis=1)
    d_img = np.searchsorted(images, det.image_ids[keep])
    d_idx = np.flatnonzero(keep)
    order = np.lexsort((d_idx, -det.scores[keep], d_img))
    d_img, d_idx = d_img[order], d_idx[order]
    d_rank = _group_positions(d_img)
    top = d_rank < max_dets
    d_img, d_idx, d_rank = d_img[top], d_idx[top], d_rank[top]
    d_scores, d_area = det.scores[d_idx], det.area[d_idx]

    # Ground truths, grouped by image in input order.
    g_img_all = np.searchsorted(images, gt.image_ids)
    g_order = np.argsort(g_img_all, kind="stable")
    g_img = g_img_all[g_order]
    g_rank = _group_positions(g_img)
    g_crowd = gt.iscrowd[g_order]
    g_area = gt.area[g_order]
    base_ignore = g_crowd | ~(gt.keypoints[g_order, :, 2] > 0).any(axis=1)
    g_ignore = base_ignore[:, None] | (g_area[:, None] < ranges[:, 0]) | (g_area[:, None] > ranges[:, 1])  # (N, A)

    n_img = len(images)
    img_d = np.bincount(d_img, minlength=n_img)
    img_g = np.bincount(g_img, minlength=n_img)

    matched = np.zeros((len(d_idx), n_t, n_a), dtype=bool)
    to_ignored = np.zeros((len(d_idx), n_t, n_a), dtype=bool)
    both = np.flatnonzero((img_d > 0) & (img_g > 0))
    for chunk in _chunks(img_g[both], img_d[both], k):
        imgs = both[chunk]
        b, dm, gm = len(imgs), int(img_d[imgs].max()), int(img_g[imgs].max())
        row_of_img = np.full(n_img, -1)
        row_of_img[imgs] = np.arange(b)
        d_sel = np.flatnonzero(row_of_img[d_img] >= 0)
        g_sel = np.flatnonzero(row_of_img[g_img] >= 0)
        d_rows, g_rows = row_of_img[d_img[d_sel]], row_of_img[g_img[g_sel]]

        pred_xy = np.zeros((b, dm, k, 2))
        pred_xy[d_rows, d_rank[d_sel]] = det.keypoints[d_idx[d_sel], :, :2]
        d_valid = np.zeros((b, dm), dtype=bool)
        d_valid[d_rows, d_rank[d_sel]] = True
        gt_kp = np.zeros((b, gm, k, 3))
        gt_kp[g_rows, g_rank[g_sel]] = gt.keypoints[g_order[g_sel]]
        area = np.zeros((b, gm))
        area[g_rows, g_rank[g_sel]] = g_area[g_sel]
        box = np.zeros((b, gm, 4))
        box[g_rows, g_rank[g_sel]] = gt.bbox[g_order[g_sel]]
        g_valid = np.zeros((b, gm), dtype=bool)
        g_valid[g_rows, g_rank[g_sel]] = True
        crowd = np.zeros((b, gm), dtype=bool)
        crowd[g_rows, g_rank[g_sel]] = g_crowd[g_sel]
        ign = np.ones((b, n_a, gm), dtype=bool)
        ign[g_rows, :, g_rank[g_sel]] = g_ignore[g_sel]

        ious = oks(pred_xy, gt_kp, area, box, sigmas)
        m, mi = _match(ious, d_valid, g_valid, ign, crowd, np.asarray(thresholds))
        matched[d_sel] = m[d_rows, :, :, d_rank[d_sel]]
        to_ignored[d_sel] = mi[d_rows, :, :, d_rank[d_sel]]

    outside = (d_area[:, None] < ranges[:, 0]) | (d_area[:, None] > ranges[:, 1])  # (M, A)
    ignored = to_ignored | (~matched & outside[:, None, :])

    precision = np.empty((n_t, len(recall_points), n_a))
    recall = np.empty((n_t, n_a))
    for a in range(n_a):
        num_gt = int(np.count_nonzero(~g_ignore[:, a]))
        precision[:, :, a], recall[:, a] = _precision_recall(
            d_scores, matched[:, :, a].T, ignored[:, :, a].T, num_gt, recall_points
        )
    return _summarize(precision, recall, list(area_ranges), np.asarray(thresholds))


def _summarize(
    precision: np.ndarray, recall: np.ndarray, labels: list[str], thresholds: np.ndarray
) -> dict[str, float]:
    def mean_defined(x: np.ndarray) -> float:
        x = x[x > -1]
        return float(np.mean(x)) if x.size else -1.0

    def at(iou: float) -> int:
        return int(np.argmin(np.abs(thresholds - iou)))

    a_all, a_m, a_l = labels.index("all"), labels.index("medium"), labels.index("large")
    return {
        "AP": mean_defined(precision[:, :, a_all]),
        "AP50": mean_defined(precision[at(0.5), :, a_all]),
        "AP75": mean_defined(precision[at(0.75), :, a_all]),
        "APm": mean_defined(precision[:, :, a_m]),
        "APl": mean_defined(precision[:, :, a_l]),
        "AR": mean_defined(recall[:, a_all]),
        "AR50": mean_defined(recall[at(0.5), a_all]),
        "AR75": mean_defined(recall[at(0.75), a_all]),
        "ARm": mean_defined(recall[:, a_m]),
        "ARl": mean_defined(recall[:, a_l]),
    }


# Keypoint sets by size, and the subsets each is also scored on (the reference prints its five subset runs).
_SETS_BY_SIZE = {308: "keypoints308", 133: "coco_wholebody133", 17: "coco17"}
SUBSETS = ("body", "foot", "face", "left_hand", "right_hand")


def keypoint_sigmas(set_name: str, subset: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """OKS sigmas (float64) of a keypoint set or one of its subsets, and the indices of those points."""
    kset = load_keypoint_set(set_name)
    if subset is None:
        index = np.arange(kset.num_keypoints)
    elif subset in kset.subsets:
        index = np.asarray(kset.subsets[subset], dtype=np.int64)
    else:
        raise KeyError(f"{set_name} has no subset {subset!r}; known: {sorted(kset.subsets)}")
    return np.asarray(kset.sigmas, dtype=np.float64)[index], index


def body_sized(det: KeypointDetections, body: np.ndarray) -> KeypointDetections:
    """The same detections with `area` taken from the box around the body points only."""
    sized = KeypointDetections(det.image_ids, det.keypoints[:, body], det.scores)
    return KeypointDetections(det.image_ids, det.keypoints, det.scores, sized.area)


def evaluate_keypoints(
    gt: KeypointAnnotations, det: KeypointDetections, max_dets: int = MAX_DETS
) -> dict[str, dict[str, float]]:
    """Every AP/AR table the keypoint count allows, keyed by what was scored.

    308 points: "wholebody" (all 308 with their sigmas, the reference's headline numbers), then body / foot /
    face / left_hand / right_hand, each on its own points and sigmas. 133 points (COCO-WholeBody): the same
    groups. 17 points: "coco17". A 308-point GT with 17-point predictions is scored on its body subset,
    which is in COCO-17 order with the COCO sigmas.
    """
    k_gt, k_det = gt.num_keypoints, det.num_keypoints
    if len(gt.image_ids) == 0:  # an empty side takes the other's keypoint count
        k_gt = k_det
        gt = KeypointAnnotations(gt.image_ids, np.zeros((0, k_gt, 3)), gt.area, gt.bbox, gt.iscrowd, gt.all_image_ids)
    if len(det.image_ids) == 0:
        k_det = k_gt
        det = KeypointDetections(det.image_ids, np.zeros((0, k_det, 3)), det.scores, det.area)
    if k_gt == 0:
        raise ValueError("nothing to evaluate: neither the GT nor the predictions hold a person")
    if k_gt == 308 and k_det == 17:
        sigmas, body = keypoint_sigmas("keypoints308", "body")
        return {"coco17": keypoint_ap(gt.select(body), det, sigmas, max_dets)}
    if k_gt != k_det:
        raise ValueError(f"GT has {k_gt} keypoints per person but predictions have {k_det}")
    if k_gt not in _SETS_BY_SIZE:
        raise ValueError(f"no sigmas known for {k_gt} keypoints per person (expected one of {sorted(_SETS_BY_SIZE)})")
    set_name = _SETS_BY_SIZE[k_gt]
    sigmas, _ = keypoint_sigmas(set_name)
    if set_name == "coco17":
        return {"coco17": keypoint_ap(gt, det, sigmas, max_dets)}
    # The reference's COCO tools size a detection (for the area ranges) by the box around its 17 body points,
    # the `keypoints` field of its results, in every run including the whole-body one.
    det = body_sized(det, keypoint_sigmas(set_name, "body")[1])
    results = {"wholebody": keypoint_ap(gt, det, sigmas, max_dets)}
    for name in SUBSETS:
        sub_sigmas, index = keypoint_sigmas(set_name, name)
        results[name] = keypoint_ap(gt.select(index), det.select(index), sub_sigmas, max_dets)
    return results
