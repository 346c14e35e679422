"""What an exported graph wraps around a network: fixed RoPE tables, dtype casts at the edges, flat outputs.

An exported file must stand alone, so the pieces of a forward pass that are Python rather than tensor
arithmetic are settled before tracing:

* RoPE tables: the backbone caches them per patch grid in a Python dict (keyed by a data pointer, which a
  tracer cannot read). They depend only on the grid, so `frozen_rope` computes them once, eagerly, exactly as
  the network does (bfloat16 unless the network says otherwise), and the traced graph reads them as constants.
* Dtypes: every exported file takes float32 images and returns float32 outputs, whatever it computes in
  (`ExportAdapter` casts at the edges), so callers never need to know whether a file is fp32 or fp16.
* Structure: graphs return a flat tuple of tensors; `OutputLayout` records how to rebuild the network's own
  nesting (pointmap's (points, scale), the detector's per-level lists).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from sapiens2.nn.rope import RopePositionEmbedding

__all__ = ["METADATA_KEY", "ExportAdapter", "ExportInfo", "FrozenRope", "OutputLayout", "frozen_rope", "network_info"]

#: Output names of single-output networks, by task (the names users see in Netron / onnxruntime).
OUTPUT_NAMES = {"pose": "heatmaps", "seg": "logits", "normal": "normals", "albedo": "albedo", "matting": "matte",
                "pretrain": "tokens", "depth": "depth"}
INPUT_NAME = "image"
#: The key under which an exported file stores its `ExportInfo` (ONNX model properties, .pt2 extra files).
METADATA_KEY = "sapiens2"

# Nested lists of output indices: an int is one output; a list is a tuple (top level) or list (inside).
OutputLayout = int | list


@dataclass
class ExportInfo:
    """What a predictor needs to know about an exported network, stored in the file beside the graph."""

    task: str
    input_size: tuple[int, int]
    batch: int | None  # None: any batch size
    dtype: str  # what the graph computes in: fp32, fp16 or int8
    outputs: list[str]
    layout: OutputLayout
    num_keypoints: int | None = None  # pose
    strides: list[int] | None = None  # detector

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ExportInfo:
        data = json.loads(text)
        data["input_size"] = tuple(data["input_size"])
        return cls(**data)


def network_info(network: nn.Module) -> dict[str, Any]:
    """task, keypoint count and detector strides as the predictors read them from a PyTorch network."""
    task = getattr(network, "task", None)
    strides = getattr(network, "strides", None)
    if task is None and strides is not None:
        task = "detect"
    if task is None:
        raise ValueError(f"cannot export a {type(network).__name__}: it is neither a Sapiens network (no `task`) "
                         "nor the person detector")
    head = getattr(network, "decode_head", None) or getattr(network, "head", None)
    final = getattr(head, "conv_pose", None) or getattr(head, "final_layer", None)
    return {"task": task, "num_keypoints": final.out_channels if task == "pose" and final is not None else None,
            "strides": list(strides) if strides is not None else None}


def flatten(outputs: Any) -> tuple[list[torch.Tensor], OutputLayout]:
    """A network's (possibly nested) outputs -> a flat tensor list and the layout that rebuilds them."""
    flat: list[torch.Tensor] = []

    def walk(x: Any) -> OutputLayout:
        if isinstance(x, torch.Tensor):
            flat.append(x)
            return len(flat) - 1
        if isinstance(x, (tuple, list)):
            return [walk(v) for v in x]
        raise TypeError(f"an exported network may return tensors, tuples and lists, not {type(x).__name__}")

    return flat, walk(outputs)


def unflatten(flat: Sequence[Any], layout: OutputLayout, top: bool = True) -> Any:
    """Inverse of `flatten`: the top level rebuilds as a tuple, nested levels as lists."""
    if isinstance(layout, int):
        return flat[layout]
    items = [unflatten(flat, item, top=False) for item in layout]
    return tuple(items) if top else items


def output_names(task: str, layout: OutputLayout, strides: Sequence[int] | None = None) -> list[str]:
    """Readable names for the flat outputs: `logits`; `pointmap`, `scale`; `cls_s8` ... `box_s32`."""
    if isinstance(layout, int):
        return [OUTPUT_NAMES.get(task, "output")]
    if task == "pointmap" and layout == [0, 1]:
        return ["pointmap", "scale"]
    if task == "detect" and strides is not None and all(isinstance(level, list) for level in layout):
        return [f"{kind}_s{s}" for kind in ("cls", "box") for s in strides]
    count = len(flatten_layout(layout))
    return [f"output_{i}" for i in range(count)]


def flatten_layout(layout: OutputLayout) -> list[int]:
    if isinstance(layout, int):
        return [layout]
    return [i for item in layout for i in flatten_layout(item)]


class ExportAdapter(nn.Module):
    """float32 image in -> the network in its compute dtype -> a flat tuple of float32 outputs."""

    def __init__(self, net: nn.Module, compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.net = net
        self.compute_dtype = compute_dtype

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        flat, _ = flatten(self.net(image.to(self.compute_dtype)))
        return tuple(t.float() for t in flat)


class FrozenRope(nn.Module):
    """Stands in for a `RopePositionEmbedding` while tracing: (sin, cos) for the grids seen in an eager
    warm-up, as buffers (graph constants). A grid not seen before is an error, not a silent recompute."""

    def __init__(self, inner: RopePositionEmbedding) -> None:
        super().__init__()
        self.inner = inner
        self.grids: list[tuple[int, int]] = []

    def forward(self, grid_h: int, grid_w: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = f"{int(grid_h)}x{int(grid_w)}"
        if (int(grid_h), int(grid_w)) not in self.grids:
            if torch.compiler.is_compiling() or torch.compiler.is_exporting():
                raise RuntimeError(f"RoPE grid {key} was not prepared before tracing")
            sin, cos = self.inner(int(grid_h), int(grid_w))
            self.register_buffer(f"sin_{key}", sin.clone())
            self.register_buffer(f"cos_{key}", cos.clone())
            self.grids.append((int(grid_h), int(grid_w)))
        return getattr(self, f"sin_{key}"), getattr(self, f"cos_{key}")


@contextlib.contextmanager
def frozen_rope(network: nn.Module, example: torch.Tensor) -> Iterator[tuple[nn.Module, Any]]:
    """`network` with every RoPE module frozen at the grids `example` produces (restored on exit), and its
    eager outputs for `example` (the warm-up that fills the tables)."""
    swapped: list[tuple[nn.Module, str, RopePositionEmbedding]] = []
    for parent in list(network.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, RopePositionEmbedding):
                setattr(parent, name, FrozenRope(child))
                swapped.append((parent, name, child))
    try:
        with torch.no_grad():
            outputs = network(example)
        yield network, outputs
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
