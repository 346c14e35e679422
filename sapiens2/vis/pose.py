"""Drawing pose predictions: skeleton links, then keypoints, with the official colours.

Follows the reference renderer: a link is drawn when both end scores are >= ``kpt_thr``
and both rounded end points lie inside the image; a keypoint is drawn (filled circle)
when its score is >= ``kpt_thr`` and it lies inside the image. Links come first so points
sit on top. Anti-aliased lines and circles. The 308-point skeleton covers body, feet and
hands; face points are drawn as dots only.

Colours in the metadata are RGB; images are BGR by default (as OpenCV reads them), and
the colours are reversed accordingly. Drawing happens on a copy: the input is untouched.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import cv2
import numpy as np

from ..keypoints.metadata import KeypointSet, keypoint_set_for

__all__ = ["draw_pose", "draw_track_boxes", "keypoint_set_for", "track_color"]


def _color(rgb: Sequence[int], channel_order: str) -> tuple[int, ...]:
    c = tuple(int(v) for v in rgb)
    return c[::-1] if channel_order == "bgr" else c


def draw_pose(
    image: np.ndarray,
    keypoints: Any,
    scores: Any | None = None,
    *,
    kpt_thr: float = 0.3,
    radius: int = 3,
    thickness: int = 1,
    boxes: Any | None = None,
    box_color: Sequence[int] = (0, 255, 0),
    keypoint_set: KeypointSet | None = None,
    channel_order: Literal["bgr", "rgb"] = "bgr",
) -> np.ndarray:
    """Draw people's keypoints (and optionally their boxes) on a copy of ``image``.

    Args:
        image: (H, W, 3) uint8, BGR unless ``channel_order="rgb"``.
        keypoints: (N, K, 2) or (K, 2) image pixels.
        scores: (N, K) or (K,); default all ones.
        kpt_thr: minimum score for a point (and both ends of a link) to be drawn.
        radius, thickness: circle radius; link (and box) thickness, at least 1.
        boxes: optional (N, 4) xyxy boxes, drawn first.
        box_color: RGB colour of the boxes.
        keypoint_set: metadata giving the skeleton and colours; default chosen by K.
    """
    if channel_order not in ("bgr", "rgb"):
        raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
    canvas = np.ascontiguousarray(image).copy()
    if canvas.ndim != 3 or canvas.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got {canvas.shape}")
    h, w = canvas.shape[:2]

    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim == 2:
        kp = kp[None]
    n, k = kp.shape[:2]
    sc = np.ones((n, k)) if scores is None else np.asarray(scores, dtype=np.float64).reshape(n, k)
    meta = keypoint_set or keypoint_set_for(k)
    if len(meta) != k:
        raise ValueError(f"keypoint set {meta.name} has {len(meta)} points, got {k}")

    line_w = max(1, int(thickness))
    if boxes is not None:
        for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
            cv2.rectangle(
                canvas,
                (int(round(x1)), int(round(y1))),
                (int(round(x2)), int(round(y2))),
                _color(box_color, channel_order),
                line_w,
            )

    kp_colors = [_color(c, channel_order) for c in meta.keypoint_colors]
    link_colors = [_color(c, channel_order) for c in meta.skeleton_link_colors]

    for person, person_scores in zip(kp, sc):
        finite = np.isfinite(person).all(axis=1)
        pts = np.zeros((k, 2), dtype=np.int64)
        pts[finite] = np.round(person[finite]).astype(np.int64)
        inside = finite & (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
        shown = inside & (person_scores >= kpt_thr)

        for li, (a, b) in enumerate(meta.skeleton_links):
            if shown[a] and shown[b]:
                cv2.line(
                    canvas,
                    (int(pts[a, 0]), int(pts[a, 1])),
                    (int(pts[b, 0]), int(pts[b, 1])),
                    link_colors[li],
                    line_w,
                    cv2.LINE_AA,
                )
        for i in np.nonzero(shown)[0]:
            cv2.circle(
                canvas, (int(pts[i, 0]), int(pts[i, 1])), int(radius), kp_colors[i], -1, cv2.LINE_AA
            )
    return canvas


def track_color(track_id: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour per track ID (golden-ratio hues)."""
    hue = int((track_id * 0.618033988749895 % 1.0) * 180)
    hsv = np.uint8([[[hue, 200, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_track_boxes(image: np.ndarray, boxes: np.ndarray, ids: Sequence[int], thickness: int = 2) -> np.ndarray:
    """Boxes coloured by track, each labelled with its ID, on a copy of an RGB image."""
    canvas = np.ascontiguousarray(image).copy()
    scale = max(0.4, canvas.shape[0] / 900)
    for (x1, y1, x2, y2), tid in zip(np.asarray(boxes, np.float64).reshape(-1, 4), ids):
        color = track_color(tid)
        p1, p2 = (round(x1), round(y1)), (round(x2), round(y2))
        cv2.rectangle(canvas, p1, p2, color, thickness)
        cv2.putText(canvas, f"#{tid}", (p1[0] + 2, max(p1[1] - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, scale, color,
                    max(1, thickness), cv2.LINE_AA)
    return canvas
