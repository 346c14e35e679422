"""ONNX files through PyTorch's dynamo-based exporter (`torch.onnx.export(..., dynamo=True)`, onnxscript).

The graph takes one float32 input `image` (B x 3 x H x W, normalized as the predictors normalize) and returns
float32 outputs named after the task (`logits`, `heatmaps`, `pointmap` + `scale`, ...). The backbone's
bfloat16 RoPE steps are kept as bfloat16 arithmetic emulated in float32 (`sapiens2.export.bf16`), so the file
matches the PyTorch network on any runtime. What the predictors need (task, input size, keypoint count,
output nesting) is stored in the file's metadata under `sapiens2`.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from sapiens2.export.adapter import INPUT_NAME, METADATA_KEY
from sapiens2.export.int8 import DEFAULT_KEEP, quantize_onnx_int8, token_scaled
from sapiens2.export.trace import dynamic_shapes, prepared

__all__ = ["METADATA_KEY", "export_onnx"]

_PROTOBUF_LIMIT = 1_800_000_000  # bytes of weights above which the weights go to a side file
_DROPPED_NODE_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")


def export_onnx(network: nn.Module, path: str | os.PathLike, input_size: tuple[int, int], *, dtype: str = "fp32",
                dynamic_batch: bool = False, opset: int | None = None,
                keep_fp32: Sequence[str] = DEFAULT_KEEP, optimize: bool = True) -> Path:
    """Write `network` as an ONNX file at `path` for `input_size` (H, W) images and return the path.

    `dtype`: fp32; fp16 (weights and arithmetic in half precision, float32 at the edges; for GPUs); int8
    (for CPUs: the Linear layers become `TokenScaledLinear`s, exported in float32, then onnxruntime's
    quantizer makes their matmuls dynamic int8 with per-channel weights and, thanks to the per-row scaling,
    per-token activation ranges; layers matching `keep_fp32` stay float32). `dynamic_batch`: any batch size,
    else batch 1. `opset`: the exporter's default when None.
    `optimize`: onnxscript's graph optimizer (constant folding, fusions); off only to export faster. int8
    always optimizes: the quantizer needs the weights folded into constants.
    """
    import onnx

    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"{path}: an ONNX file name must end in .onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    optimize = optimize or dtype == "int8"
    if dtype == "int8":
        network = token_scaled(network, keep_fp32)
    with prepared(network, input_size, dtype, dynamic_batch) as t:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                t.adapter, (t.example,), dynamo=True, input_names=[INPUT_NAME], output_names=t.info.outputs,
                dynamic_shapes=dynamic_shapes(t), opset_version=opset, optimize=optimize, verbose=False,
                report=False, verify=False)
        model = program.model_proto
        info = t.info
    from sapiens2.export.bf16 import emulate_bfloat16

    emulate_bfloat16(model)
    for node in model.graph.node:
        keep = [p for p in node.metadata_props if p.key not in _DROPPED_NODE_METADATA]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    onnx.helper.set_model_props(model, {METADATA_KEY: info.to_json()})
    model.producer_name = "sapiens2"
    large = sum(init.ByteSize() for init in model.graph.initializer) > _PROTOBUF_LIMIT
    if dtype != "int8":
        _save(model, path, large)
        return path
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        _save(model, fp32, large)
        quantize_onnx_int8(fp32, path, keep_fp32, large)
    return path


def _save(model, path: Path, large: bool) -> None:  # noqa: ANN001 - an onnx.ModelProto
    import onnx

    if large:  # past protobuf's 2 GB: weights in one file beside the graph
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data")
    else:
        onnx.save_model(model, str(path))
