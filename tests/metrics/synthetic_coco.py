"""Random COCO-format keypoint datasets and results that exercise every rule of the keypoint evaluation.

People of every size (below 32^2, medium and large), crowds, people with no labelled point, missed people,
duplicates, false positives, images with more than 20 detections, tied scores and predictions on images with
nobody in them.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np


def make_keypoint_dataset(
    rng: np.random.Generator, num_images: int, num_keypoints: int, sigmas: np.ndarray
) -> tuple[dict, list[dict]]:
    """A COCO GT dict and a list of result dicts, with keypoints in the `keypoints` field."""
    k = num_keypoints
    image_ids = rng.choice(np.arange(1, 10 * num_images + 1), size=num_images, replace=False)
    images, annotations, results = [], [], []
    ann_id = 1
    for img in image_ids:
        img = int(img)
        images.append({"id": img, "file_name": f"{img}.jpg", "width": 2000, "height": 2000})
        crowded = rng.random() < 0.05
        n_people = int(rng.integers(15, 26)) if crowded else int(rng.integers(0, 6))
        for _ in range(n_people):
            side = float(np.exp(rng.uniform(np.log(8), np.log(450))))
            w, h = side * rng.uniform(0.5, 1.0), side * rng.uniform(0.8, 1.6)
            x, y = rng.uniform(0, 1500), rng.uniform(0, 1500)
            area = float(w * h * rng.uniform(0.4, 0.9))
            xs, ys = x + rng.uniform(0, w, k), y + rng.uniform(0, h, k)
            vis = rng.choice([0, 1, 2], size=k, p=[0.3, 0.2, 0.5])
            if rng.random() < 0.08:
                vis[:] = 0
            iscrowd = int(rng.random() < 0.04)
            kp = np.stack([xs * (vis > 0), ys * (vis > 0), vis], axis=1)
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": img,
                    "category_id": 1,
                    "bbox": [x, y, w, h],
                    "area": area,
                    "iscrowd": iscrowd,
                    "num_keypoints": int(np.count_nonzero(vis > 0)),
                    "keypoints": kp.ravel().tolist(),
                }
            )
            ann_id += 1
            if rng.random() < 0.03:  # the same person annotated twice: OKS ties between GTs
                annotations.append(dict(annotations[-1], id=ann_id))
                ann_id += 1
            # Detections of this person: none (a miss), one, or a duplicate, with noise that spans all OKS levels.
            for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
                noise = np.sqrt(area) * sigmas * 2 * rng.exponential(rng.choice([0.1, 0.4, 1.5]), size=k)
                angle = rng.uniform(0, 2 * np.pi, k)
                px = np.where(vis > 0, xs, x + w / 2) + noise * np.cos(angle)
                py = np.where(vis > 0, ys, y + h / 2) + noise * np.sin(angle)
                results.append(_result(rng, img, px, py))
                if rng.random() < 0.05:  # an exact duplicate: OKS ties between detections
                    results.append(dict(results[-1]))
        for _ in range(int(rng.choice([0, 0, 1, 3]))):  # false positives anywhere
            side = float(np.exp(rng.uniform(np.log(8), np.log(450))))
            x, y = rng.uniform(0, 1500), rng.uniform(0, 1500)
            results.append(_result(rng, img, x + rng.uniform(0, side, k), y + rng.uniform(0, side, k)))
    gt = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
    }
    return gt, results


def _result(rng: np.random.Generator, img: int, px: np.ndarray, py: np.ndarray) -> dict:
    score = float(rng.uniform(0.01, 1.0))
    if rng.random() < 0.2:  # ties across and within images
        score = round(score, 1) + 0.05
    kp_scores = rng.uniform(0.05, 1.0, len(px))
    kp = np.stack([px, py, kp_scores], axis=1)
    return {"image_id": img, "category_id": 1, "keypoints": kp.ravel().tolist(), "score": score}


def cocoeval_keypoint_stats(gt: dict, results: list[dict], sigmas: np.ndarray) -> np.ndarray:
    """The ten keypoint stats of pycocotools' COCOeval, with the given sigmas."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(r) for r in results])
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, dtype=np.float64)
