"""Dense predictors end to end (resize/pad, forward, crop/resize back): images per second and peak memory,
against the network alone.

Each (task, size, batch) runs in its own process, so the peak resident memory reported is that run's alone
(on CUDA: the peak allocated GPU memory). Weights are random: speed does not depend on them. Photos are random
too, of the size given by --photo. "network" is the forward alone on an input batch of the network's size,
the reference's way of timing it; "e2e / network" is what the predictor's pre- and post-processing add. The
network's GFLOP/s (backbone attention included; head convolutions counted layer by layer) are set against
this machine's dense fp32 matmul peak, measured in the same run. The last line per task compares batch 1
with the best batch.

    python benchmarks/bench_dense.py --tasks seg,normal,pointmap,albedo --sizes 0.4b --batches 1,2,4
    python benchmarks/bench_dense.py --tasks matting --sizes 1b --batches 1,2
    python benchmarks/bench_dense.py --sizes tiny --input 128x96 --batches 1,2   # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import backbone_flops, conv_flops, hw, machine, matmul_peak_gflops, peak_rss_mib, print_table

TASKS = ("seg", "normal", "pointmap", "albedo", "matting")


def build_network(task: str, size: str, input_size: tuple[int, int]) -> torch.nn.Module:
    """The official arch and head of `size` with random weights ('tiny': a 2-block toy for smoke runs)."""
    from sapiens2.models import BackboneConfig, DenseHeadConfig, PointmapHeadConfig, SegHeadConfig, build_model
    from sapiens2.models.build import official_head_config

    if size == "tiny":
        arch: str | BackboneConfig = BackboneConfig(embed_dim=32, depth=2, num_heads=2)
        c = 32
        heads = {"seg": SegHeadConfig(c, (16, 16, 16, 16), conv_channels=(16, 16)),
                 "normal": DenseHeadConfig(c, (16, 16, 16, 16), (8, 8, 8)),
                 "albedo": DenseHeadConfig(c, (16, 16, 16, 16), (8, 8, 8)),
                 "pointmap": PointmapHeadConfig(c, (16, 16, 16, 16), (8, 8, 8), scale_conv_channels=(16, 8),
                                                 scale_conv_kernels=(1, 1)),
                 "matting": DenseHeadConfig(c, (16, 16, 16, 16), (8, 8, 8), out_channels=4)}
        head = heads[task]
    else:
        arch = size
        head = official_head_config(size, task)
    if isinstance(head, PointmapHeadConfig):
        # The scale MLP's input width follows the input size (6144 at 1024 x 768).
        gh, gw = (n // 16 for n in input_size)
        for _ in head.scale_conv_channels:
            gh, gw = math.ceil(gh / 2), math.ceil(gw / 2)
        head = PointmapHeadConfig(**{**head.__dict__, "scale_mlp": (head.scale_conv_channels[-1] * gh * gw,
                                                                    *head.scale_mlp[1:])})
    return build_model(arch, task, head)


def worker(task: str, size: str, batch: int, args: argparse.Namespace) -> dict:
    from sapiens2.tasks import predictor_for

    torch.manual_seed(0)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    network = build_network(task, size, args.input).to(device=device, dtype=dtype)
    predictor = predictor_for(task)(network, batch_size=batch, input_size=args.input)
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (*args.photo, 3), dtype=np.uint8) for _ in range(batch)]
    def timed(fn) -> float:
        """Best of --repeats (on CUDA, to the end of the queued kernels)."""
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        return best

    predictor(photos)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    best = timed(lambda: predictor(photos))
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mib()
    x = torch.randn(batch, 3, *args.input, device=device, dtype=dtype)
    with torch.no_grad():
        features = network.backbone.forward_featmap(x)
        flops = batch * backbone_flops(network.backbone.config, *args.input) + conv_flops(network.decode_head, features)
        net_best = timed(lambda: network(x))
    return {"images_per_s": batch / best, "ms_per_image": 1000 * best / batch, "peak_mib": peak,
            "net_ms_per_image": 1000 * net_best / batch, "net_gflops": flops / net_best / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="seg,normal,pointmap,albedo", help=f"comma list of {', '.join(TASKS)}")
    parser.add_argument("--sizes", default="0.4b", help="model sizes, comma list (0.4b, 0.8b, 1b, 5b, tiny)")
    parser.add_argument("--batches", default="1,2,4", help="batch sizes, comma list")
    parser.add_argument("--photo", type=hw, default=(1080, 1920), help="photo size HxW (default 1080x1920)")
    parser.add_argument("--input", type=hw, default=(1024, 768), help="network input HxW (default 1024x768)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        task, size, batch = args.worker.split(",")
        print(json.dumps(worker(task, size, int(batch), args)))
        return

    passthrough = [f"--photo={args.photo[0]}x{args.photo[1]}", f"--input={args.input[0]}x{args.input[1]}",
                   f"--repeats={args.repeats}", f"--device={args.device}", f"--dtype={args.dtype}",
                   f"--threads={args.threads}"]
    peak_gflops = matmul_peak_gflops()
    print(f"# {machine()}; photo {args.photo[0]}x{args.photo[1]}, input {args.input[0]}x{args.input[1]}, "
          f"{args.device} {args.dtype}, best of {args.repeats}; fp32 matmul peak {peak_gflops:.0f} GFLOP/s")
    rows = []
    for task in args.tasks.split(","):
        if task not in TASKS:
            parser.error(f"unknown task {task!r}")
        for size in args.sizes.split(","):
            runs = {}
            for batch in (int(b) for b in args.batches.split(",")):
                proc = subprocess.run([sys.executable, __file__, f"--worker={task},{size},{batch}", *passthrough],
                                      check=False, capture_output=True, text=True)
                if proc.returncode != 0:
                    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                    rows.append([task, size, batch, "failed", "", "", "", "", "", tail[:80]])
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                runs[batch] = r
                rows.append([task, size, batch, f"{r['images_per_s']:.3f}", f"{r['ms_per_image']:.0f}",
                             f"{r['net_ms_per_image']:.0f}", f"{r['ms_per_image'] / r['net_ms_per_image']:.2f}",
                             f"{r['net_gflops']:.0f}", f"{100 * r['net_gflops'] / peak_gflops:.0f}%",
                             f"{r['peak_mib']:.0f}", ""])
            if runs:
                best = max(runs, key=lambda b: runs[b]["images_per_s"])
                if 1 in runs:
                    gain = runs[best]["images_per_s"] / runs[1]["images_per_s"]
                    rows.append([task, size, f"best={best}", f"{runs[best]['images_per_s']:.3f}",
                                 f"{runs[best]['ms_per_image']:.0f}", "", "", "", "", f"{runs[best]['peak_mib']:.0f}",
                                 f"x{gain:.2f} vs batch 1"])
    peak = "peak GPU MiB" if args.device.startswith("cuda") else "peak RSS MiB"
    print_table(["task", "size", "batch", "images/s", "ms/image", "network ms/image", "e2e / network",
                 "network GFLOP/s", "% of matmul peak", peak, "note"], rows)


if __name__ == "__main__":
    main()
