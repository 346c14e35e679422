"""`sapiens2 curate`'s local engine: images/s of each stage and end to end, and peak memory.

The corpus is generated (smooth random scenes with a red block, a quarter of them planted near copies, at
`--size`); the detector is RTMDet-m and the embedder the Sapiens2 backbone of `--arch` at 224 x 224, both with
random weights (speed does not depend on the values; the person stage therefore keeps what the untrained
detector happens to find, so it is run with `min_score = 0` and `min_area_fraction = 0` to pass every image
on to the later stages).

    python benchmarks/bench_curate.py --images 64 --arch 0.4b
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import hw, machine, peak_rss_mib, print_table  # noqa: E402

from sapiens2.curate.config import ClusterConfig, CurateConfig, PersonConfig  # noqa: E402
from sapiens2.curate.embed import BackboneEmbedder  # noqa: E402
from sapiens2.curate.engine import curate  # noqa: E402
from sapiens2.curate.sources import collect_items  # noqa: E402
from sapiens2.detect import PersonDetector, RTMDet, RTMDetConfig  # noqa: E402
from sapiens2.models import build_model  # noqa: E402


def corpus(folder: Path, n: int, h: int, w: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        if i % 4 == 3:  # a re-compressed copy of the previous image
            img = cv2.imread(str(folder / f"{i - 1:05d}.jpg"))
            cv2.imwrite(str(folder / f"{i:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 40])
            continue
        base = cv2.resize(rng.uniform(40, 210, (6, 6)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        img = np.clip(base[..., None] + rng.uniform(-20, 20, 3), 0, 255).astype(np.uint8)
        y, x = rng.integers(0, h // 2), rng.integers(0, w - w // 5)
        img[y:y + int(h * 0.4), x:x + w // 5] = (30, 30, 220)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", default="640x512", help="HxW of the generated images")
    ap.add_argument("--arch", default="0.4b", help="Sapiens2 backbone of the embedder")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    h, w = hw(args.size)
    torch.manual_seed(0)
    detector = PersonDetector(RTMDet(RTMDetConfig()), score_threshold=0.0)
    embedder = BackboneEmbedder(build_model(args.arch, "pretrain"), size=224)
    config = CurateConfig(person=PersonConfig(min_score=0.0, min_area_fraction=0.0),
                          cluster=ClusterConfig(levels=(8,), target=args.images // 2))
    config = dataclasses.replace(config, engine=dataclasses.replace(config.engine, batch_size=args.batch))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        corpus(src, args.images, h, w)
        t0 = time.perf_counter()
        result = curate(collect_items([str(src)]), Path(tmp) / "out", config, detector=detector, embedder=embedder,
                        detector_batched=True)
        total = time.perf_counter() - t0
    print(machine())
    print(f"{args.images} images {h}x{w}, batch {args.batch}, embedder {args.arch} @ 224, RTMDet-m @ 640")
    rows = [(name, result.rows[name], f"{result.seconds[name]:.2f}", f"{rate:.1f}")
            for name, rate in result.throughput().items()]
    rows.append(("end to end (with shards and report)", args.images, f"{total:.2f}", f"{args.images / total:.1f}"))
    print_table(("stage", "images", "s", "images/s"), rows)
    print(f"kept {result.kept}; peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
