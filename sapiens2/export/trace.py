"""The part every exporter shares: dtype names, the example input, the adapter under frozen RoPE, the info."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from sapiens2.export.adapter import ExportAdapter, ExportInfo, flatten, frozen_rope, network_info, output_names

__all__ = ["EXPORT_DTYPES", "Traceable", "check_dtype", "check_input_size", "dynamic_shapes", "prepared"]

#: What `--dtype` accepts. int8: dynamic-activation int8 with per-channel int8 weights (CPU), from float32.
EXPORT_DTYPES = ("fp32", "fp16", "int8")
_COMPUTE = {"fp32": torch.float32, "fp16": torch.float16, "int8": torch.float32}


def check_dtype(dtype: str) -> str:
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"export dtype {dtype!r}: expected one of {', '.join(EXPORT_DTYPES)}")
    return dtype


def check_input_size(size: tuple[int, int], patch: int = 16) -> tuple[int, int]:
    """(H, W), positive multiples of the patch size: an exported graph is fixed to one input size."""
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"input size must be (height, width), got {size!r}") from None
    if h <= 0 or w <= 0 or h % patch or w % patch:
        raise ValueError(f"input size must be positive multiples of {patch} (height, width), got {(h, w)}")
    return h, w


@dataclass
class Traceable:
    """The adapter to trace, its example input and the info to store beside the graph."""

    adapter: ExportAdapter
    example: torch.Tensor
    info: ExportInfo
    dynamic_batch: bool


@contextlib.contextmanager
def prepared(network: nn.Module, input_size: tuple[int, int], dtype: str = "fp32",
             dynamic_batch: bool = False) -> Iterator[Traceable]:
    """`network` ready to trace on CPU: cast to the compute dtype (a copy when that changes anything), its
    RoPE tables frozen for `input_size`; the user's network is left as it was."""
    check_dtype(dtype)
    h, w = check_input_size(input_size)
    meta = network_info(network)
    compute = _COMPUTE[dtype]
    param = next(network.parameters(), None)
    net = network
    if param is not None and (param.dtype != compute or param.device.type != "cpu"):
        net = copy.deepcopy(network).to(device="cpu", dtype=compute)
    net.eval()
    # Batch 2 when dynamic: torch.export specializes a dimension it sees at size 1.
    example = torch.zeros(2 if dynamic_batch else 1, 3, h, w)
    with frozen_rope(net, example.to(compute)) as (frozen, outputs):
        _, layout = flatten(outputs)
        info = ExportInfo(task=meta["task"], input_size=(h, w), batch=None if dynamic_batch else 1, dtype=dtype,
                          outputs=output_names(meta["task"], layout, meta["strides"]), layout=layout,
                          num_keypoints=meta["num_keypoints"], strides=meta["strides"])
        yield Traceable(ExportAdapter(frozen, compute).eval(), example, info, dynamic_batch)


def dynamic_shapes(t: Traceable) -> dict | None:
    """torch.export's dynamic-shape spec: the batch dimension of `image`, when asked for."""
    if not t.dynamic_batch:
        return None
    return {"image": {0: torch.export.Dim("batch", min=1, max=1024)}}
