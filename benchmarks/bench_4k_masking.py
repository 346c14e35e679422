"""The 4K window tokenizer under masked pretraining: pooling only the kept windows against pooling every
window and gathering the kept ones (the same tokens; the test suite checks that).

Times the tokenizer forward of the 1b-4k arch on one image, with the pretraining mask ratio.

    python benchmarks/bench_4k_masking.py --input 2048x1536 --ratio 0.75
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import _block_flops, best_time, hw, machine, matmul_peak_gflops, print_table  # noqa: E402

from sapiens2.models import ARCHS, build_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", default="2048x1536", help="HxW, a multiple of 64 per side")
    ap.add_argument("--ratio", type=float, default=0.75, help="masked fraction of the windows")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    h, w = hw(args.input)
    cfg = replace(ARCHS["1b-4k"], depth=1)  # only the tokenizer is timed
    tokenizer = build_model(cfg, "pretrain").tokenizer.eval()
    ws, grid = cfg.window_size, (h // 16, w // 16)
    windows = (grid[0] // ws) * (grid[1] // ws)
    kept = max(1, round(windows * (1 - args.ratio)))
    keep = torch.randperm(windows, generator=torch.Generator().manual_seed(0))[:kept][None]
    patches = torch.randn(1, grid[0] * grid[1], cfg.embed_dim)
    peak = matmul_peak_gflops()
    print(f"# 1b-4k window tokenizer, input {h}x{w} ({windows} windows), {args.ratio:.0%} masked, fp32; {machine()}")

    def all_then_gather() -> torch.Tensor:
        out, _ = tokenizer(patches, grid)
        return out.gather(1, keep[..., None].expand(-1, -1, out.shape[-1]))

    rows = []
    base = None
    with torch.no_grad():
        for name, fn, pooled in (("pool every window, gather", all_then_gather, windows),
                                 ("pool the kept windows", lambda: tokenizer(patches, grid, keep)[0], kept)):
            t = best_time(fn, args.repeats)
            flops = _block_flops(ws * ws + 1, cfg.embed_dim, cfg.embed_dim, cfg.hidden, pooled) * cfg.num_tokenizer_layers
            base = base or t
            rows.append([name, pooled, f"{t:.2f}", f"{flops / t / 1e9:.0f}", f"{100 * flops / t / 1e9 / peak:.0f}%",
                         f"{base / t:.2f}x"])
    print_table(["variant", "windows pooled", "seconds", "GFLOP/s", "% of matmul peak", "speed-up"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
