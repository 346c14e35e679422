"""Fine-tuning step time and peak memory per model size and precision.

One training step as `sapiens2 train` runs it (forward under autocast, the task's reference losses, backward,
gradient clipping, AdamW with layer-wise decay, schedule step) on random weights and a synthetic batch of
the official input size. Each (size, precision) runs in its own process so its peak memory is its own: the
peak allocated GPU memory on CUDA, the peak resident memory on CPU.

    python benchmarks/bench_train.py --task pose --sizes 0.4b,0.8b,1b --precisions bf16,fp32 --batch 4
    python benchmarks/bench_train.py --task seg --sizes 1b --grad-checkpointing
    python benchmarks/bench_train.py --sizes tiny --input 64x48 --steps 2    # a quick smoke run
    python benchmarks/bench_train.py --task depth --sizes v1-0.3b --precisions fp32   # Sapiens v1 sizes
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import hw, machine, peak_rss_mib, print_table  # noqa: E402

TASKS = ("pose", "seg", "normal", "pointmap", "albedo", "matting", "depth")
TINY_BACKBONE = {"embed_dim": 32, "depth": 2, "num_heads": 2, "ffn_hidden": 64, "n_storage_tokens": 2}
TINY_HEADS = {
    "pose": {"deconv_channels": [16, 16], "conv_channels": [16], "conv_kernels": [1]},
    "seg": {"deconv_channels": [16, 16, 16, 16], "conv_channels": [16], "conv_kernels": [1]},
    "pointmap": {"upsample_channels": [16, 16, 8, 8], "conv_channels": [8], "conv_kernels": [3],
                 "scale_conv_channels": [8], "scale_conv_kernels": [1], "scale_mlp": [0, 16, 1]},
}
DECAY = {"0.1b": 0.8, "0.4b": 0.8, "0.8b": 0.85, "1b": 0.9, "5b": 0.94}
V1_TINY_BACKBONE = {"embed_dim": 32, "depth": 2, "num_heads": 2}
V1_TINY_HEAD = {"deconv_channels": [16, 16], "conv_channels": [16]}


def _config(task: str, size: str, input_size: tuple[int, int], batch: int, precision: str, ckpt: bool):
    from sapiens2.train.config import config_from_dict

    model = {"grad_checkpointing": ckpt}
    if size.startswith("v1-"):  # Sapiens v1: v1-0.3b ... v1-2b, or v1-tiny
        size = size[3:]
        model["generation"] = 1
        if size == "tiny":
            model.update(backbone=V1_TINY_BACKBONE, head=V1_TINY_HEAD)
        else:
            model["arch"] = size
    elif size == "tiny":
        model.update(backbone=TINY_BACKBONE, head=TINY_HEADS.get(task, {
            "upsample_channels": [16, 16, 8, 8], "conv_channels": [8], "conv_kernels": [3]}))
    else:
        model["arch"] = size
    return config_from_dict({
        "task": task, "model": model,
        "data": {"train": [{"root": ".", "annotations": "unused.json"}], "input_size": list(input_size)},
        "train": {"work_dir": ".", "num_iters": 1000, "batch_size": batch, "precision": precision},
        "optim": {"layer_decay": DECAY.get(size, 0.9)},
    })


def _batch(task: str, b: int, h: int, w: int, keypoints: int, classes: int, device: torch.device) -> dict:
    g = torch.Generator(device="cpu").manual_seed(0)
    out = {"image": torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)}
    mask = torch.ones(b, h, w, dtype=torch.bool)
    if task == "pose":
        out["heatmaps"] = torch.rand(b, keypoints, h // 4, w // 4, generator=g)
        out["keypoint_weights"] = torch.ones(b, keypoints)
    elif task == "seg":
        out["label"] = torch.randint(0, classes, (b, h, w), generator=g)
    elif task == "pointmap":
        out.update(target=torch.rand(b, 3, h, w, generator=g) + 1, mask=mask, mean_depth=torch.full((b,), 1.5),
                   scale=torch.ones(b), K=torch.tensor([[w, w, w / 2, h / 2]], dtype=torch.float32).expand(b, 4))
    elif task in ("matting", "depth"):
        out.update(target=torch.rand(b, 1, h, w, generator=g) + (task == "depth"), mask=mask)
    else:
        out.update(target=torch.rand(b, 3, h, w, generator=g), mask=mask)
    return {k: v.to(device) for k, v in out.items()}


def run_one(task: str, size: str, precision: str, batch: int, input_size: tuple[int, int], steps: int,
            warmup: int, ckpt: bool, device: str) -> dict:
    from sapiens2.train.loop import MEAN, STD, optimization_step
    from sapiens2.train.network import build_network, settle_config
    from sapiens2.train.specs import build_criterion
    from sapiens2.training.optim import Schedule, build_optimizer, build_scheduler, param_groups

    dev = torch.device(device)
    cfg = _config(task, size, input_size, batch, precision, ckpt)
    keypoints = 17 if size == "tiny" else 308
    model, _ = build_network(cfg, keypoints)
    cfg = settle_config(cfg, model)
    model.to(dev)
    o = cfg.optim
    groups = param_groups(model.named_parameters(), o.lr, o.weight_decay, o.layer_decay, model.backbone.config.depth)
    optimizer = build_optimizer(groups, o.betas, o.eps)
    scheduler = build_scheduler(optimizer, Schedule(cfg.train.num_iters, o.warmup_iters))
    params = [p for g in optimizer.param_groups for p in g["params"]]
    criterion = build_criterion(cfg).to(dev)
    h, w = input_size
    data = _batch(task, batch, h, w, keypoints, cfg.data.num_classes, dev)
    mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=dev).view(1, 3, 1, 1)
    bf16 = precision == "bf16"
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for i in range(warmup + steps):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        optimization_step(model, criterion, optimizer, scheduler, params, [((data["image"].float() - mean) / std, data)],
                          bf16, o.clip_grad, i)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else peak_rss_mib()
    return {"params_m": sum(p.numel() for p in model.parameters()) / 1e6, "step_s": sorted(times)[len(times) // 2],
            "peak_mib": peak}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="pose", choices=TASKS)
    ap.add_argument("--sizes", default="0.4b,0.8b,1b,5b",
                    help="comma-separated official sizes (Sapiens v1: v1-0.3b, ...), or tiny / v1-tiny")
    ap.add_argument("--precisions", default="bf16,fp32")
    ap.add_argument("--batch", type=int, default=1, help="images per step (per GPU)")
    ap.add_argument("--input", type=hw, default=(1024, 768), help="network input HxW")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--grad-checkpointing", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if args.child:
        res = run_one(args.task, sizes[0], precisions[0], args.batch, args.input, args.steps, args.warmup,
                      args.grad_checkpointing, args.device)
        print("RESULT " + json.dumps(res))
        return 0
    print(f"# fine-tuning step: {args.task}, batch {args.batch}, input {args.input[0]}x{args.input[1]}, "
          f"grad checkpointing {'on' if args.grad_checkpointing else 'off'}, {args.device}; {machine()}")
    rows = []
    for size in sizes:
        for precision in precisions:
            cmd = [sys.executable, __file__, "--child", "--task", args.task, "--sizes", size, "--precisions", precision,
                   "--batch", str(args.batch), "--input", f"{args.input[0]}x{args.input[1]}", "--steps",
                   str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
            if args.grad_checkpointing:
                cmd.append("--grad-checkpointing")
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                reason = "out of memory" if "out of memory" in proc.stderr.lower() else (
                    proc.stderr.strip().splitlines() or ["failed"])[-1][:80]
                rows.append([size, precision, "-", "-", "-", "-", reason])
                continue
            r = json.loads(line[len("RESULT "):])
            rows.append([size, precision, f"{r['params_m']:.1f}", f"{r['step_s'] * 1000:.1f}",
                         f"{args.batch / r['step_s']:.2f}", f"{r['peak_mib']:.0f}", ""])
    mem = "peak GPU MiB" if args.device.startswith("cuda") else "peak RSS MiB"
    print_table(["size", "precision", "params (M)", "step (ms)", "images/s", mem, "note"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
