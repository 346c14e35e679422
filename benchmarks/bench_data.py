"""Training at scale: data loading from tar shards against folders, and checkpoints sharded against gathered.

data   images/s (and per worker) reading + decoding JPEGs through a DataLoader, from a folder of files
       (the map-style dataset pretraining uses for folders) and from tar shards (`sapiens2.training.shards`),
       for each worker count. Synthetic JPEGs are written first (or give --images).
ckpt   the pretraining state (student + teacher + AdamW moments) of a model size, under FSDP on 2 CPU processes
       (gloo): time and peak resident memory per process to save and to load it, sharded (every process writes
       its shards with torch.distributed.checkpoint) against gathered (the full state collected on the main
       process and written as one file, the format before sharding). Each (kind, phase) runs in fresh processes
       so the peaks are their own.

    python benchmarks/bench_data.py data --n 512 --size 512x384 --workers 0,1,2
    python benchmarks/bench_data.py ckpt --model 0.1b
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import hw, machine, print_table  # noqa: E402

from sapiens2.io.images import decode_image, read_image  # noqa: E402
from sapiens2.training.shards import ShardLoader, expand_shards, pack_files  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------- data


class _Files(Dataset):
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(read_image(self.paths[i])[:8, :8].copy())  # decoded; a small tensor crosses over


def _decode_shard(key: str, sample: dict, rng: np.random.Generator) -> torch.Tensor:
    return torch.from_numpy(decode_image(sample["jpg"], key)[:8, :8].copy())


def _write_images(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    h, w = size
    base = cv2.resize(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), (w, h))  # photo-like, compressible
    paths = []
    for i in range(n):
        p = folder / f"{i:06d}.jpg"
        cv2.imwrite(str(p), np.roll(base, i, axis=1), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(p)
    return paths


def _rate(batches, n: int) -> float:
    t = time.perf_counter()
    seen = 0
    for b in batches:
        seen += len(b)
        if seen >= n:
            break
    return seen / (time.perf_counter() - t)


def bench_data(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = sorted(Path(args.images).glob("*.jpg")) if args.images else _write_images(Path(tmp) / "img", args.n,
                                                                                          hw(args.size))
        pack_files(paths, Path(tmp) / "shards", max_count=max(1, len(paths) // 16))
        shards, _ = expand_shards(Path(tmp) / "shards")
        rows = []
        for w in [int(x) for x in args.workers.split(",")]:
            per = max(w, 1)
            folder = DataLoader(_Files(paths), batch_size=16, shuffle=True, num_workers=w, drop_last=True)
            stream = ShardLoader(shards, _decode_shard, 16, torch.stack, num_workers=w, buffer=100)
            for name, loader in (("folder", folder), ("shards", stream)):
                r = max(_rate(loader, len(paths)) for _ in range(args.repeats))  # best pass (a shared machine)
                rows.append([name, w, f"{r:.0f}", f"{r / per:.0f}"])
        print(f"{len(paths)} JPEGs of {args.size}, read + decoded, batches of 16; {machine()}")
        print_table(["source", "workers", "images/s", "images/s per worker"], rows)


# ------------------------------------------------------------------------------------------------- ckpt


def _rss_now_and_reset_peak() -> float:
    """Current resident memory (MiB), after resetting the kernel's peak (VmHWM) to it."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mib("VmRSS")


def _status_mib(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _ckpt_worker(kind: str, phase: str, model: str, folder: str) -> None:
    """Under torchrun: build the FSDP pretraining state, then save (or load) it `kind` ways; each process writes
    its time and memory to `folder/result_rank<r>.json`."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

    from sapiens2.pretrain.config import config_from_dict
    from sapiens2.pretrain.runtime import Runtime, wrap_student
    from sapiens2.pretrain.trainer import build_meta_arch, build_optimizer
    from sapiens2.training.checkpoint import load_sharded, save_sharded

    cfg = config_from_dict({"model": {"arch": model}, "data": {"source": ["."]},
                            "train": {"work_dir": folder, "parallel": "fsdp"}})
    rt = Runtime.start("fsdp")
    torch.manual_seed(0)
    meta = build_meta_arch(cfg, rt.device)
    wrap_student(meta.student, meta.teacher, rt, bf16=False)
    optimizer = build_optimizer(meta.student, cfg.optim)
    get_state_dict(meta, optimizer)  # allocates the AdamW moments (as after a first step)
    params = sum(p.numel() for p in meta.parameters())
    base = _rss_now_and_reset_peak()
    ckpt = Path(folder) / "checkpoints"
    dist.barrier()
    t = time.perf_counter()
    if kind == "sharded" and phase == "save":
        save_sharded(ckpt, 1, meta, optimizer, rt.info)
    elif kind == "sharded":
        load_sharded(ckpt / "iter_0000001", meta, optimizer, rt.info)
    elif phase == "save":
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd, optim_sd = get_state_dict(meta, optimizer, options=opts)
        if rt.is_main:
            torch.save({"model": model_sd, "optimizer": optim_sd}, Path(folder) / "full.pt")
        del model_sd, optim_sd
    else:
        state = torch.load(Path(folder) / "full.pt", map_location="cpu", weights_only=True, mmap=True)
        set_state_dict(meta, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
    dist.barrier()
    seconds = time.perf_counter() - t
    result = {"rank": rt.rank, "seconds": seconds, "base_mib": base, "peak_mib": _status_mib("VmHWM"), "params": params}
    (Path(folder) / f"result_rank{rt.rank}.json").write_text(json.dumps(result))
    rt.shutdown()


def bench_ckpt(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for kind in ("sharded", "gathered"):
            for phase in ("save", "load"):
                env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                       __file__, "_ckpt", kind, phase, args.model, tmp]
                res = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if res.returncode:
                    sys.exit(res.stderr[-3000:])
                out = [json.loads((Path(tmp) / f"result_rank{r}.json").read_text()) for r in (0, 1)]
                size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()) / 2**30
                rows.append([kind, phase, f"{out[0]['params'] / 1e6:.0f}", f"{max(o['seconds'] for o in out):.1f}",
                             " / ".join(f"{o['peak_mib'] - o['base_mib']:.0f}" for o in out),
                             " / ".join(f"{o['peak_mib']:.0f}" for o in out),
                             f"{size:.2f}" if phase == "save" else ""])
    print(f"pretraining state of {args.model} (student + teacher + heads, AdamW), FSDP on 2 CPU processes; {machine()}")
    print_table(["checkpoint", "phase", "params (M)", "seconds", "peak RSS added MiB (rank 0 / 1)",
                 "peak RSS MiB (rank 0 / 1)", "on disk GiB (cumulative)"], rows)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_ckpt":
        _ckpt_worker(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    d = sub.add_parser("data")
    d.add_argument("--n", type=int, default=512)
    d.add_argument("--size", default="512x384", help="H x W of the synthetic JPEGs")
    d.add_argument("--workers", default="0,1,2")
    d.add_argument("--images", help="a folder of .jpg files to use instead of synthetic ones")
    d.add_argument("--repeats", type=int, default=2, help="passes over the data per row; the best is shown")
    c = sub.add_parser("ckpt")
    c.add_argument("--model", default="0.1b", help="an official arch (0.1b, 0.4b, ...)")
    c.add_argument("--tmp", default=None, help="where to write the checkpoints (default: the system's temp dir)")
    args = parser.parse_args()
    bench_data(args) if args.what == "data" else bench_ckpt(args)


if __name__ == "__main__":
    main()
