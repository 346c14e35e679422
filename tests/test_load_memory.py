"""Loading peaks near the checkpoint's own size: measured in a fresh process on a ~64 MB file."""

from __future__ import annotations

import subprocess
import sys

import torch
from safetensors.torch import save_file

from sapiens2.models import BackboneConfig, build_model

_CHILD = r"""
import sys, torch, numpy, sapiens2
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
with torch.device("meta"):
    sapiens2.build_model(sapiens2.BackboneConfig(embed_dim=32, depth=1, num_heads=2), "pretrain")
base = status("VmRSS")
model = sapiens2.load(sys.argv[1])
print(status("VmHWM") - base)
"""


def test_load_peak_is_within_115_percent_of_the_file(tmp_path):
    cfg = BackboneConfig(embed_dim=512, depth=5, num_heads=8)
    state = {k: torch.randn(v.shape).to(v.dtype) for k, v in build_model(cfg, "pretrain").state_dict().items()}
    path = tmp_path / "mid.safetensors"
    save_file(state, path)
    size = path.stat().st_size
    assert size > 60e6
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, check=True)
    grew = int(out.stdout.split()[-1])
    assert grew <= 1.15 * size, f"loading grew RSS by {grew / size:.2f}x the file size"
