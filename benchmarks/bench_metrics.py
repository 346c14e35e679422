"""Evaluation speed: keypoint AP on 308-point predictions, and the dense metrics on 1024 x 768 maps.

Pose data is random but shaped like a real run: 1 to 4 people per image, 70% of points labelled, predictions
near the GT. pycocotools' COCOeval (with the 308 sigmas) is timed on the smaller sizes for comparison.

    python benchmarks/bench_metrics.py --images 1000,10000 --coco-max 1000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table  # noqa: E402

from sapiens2.metrics import (  # noqa: E402
    AlbedoMetrics,
    KeypointAnnotations,
    KeypointDetections,
    NormalMetrics,
    PointmapMetrics,
    SegmentationMetrics,
    evaluate_keypoints,
    keypoint_ap,
    matting_errors,
)
from sapiens2.metrics.pose import keypoint_sigmas  # noqa: E402


def pose_data(num_images: int, k: int = 308, seed: int = 0) -> tuple[KeypointAnnotations, KeypointDetections]:
    rng = np.random.default_rng(seed)
    per_image = rng.integers(1, 5, num_images)
    n = int(per_image.sum())
    image_ids = np.repeat(np.arange(num_images), per_image)
    side = np.exp(rng.uniform(np.log(20), np.log(400), n))
    xy = rng.uniform(0, 1, (n, k, 2)) * side[:, None, None] + rng.uniform(0, 1000, (n, 1, 2))
    vis = 2.0 * (rng.random((n, k)) < 0.7)
    gt = KeypointAnnotations(
        image_ids, np.concatenate([xy, vis[..., None]], -1), 0.6 * side**2,
        np.concatenate([xy.min(1), np.stack([side, side], 1)], 1), np.zeros(n, bool), np.arange(num_images),
    )
    noise = rng.normal(0, 1, (n, k, 2)) * side[:, None, None] * rng.choice([0.002, 0.01, 0.05], (n, 1, 1))
    det = KeypointDetections(image_ids, np.concatenate([xy + noise, rng.uniform(0.1, 1, (n, k, 1))], -1), rng.random(n))
    return gt, det


def cocoeval_seconds(gt: KeypointAnnotations, det: KeypointDetections, sigmas: np.ndarray) -> float:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    anns = [
        {"id": i + 1, "image_id": int(im), "category_id": 1, "area": float(a), "bbox": b.tolist(), "iscrowd": 0,
         "num_keypoints": int((kp[:, 2] > 0).sum()), "keypoints": kp.ravel().tolist()}
        for i, (im, kp, a, b) in enumerate(zip(gt.image_ids, gt.keypoints, gt.area, gt.bbox))
    ]
    dataset = {"images": [{"id": int(i)} for i in gt.all_image_ids], "annotations": anns,
               "categories": [{"id": 1, "name": "person"}]}
    results = [{"image_id": int(im), "category_id": 1, "score": float(s), "keypoints": kp.ravel().tolist()}
               for im, kp, s in zip(det.image_ids, det.keypoints, det.scores)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
        start = time.perf_counter()  # time the evaluation only, not building the JSON-like lists
        ev = COCOeval(coco, coco.loadRes(results), "keypoints")
        ev.params.kpt_oks_sigmas = sigmas
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return time.perf_counter() - start


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="1000,10000", help="comma-separated image counts for pose")
    parser.add_argument("--coco-max", type=int, default=1000, help="largest count also run through pycocotools")
    parser.add_argument("--dense-images", type=int, default=10, help="1024 x 768 maps per dense task")
    args = parser.parse_args()
    print(machine())

    sigmas, _ = keypoint_sigmas("keypoints308")
    evaluate_keypoints(*pose_data(50))  # warm-up: imports, caches
    rows = []
    for num in (int(x) for x in args.images.split(",")):
        gt, det = pose_data(num)
        ours = timed(lambda: keypoint_ap(gt, det, sigmas))
        all_six = timed(lambda: evaluate_keypoints(gt, det))
        coco = "-"
        if num <= args.coco_max:
            try:
                coco = f"{cocoeval_seconds(gt, det, sigmas):.2f}"
            except ImportError:
                coco = "n/a"
        rows.append([num, len(gt.image_ids), f"{ours:.2f}", f"{all_six:.2f}", coco])
    print("\nPose, 308 keypoints (seconds)")
    print_table(["images", "people", "wholebody AP", "wholebody + 5 subsets", "pycocotools wholebody"], rows)

    rng = np.random.default_rng(0)
    h, w, n = 1024, 768, args.dense_images
    labels = rng.integers(0, 29, (h, w))
    vec = rng.normal(size=(h, w, 3))
    mask = np.zeros((h, w), bool)
    mask[100:900, 150:650] = True
    img = rng.uniform(0, 1, (h, w, 3))
    alpha = rng.uniform(0, 1, (h, w))

    def run(acc: object, *maps: np.ndarray) -> None:
        for _ in range(n):
            acc.update(*maps)
        acc.compute()

    dense = [
        ["seg (29 classes)", timed(lambda: run(SegmentationMetrics(), labels, labels))],
        ["normal", timed(lambda: run(NormalMetrics(), vec, vec + 0.1, mask))],
        ["pointmap", timed(lambda: run(PointmapMetrics(), vec, vec + 0.1, mask))],
        ["albedo (incl. SSIM)", timed(lambda: run(AlbedoMetrics(), img, np.clip(img + 0.05, 0, 1), mask))],
        ["matting (1 image)", timed(lambda: matting_errors(alpha, np.clip(alpha + 0.1, 0, 1))) * n],
    ]
    print(f"\nDense metrics, {n} images of {h} x {w} (seconds, and ms per image)")
    print_table(["task", "seconds", "ms / image"], [[t, f"{s:.2f}", f"{1000 * s / n:.0f}"] for t, s in dense])


if __name__ == "__main__":
    main()
