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

A *sharded* checkpoint (`save_sharded`) has the same folder, name and `latest` file, but instead of
`model.safetensors` and a gathered optimizer it holds a `torch.distributed.checkpoint` (DCP) save: `.metadata`
plus one `__<rank>_0.distcp` file per process, each written in parallel with that process's shards of model
and optimizer (nothing is gathered). DCP reshards on load, so a run resumes on any number of processes.
`export_sharded` writes the model of such a checkpoint as one safetensors file, reading only the model's
tensors. Per-process state (RNG, a data stream's position) goes to `rng_rank<r>.pt` in both kinds.
"""

from __future__ import annotations

import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save
from torch import nn
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
    set_state_dict,
)

from sapiens2.io.writers import atomic_open, write_bytes, write_text
from sapiens2.training.distributed import DistInfo, barrier

WEIGHTS = "model.safetensors"
STATE = "training_state.pt"
LATEST = "latest"
DCP_METADATA = ".metadata"  # what torch.distributed.checkpoint writes beside its shard files


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
    rank_extra: dict[str, Any] | None = None,
) -> Path:
    """Write `<root>/iter_<step>` (every process must call this) and point `<root>/latest` at it.

    `keep` > 0 deletes all but the newest `keep` checkpoints afterwards. `rank_extra`: this process's own plain
    values (a data stream's position), kept beside its RNG state; `load_checkpoint` returns them.
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
        torch.save({**rng_state(), "extra": rank_extra or {}}, f)
    if info.is_main:
        meta = {"step": str(step), **(metadata or {})}
        save_weights(weights, tmp / WEIGHTS, meta)
        state = {"step": step, "world_size": info.world_size, "optimizer": optim,
                 "scheduler": scheduler.state_dict() if scheduler is not None else None, "extra": extra or {}}
        with atomic_open(tmp / STATE) as f:
            torch.save(state, f)
    return _publish(tmp, final, root, info, keep)


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
    if not (p / STATE).is_file() or not ((p / WEIGHTS).is_file() or is_sharded(p)):
        raise FileNotFoundError(f"{resume}: no checkpoint there (expected a folder with {STATE} and {WEIGHTS} or a "
                                f"sharded save, or a checkpoints folder with a `{LATEST}` file)")
    return p


def is_sharded(path: str | os.PathLike) -> bool:
    """Whether a checkpoint folder holds a sharded (DCP) save."""
    return (Path(path) / DCP_METADATA).is_file()


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    info: DistInfo,
) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and this process's RNG from a checkpoint folder (every process
    calls it; each reads the full state and keeps its shard). Returns the saved state: step, extra, ...,
    and `rank_extra`, this process's own values (None when another number of processes wrote it)."""
    path = Path(path)
    if is_sharded(path):
        state, rank_extra = load_sharded(path, model, optimizer, info, scheduler)
        return {**state, "rank_extra": rank_extra}
    opts = StateDictOptions(full_state_dict=True)
    weights = load_file(path / WEIGHTS)
    set_model_state_dict(model, weights, options=opts)
    state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    if optimizer is not None and state.get("optimizer") is not None:
        set_optimizer_state_dict(model, optimizer, state["optimizer"], options=opts)
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    rng_file = path / f"rng_rank{info.rank}.pt"
    state["rank_extra"] = None
    if rng_file.is_file():
        saved = torch.load(rng_file, map_location="cpu", weights_only=True)
        set_rng_state(saved)
        if state.get("world_size") == info.world_size:
            state["rank_extra"] = saved.get("extra", {})
    return state


def export_weights(checkpoint: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy a checkpoint's weights to `dest` (atomically): the file to hand to `sapiens2.load`."""
    src = Path(checkpoint) / WEIGHTS
    with open(src, "rb") as f, atomic_open(dest) as out:
        shutil.copyfileobj(f, out, length=16 << 20)
    return Path(dest)


def dcp_save(state: dict[str, Any], path: str | os.PathLike) -> None:
    """`torch.distributed.checkpoint.save`: collective under a process group, else this process alone."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is .*single process")
        dcp.save(state, checkpoint_id=path, no_dist=not dist.is_initialized())


def dcp_load(state: dict[str, Any], path: str | os.PathLike, reader: dcp.StorageReader | None = None) -> None:
    """`torch.distributed.checkpoint.load` into `state` in place (collective under a process group)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is .*single process")
        dcp.load(state, checkpoint_id=None if reader else path, storage_reader=reader,
                 no_dist=reader is not None or not dist.is_initialized())


def save_sharded(
    root: str | os.PathLike,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    info: DistInfo,
    scheduler: Any | None = None,
    extra: dict[str, Any] | None = None,
    rank_extra: dict[str, Any] | None = None,
    keep: int = 0,
) -> Path:
    """Write `<root>/iter_<step>` as a sharded checkpoint (every process calls it and writes its own shards) and
    point `<root>/latest` at it. `extra`: plain values from the main process (config, ...); `rank_extra`: this
    process's own (a data stream's position), kept beside its RNG state."""
    root = Path(root)
    final, tmp = root / f"iter_{step:07d}", root / f".iter_{step:07d}.tmp"
    if info.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)  # this process's shards, no gathering
    dcp_save({"model": model_sd, "optimizer": optim_sd}, tmp)
    with atomic_open(tmp / f"rng_rank{info.rank}.pt") as f:
        torch.save({**rng_state(), "extra": rank_extra or {}}, f)
    if info.is_main:
        state = {"step": step, "world_size": info.world_size, "sharded": True, "extra": extra or {},
                 "scheduler": scheduler.state_dict() if scheduler is not None else None}
        with atomic_open(tmp / STATE) as f:
            torch.save(state, f)
    return _publish(tmp, final, root, info, keep)


def load_sharded(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    info: DistInfo,
    scheduler: Any | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Restore a sharded checkpoint into `model` and `optimizer` however they are now wrapped and on however many
    processes (every process calls it and reads the pieces of its own shards). Returns the saved training state
    and this process's `rank_extra` — None when the checkpoint was written by another number of processes (then
    this process's RNG is not restored either: its old stream does not exist any more)."""
    path = Path(path)
    if not is_sharded(path):
        raise FileNotFoundError(f"{path}: not a sharded checkpoint (no {DCP_METADATA})")
    model_sd, optim_sd = get_state_dict(model, optimizer)  # allocates the optimizer state to be filled
    sd = {"model": model_sd, "optimizer": optim_sd}
    dcp_load(sd, path)
    set_state_dict(model, optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optimizer"])
    state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    rank_file = path / f"rng_rank{info.rank}.pt"
    if state.get("world_size") != info.world_size or not rank_file.is_file():
        return state, None
    saved = torch.load(rank_file, map_location="cpu", weights_only=True)
    set_rng_state(saved)
    return state, saved.get("extra", {})


def export_sharded(checkpoint: str | os.PathLike, dest: str | os.PathLike, prefix: str = "",
                   metadata: dict[str, str] | None = None) -> Path:
    """The model tensors of a sharded checkpoint whose names start with `prefix` (which is cut off), as one
    safetensors file (atomically). Runs in one process and reads only those tensors, not the optimizer."""
    checkpoint = Path(checkpoint)
    if not is_sharded(checkpoint):
        raise FileNotFoundError(f"{checkpoint}: not a sharded checkpoint (no {DCP_METADATA})")
    reader = dcp.FileSystemReader(checkpoint)
    want = f"model.{prefix}"
    sd = {k: torch.empty(m.size, dtype=m.properties.dtype)
          for k, m in reader.read_metadata().state_dict_metadata.items()
          if k.startswith(want) and isinstance(m, TensorStorageMetadata)}
    if not sd:
        raise FileNotFoundError(f"{checkpoint}: the checkpoint holds no model tensors named {prefix}*")
    dcp_load(sd, checkpoint, reader)
    return save_weights({k[len(want):]: v for k, v in sd.items()}, dest, metadata)


def _publish(tmp: Path, final: Path, root: Path, info: DistInfo, keep: int) -> Path:
    """Once every process has written its part into `tmp`: move it into place as `final`, point `latest` at
    it, and drop all but the newest `keep` checkpoints."""
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
