"""Shared benchmark helpers: the machine's matmul peak, FLOP counts, timing and table printing."""

from __future__ import annotations

import platform
import resource
import time
from collections.abc import Callable, Sequence

import torch

from sapiens2.models import BackboneConfig


def matmul_peak_gflops(n: int = 4096, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best dense (n x n) @ (n x n) throughput on this machine, in GFLOP/s (2 FLOPs per multiply-add)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _block_flops(tokens: int, dim: int, kv_dim: int, hidden: int, batch_windows: int = 1) -> float:
    """One transformer block on `tokens` tokens: projections, attention (QK^T and AV) and SwiGLU FFN."""
    proj = 2 * tokens * dim * (dim + 2 * kv_dim) + 2 * tokens * dim * dim
    attention = 2 * 2 * tokens * tokens * dim
    ffn = 2 * tokens * dim * 2 * hidden + 2 * tokens * hidden * dim
    return batch_windows * (proj + attention + ffn)


def backbone_flops(cfg: BackboneConfig, height: int, width: int) -> float:
    """FLOPs of one forward for one image (2 per multiply-add; attention matmuls included)."""
    gh, gw = height // cfg.patch_size, width // cfg.patch_size
    flops = 2 * gh * gw * cfg.embed_dim * cfg.in_channels * cfg.patch_size**2
    if cfg.use_tokenizer:
        ws = cfg.window_size
        windows = (gh // ws) * (gw // ws)
        flops += cfg.num_tokenizer_layers * _block_flops(ws * ws + 1, cfg.embed_dim, cfg.embed_dim, cfg.hidden, windows)
        gh, gw = gh // ws, gw // ws
    tokens = 1 + cfg.n_storage_tokens + gh * gw
    for i in range(cfg.depth):
        flops += _block_flops(tokens, cfg.embed_dim, cfg.kv_heads(i) * cfg.head_dim, cfg.hidden)
    return flops


def best_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Best wall time of `fn` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def hw(text: str) -> tuple[int, int]:
    """'1024x768' -> (1024, 768): an (H, W) size given on the command line."""
    h, w = text.lower().split("x")
    return int(h), int(w)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}"


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


def v1_backbone_flops(embed: int, depth: int, hidden: int, height: int, width: int, patch: int = 16) -> float:
    """FLOPs of one Sapiens v1 ViT forward for one image (fused qkv, GELU MLP, no prefix tokens)."""
    n, c = (height // patch) * (width // patch), embed
    block = 2 * n * c * 3 * c + 2 * n * c * c + 2 * 2 * n * n * c + 2 * 2 * n * c * hidden
    return 2 * n * c * 3 * patch**2 + depth * block


def conv_flops(module: torch.nn.Module, x: torch.Tensor) -> float:
    """FLOPs of the convolutions and linear layers inside `module` for one call on `x` (2 per multiply-add),
    counted from the shapes each layer sees. Attention matmuls are not layers: count those separately."""
    total = 0.0

    def count(layer: torch.nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, torch.nn.ConvTranspose2d):  # every input pixel scatters a k x k x out block
            k = layer.kernel_size[0] * layer.kernel_size[1]
            total += 2.0 * inputs[0].numel() * layer.out_channels // layer.groups * k
        elif isinstance(layer, torch.nn.Conv2d):
            k = layer.kernel_size[0] * layer.kernel_size[1]
            total += 2.0 * out.numel() * layer.in_channels // layer.groups * k
        elif isinstance(layer, torch.nn.Linear):
            total += 2.0 * out.numel() * layer.in_features

    hooks = [m.register_forward_hook(count) for m in module.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear))]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in hooks:
            h.remove()
    return total
