"""`torch.export` programs (`.pt2`): the traced network, its weights and `sapiens2.json` in one archive.

A program is code (a graph that `torch.export.load` rebuilds and runs), so loading one is an explicit opt-in
(`allow_code=True`), as for any archive that carries code; see `sapiens2.export.runtime`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from sapiens2.export.trace import dynamic_shapes, prepared

__all__ = ["INFO_FILE", "export_pt2"]

INFO_FILE = "sapiens2.json"


def export_pt2(network: nn.Module, path: str | os.PathLike, input_size: tuple[int, int], *, dtype: str = "fp32",
               dynamic_batch: bool = False) -> Path:
    """Write `network` as a `torch.export` program at `path` (.pt2) for `input_size` (H, W) float32 images.

    `dtype`: fp32 or fp16 (half-precision weights and arithmetic, float32 at the edges). int8 programs are not
    offered: PyTorch's fast CPU int8 kernels (`sapiens2.export.quantize_int8`) do not trace; use ONNX for an
    int8 file.
    """
    path = Path(path)
    if path.suffix.lower() != ".pt2":
        raise ValueError(f"{path}: a torch.export program's file name must end in .pt2")
    if dtype == "int8":
        raise ValueError("int8 .pt2 programs are not supported: export int8 as ONNX (--format onnx --dtype int8), "
                         "or quantize in process with sapiens2.export.quantize_int8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with prepared(network, input_size, dtype, dynamic_batch) as t:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(t.adapter, (t.example,), dynamic_shapes=dynamic_shapes(t), strict=False)
        torch.export.save(program, str(path), extra_files={INFO_FILE: t.info.to_json()})
    return path
