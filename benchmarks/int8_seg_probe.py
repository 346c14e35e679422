"""Does int8 cost task accuracy? A small seg model fine-tuned here on generated shapes, scored by mIoU.

Random-weight networks say how far int8 moves raw outputs, not what that does to a task. This script makes
a labelled data set of synthetic shapes (a disc, a box and a triangle, each its own class, on textured
noise), fine-tunes a small Sapiens2 seg model on it with the project's own training loop, then runs the
held-out images through `Segmenter` with the network in fp32 PyTorch, int8 PyTorch, fp32 ONNX Runtime and
int8 ONNX Runtime (per-token activation ranges), and reports mIoU (`sapiens2.metrics.segmentation`) for
each. CPU-cheap: minutes.

    python benchmarks/int8_seg_probe.py --iters 300 --save seg_shapes.safetensors
    python benchmarks/int8_seg_probe.py --load seg_shapes.safetensors     # score a saved model again
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

from sapiens2.body_parts import SegClasses  # noqa: E402
from sapiens2.export import DEFAULT_KEEP, export_onnx, quantize_int8  # noqa: E402
from sapiens2.metrics.segmentation import SegmentationMetrics  # noqa: E402
from sapiens2.models import BackboneConfig, SegHeadConfig, build_model  # noqa: E402
from sapiens2.tasks.seg import Segmenter  # noqa: E402
from sapiens2.train.config import config_from_dict  # noqa: E402
from sapiens2.train.loop import Trainer  # noqa: E402

SIZE = (128, 96)  # H, W: an 8 x 6 patch grid
CLASSES = 4  # background, disc, box, triangle
SHAPE_CLASSES = SegClasses(("background", "disc", "box", "triangle"),
                           np.array([[0, 0, 0], [230, 60, 60], [60, 200, 60], [60, 90, 230]], np.uint8))


def make_shapes(root: Path, n: int, seed: int) -> Path:
    """`n` images with 1-3 shapes each over textured noise, and their label maps (folder layout)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    h, w = SIZE
    for i in range(n):
        image = rng.integers(0, 120, (h, w, 3), dtype=np.uint8)
        image = cv2.GaussianBlur(image, (5, 5), 0)
        label = np.zeros((h, w), np.uint8)
        for _ in range(rng.integers(1, 4)):
            kind = int(rng.integers(1, CLASSES))
            colour = tuple(int(c) for c in rng.integers(100, 256, 3))
            cy, cx, r = int(rng.integers(15, h - 15)), int(rng.integers(15, w - 15)), int(rng.integers(8, 22))
            mask = np.zeros((h, w), np.uint8)
            if kind == 1:
                cv2.circle(mask, (cx, cy), r, 1, -1)
            elif kind == 2:
                cv2.rectangle(mask, (cx - r, cy - r // 2), (cx + r, cy + r // 2), 1, -1)
            else:
                pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
                cv2.fillPoly(mask, [pts], 1)
            image[mask > 0] = colour
            label[mask > 0] = kind
        cv2.imwrite(str(root / "images" / f"{i:04d}.png"), image[:, :, ::-1])
        cv2.imwrite(str(root / "labels" / f"{i:04d}.png"), label)
    return root


BACKBONE = {"embed_dim": 128, "depth": 4, "num_heads": 4, "n_storage_tokens": 2, "full_attention_first": 1,
            "full_attention_last": 1}
HEAD = {"deconv_channels": [32, 32, 32, 32], "conv_channels": [32], "conv_kernels": [1]}


def network() -> torch.nn.Module:
    """The probe's architecture, as the training config below builds it."""
    head = SegHeadConfig(BACKBONE["embed_dim"], **{k: tuple(v) for k, v in HEAD.items()}, num_classes=CLASSES)
    return build_model(BackboneConfig(**BACKBONE), "seg", head).eval()


def config(train: Path, work: Path, iters: int) -> dict:
    return {
        "task": "seg",
        "model": {"backbone": BACKBONE, "head": HEAD},
        "data": {"input_size": list(SIZE), "num_workers": 0, "num_classes": CLASSES, "augment": False,
                 "train": [{"root": str(train), "images": "images", "labels": "labels"}]},
        "train": {"work_dir": str(work), "num_iters": iters, "batch_size": 8, "precision": "fp32",
                  "save_every": iters, "val_every": 10**9, "log_every": 50},
        "optim": {"lr": 1e-3, "warmup_iters": 20, "layer_decay": 1.0, "clip_grad": 1.0},
    }


def miou(net: torch.nn.Module | str, val: Path) -> tuple[float, float]:
    """mIoU (points) over the held-out images through `Segmenter`, and seconds per image."""
    seg = Segmenter(net, input_size=SIZE, batch_size=8, classes=SHAPE_CLASSES)
    images = sorted((val / "images").glob("*.png"))
    metrics = SegmentationMetrics(CLASSES)
    start = time.perf_counter()
    results = seg([str(p) for p in images])
    seconds = (time.perf_counter() - start) / len(images)
    for path, result in zip(images, results):
        metrics.update(result.labels, cv2.imread(str(val / "labels" / path.name), cv2.IMREAD_UNCHANGED))
    return metrics.compute()["mIoU"], seconds  # already in points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--train-images", type=int, default=400)
    ap.add_argument("--val-images", type=int, default=64)
    ap.add_argument("--save", help="write the fine-tuned weights here (.safetensors)")
    ap.add_argument("--load", help="score these fine-tuned weights instead of training")
    args = ap.parse_args()
    from safetensors.torch import load_file, save_file

    print(f"# {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train = make_shapes(tmp / "train", args.train_images, seed=0)
        val = make_shapes(tmp / "val", args.val_images, seed=1)
        if args.load:
            net = network()
            net.load_state_dict(load_file(args.load))
        else:
            start = time.perf_counter()
            trainer = Trainer(config_from_dict(config(train, tmp / "work", args.iters)), device="cpu", progress=False)
            trainer.fit()
            print(f"# fine-tuned {args.iters} steps of batch 8 in {time.perf_counter() - start:.0f} s; "
                  f"final loss {trainer.history[-1].get('loss', float('nan')):.3f}", flush=True)
            net = trainer.net.eval()
            if args.save:
                save_file({k: v.contiguous() for k, v in net.state_dict().items()}, args.save)
        net.task = "seg"
        rows = []
        base, _ = miou(net, val)
        for name, model in [("PyTorch fp32", net), ("PyTorch int8, every Linear", quantize_int8(net, keep=())),
                            (f"PyTorch int8, {', '.join(DEFAULT_KEEP)} fp32", quantize_int8(net))]:
            score, sec = miou(model, val)
            rows.append([name, f"{score:.2f}", f"{score - base:+.2f}"])
            print(rows[-1], flush=True)
        fp32 = export_onnx(net, tmp / "seg.onnx", SIZE, dynamic_batch=True)
        int8 = {keep: export_onnx(net, tmp / f"int8_{len(keep)}.onnx", SIZE, dtype="int8", dynamic_batch=True,
                                  keep_fp32=keep) for keep in ((), DEFAULT_KEEP)}
        for name, path in [("ONNX Runtime fp32", fp32), ("ONNX Runtime int8, every MatMul", int8[()]),
                           (f"ONNX Runtime int8, {', '.join(DEFAULT_KEEP)} fp32", int8[DEFAULT_KEEP])]:
            score, sec = miou(str(path), val)
            rows.append([name, f"{score:.2f}", f"{score - base:+.2f}"])
            print(rows[-1], flush=True)
        print_table(["network", "mIoU (val, points)", "vs fp32 PyTorch"], rows)


if __name__ == "__main__":
    main()
