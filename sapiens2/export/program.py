"""`torch.export` programs (`.pt2`): the traced network, its weights and `sapiens2.json` in one archive;
with `aoti=True`, the program compiled ahead of time by AOTInductor into a shared library for this CPU
(an AOTInductor package, also `.pt2`).

A program is code (a graph that `torch.export.load` rebuilds and runs), and a package is machine code, so
loading either is an explicit opt-in (`allow_code=True`), as for any archive that carries code; see
`sapiens2.export.runtime` and `sapiens2.weights.load_program`.
"""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from sapiens2.export.trace import dynamic_shapes, prepared

__all__ = ["INFO_FILE", "export_pt2"]

INFO_FILE = "sapiens2.json"


def export_pt2(network: nn.Module, path: str | os.PathLike, input_size: tuple[int, int], *, dtype: str = "fp32",
               dynamic_batch: bool = False, aoti: bool = False) -> Path:
    """Write `network` as a `torch.export` program at `path` (.pt2) for `input_size` (H, W) float32 images.

    `dtype`: fp32 or fp16 (half-precision weights and arithmetic, float32 at the edges). int8 programs are not
    offered: PyTorch's fast CPU int8 kernels (`sapiens2.export.quantize_int8`) do not trace; use ONNX for an
    int8 file. `aoti`: compile the program with AOTInductor (`torch._inductor.aoti_compile_and_package`;
    needs a C++ compiler, takes minutes) into a package of machine code for CPUs like this one, with no
    graph left to interpret at run time. The package runs on CPU only.
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
        if not aoti:
            torch.export.save(program, str(path), extra_files={INFO_FILE: t.info.to_json()})
            return path
        _compile_package(program, path, t.info.to_json())
    return path


def _compile_package(program: torch.export.ExportedProgram, path: Path, info: str) -> None:
    """AOTInductor's package for `program` at `path`, with `info` as its `extra/sapiens2.json` (the same
    place `torch.export.save` puts extra files), written beside `path` and renamed into place."""
    from torch._inductor import aoti_compile_and_package

    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            aoti_compile_and_package(program, package_path=str(staged))
        with zipfile.ZipFile(staged, "a", compression=zipfile.ZIP_STORED) as z:
            archive = z.namelist()[0].split("/", 1)[0]  # every member sits under the archive's own folder
            z.writestr(f"{archive}/extra/{INFO_FILE}", info)
        os.replace(staged, path)
