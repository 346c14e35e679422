"""Deployment: ONNX files, torch.export programs and int8 CPU networks, and the runtimes that feed exported
files to the predictors (`Segmenter("model.onnx")`).

    from sapiens2.export import export_onnx
    export_onnx(sapiens2.load("sapiens2-seg-0.4b"), "seg.onnx", (1024, 768))
    Segmenter("seg.onnx")            # onnxruntime under the project's own pre- and post-processing

Names load on first use, so `sapiens2.export.cli` (the `sapiens2 export` parser) imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "DEFAULT_KEEP": "int8", "layer_sensitivity": "int8", "quantize_int8": "int8",
    "export_onnx": "onnx_export", "export_pt2": "program",
    "ExportedNetwork": "runtime", "OnnxNetwork": "runtime", "ProgramNetwork": "runtime", "load_exported": "runtime",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'sapiens2.export' has no attribute {name!r}")
    return getattr(importlib.import_module(f"sapiens2.export.{_HOME[name]}"), name)
