"""Pose end to end (decode + detect + crop + network + UDP decode) against the network alone.

Random weights (speed does not depend on them): the pose network of the chosen size and an RTMDet-m
detector. The detector runs for real on every image, but its boxes are replaced by one fixed person box
per image, so that both columns push exactly the same number of crops through the network.

    python benchmarks/bench_pose.py --size 0.4b --images 8 --batch 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table  # noqa: E402

from sapiens2.detect import PersonDetector, RTMDet, RTMDetConfig  # noqa: E402
from sapiens2.models import BackboneConfig, PoseHeadConfig, build_model  # noqa: E402
from sapiens2.tasks.pose import Pose  # noqa: E402


class OneFixedPerson:
    """Runs the real detector (its cost counts) and reports one known box per image."""

    def __init__(self, detector: PersonDetector) -> None:
        self.detector = detector

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.detector(image)
        h, w = image.shape[:2]
        return np.array([[0.3 * w, 0.1 * h, 0.7 * w, 0.95 * h, 0.9]], np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="0.4b", help="official pose size, or 'tiny' for a quick check")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--flip-test", action="store_true",
                    help="run the flip test as Pose does by default (twice the network work of the model-only row)")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.size == "tiny":
        net = build_model(BackboneConfig(embed_dim=64, depth=4, num_heads=4), "pose", PoseHeadConfig(64, (32, 32)))
    else:
        net = build_model(args.size, "pose")
    net.eval()
    detector = PersonDetector(RTMDet(RTMDetConfig.m()))
    folder = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    paths = []
    for i in range(args.images):
        p = folder / f"{i:03d}.jpg"
        cv2.imwrite(str(p), rng.integers(0, 255, (args.height, args.width, 3), dtype=np.uint8))
        paths.append(str(p))
    pose = Pose(net, detector=OneFixedPerson(detector), batch_size=args.batch, flip_test=args.flip_test)
    pose(paths[:1])  # warm-up
    t = time.perf_counter()
    pose(paths)
    e2e = time.perf_counter() - t

    x = torch.randn(args.batch, 3, 1024, 768)
    with torch.inference_mode():
        net(x[:1])
        t = time.perf_counter()
        for _ in range(0, args.images, args.batch):
            net(x)
        model_only = time.perf_counter() - t
    print(f"machine: {machine()}")
    rows = [[args.size, args.images, args.batch, f"{args.images / e2e:.3f}", f"{args.images / model_only:.3f}",
             f"{100 * model_only / e2e:.0f}%"]]
    print_table(["size", "images", "batch", "end-to-end img/s", "model-only img/s", "e2e / model"], rows)


if __name__ == "__main__":
    main()
