"""int8 on CPU: which layers are quantized, how far outputs move, the ONNX quantizer's file."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from sapiens2.export import DEFAULT_KEEP, layer_sensitivity, load_exported, quantize_int8
from sapiens2.export.int8 import TokenScaledLinear, has_vnni, int8_grid, kept, relative_error, token_scaled
from tests.export.conftest import input_size, tiny_network

pytestmark = pytest.mark.skipif(torch.backends.quantized.engine not in ("x86", "fbgemm", "onednn"),
                                reason="int8 needs an x86 quantized engine")
INT8_REL = 0.1  # relative L2 bound of the tiny random networks' int8 outputs (see BENCHMARKS.md for real sizes)


def _dynamic_int8_layers(net: nn.Module) -> set[str]:
    """The Linear layers that run int8 (per-token ones by their own name, not their inner matmul's)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return {n.removesuffix(".inner") for n, m in net.named_modules() if isinstance(m, DynamicLinear)}


def test_int8_quantizes_the_linear_layers_but_the_kept_ones():
    net = tiny_network("seg")
    q = quantize_int8(net)
    linears = {n for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    quantized = _dynamic_int8_layers(q)
    assert quantized == {n for n in linears if not kept(n, DEFAULT_KEEP)}
    assert quantized and all(n.endswith("ffn.w3") or n.endswith("ffn.w12") for n in linears - quantized)
    assert all(isinstance(q.get_submodule(n), TokenScaledLinear) for n in quantized)
    assert q.task == "seg" and isinstance(net.backbone.blocks[0].ffn.w12, nn.Linear)  # the original is untouched


def test_the_default_keeps_every_w3_and_the_first_four_w12():
    for name in ("blocks.0.ffn.w12", "backbone.blocks.3.ffn.w12", "backbone.blocks.17.ffn.w3"):
        assert kept(name, DEFAULT_KEEP), name
    for name in ("blocks.4.ffn.w12", "backbone.blocks.13.ffn.w12", "blocks.0.attn.wq", "blocks.2.attn.proj"):
        assert not kept(name, DEFAULT_KEEP), name


def test_int8_outputs_stay_close_and_per_channel():
    net = tiny_network("seg")
    q = quantize_int8(net, keep=())
    x = torch.randn(1, 3, *input_size("seg"))
    with torch.no_grad():
        assert relative_error(net(x), q(x)) < INT8_REL
    weight = q.backbone.blocks[0].attn.wq.inner.weight()
    assert weight.qscheme() == torch.per_channel_affine and weight.dtype == torch.qint8


def test_full_range_activations_halve_the_error_where_they_are_safe():
    net, x = tiny_network("pretrain"), torch.randn(1, 3, 64, 48)
    seven, eight = quantize_int8(net, keep=(), full_range=False), quantize_int8(net, keep=(), full_range=True)
    assert type(seven.blocks[0].ffn.w12.inner).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert type(eight.blocks[0].ffn.w12.inner).__name__ == "FullRangeDynamicLinear"
    with torch.no_grad():
        ref = net(x)
        assert relative_error(ref, eight(x)) < 0.8 * relative_error(ref, seven(x))
    auto = quantize_int8(net, keep=())
    assert (type(auto.blocks[0].ffn.w12.inner).__name__ == "FullRangeDynamicLinear") == has_vnni()


def _uneven_tokens(n: int = 300, dim: int = 64, seed: int = 0) -> torch.Tensor:
    """Tokens whose scales differ by up to 100x, as a transformer's do: one range for all of them is coarse."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, n, dim, generator=g) * torch.logspace(-1, 1, n)[None, :, None]


def test_token_scaling_is_the_same_function_in_float32():
    torch.manual_seed(0)
    linear, x = nn.Linear(64, 96), _uneven_tokens()
    x[0, 0] = 0.5  # a constant row (zero span) is exact too
    with torch.no_grad():
        scaled, plain = TokenScaledLinear(linear)(x), linear(x)
        assert relative_error(plain, scaled) < 1e-6
        torch.testing.assert_close(scaled[0, 0], plain[0, 0], rtol=1e-6, atol=1e-6)
        net = tiny_network("seg")
        image = torch.randn(1, 3, *input_size("seg"))
        assert relative_error(net(image), token_scaled(net, keep=(), snap=False)(image)) < 1e-5


def test_int8_weights_are_the_snapped_grid_so_the_offset_term_cancels():
    torch.manual_seed(0)
    w = torch.randn(96, 64)
    snapped = int8_grid(w)
    assert relative_error(w, snapped) < 0.01 and torch.equal(int8_grid(snapped), snapped)
    scale = w.abs().amax(1, keepdim=True) / 127
    assert torch.allclose(snapped / scale, (snapped / scale).round(), atol=1e-4)
    linear = nn.Linear(64, 96)
    layer = quantize_int8(nn.Sequential(linear), keep=())[0]
    # PyTorch's quantizer reproduces the snapped weights, so the float32 row sums are the int8 weights' sums
    torch.testing.assert_close(layer.inner.weight().dequantize(), int8_grid(linear.weight.detach()),
                               rtol=0, atol=1e-7)
    torch.testing.assert_close(layer.weight_sum, layer.inner.weight().dequantize().sum(1), rtol=1e-5, atol=1e-5)


def test_per_token_ranges_beat_one_range_per_tensor():
    torch.manual_seed(0)
    net, x = nn.Sequential(nn.Linear(64, 96)), _uneven_tokens()
    with torch.no_grad():
        ref = net(x)
        per_token = relative_error(ref, quantize_int8(net, keep=())(x))
        per_tensor = relative_error(ref, quantize_int8(net, keep=(), per_token=False)(x))
    assert per_token < 0.5 * per_tensor and per_token < 0.01


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
    assert "ReduceMin" in ops and "ReduceMax" in ops  # per-token ranges: TokenScaledLinear went into the graph
    depth = len(tiny_network("seg").backbone.blocks)
    assert ops.count("MatMul") >= depth  # the kept w3 projections (and attention's own matmuls) stay float
    net = load_exported(path)
    assert net.info.dtype == "int8" and net.task == "seg"
    x = torch.randn(1, 3, *input_size("seg"))
    with torch.no_grad():
        assert relative_error(tiny_network("seg")(x), net(x)) < INT8_REL


def test_onnx_int8_and_pytorch_int8_compute_the_same_per_token_network(tmp_path):
    from sapiens2.export import export_onnx

    net, x = tiny_network("pretrain"), torch.randn(1, 3, 64, 48)
    path = export_onnx(net, tmp_path / "p.onnx", (64, 48), dtype="int8")
    with torch.no_grad():
        ref, ours, theirs = net(x), quantize_int8(net)(x), load_exported(path)(x)
    # same weights grid, same per-token activation ranges: they differ far less than either differs from fp32
    assert relative_error(ours, theirs) < 0.2 * relative_error(ref, ours)
