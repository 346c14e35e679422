"""The one model resolver: a size, an official name, a hub id, a file or a module -> the task's network.

Every predictor resolves its network here, so the Python API and the command line accept the same things and
give the same errors: `0.4b` names `sapiens2-<task>-0.4b` (for Sapiens v1-only tasks, `sapiens-<task>-<size>`),
nothing names the task's default model in `sapiens2.task_table`, anything else goes to `sapiens2.load`.
"""

from __future__ import annotations

import os
import re

import torch
from torch import nn

from sapiens2.fetch import CheckpointNotFoundError, missing_report
from sapiens2.models.sapiens1 import trained_input_size
from sapiens2.task_table import TASKS
from sapiens2.zoo import MODELS

__all__ = ["ModelSpec", "load_network", "missing_weights", "missing_weights_message", "model_name", "resolve_device",
           "resolve_dtype"]

ModelSpec = str | os.PathLike | nn.Module | None
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}
_SIZE = re.compile(r"\d+(\.\d+)?b")


def resolve_device(name: str | torch.device | None) -> torch.device:
    """`auto`: CUDA, then Apple MPS, then CPU. None: the CPU. Anything else is checked against this machine."""
    if isinstance(name, torch.device):
        return name
    if name is None:
        return torch.device("cpu")
    if name in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"device {name!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name}: CUDA is not available on this machine (try auto)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {name}: Apple MPS is not available on this machine (try auto)")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name}: expected auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_dtype(name: str | torch.dtype | None) -> torch.dtype:
    """fp32 / bf16 / fp16 (or their long names, or a torch dtype); None is fp32."""
    if isinstance(name, torch.dtype):
        return name
    if name in (None, ""):
        return torch.float32
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"dtype {name}: expected fp32, bf16 or fp16") from None


def model_name(task: str, spec: str | os.PathLike | None) -> str:
    """The official name for a bare size (`0.4b` -> `sapiens2-seg-0.4b`; depth: `sapiens-depth-0.3b`), the
    task's default for None, else `spec` itself (a name, hub id or path, resolved by `sapiens2.load`)."""
    info = TASKS[task]
    text = os.fspath(spec) if spec is not None else info.default_model
    low = text.lower()
    generation = info.default_generation
    sizes = sorted({m.arch for m in MODELS.values() if m.task == task and m.generation == generation})
    if low in sizes:
        return f"sapiens2-{task}-{low}" if generation == 2 else f"sapiens-{task}-{low}"
    if _SIZE.fullmatch(low):
        raise ValueError(f"no official {task} model of size {text!r}; sizes: {', '.join(sizes)}")
    return text


def load_network(task: str, spec: ModelSpec, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, allow_pickle: bool = False,
                 allow_code: bool = False) -> nn.Module:
    """The task's network in eval mode; a module is passed through (moved when asked) and checked.
    `allow_pickle` reads .pth weights (restricted, no code); `allow_code` runs TorchScript / torch.export
    programs, which carry code (see the README's "What loading trusts"). An exported `.onnx` file runs on
    onnxruntime, a `.pt2` program (only with `allow_code=True`) on torch.export, both through
    `sapiens2.export.runtime`."""
    from sapiens2.hub import load

    if isinstance(spec, (str, os.PathLike)) and os.fspath(spec).lower().endswith((".onnx", ".pt2")):
        net = _load_exported(spec, device, dtype, allow_code)
    elif isinstance(spec, nn.Module):
        if device is not None or dtype is not None:
            spec = spec.to(device=None if device is None else resolve_device(device),
                           dtype=None if dtype is None else resolve_dtype(dtype))
        net = spec.eval()
    elif spec is None or isinstance(spec, (str, os.PathLike)):
        net = load(model_name(task, spec), device=None if device is None else resolve_device(device),
                   dtype=None if dtype is None else resolve_dtype(dtype), allow_pickle=allow_pickle,
                   allow_code=allow_code)
    else:
        raise TypeError(f"model must be a size, a name, a path or an nn.Module, not {type(spec).__name__}")
    found = getattr(net, "task", task if isinstance(spec, nn.Module) else "pretrain")
    if found != task:
        what = "the given network is" if isinstance(spec, nn.Module) else f"{spec} holds"
        raise ValueError(f"{what} a {found!r} model, not {task!r}")
    return net


def _load_exported(path: str | os.PathLike, device: str | torch.device | None, dtype: str | torch.dtype | None,
                   allow_code: bool) -> nn.Module:
    from sapiens2.export.runtime import load_exported

    if dtype is not None and resolve_dtype(dtype) != torch.float32:
        raise ValueError(f"{path}: an exported file takes float32 input and computes in the dtype it was exported "
                         "with; leave dtype unset (export with --dtype fp16 for half precision)")
    where = resolve_device(device)
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if where.type == "cuda" else ["CPUExecutionProvider"]
    net = load_exported(path, allow_code=allow_code, providers=providers)
    return net.to(where) if os.fspath(path).lower().endswith(".pt2") else net


def network_input_size(network: nn.Module) -> tuple[int, int] | None:
    """The (height, width) a network must be fed, when it says: an exported file's fixed input, or the grid a
    Sapiens v1 model's positions were trained for. None: any size the caller chooses."""
    fixed = getattr(network, "input_size", None)
    if fixed is not None:
        return tuple(fixed)
    return trained_input_size(network)


def missing_weights(names: list[str]) -> list[CheckpointNotFoundError]:
    """The error of each official model whose file is neither local nor obtainable now (the hub is asked at
    most once per run: see `sapiens2.fetch`)."""
    from sapiens2.hub import resolve

    missing = []
    for name in names:
        try:
            resolve(name)
        except CheckpointNotFoundError as e:
            missing.append(e)
    return missing


def missing_weights_message(missing: list[CheckpointNotFoundError], needed_by: str = "the demo") -> str:
    """What to tell a person whose `needed_by` lacks these weights: one line per file, then the one fix. The
    CLI's demo and the server say exactly this."""
    return f"{needed_by} needs weights that are not on this machine:\n{missing_report(missing)}"
