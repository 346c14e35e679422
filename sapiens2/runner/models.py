"""Which network each task runs, on which device and dtype, and a clear message when weights are missing."""

from __future__ import annotations

import os
import re

import torch
from torch import nn

from sapiens2.zoo import MODELS, SIZES

__all__ = [
    "DEFAULT_MODELS",
    "V1_ONLY_TASKS",
    "load_network",
    "missing_weights",
    "model_name",
    "resolve_device",
    "resolve_dtype",
]

#: The model each task runs when --model is not given.
DEFAULT_MODELS = {"pose": "0.4b", "seg": "0.4b", "normal": "0.4b", "pointmap": "0.4b", "albedo": "0.4b",
                  "matting": "1b", "depth": "0.3b"}
#: Tasks only Sapiens v1 has: a bare size names `sapiens-<task>-<size>`.
V1_ONLY_TASKS = ("depth",)
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def resolve_device(name: str | None) -> torch.device:
    """`auto` (or None): CUDA, then Apple MPS, then CPU. Anything else is passed to torch.device, checked."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (try --device auto)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"--device {name}: Apple MPS is not available on this machine (try --device auto)")
    return device


def resolve_dtype(name: str | None) -> torch.dtype:
    if name in (None, ""):
        return torch.float32
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"--dtype {name}: expected fp32, bf16 or fp16") from None


def model_name(task: str, spec: str | os.PathLike | None) -> str:
    """The official name for a bare size (`0.4b` -> `sapiens2-seg-0.4b`; depth: `sapiens-depth-0.3b`), else `spec`."""
    text = str(spec if spec is not None else DEFAULT_MODELS[task])
    low = text.lower()
    if task in V1_ONLY_TASKS:
        name = f"sapiens-{task}-{low}"
        if name in MODELS:
            return name
        sizes = [m.arch for m in MODELS.values() if m.task == task]
        if low in SIZES or re.fullmatch(r"\d+(\.\d+)?b", low):
            raise ValueError(f"no official {task} model of size {text!r}; sizes: {', '.join(sizes)}")
        return text
    sizes = {m.arch for m in MODELS.values() if m.task == task and m.generation == 2}
    if low in sizes:
        return f"sapiens2-{task}-{low}"
    if re.fullmatch(r"\d+(\.\d+)?b", low):
        raise ValueError(f"no official {task} model of size {text!r}; sizes: {', '.join(sorted(sizes))}")
    return text


def load_network(task: str, spec: str | os.PathLike | nn.Module | None, device: torch.device,
                 dtype: torch.dtype, allow_pickle: bool = False) -> nn.Module:
    """The task's network in eval mode (a module is passed through, moved and checked)."""
    from sapiens2.hub import load

    if isinstance(spec, nn.Module):
        net = spec.to(device=device, dtype=dtype).eval()
    else:
        net = load(model_name(task, spec), device=device, dtype=dtype, allow_pickle=allow_pickle)
    found = getattr(net, "task", "pretrain")
    if found != task:
        raise ValueError(f"{spec} holds a {found!r} model, not a {task!r} model")
    return net


def missing_weights(names: list[str]) -> list[tuple[str, str]]:
    """(name, message) for each official model whose file is neither local nor obtainable now."""
    from sapiens2.hub import CheckpointNotFoundError, resolve

    missing = []
    for name in names:
        try:
            resolve(name)
        except CheckpointNotFoundError as e:
            missing.append((name, str(e)))
    return missing
