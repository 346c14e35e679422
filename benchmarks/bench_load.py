"""Peak memory of `sapiens2.load` against the checkpoint's size, and against the usual way of loading.

Each measurement runs in a fresh process (peak RSS is per process). The checkpoint is synthetic: the
official key layout of the chosen model with random values, written once to --workdir.

    python benchmarks/bench_load.py --models sapiens2_0.8b_pretrain,sapiens2_0.4b_pose
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table  # noqa: E402

KEYS = Path(__file__).resolve().parents[1].parent / "shared" / "spec" / "keys"

_CHILD = r"""
import sys, time
import numpy, torch, safetensors.torch, huggingface_hub  # imports are not loading: measure after them
import sapiens2
from sapiens2.hub import inspect

def status(field):
    # VmHWM, unlike ru_maxrss, starts afresh at exec (ru_maxrss keeps the parent's peak).
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024

mode, path = sys.argv[1], sys.argv[2]
layout = inspect(path)
with torch.device("meta"):  # the first module built on meta pulls in ~75 MiB of torch code, once per process
    sapiens2.build_model(sapiens2.BackboneConfig(embed_dim=32, depth=1, num_heads=2), "pretrain")
base = status("VmRSS")
t = time.perf_counter()
if mode == "sapiens2":
    model = sapiens2.load(path)
else:  # the usual way: read the whole file into a dict, build the model with its init, copy into it
    state = safetensors.torch.load_file(path)
    model = sapiens2.build_model(layout.arch, layout.task)
    model.load_state_dict(state)
    del state
print(base, status("VmHWM"), time.perf_counter() - t)
"""


def write_checkpoint(stem: str, workdir: Path) -> Path:
    path = workdir / f"{stem}.safetensors"
    if path.exists():
        return path
    layout = json.loads((KEYS / f"{stem}.json").read_text())
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=gen).to(getattr(torch, dtype)) for k, (shape, dtype) in layout.items()}
    save_file(state, path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="sapiens2_0.8b_pretrain")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "sapiens2-bench")
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    rows = []
    for stem in args.models.split(","):
        path = write_checkpoint(stem, args.workdir)
        size = path.stat().st_size / 2**20
        for mode in ["sapiens2"] + ([] if args.no_baseline else ["load_file+load_state_dict"]):
            out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(path)], capture_output=True, text=True, check=True)
            base, peak, seconds = map(float, out.stdout.split()[-3:])
            rows.append([stem, mode, f"{size:.0f}", f"{peak:.0f}", f"{peak - base:.0f}", f"{(peak - base) / size:.2f}x",
                         f"{seconds:.1f}"])
            print_table(["checkpoint", "method", "file MiB", "peak RSS MiB", "peak - before MiB", "of file", "seconds"], rows[-1:])
    print()
    print_table(["checkpoint", "method", "file MiB", "peak RSS MiB", "peak - before MiB", "of file", "seconds"], rows)


if __name__ == "__main__":
    main()
