"""The network behind a predictor: a size ("0.4b"), an official name or hub id, a file, or a module."""

from __future__ import annotations

import os

import torch
from torch import nn

from sapiens2.hub import load
from sapiens2.zoo import MODELS


def official_name(task: str, size: str) -> str:
    """`sapiens2-<task>-<size>` for a bare size, checked against the sizes released for the task."""
    sizes = [m.arch for m in MODELS.values() if m.task == task and m.generation == 2]
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
    if text.lower() in {m.arch for m in MODELS.values() if m.generation == 2}:
        text = official_name(task, text.lower())
    net = load(text, device=device, dtype=dtype)
    found = getattr(net, "task", "pretrain")
    if found != task:
        raise ValueError(f"{model} holds a {found!r} model, not {task!r}")
    return net
