"""What feeding the networks contiguous NCHW inputs (and the albedo head's contiguous RMSNorm) costs.

The predictors used to hand the network a channels_last view (`permute` of the N x H x W x 3 batch) and the
albedo head normalised permuted views; both are now contiguous, as in the reference. This times the two
layouts against each other in one process, alternating A and B on every repeat and keeping the best of each,
so that a machine shared with other work slows both alike:

- `normalize` of a batch of photos at the network input size (old: permute, then float; new: contiguous);
- each task's network (official arch, random weights) on the same values in either layout; for albedo the
  old side also runs the old RMSNorm2d (a permuted view in, a channels_last view out).

    python benchmarks/bench_input_layout.py --size 0.4b --input 256x192 --repeats 5
    python benchmarks/bench_input_layout.py --size tiny --input 1024x768   # normalize at full size, toy networks
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dense import build_network  # noqa: E402
from common import hw, machine, matmul_peak_gflops, print_table  # noqa: E402

from sapiens2.models import heads  # noqa: E402
from sapiens2.tasks.resize import MEAN_RGB, STD_RGB, normalize  # noqa: E402


def normalize_channels_last(batch: np.ndarray) -> torch.Tensor:
    """The old `normalize`: the same values, left in the permuted (channels_last) layout."""
    x = torch.as_tensor(batch).permute(0, 3, 1, 2).float()
    mean = torch.tensor(MEAN_RGB).view(1, 3, 1, 1)
    std = torch.tensor(STD_RGB).view(1, 3, 1, 1)
    return (x - mean) / std


def old_rms_norm_2d(self: heads.RMSNorm2d, x: torch.Tensor) -> torch.Tensor:
    return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def alternate(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best seconds of `a` and of `b`, run alternately (one warm-up each)."""
    a(), b()
    best_a = best_b = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a()
        best_a = min(best_a, time.perf_counter() - t)
        t = time.perf_counter()
        b()
        best_b = min(best_b, time.perf_counter() - t)
    return best_a, best_b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="0.4b", help="official arch (0.4b, ...) or 'tiny'")
    parser.add_argument("--input", type=hw, default=(256, 192), help="network input HxW (default 256x192)")
    parser.add_argument("--tasks", default="seg,normal,pointmap,albedo")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    peak = matmul_peak_gflops()
    print(f"# {machine()}; input {args.input[0]}x{args.input[1]}, batch {args.batch}, best of {args.repeats} "
          f"alternating; fp32 matmul peak {peak:.0f} GFLOP/s")
    rng = np.random.default_rng(0)
    photos = rng.integers(0, 256, (args.batch, *args.input, 3), dtype=np.uint8)
    rows = []
    old, new = alternate(lambda: normalize_channels_last(photos), lambda: normalize(photos), max(args.repeats, 20))
    rows.append(["normalize", f"{1000 * old:.2f}", f"{1000 * new:.2f}", f"{new / old:.3f}", ""])

    x_new = normalize(photos)
    x_old = normalize_channels_last(photos)
    new_rms = heads.RMSNorm2d.forward
    for task in args.tasks.split(","):
        torch.manual_seed(0)
        network = build_network(task, args.size, args.input).eval()

        def run_old() -> object:
            if task == "albedo":
                heads.RMSNorm2d.forward = old_rms_norm_2d
            try:
                return network(x_old)
            finally:
                heads.RMSNorm2d.forward = new_rms

        with torch.inference_mode():
            a, b = run_old(), network(x_new)
            a, b = (a if isinstance(a, tuple) else (a,)), (b if isinstance(b, tuple) else (b,))
            diff = max(float((u - v).abs().max()) for u, v in zip(a, b))
            old, new = alternate(run_old, lambda: network(x_new), args.repeats)
        rows.append([f"{task} network ({args.size})", f"{1000 * old:.0f}", f"{1000 * new:.0f}", f"{new / old:.3f}",
                     f"{diff:.1e}"])
    print_table(["step", "channels_last ms", "contiguous ms", "contiguous / channels_last", "max |difference|"],
                rows)


if __name__ == "__main__":
    main()
