"""Axis-aligned box operations and greedy NMS in plain torch (no torchvision, no compiled ops).

Boxes are (N, 4) tensors of (x1, y1, x2, y2). Two area conventions exist in this field and both are
needed here: mmdet/mmcv measure a box as (x2 - x1) * (y2 - y1) (`offset=0`), while the Sapiens demo's
second NMS uses the older "pixel-inclusive" (x2 - x1 + 1) * (y2 - y1 + 1) (`offset=1`).
"""

from __future__ import annotations

import torch


def box_area(boxes: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
    """Areas of (N, 4) boxes; degenerate boxes give zero rather than a negative area."""
    w = (boxes[:, 2] - boxes[:, 0] + offset).clamp(min=0)
    h = (boxes[:, 3] - boxes[:, 1] + offset).clamp(min=0)
    return w * h


def box_iou(a: torch.Tensor, b: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
    """Pairwise IoU, (N, 4) x (M, 4) -> (N, M). Pairs whose union is zero get IoU 0."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt + offset).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a, offset)[:, None] + box_area(b, offset)[None, :] - inter
    return torch.where(union > 0, inter / union.where(union > 0, torch.ones_like(union)),
                       torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, offset: float = 0.0) -> torch.Tensor:
    """Greedy non-maximum suppression; returns kept indices in descending score order.

    Boxes are visited from the highest score down (a stable sort, so equal scores keep their input order);
    a box is dropped when its IoU with an already kept box is strictly greater than `iou_threshold`.
    This is the rule of mmcv's NMS kernel (offset 0) and of the classic Python NMS (offset 1).
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms expects boxes (N, 4) and scores (N,), got {tuple(boxes.shape)} and "
                         f"{tuple(scores.shape)}")
    device = boxes.device
    # A short Python loop over kept boxes; NMS inputs are at most a few thousand boxes, so run it on the CPU.
    boxes, scores = boxes.detach().cpu(), scores.detach().cpu()
    order = torch.sort(scores, descending=True, stable=True).indices
    x1, y1, x2, y2 = boxes[order].unbind(1)
    areas = (x2 - x1 + offset) * (y2 - y1 + offset)
    alive = torch.ones(len(order), dtype=torch.bool)
    keep: list[int] = []
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(i)
        # The kept box suppresses, in one vector step, every later box that overlaps it too much.
        rest = slice(i + 1, None)
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest]) + offset).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest]) + offset).clamp(min=0)
        inter = w * h
        alive[rest] &= ~(inter / (areas[i] + areas[rest] - inter) > iou_threshold)
    return order[torch.tensor(keep, dtype=torch.long)].to(device)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float | None,
                offset: float = 0.0) -> torch.Tensor:
    """Class-aware NMS: boxes only suppress boxes of the same label. Returns kept indices by score.

    Each label is suppressed on its own, then the survivors are merged and sorted by score. With
    `iou_threshold=None` nothing is suppressed and the indices only sort by score (mmdet's `nms=None`).
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    if iou_threshold is None or boxes.numel() == 0:
        return order
    kept = [idx[nms(boxes[idx], scores[idx], iou_threshold, offset)]
            for idx in (torch.nonzero(labels == c).flatten() for c in torch.unique(labels))]
    kept_all = torch.cat(kept)
    return kept_all[torch.sort(scores[kept_all], descending=True, stable=True).indices]


def clip_boxes(boxes: torch.Tensor, height: float, width: float) -> torch.Tensor:
    """Clamp x to [0, width] and y to [0, height]."""
    x = boxes[:, 0::2].clamp(0, width)
    y = boxes[:, 1::2].clamp(0, height)
    return torch.stack((x[:, 0], y[:, 0], x[:, 1], y[:, 1]), dim=1)


def distance_to_box(points: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """(N, 2) points and (N, 4) distances (left, top, right, bottom) -> (N, 4) boxes."""
    return torch.cat((points - distances[:, :2], points + distances[:, 2:]), dim=1)
