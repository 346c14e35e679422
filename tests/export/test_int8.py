"""int8 on CPU: which layers are quantized, how far outputs move, the ONNX quantizer's file."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from sapiens2.export import DEFAULT_KEEP, layer_sensitivity, load_exported, quantize_int8
from sapiens2.export.int8 import has_vnni, kept, relative_error
from tests.export.conftest import input_size, tiny_network

pytestmark = pytest.mark.skipif(torch.backends.quantized.engine not in ("x86", "fbgemm", "onednn"),
                                reason="int8 needs an x86 quantized engine")
INT8_REL = 0.1  # relative L2 bound of the tiny random networks' int8 outputs (see BENCHMARKS.md for real sizes)


def _dynamic_int8_layers(net: nn.Module) -> set[str]:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return {n for n, m in net.named_modules() if isinstance(m, DynamicLinear)}


def test_int8_quantizes_the_linear_layers_but_the_kept_ones():
    net = tiny_network("seg")
    q = quantize_int8(net)
    linears = {n for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    quantized = _dynamic_int8_layers(q)
    assert quantized == {n for n in linears if not kept(n, DEFAULT_KEEP)}
    assert quantized and all(n.endswith("ffn.w3") for n in linears - quantized)
    assert q.task == "seg" and isinstance(net.backbone.blocks[0].ffn.w12, nn.Linear)  # the original is untouched


def test_int8_outputs_stay_close_and_per_channel():
    net = tiny_network("seg")
    q = quantize_int8(net, keep=())
    x = torch.randn(1, 3, *input_size("seg"))
    with torch.no_grad():
        assert relative_error(net(x), q(x)) < INT8_REL
    weight = q.backbone.blocks[0].attn.wq.weight()
    assert weight.qscheme() == torch.per_channel_affine and weight.dtype == torch.qint8


def test_full_range_activations_halve_the_error_where_they_are_safe():
    net, x = tiny_network("pretrain"), torch.randn(1, 3, 64, 48)
    seven, eight = quantize_int8(net, keep=(), full_range=False), quantize_int8(net, keep=(), full_range=True)
    assert type(seven.blocks[0].ffn.w12).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert type(eight.blocks[0].ffn.w12).__name__ == "FullRangeDynamicLinear"
    with torch.no_grad():
        ref = net(x)
        assert relative_error(ref, eight(x)) < 0.8 * relative_error(ref, seven(x))
    auto = quantize_int8(net, keep=())
    assert (type(auto.blocks[0].ffn.w12).__name__ == "FullRangeDynamicLinear") == has_vnni()


def test_keeping_everything_is_an_error():
    with pytest.raises(ValueError, match="no Linear layer left"):
        quantize_int8(tiny_network("seg"), keep=("*",))


def test_layer_sensitivity_reports_each_group():
    errors = layer_sensitivity(tiny_network("pretrain"), torch.randn(1, 3, 64, 48))
    assert set(errors) == {"attn.wq/wk/wv", "attn.proj", "ffn.w12", "ffn.w3"}
    assert all(0 <= e < INT8_REL for e in errors.values())


def test_the_onnx_int8_file_quantizes_matmuls_but_the_kept_ones(tmp_path):
    from sapiens2.export import export_onnx

    # int8 exports always run the graph optimizer (the quantizer needs folded weights), whatever `optimize` says
    path = export_onnx(tiny_network("seg"), tmp_path / "s.onnx", input_size("seg"), dtype="int8", optimize=False)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
    depth = len(tiny_network("seg").backbone.blocks)
    assert ops.count("MatMul") >= depth  # the kept w3 projections (and attention's own matmuls) stay float
    net = load_exported(path)
    assert net.info.dtype == "int8" and net.task == "seg"
    x = torch.randn(1, 3, *input_size("seg"))
    with torch.no_grad():
        assert relative_error(tiny_network("seg")(x), net(x)) < INT8_REL
