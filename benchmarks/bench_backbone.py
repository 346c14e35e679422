"""Backbone forward speed: ours against a plain eager reading of the same math.

"Plain" is how the reference runs: K/V heads repeated for grouped-query attention before
`scaled_dot_product_attention`, and the RoPE tables rebuilt in every block. Ours hands the grouped KV
heads to SDPA as they are and computes the tables once per grid size. Both run the same weights in
float32 (bf16 matmuls are emulated, and hundreds of times slower, on CPUs without native bf16).

    python benchmarks/bench_backbone.py --sizes 0.1b,0.4b,0.8b --batches 1,4
    python benchmarks/bench_backbone.py --sizes v1-0.3b,v1-0.6b --batches 1 --no-plain   # Sapiens v1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import backbone_flops, best_time, machine, matmul_peak_gflops, print_table, v1_backbone_flops  # noqa: E402

from sapiens2.models import build_model  # noqa: E402
from sapiens2.models.sapiens1 import V1_ARCHS, build_sapiens1  # noqa: E402
from sapiens2.nn.attention import GroupedQueryAttention  # noqa: E402
from sapiens2.nn.rope import apply_rope  # noqa: E402


def plain_attention(self: GroupedQueryAttention, x: torch.Tensor, rope=None) -> torch.Tensor:
    """The reference's order of work: repeat K/V to every query head, then RoPE, then SDPA."""
    b, n, c = x.shape
    q = self.wq(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
    k = self.wk(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
    v = self.wv(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
    if self.q_norm is not None:
        q, k = self.q_norm(q), self.k_norm(k)
    if self.num_kv_heads != self.num_heads:
        rep = self.num_heads // self.num_kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    if rope is not None:
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    out = self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))
    return self.gamma(out) if self.gamma is not None else out


def plain_forward(model, x: torch.Tensor) -> torch.Tensor:
    """The backbone with plain attention and RoPE tables rebuilt for every block."""
    tokens, grid = model.patch_embed(x)
    if model.config.use_tokenizer:
        tokens, grid = model.tokenizer(tokens, grid)
    b = tokens.shape[0]
    tokens = torch.cat((model.cls_token.expand(b, -1, -1), model.storage_tokens.expand(b, -1, -1), tokens), dim=1)
    for block in model.blocks:
        model.rope_embed._cache.clear()
        rope = model.rope_embed(*grid)
        tokens = tokens + plain_attention(block.attn, block.ln1(tokens), rope)
        tokens = tokens + block.ffn(block.ln2(tokens))
    return model.ln1(tokens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="0.1b,0.4b,0.8b")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile(model)")
    ap.add_argument("--no-plain", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)

    peak = matmul_peak_gflops() if device.type == "cpu" else float("nan")
    print(f"machine: {machine()}; dense fp32 matmul peak {peak:.0f} GFLOP/s")
    rows = []
    for size in args.sizes.split(","):
        if size.startswith("v1-"):  # Sapiens v1 (plain ViT) as its task models run: no cls token, 64x48 positions
            cfg = V1_ARCHS[size[3:]]
            model = build_sapiens1(cfg, "pretrain").to(device, dtype).eval()
            flops = v1_backbone_flops(cfg.embed_dim, cfg.depth, cfg.hidden, args.height, args.width)
        else:
            model = build_model(size, "pretrain").to(device, dtype).eval()
            flops = backbone_flops(model.config, args.height, args.width)
        variants = {"ours": model}
        if not args.no_plain and not size.startswith("v1-"):
            variants["plain"] = lambda x, m=model: plain_forward(m, x)
        if args.compile:
            variants["ours+compile"] = torch.compile(model)
        for batch in map(int, args.batches.split(",")):
            x = torch.randn(batch, 3, args.height, args.width, device=device, dtype=dtype)
            times = {}
            for name, fn in variants.items():
                with torch.inference_mode():
                    def run():
                        fn(x)
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                    times[name] = best_time(run, args.repeats, warmup=1 if batch == 1 or name != "plain" else 0)
            for name, t in times.items():
                gflops = flops * batch / t / 1e9
                ratio = f"{times['plain'] / t:.2f}x" if "plain" in times else "-"
                rows.append([size, batch, name, f"{t:.2f}", f"{batch / t:.3f}", f"{gflops:.0f}",
                             f"{100 * gflops / peak:.0f}%", ratio])
            print_table(["size", "batch", "impl", "latency s", "images/s", "GFLOP/s", "% peak", "plain/this"], rows[-len(times):])
            sys.stdout.flush()
        del model, variants
    print()
    print(f"{args.height}x{args.width}, {args.dtype}, {args.device}; FLOPs per image: 2 per multiply-add, attention included")
    print_table(["size", "batch", "impl", "latency s", "images/s", "GFLOP/s", "% peak", "plain/this"], rows)


if __name__ == "__main__":
    main()
