"""The network behind a dense predictor: a size ("0.4b"), an official name or hub id, a file, or a module.

Sizes and names go through `sapiens2.load`, except matting, whose head `load()` does not build: `load_matting`
resolves `sapiens2-matting-1b` (local reference layout, Hugging Face cache, then download) or a file, checks every
key and shape against the network it infers from the file, and loads strictly, tensor by tensor.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from sapiens2.checkpoint import CheckpointError, SafetensorsFile, is_pickle_path
from sapiens2.hub import CheckpointMismatchError, UnknownModelError, cached_path, download, load, local_path
from sapiens2.models.heads import DenseHeadConfig
from sapiens2.models.layout import NotSapiens2Error, infer_layout
from sapiens2.models.matting import build_matting_model, official_matting_head_config
from sapiens2.nn.rope import rope_periods
from sapiens2.zoo import HUB_OWNER, MATTING_MODELS, SIZES, ModelInfo

_PERIODS = "rope_embed.periods"
MATTING_SIZES = ("1b",)


def official_name(task: str, size: str) -> str:
    """`sapiens2-<task>-<size>` for a bare size, checked against the sizes released for the task."""
    sizes = MATTING_SIZES if task == "matting" else SIZES
    if size not in sizes:
        raise ValueError(f"no official {task} model of size {size!r}; sizes: {', '.join(sizes)}")
    return f"sapiens2-{task}-{size}"


def resolve_model(
    task: str,
    model: str | os.PathLike | nn.Module,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """The network for `task` in eval mode, on `device` / in `dtype` when given."""
    if isinstance(model, nn.Module):
        found = getattr(model, "task", task)
        if found != task:
            raise ValueError(f"the given network is a {found!r} model, not {task!r}")
        if device is not None or dtype is not None:
            model = model.to(device=device, dtype=dtype)
        return model.eval()
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a size, a name, a path or an nn.Module, not {type(model).__name__}")
    text = str(model)
    if text.lower() in (*SIZES, *MATTING_SIZES):
        text = official_name(task, text.lower())
    if task == "matting":
        return load_matting(text, device=device, dtype=dtype)
    net = load(text, device=device, dtype=dtype)
    found = getattr(net, "task", "pretrain")
    if found != task:
        raise ValueError(f"{model} holds a {found!r} model, not {task!r}")
    return net


def find_matting(query: str) -> ModelInfo | None:
    q = query.strip().lower().removeprefix("https://huggingface.co/").removeprefix(f"{HUB_OWNER}/")
    for m in MATTING_MODELS.values():
        if q in (m.name, m.filename.lower(), m.filename.lower().removesuffix(".safetensors")):
            return m
    return None


def _matting_path(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    info = find_matting(str(name_or_path))
    if info is None:
        if path.suffix or str(name_or_path).startswith((".", "~", os.sep)):
            raise CheckpointError(path, "no such checkpoint file")
        raise UnknownModelError(f"{str(name_or_path)!r} is neither a file nor an official matting model; "
                                f"official: {', '.join(MATTING_MODELS)}")
    for candidate in (local_path(info), cached_path(info)):
        if candidate is not None and candidate.is_file():
            return candidate
    return download(info)


def _indices(shapes, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in shapes if (m := rx.match(k))})


def matting_head_config(shapes: dict[str, tuple[int, ...]], embed_dim: int) -> DenseHeadConfig:
    """The matting head widths a state dict's `decode_head.*` shapes describe."""
    head = {k[len("decode_head."):]: v for k, v in shapes.items() if k.startswith("decode_head.")}
    if "conv_matting.weight" not in head:
        raise NotSapiens2Error("its decode_head has no `conv_matting`: it is not a matting model")
    ups = tuple(head[f"upsample_blocks.{i}.0.weight"][0] // 4 for i in _indices(head, r"upsample_blocks\.(\d+)\.0\.weight$"))
    convs = [head[f"conv_layers.{i}.weight"] for i in _indices(head, r"conv_layers\.(\d+)\.weight$")]
    convs = [s for s in convs if len(s) == 4]
    return DenseHeadConfig(embed_dim, ups, tuple(s[0] for s in convs), tuple(s[-1] for s in convs),
                           head["conv_matting.weight"][0])


def load_matting(
    name_or_path: str | os.PathLike = "sapiens2-matting-1b",
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    rope_dtype: torch.dtype | None = None,
) -> nn.Module:
    """The matting network (B x 4 x H x W in [0, 1]) from the official name, its hub id or a safetensors file."""
    path = _matting_path(name_or_path)
    if is_pickle_path(path):
        raise CheckpointError(path, "matting checkpoints are read from .safetensors only")
    st = SafetensorsFile(path)
    shapes = st.shapes
    try:
        backbone = infer_layout({k: v for k, v in shapes.items() if k.startswith("backbone.")})
        head = matting_head_config(shapes, backbone.backbone.embed_dim)
    except (NotSapiens2Error, KeyError, IndexError) as e:
        raise CheckpointError(path, f"not a Sapiens2 matting checkpoint: {e}") from e
    arch = backbone.arch
    official = arch is not None and official_matting_head_config(arch) == head
    with torch.device("meta"):
        model = build_matting_model(arch if official else backbone.backbone, None if official else head, rope_dtype)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in shapes and not k.endswith(_PERIODS)]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [k for k in expected if k in shapes and tuple(shapes[k]) != expected[k]]
    if missing or unexpected or wrong:
        lines = ["does not match the matting network it describes:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                lines.append(f"  {len(keys)} {title}: " + ", ".join(keys[:8]) + (" ..." if len(keys) > 8 else ""))
        raise CheckpointMismatchError(path, "\n".join(lines))
    target = dtype or torch.float32
    state = {}
    for key, t in st.iter_tensors():
        want = torch.bfloat16 if key.endswith(_PERIODS) else target
        if t.is_floating_point() and t.dtype != want:
            t = t.to(want)
        state[key] = t.to(device) if device is not None else t
    periods_key = next(k for k in expected if k.endswith(_PERIODS))
    if periods_key not in state:
        cfg = backbone.backbone
        state[periods_key] = rope_periods(cfg.head_dim, cfg.rope_base).to(device or "cpu")
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()
