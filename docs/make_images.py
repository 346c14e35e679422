"""Illustrations for docs/CLI.md, made with the project's own drawing code from synthetic inputs.

None of these pictures is a model prediction: the keypoints are placed by hand on the bundled photo, the
segmentation picture is the class palette itself, and the normals and depth are those of a rendered sphere.
They show what the outputs look like. Run from the repository root: python docs/make_images.py
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from sapiens2.io import read_image, write_image
from sapiens2.keypoints import keypoints308
from sapiens2.tasks.seg29 import seg29
from sapiens2.vis.dense import draw_depth, draw_normals, draw_segmentation, side_by_side
from sapiens2.vis.pose import draw_pose

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"

# (name, x, y) placed by hand on the 512 x 512 photo; every other point gets score 0 and is not drawn.
HAND_PLACED = [
    ("nose", 222, 127), ("left_eye", 243, 104), ("right_eye", 203, 104), ("left_ear", 284, 114),
    ("right_ear", 163, 114), ("left_shoulder", 330, 262), ("right_shoulder", 102, 262), ("left_elbow", 352, 430),
    ("right_elbow", 56, 405), ("left_wrist", 318, 500), ("right_wrist", 150, 488), ("neck", 222, 205),
]


def pose_picture() -> None:
    photo = read_image(ROOT / "sapiens2" / "data" / "demo" / "astronaut.jpg")
    kset = keypoints308()
    kp = np.zeros((1, len(kset), 2), np.float32)
    scores = np.zeros((1, len(kset)), np.float32)
    for name, x, y in HAND_PLACED:
        kp[0, kset.index(name)] = (x, y)
        scores[0, kset.index(name)] = 0.9
    drawn = draw_pose(photo, kp, scores, radius=5, thickness=3, boxes=[[20, 10, 505, 511]], channel_order="rgb")
    write_image(OUT / "pose_illustration.jpg", drawn, jpeg_quality=85)


def palette_picture() -> None:
    classes = seg29()
    rows, cols, cell_h, cell_w = 10, 3, 30, 230
    legend = np.full((rows * cell_h, cols * cell_w, 3), 255, np.uint8)
    for i, name in enumerate(classes.names):
        r, c = i % rows, i // rows
        y, x = r * cell_h, c * cell_w
        color = tuple(int(v) for v in classes.palette[i])
        cv2.rectangle(legend, (x + 6, y + 5), (x + 40, y + cell_h - 5), color, -1)
        cv2.rectangle(legend, (x + 6, y + 5), (x + 40, y + cell_h - 5), (80, 80, 80), 1)
        cv2.putText(legend, f"{i:2d} {name}", (x + 48, y + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    write_image(OUT / "seg29_palette.png", legend)

    # the overlay style on a synthetic label map: horizontal bands of classes over the photo
    photo = read_image(ROOT / "sapiens2" / "data" / "demo" / "astronaut.jpg")
    labels = np.zeros(photo.shape[:2], np.uint8)
    yy, xx = np.mgrid[: photo.shape[0], : photo.shape[1]]
    inside = ((xx - 256) / 200.0) ** 2 + ((yy - 330) / 260.0) ** 2 < 1
    labels[inside] = 1 + (yy[inside] * 28 // photo.shape[0])
    write_image(OUT / "seg_overlay_style.jpg", side_by_side(photo, draw_segmentation(photo, labels, classes.palette)),
                jpeg_quality=85)


def sphere_pictures() -> None:
    size, radius, distance = 256, 0.8, 3.0
    f = size * 1.2
    v, u = np.mgrid[:size, :size].astype(np.float64)
    rays = np.stack([(u - size / 2 + 0.5) / f, (v - size / 2 + 0.5) / f, np.ones_like(u)], -1)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    centre = np.array([0.0, 0.0, distance])
    b = rays @ centre
    disc = b**2 - (centre @ centre - radius**2)
    mask = disc > 0
    t = np.where(mask, b - np.sqrt(np.clip(disc, 0, None)), 0)
    points = rays * t[..., None]
    normals = np.where(mask[..., None], (points - centre) / radius, 0).astype(np.float32)
    depth = np.where(mask, points[..., 2], 0).astype(np.float32)
    light = np.clip(normals @ np.array([-0.4, -0.5, -0.77]), 0, 1)
    shaded = np.where(mask[..., None], (60 + 180 * light)[..., None] * np.array([1.0, 0.85, 0.7]), 235)
    photo = np.clip(shaded, 0, 255).astype(np.uint8)
    pictures = side_by_side(photo, draw_normals(normals, mask), draw_depth(depth, mask))
    write_image(OUT / "sphere_normals_depth.png", pictures)


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    pose_picture()
    palette_picture()
    sphere_pictures()
    for p in sorted(OUT.iterdir()):
        print(p.relative_to(ROOT), p.stat().st_size)
