"""Object keypoint similarity (OKS), vectorized over detections, ground truths and whole batches of images.

OKS is the keypoint analogue of box IoU: for each labelled GT point, exp(-d^2 / (2 * area * (2*sigma)^2)),
averaged over the labelled points. A GT with no labelled point is compared by how far the predicted points
fall outside its box grown by one box size on every side (COCO's rule), averaged over all points.
"""

from __future__ import annotations

import numpy as np

# COCO adds machine epsilon to the area so that a zero-area GT does not divide by zero.
_EPS = float(np.spacing(1))


def oks(
    pred_xy: np.ndarray,
    gt_keypoints: np.ndarray,
    gt_area: np.ndarray,
    gt_bbox: np.ndarray,
    sigmas: np.ndarray,
) -> np.ndarray:
    """OKS between every detection and every GT, batched over any leading dimensions.

    pred_xy: (..., D, K, 2) predicted x, y.
    gt_keypoints: (..., G, K, 3) GT x, y, visibility (v > 0 means labelled).
    gt_area: (..., G) GT areas, the OKS scale.
    gt_bbox: (..., G, 4) GT boxes x, y, w, h, used only for GTs with no labelled point.
    sigmas: (K,) per-point sigmas.
    Returns (..., D, G).
    """
    pred_xy = np.asarray(pred_xy, dtype=np.float64)
    gt_keypoints = np.asarray(gt_keypoints, dtype=np.float64)
    sigmas = np.asarray(sigmas, dtype=np.float64)
    k = sigmas.shape[0]
    if pred_xy.shape[-2:] != (k, 2) or gt_keypoints.shape[-2:] != (k, 3):
        raise ValueError(
            f"keypoint shapes {pred_xy.shape} (pred) and {gt_keypoints.shape} (gt) do not match {k} sigmas"
        )
    area = np.asarray(gt_area, dtype=np.float64)[..., None, :, None]  # (..., 1, G, 1)
    box = np.asarray(gt_bbox, dtype=np.float64)[..., None, :, :]  # (..., 1, G, 4)

    xd = pred_xy[..., :, None, :, 0]  # (..., D, 1, K)
    yd = pred_xy[..., :, None, :, 1]
    xg = gt_keypoints[..., None, :, :, 0]  # (..., 1, G, K)
    yg = gt_keypoints[..., None, :, :, 1]
    labelled = gt_keypoints[..., None, :, :, 2] > 0  # (..., 1, G, K)
    any_labelled = labelled.any(axis=-1, keepdims=True)  # (..., 1, G, 1)

    dx = xd - xg
    dy = yd - yg
    if not np.all(any_labelled):
        # Distance outside the GT box grown to [x - w, x + 2w] x [y - h, y + 2h].
        x0 = box[..., 0:1] - box[..., 2:3]
        x1 = box[..., 0:1] + 2 * box[..., 2:3]
        y0 = box[..., 1:2] - box[..., 3:4]
        y1 = box[..., 1:2] + 2 * box[..., 3:4]
        out_x = np.maximum(0.0, x0 - xd) + np.maximum(0.0, xd - x1)
        out_y = np.maximum(0.0, y0 - yd) + np.maximum(0.0, yd - y1)
        dx = np.where(any_labelled, dx, out_x)
        dy = np.where(any_labelled, dy, out_y)

    # exp(-d^2 / (2 * area * (2 sigma)^2)), with the per-(GT, point) factor computed once and the big
    # (..., D, G, K) temporaries reused in place.
    neg_inv_scale = -1.0 / ((2.0 * sigmas) ** 2 * (area + _EPS) * 2.0)  # (..., 1, G, K)
    sq = np.multiply(dx, dx, out=dx if dx.flags.writeable else None)
    sq += dy * dy
    sq *= neg_inv_scale
    np.exp(sq, out=sq)
    weights = np.where(any_labelled, labelled, True)
    sq *= weights
    return sq.sum(axis=-1) / weights.sum(axis=-1)
