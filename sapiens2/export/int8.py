"""int8 on CPU: dynamic-activation int8 with per-channel int8 weights, for PyTorch and for ONNX files.

Only `nn.Linear` layers (the transformer's matmuls, ~all of its FLOPs) are quantized; convolutions, norms and
the heads stay float32. Weights get one scale per output channel; activations one range per token (per row),
computed at run time from each input (no calibration data). The per-token ranges come from `TokenScaledLinear`:
it maps each row of the input onto [0, 1] in float32, runs the matmul on that, and undoes the map on the
output exactly, so the per-tensor int8 quantizers of PyTorch's dynamic Linear and of onnxruntime's
DynamicQuantizeLinear, which only ever see [0, 1], give every token its own 8-bit range (one range for the
whole tensor was set by its few largest tokens). PyTorch's dynamic int8 Linear quantizes activations to 7
bits, because int8 dot products on plain AVX2 sum pairs in saturating 16-bit lanes; CPUs with VNNI accumulate
in 32 bits, so there `quantize_int8` uses all 8 bits, which halves the rounding error. Layers whose module
name matches a `keep` pattern (fnmatch, e.g. `backbone.blocks.*.ffn.w3`) stay float32: `DEFAULT_KEEP` lists
the ones measured as sensitive (see BENCHMARKS.md, "int8"), and `layer_sensitivity` measures them for any
network.
"""

from __future__ import annotations

import copy
import fnmatch
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = ["DEFAULT_KEEP", "TokenScaledLinear", "kept", "layer_sensitivity", "quantize_int8", "quantize_onnx_int8",
           "relative_error", "token_scaled"]

#: Linear layers kept in float32 by default: the SwiGLU output projections, whose input silu(a) * b has
#: heavy tails that 8 bits cover worst, and the first four blocks' SwiGLU input projections, whose errors
#: the rest of the network carries furthest (measured on 0.4b: keeping blocks 0-3 cut the error by 22 %,
#: keeping the last four by 3 %; BENCHMARKS.md, "Deployment").
DEFAULT_KEEP: tuple[str, ...] = ("*.ffn.w3", "*blocks.[0-3].ffn.w12")


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


class TokenScaledLinear(nn.Module):
    """`linear(x)`, computed as `span * inner((x - lo) / span) + lo * W·1 + b` with `lo`, `span` the min and
    range of each row of `x`, and `inner` the bias-free matmul by W.

    In float32 this is the same function (within rounding); its point is that `inner` only ever sees rows
    spanning exactly [0, 1], so a per-tensor int8 quantizer of `inner`'s input is a per-token (per-row)
    asymmetric one: each token keeps 8 bits for its own range. The `lo * W·1` term must use the weights the
    matmul really uses, or the rounding of W times the rows' large mean (x' is in [0, 1], mean about 1/2)
    is not cancelled: `snap=True` rounds W to the symmetric per-channel int8 grid (scale max|W_row| / 127)
    first, which the int8 quantizers then reproduce exactly. Export-friendly: min, max, sub, div, matmul,
    mul, add.
    """

    def __init__(self, linear: nn.Linear, snap: bool = False) -> None:
        super().__init__()
        weight = linear.weight.detach()
        if snap:
            weight = int8_grid(weight)
        self.inner = nn.Linear(linear.in_features, linear.out_features, bias=False,
                               device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            self.inner.weight.copy_(weight)
        self.register_buffer("weight_sum", weight.sum(1))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo = x.amin(dim=-1, keepdim=True)
        span = (x.amax(dim=-1, keepdim=True) - lo).clamp_min(torch.finfo(x.dtype).tiny)
        # In place on fresh tensors: the output passes are memory-bound and, for w12, as large as the matmul's
        # output; out-of-place they cost a tenth of the int8 forward on 0.4b.
        y = self.inner((x - lo).div_(span))
        y.mul_(span).addcmul_(lo, self.weight_sum)
        return y if self.bias is None else y.add_(self.bias)


def int8_grid(weight: torch.Tensor) -> torch.Tensor:
    """`weight` rounded to symmetric per-output-channel int8 (scale max|row| / 127, levels -127..127): the
    grid both int8 quantizers here use (`_weight_qconfig`, onnxruntime's symmetric QInt8), so quantizing the
    result again changes nothing."""
    scale = (weight.abs().amax(dim=1, keepdim=True) / 127).clamp_min(torch.finfo(weight.dtype).tiny)
    return (weight / scale).round().clamp(-127, 127) * scale


def token_scaled(network: nn.Module, keep: Iterable[str] = DEFAULT_KEEP, snap: bool = True) -> nn.Module:
    """A float32 CPU copy of `network` whose Linear layers (but those matching `keep`) are
    `TokenScaledLinear`s, ready for per-token int8 (PyTorch's or onnxruntime's quantizer applies to their
    `inner` matmuls). `snap`: weights on the int8 grid (what int8 needs); without it the copy computes
    the same function as `network`."""
    net = copy.deepcopy(network).to(device="cpu", dtype=torch.float32).eval()
    names = linear_names(net, keep)
    if not names:
        raise ValueError("no Linear layer left to quantize (every one matches the keep patterns)")
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = net.get_submodule(parent) if parent else net
        setattr(owner, child, TokenScaledLinear(getattr(owner, child), snap))
    return net


def _full_range_linear() -> type[nn.Module]:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    class FullRangeDynamicLinear(DynamicLinear):
        """PyTorch's dynamic int8 Linear with 8-bit (not 7-bit) activations: for VNNI CPUs only."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=False)
            return y.to(x.dtype)

    return FullRangeDynamicLinear


def _weight_qconfig() -> object:
    """Dynamic int8 with symmetric per-channel weights on levels -127..127 (PyTorch's default uses -128..127
    and so a slightly different scale), the grid of `int8_grid` and onnxruntime's quantizer."""
    from torch.ao.quantization import PerChannelMinMaxObserver, QConfig, default_dynamic_quant_observer

    weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                quant_min=-127, quant_max=127)
    return QConfig(activation=default_dynamic_quant_observer, weight=weight)


def quantize_int8(network: nn.Module, keep: Sequence[str] = DEFAULT_KEEP, full_range: bool | None = None,
                  per_token: bool = True) -> nn.Module:
    """A CPU float32 copy of `network` whose Linear layers (but those matching `keep`) run dynamic int8
    with per-channel weight scales (PyTorch's fbgemm/x86 kernels). `per_token`: one activation range per
    token through `TokenScaledLinear` (default; else one per tensor, PyTorch's own dynamic Linear).
    `full_range`: 8-bit activations (default: when the CPU has VNNI; forcing it on a CPU without VNNI risks
    saturated sums). The copy keeps `task` and the other attributes the predictors read."""
    from torch.ao.quantization import quantize_dynamic

    if torch.backends.quantized.engine not in ("x86", "fbgemm", "onednn"):
        raise RuntimeError(f"int8 needs an x86 quantized engine; this build uses {torch.backends.quantized.engine}")
    if per_token:
        net = token_scaled(network, keep)
        names = [n for n, m in net.named_modules() if isinstance(m, TokenScaledLinear)]
        names = [f"{n}.inner" for n in names]
    else:
        net = copy.deepcopy(network).to(device="cpu", dtype=torch.float32).eval()
        names = linear_names(net, keep)
        if not names:
            raise ValueError("no Linear layer left to quantize (every one matches the keep patterns)")
    with warnings.catch_warnings():
        # torch.ao's eager quantization is deprecated in favour of torchao, whose CPU int8 kernels need
        # torch.compile to be fast; the eager fbgemm kernels here are the fast CPU path today.
        warnings.simplefilter("ignore")
        mapping = {nn.Linear: _full_range_linear()} if (has_vnni() if full_range is None else full_range) else None
        return quantize_dynamic(net, dict.fromkeys(names, _weight_qconfig()), inplace=True, mapping=mapping)


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
    """An int8 copy of a float32 ONNX file: MatMuls with constant weights become dynamic int8 (symmetric
    per-channel weight scales; one activation range per tensor, which is one per token for the matmuls of
    `TokenScaledLinear`s: export `token_scaled(network)`, as `export_onnx(..., dtype="int8")` does), but
    those the exporter recorded as coming from a module matching `keep`. The sapiens2
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
