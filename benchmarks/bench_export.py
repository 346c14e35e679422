"""Deployment speed and accuracy: fp32 / int8 in PyTorch and in onnxruntime, on official-layout networks.

One run, one machine: the matmul peak is measured first, then the backbone (random official-layout weights,
seeded) runs in fp32 PyTorch, int8 PyTorch (dynamic int8 Linear layers, per-channel weights, per-token
activation ranges), fp32 ONNX Runtime and int8 ONNX Runtime (the file `export_onnx(..., dtype="int8")` writes).
Each int8 row is measured with every Linear quantized and with the default sensitive layers
(`sapiens2.export.DEFAULT_KEEP`) kept in fp32; one more PyTorch row shows one activation range per tensor.
"rel. error" is ||y - y_fp32|| / ||y_fp32|| over all output tokens (after the final norm). With --device cuda
the rows are fp32 / bf16 / fp16 PyTorch, eager and torch.compile, with % of the GPU's measured bf16 peak.

    python benchmarks/bench_export.py --arch 0.4b --size 1024x768
    python benchmarks/bench_export.py --arch 0.1b --size 1024x768 --repeats 3
    python benchmarks/bench_export.py --arch 0.4b --device cuda
    python benchmarks/bench_export.py --arch 0.4b --quick   # one timed run per row, default fp32 layers only
    python benchmarks/bench_export.py --arch 0.1b --size 512x384 --sensitivity   # which Linear kinds int8 hurts
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import backbone_flops, best_time, hw, machine, matmul_peak_gflops, print_table  # noqa: E402
from collections.abc import Callable  # noqa: E402

from sapiens2.export import DEFAULT_KEEP, export_onnx, layer_sensitivity, load_exported, quantize_int8  # noqa: E402
from sapiens2.export.int8 import relative_error  # noqa: E402
from sapiens2.models import ARCHS, build_model  # noqa: E402


def cpu_rows(net: torch.nn.Module, x: torch.Tensor, repeats: int, flops: float, peak: float,
             quick: bool = False) -> list[list]:
    rows: list[list] = []
    variants = (DEFAULT_KEEP,) if quick else ((), DEFAULT_KEEP)
    timed = once if quick else measured
    base, ref = timed(lambda: _run(net, x), repeats)
    size = tuple(x.shape[-2:])

    def row(runtime: str, dtype: str, keep: str, measured: tuple[float, torch.Tensor] | None) -> None:
        seconds, out = measured if measured is not None else (base, None)
        err = "0 (reference)" if out is None else f"{100 * relative_error(ref, out):.2f} %"
        rows.append([runtime, dtype, keep, f"{seconds:.2f}", f"{base / seconds:.2f}x", err,
                     f"{flops / seconds / 1e9:.0f} ({100 * flops / seconds / 1e9 / peak:.0f} %)"])
        print(rows[-1], flush=True)

    row("PyTorch", "fp32", "-", None)
    runs = [(keep, True) for keep in variants] + ([] if quick else [(DEFAULT_KEEP, False)])
    for keep, per_token in runs:
        q = quantize_int8(net, keep=keep, per_token=per_token)
        row("PyTorch", f"int8 per-{'token' if per_token else 'tensor'}", _names(keep),
            timed(lambda: _run(q, x), repeats))
        del q
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        fp32 = export_onnx(net, Path(tmp) / "fp32.onnx", size)
        print(f"ONNX export: {time.perf_counter() - start:.0f} s", flush=True)
        threads = torch.get_num_threads()
        ort = load_exported(fp32, providers=["CPUExecutionProvider"], threads=threads)
        row("ONNX Runtime", "fp32", "-", timed(lambda: _run(ort, x), repeats))
        del ort
        for i, keep in enumerate(variants):
            path = export_onnx(net, Path(tmp) / f"int8_{i}.onnx", size, dtype="int8", keep_fp32=keep)
            ort = load_exported(path, providers=["CPUExecutionProvider"], threads=threads)
            row("ONNX Runtime", "int8 per-token", _names(keep), timed(lambda: _run(ort, x), repeats))
            del ort
    return rows


def _names(keep: tuple[str, ...]) -> str:
    return ", ".join(keep) or "none"


def measured(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    """(best wall time of `repeats` runs, the output of the untimed warm-up run)."""
    out = fn()
    return best_time(fn, repeats, warmup=0), out


def once(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    """(wall time of one cold run, its output): for networks whose forward takes minutes here."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _run(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return net(x)


def cuda_rows(net: torch.nn.Module, x: torch.Tensor, repeats: int, flops: float) -> list[list]:
    peak = _cuda_peak(torch.bfloat16)
    print(f"GPU bf16 matmul peak: {peak:.0f} GFLOP/s", flush=True)
    rows = []
    with torch.inference_mode():
        ref = net.cuda()(x.cuda()).float()
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16"), (torch.float16, "fp16")):
        model = net.to(device="cuda", dtype=dtype)
        xin = x.to(device="cuda", dtype=dtype)
        for compiled in (False, True):
            fn = torch.compile(model, mode="max-autotune-no-cudagraphs") if compiled else model

            def step() -> torch.Tensor:
                with torch.inference_mode():
                    out = fn(xin)
                torch.cuda.synchronize()
                return out

            seconds = best_time(step, repeats, warmup=2 if compiled else 1)
            err = relative_error(ref, step().float())
            rows.append(["PyTorch CUDA", name, "compiled" if compiled else "eager", f"{seconds * 1e3:.1f} ms",
                         f"{x.shape[0] / seconds:.1f}", f"{100 * err:.2f} %",
                         f"{100 * flops / seconds / 1e9 / peak:.0f} %"])
            print(rows[-1], flush=True)
    return rows


def _cuda_peak(dtype: torch.dtype, n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    torch.mm(a, b)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        torch.mm(a, b)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="0.4b", choices=list(ARCHS))
    ap.add_argument("--size", type=hw, default=(1024, 768), help="HxW")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="one cold timed run per row; default fp32 layers only")
    ap.add_argument("--sensitivity", action="store_true",
                    help="only the relative error of quantizing each kind of Linear layer alone")
    args = ap.parse_args()
    torch.manual_seed(0)
    net = build_model(args.arch, "pretrain").eval()
    x = torch.randn(args.batch, 3, *args.size)
    flops = backbone_flops(ARCHS[args.arch], *args.size) * args.batch
    print(f"# {machine()}")
    print(f"# backbone {args.arch}, {args.size[0]}x{args.size[1]}, batch {args.batch}, {flops / 1e9:.0f} GFLOP")
    if args.device == "cuda":
        rows = cuda_rows(net, x, args.repeats, flops)
        print_table(["runtime", "dtype", "mode", "time", "images/s", "rel. error", "% bf16 peak"], rows)
        return
    if args.sensitivity:
        errors = layer_sensitivity(net, x)
        print_table(["int8 Linear layers (the rest fp32)", "rel. error"],
                    [[k, f"{100 * v:.2f} %"] for k, v in errors.items()])
        return
    peak = matmul_peak_gflops()
    print(f"# fp32 matmul peak (4096^3, this run): {peak:.0f} GFLOP/s", flush=True)
    rows = cpu_rows(net, x, args.repeats, flops, peak, args.quick)
    print_table(["runtime", "dtype", "fp32 layers", "time s", "speed-up", "rel. error", "GFLOP/s (% fp32 peak)"], rows)


if __name__ == "__main__":
    main()
