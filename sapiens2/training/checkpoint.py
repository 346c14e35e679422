"""Checkpoints: the weights in the official layout, and the training state for an exact resume. Task-free.

A checkpoint is a folder `<work_dir>/checkpoints/iter_<N>/` holding
- `model.safetensors`: the full (unsharded) state dict under the model's own names. For a task model that is
  `backbone.*` + `decode_head.*`, the official layout, so `sapiens2.load(path)` and every predictor read it
  directly; for a bare backbone (pretraining) it is the bare backbone keys;
- `training_state.pt`: optimizer (keyed by parameter names, so it survives a change of wrapping),
  scheduler, step and the caller's extra state (sampler position, config) — tensors and plain values
  only, read back with `weights_only=True`;
- `rng_rank<r>.pt`: each process's Python, NumPy and torch (CPU and CUDA) RNG states.
The folder is written under a temporary name and renamed when complete, then `checkpoints/latest` is
rewritten to name it: a crash mid-save never leaves a half checkpoint that `--resume` would pick.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from sapiens2.io.writers import atomic_open, write_bytes, write_text
from sapiens2.training.distributed import DistInfo, barrier

WEIGHTS = "model.safetensors"
STATE = "training_state.pt"
LATEST = "latest"


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict on CPU under the unwrapped model's names (collective under FSDP: every
    process must call it; only rank 0 gets the tensors)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_weights(state: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write a state dict as safetensors, atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return write_bytes(path, save(tensors, metadata=metadata))


def rng_state() -> dict[str, Any]:
    """Python, NumPy (global) and torch RNG states as tensors and plain values (weights-only loadable)."""
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = torch.from_numpy(np_state["state"]["key"].astype(np.int64))
    state = {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np_state = dict(state["numpy"])
    np_state["state"] = dict(np_state["state"], key=np_state["state"]["key"].numpy().astype(np.uint32))
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    info: DistInfo,
    extra: dict[str, Any] | None = None,
    keep: int = 0,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write `<root>/iter_<step>` (every process must call this) and point `<root>/latest` at it.

    `keep` > 0 deletes all but the newest `keep` checkpoints afterwards.
    """
    root = Path(root)
    final = root / f"iter_{step:07d}"
    tmp = root / f".iter_{step:07d}.tmp"
    weights = full_model_state(model)
    optim = full_optimizer_state(model, optimizer) if optimizer is not None else None
    if info.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier()
    with atomic_open(tmp / f"rng_rank{info.rank}.pt") as f:
        torch.save(rng_state(), f)
    if info.is_main:
        meta = {"step": str(step), **(metadata or {})}
        save_weights(weights, tmp / WEIGHTS, meta)
        state = {"step": step, "world_size": info.world_size, "optimizer": optim,
                 "scheduler": scheduler.state_dict() if scheduler is not None else None, "extra": extra or {}}
        with atomic_open(tmp / STATE) as f:
            torch.save(state, f)
    barrier()
    if info.is_main:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_text(root / LATEST, final.name + "\n")
        if keep > 0:
            for old in sorted(p for p in root.glob("iter_*") if p.is_dir())[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def resolve_checkpoint(resume: str | os.PathLike, work_dir: str | os.PathLike) -> Path:
    """`auto` (the latest under `<work_dir>/checkpoints`), a checkpoint folder, the `latest` file, or a file
    inside a checkpoint folder -> the checkpoint folder."""
    if str(resume) == "auto":
        resume = Path(work_dir) / "checkpoints"
    p = Path(resume)
    if p.is_file():
        p = p.parent / p.read_text().strip() if p.name == LATEST else p.parent
    if p.is_dir() and not (p / STATE).is_file() and (p / LATEST).is_file():
        p = p / (p / LATEST).read_text().strip()
    if not (p / STATE).is_file() or not (p / WEIGHTS).is_file():
        raise FileNotFoundError(f"{resume}: no checkpoint there (expected a folder with {WEIGHTS} and {STATE}, "
                                f"or a checkpoints folder with a `{LATEST}` file)")
    return p


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    info: DistInfo,
) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and this process's RNG from a checkpoint folder (every process
    calls it; each reads the full state and keeps its shard). Returns the saved state: step, extra, ..."""
    path = Path(path)
    opts = StateDictOptions(full_state_dict=True)
    weights = load_file(path / WEIGHTS)
    set_model_state_dict(model, weights, options=opts)
    state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    if optimizer is not None and state.get("optimizer") is not None:
        set_optimizer_state_dict(model, optimizer, state["optimizer"], options=opts)
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    rng_file = path / f"rng_rank{info.rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
    return state


def export_weights(checkpoint: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy a checkpoint's weights to `dest` (atomically): the file to hand to `sapiens2.load`."""
    src = Path(checkpoint) / WEIGHTS
    with open(src, "rb") as f, atomic_open(dest) as out:
        shutil.copyfileobj(f, out, length=16 << 20)
    return Path(dest)
