"""bfloat16 arithmetic in an ONNX graph, emulated in float32 with rounding, so any runtime can execute it.

Every official Sapiens2 model rotates queries and keys (RoPE) in bfloat16; that rounding is part of what the
weights were trained with (see `sapiens2.nn.rope`). The exporter writes those steps as bfloat16 ops, but
onnxruntime's CPU provider has no bfloat16 Mul/Add kernels. This pass keeps every bfloat16 value as a float32
tensor holding a bfloat16-representable number: each op that computes something (Mul, Add, ...) runs in float32
and its result is rounded to bfloat16 (Cast to bfloat16, Cast back), and data movement (Slice, Concat, Neg,
...) runs as is. PyTorch's own CPU bfloat16 kernels do exactly this (compute in float32, round the result to
nearest-even), so the emulated graph gives the same bits as the PyTorch network.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["emulate_bfloat16"]

BF16, F32 = TensorProto.BFLOAT16, TensorProto.FLOAT
# Ops whose outputs are exactly some of their inputs' values: no rounding needed after them.
EXACT = {"Slice", "Split", "Concat", "Neg", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Gather", "Expand",
         "Identity", "Flatten", "Tile", "Abs", "Where", "Max", "Min"}


def _types(model: onnx.ModelProto) -> dict[str, int]:
    """The element type of every value, by ONNX shape inference on a copy without the large weights (so it
    also works past protobuf's 2 GB limit; inference needs only their types and shapes)."""
    g = model.graph
    light = onnx.ModelProto()
    light.CopyFrom(onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import,
                                   functions=model.functions))
    light.graph.node.extend(g.node)
    light.graph.input.extend(g.input)
    light.graph.output.extend(g.output)
    for init in g.initializer:
        if init.ByteSize() > _SMALL:
            light.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            light.graph.initializer.append(init)
    inferred = onnx.shape_inference.infer_shapes(light).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *g.input, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    for node in g.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                types[node.output[0]] = value.data_type
    return types


_SMALL = 1 << 16


def _round(name: str, source: str, node_name: str) -> list[onnx.NodeProto]:
    """float32 `source` -> nearest bfloat16 -> float32 `name`."""
    return [helper.make_node("Cast", [source], [name + "__bf16"], to=BF16, name=node_name + "__to_bf16"),
            helper.make_node("Cast", [name + "__bf16"], [name], to=F32, name=node_name + "__from_bf16")]


def emulate_bfloat16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with no bfloat16 arithmetic left (in place; also returned). Graphs without bfloat16
    come back unchanged."""
    types = _types(model)
    g = model.graph
    if not any(t == BF16 for t in types.values()):
        return model
    for i, init in enumerate(g.initializer):
        if init.data_type == BF16:
            g.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32),
                                                              init.name))
    nodes: list[onnx.NodeProto] = []
    for node in g.node:
        touches = [t for t in [*node.input, *node.output] if types.get(t) == BF16]
        if not touches:
            nodes.append(node)
            continue
        if node.op_type == "Constant":
            value = next(a for a in node.attribute if a.name == "value")
            value.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(value.t).astype(np.float32), value.t.name))
            nodes.append(node)
        elif node.op_type == "Cast":
            target = next(a.i for a in node.attribute if a.name == "to")
            if target == BF16:  # the rounding itself
                nodes += _round(node.output[0], node.input[0], node.name)
            else:  # from a (now float32) bfloat16 value: exact
                nodes.append(helper.make_node("Cast", [node.input[0]], [node.output[0]], to=target, name=node.name))
        elif node.op_type in EXACT:
            nodes.append(node)
        else:
            computed = onnx.NodeProto()
            computed.CopyFrom(node)
            del computed.output[:]
            computed.output.extend(o + "__f32" if types.get(o) == BF16 else o for o in node.output)
            nodes.append(computed)
            for o in node.output:
                if types.get(o) == BF16:
                    nodes += _round(o, o + "__f32", f"{node.name}__{o}")
    del g.node[:]
    g.node.extend(nodes)
    for value in [*g.value_info, *g.input, *g.output]:
        if value.type.tensor_type.elem_type == BF16:
            value.type.tensor_type.elem_type = F32
    return model
