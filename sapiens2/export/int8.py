"""int8 on CPU: dynamic-activation int8 with per-channel int8 weights, for PyTorch and for ONNX files.

Only `nn.Linear` layers (the transformer's matmuls, ~all of its FLOPs) are quantized; convolutions, norms and
the heads stay float32. Weights get one scale per output channel; activations one scale per tensor, computed
at run time from each input (no calibration data). PyTorch's dynamic int8 Linear quantizes activations to 7
bits, because int8 dot products on plain AVX2 sum pairs in saturating 16-bit lanes; CPUs with VNNI accumulate
in 32 bits, so there `quantize_int8` uses all 8 bits, which halves the rounding error. Layers whose module name matches a `keep` pattern
(fnmatch, e.g. `backbone.blocks.*.ffn.w3`) stay float32: `DEFAULT_KEEP` lists the ones measured as
sensitive (see BENCHMARKS.md, "int8"), and `layer_sensitivity` measures them for any network.
"""

from __future__ import annotations

import copy
import fnmatch
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = ["DEFAULT_KEEP", "kept", "layer_sensitivity", "quantize_int8", "quantize_onnx_int8", "relative_error"]

#: Linear layers kept in float32 by default: the SwiGLU output projection reads silu(a) * b, whose few
#: very large activations leave a per-tensor int8 scale too coarse for the rest (measured: most of the
#: error of quantizing every Linear comes from these).
DEFAULT_KEEP: tuple[str, ...] = ("*.ffn.w3",)


def kept(name: str, keep: Iterable[str]) -> bool:
    """Whether module `name` matches one of the fnmatch patterns in `keep`."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in keep)


def linear_names(network: nn.Module, keep: Iterable[str] = ()) -> list[str]:
    """The names of the Linear layers that int8 quantizes (those not matching `keep`)."""
    keep = tuple(keep)
    return [n for n, m in network.named_modules() if isinstance(m, nn.Linear) and not kept(n, keep)]


def has_vnni() -> bool:
    """Whether this CPU has VNNI int8 dot products (32-bit accumulation, no 16-bit saturation)."""
    check = getattr(torch.cpu, "_is_vnni_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def _full_range_linear() -> type[nn.Module]:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    class FullRangeDynamicLinear(DynamicLinear):
        """PyTorch's dynamic int8 Linear with 8-bit (not 7-bit) activations: for VNNI CPUs only."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=False)
            return y.to(x.dtype)

    return FullRangeDynamicLinear


def quantize_int8(network: nn.Module, keep: Sequence[str] = DEFAULT_KEEP, full_range: bool | None = None) -> nn.Module:
    """A CPU float32 copy of `network` whose Linear layers (but those matching `keep`) run dynamic int8
    with per-channel weight scales (PyTorch's fbgemm/x86 kernels). `full_range`: 8-bit activations (default:
    when the CPU has VNNI; forcing it on a CPU without VNNI risks saturated sums). The copy keeps `task` and
    the other attributes the predictors read."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if torch.backends.quantized.engine not in ("x86", "fbgemm", "onednn"):
        raise RuntimeError(f"int8 needs an x86 quantized engine; this build uses {torch.backends.quantized.engine}")
    net = copy.deepcopy(network).to(device="cpu", dtype=torch.float32).eval()
    names = linear_names(net, keep)
    if not names:
        raise ValueError("no Linear layer left to quantize (every one matches the keep patterns)")
    with warnings.catch_warnings():
        # torch.ao's eager quantization is deprecated in favour of torchao, whose CPU int8 kernels need
        # torch.compile to be fast; the eager fbgemm kernels here are the fast CPU path today.
        warnings.simplefilter("ignore")
        mapping = {nn.Linear: _full_range_linear()} if (has_vnni() if full_range is None else full_range) else None
        return quantize_dynamic(net, {n: per_channel_dynamic_qconfig for n in names}, inplace=True, mapping=mapping)


def relative_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| over the whole tensor, in float64."""
    ref, out = ref.double(), out.double()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def layer_sensitivity(network: nn.Module, example: torch.Tensor,
                      groups: dict[str, Sequence[str]] | None = None,
                      output: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
    """Relative output error of quantizing only each group of Linear layers (name -> fnmatch patterns),
    the rest left float32. The default groups are the backbone's projection kinds."""
    groups = groups or {"attn.wq/wk/wv": ("*.attn.wq", "*.attn.wk", "*.attn.wv"), "attn.proj": ("*.attn.proj",),
                        "ffn.w12": ("*.ffn.w12",), "ffn.w3": ("*.ffn.w3",)}
    run = output or (lambda net, x: net(x))
    with torch.no_grad():
        ref = run(network, example)
        everything = [n for n, m in network.named_modules() if isinstance(m, nn.Linear)]
        errors = {}
        for label, patterns in groups.items():
            others = [n for n in everything if not kept(n, patterns)]
            errors[label] = relative_error(ref, run(quantize_int8(network, keep=[*others]), example))
    return errors


def quantize_onnx_int8(source: str | Path, target: str | Path, keep: Sequence[str] = DEFAULT_KEEP,
                       large: bool = False) -> Path:
    """An int8 copy of a float32 ONNX file: MatMuls with constant weights become dynamic int8 (per-channel
    weight scales), but those the exporter recorded as coming from a module matching `keep`. The sapiens2
    metadata is carried over (its dtype set to int8)."""
    import json
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from sapiens2.export.adapter import METADATA_KEY

    model = onnx.load(str(source), load_external_data=False)
    exclude = [node.name for node in model.graph.node if node.op_type == "MatMul" and kept(module_of(node), keep)]
    props = {p.key: p.value for p in model.metadata_props}
    del model
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs a pre-processing hint at WARNING
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=exclude, use_external_data_format=large,
                         extra_options={"MatMulConstBOnly": True})
    finally:
        logging.getLogger().setLevel(quiet)
    if METADATA_KEY in props:
        info = json.loads(props[METADATA_KEY])
        info["dtype"] = "int8"
        quantized = onnx.load(str(target), load_external_data=False)
        onnx.helper.set_model_props(quantized, {**props, METADATA_KEY: json.dumps(info, sort_keys=True)})
        onnx.save(quantized, str(target))
    return Path(target)


def module_of(node) -> str:  # noqa: ANN001 - an onnx.NodeProto
    """The PyTorch module an exported ONNX node came from ('' when unknown), from the exporter's record."""
    import ast

    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = ast.literal_eval(prop.value)
            if len(scopes) >= 2:
                return scopes[-2].removeprefix("net.")  # the adapter holds the network as `net`
    return ""
