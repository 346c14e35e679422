"""End-to-end throughput of the batch runner versus the network alone, at the same batch size.

"Model only" times what the runner's main thread does per batch (`Job.run`, the predictor's `run` step:
normalise and the forward pass), on inputs decoded and prepared beforehand; the predictor's `finish` step
(resizing the maps back, heatmap decoding) runs in the writer threads.
"End to end" times `run_jobs` on a folder of JPEGs: decoding, preparing (resizes, crops; detection when
on), the network, post-processing and atomic writes of every default output. The ratio says how much of
the non-network work the pipeline hides (target >= 90 %).

    python benchmarks/bench_cli.py                                  # tiny random seg model, CPU
    python benchmarks/bench_cli.py --task pose --model 0.4b-random --device cuda --batch-size 8 --images 64
    python benchmarks/bench_cli.py --task normal --model sapiens2-normal-1b --device cuda --dtype bf16

`--model tiny` (default) and `--model <arch>-random` (e.g. 0.4b-random) build random networks, so no
weights are needed; anything else is loaded with `sapiens2.load`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sapiens2.models import (
    BackboneConfig,
    DenseHeadConfig,
    PoseHeadConfig,
    SegHeadConfig,
    build_model,
)
from sapiens2.runner import RunOptions, collect_sources, run_jobs
from sapiens2.runner.jobs import Job
from sapiens2.task_table import TASKS
from sapiens2.tasks import PREDICTORS
from sapiens2.tasks.models import load_network, resolve_device, resolve_dtype


def _network(task: str, spec: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    if spec == "tiny":
        torch.manual_seed(0)
        tiny = BackboneConfig(embed_dim=32, depth=2, num_heads=2)
        head = {"pose": PoseHeadConfig(32, (16, 16), conv_channels=(16, 16, 8)),
                "seg": SegHeadConfig(32, (16, 16, 16, 16), conv_channels=(16, 16))}.get(
            task, DenseHeadConfig(32, (16, 16, 16, 16), (8, 8, 8)))
        return build_model(tiny, task, head).to(device=device, dtype=dtype).eval()
    if spec.endswith("-random"):
        return build_model(spec.removesuffix("-random"), task).to(device=device, dtype=dtype).eval()
    return load_network(task, spec, device, dtype)


def _photos(folder: Path, n: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    h, w = size
    for i in range(n):
        img = rng.integers(0, 255, (h, w, 3), np.uint8)
        cv2.rectangle(img, (w // 4, h // 8), (3 * w // 4, 7 * h // 8), (40, 200, 90), -1)
        cv2.imwrite(str(folder / f"img{i:04d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="seg", choices=["pose", "seg", "normal", "albedo"])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--image-size", default="720x540", help="HxW of the generated JPEGs")
    ap.add_argument("--input-size", default="1024x768", help="dense tasks: network input HxW")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--readers", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="model-only passes (the best is kept)")
    args = ap.parse_args()

    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    image_size = tuple(int(v) for v in args.image_size.split("x"))
    input_size = tuple(int(v) for v in args.input_size.split("x"))
    net = _network(args.task, args.model, device, dtype)
    saves = TASKS[args.task].default_saves
    if args.task == "pose":
        predictor = PREDICTORS["pose"](net, detector=None, device=device, dtype=dtype, batch_size=args.batch_size)
    else:
        predictor = PREDICTORS[args.task](net, device=device, dtype=dtype, batch_size=args.batch_size,
                                          input_size=input_size)
    job = Job(args.task, predictor, saves)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        _photos(folder, args.images, image_size)
        sources, _ = collect_sources([str(folder)])

        # model only: inputs decoded and prepared up front
        from sapiens2.io import read_image

        prepared = [job.prepare(read_image(s.path), s) for s in sources]
        batches = [prepared[i:i + args.batch_size] for i in range(0, len(prepared), args.batch_size)]
        job.run(batches[0])  # warm-up
        model_only = 0.0
        for _ in range(args.repeats):  # the best of a few passes: the network's own speed, without noise
            _sync(device)
            start = time.perf_counter()
            for b in batches:
                job.run(b)
            _sync(device)
            model_only = max(model_only, len(prepared) / (time.perf_counter() - start))
        del prepared, batches

        # end to end: folder in, every default output written
        options = RunOptions(Path(tmp) / "out", batch_size=args.batch_size, readers=args.readers,
                             writers=args.writers, progress=False, handle_sigint=False)
        run_jobs([job], sources[: args.batch_size], RunOptions(Path(tmp) / "warm", batch_size=args.batch_size,
                                                                progress=False, handle_sigint=False))
        start = time.perf_counter()
        summary = run_jobs([job], sources, options)
        _sync(device)
        end_to_end = summary.images_done / (time.perf_counter() - start)
        assert summary.exit_code == 0, summary.failures

    params = sum(p.numel() for p in net.parameters()) / 1e6
    rows = [("task", "model", "params (M)", "device", "dtype", "batch", "images", "image HxW", "model only img/s",
             "end to end img/s", "end to end / model"),
            (args.task, args.model, f"{params:.1f}", str(device), args.dtype, str(args.batch_size), str(args.images),
             args.image_size, f"{model_only:.2f}", f"{end_to_end:.2f}", f"{100 * end_to_end / model_only:.0f} %")]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(rows[0], widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print("| " + " | ".join(c.ljust(w) for c, w in zip(rows[1], widths)) + " |")
    print(f"\n{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} intra-op threads")


if __name__ == "__main__":
    main()
