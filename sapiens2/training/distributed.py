"""Process groups and model wrapping: torchrun environment detection, DDP, and FSDP (PyTorch's
`fully_shard`, one unit per transformer block plus the root). Task-free.

Launched plainly (`python -m sapiens2.train ...`) everything is one process and no process group is made;
under `torchrun` the group uses NCCL on GPUs and gloo on CPU, so the same config runs either way.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def parse_device(name: str) -> torch.device:
    """`cpu`, `cuda`, `cuda:N` (or another device type torch knows) as a torch.device; a ValueError naming the
    problem for an unknown name or CUDA asked for where there is none."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; expected cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name!r}: CUDA is not available on this machine")
    return dev


def init_distributed(device: str | None = None, timeout_s: float = 1800) -> DistInfo:
    """Join the torchrun process group if there is one, and pick this process's device.

    `device`: None picks `cuda:<LOCAL_RANK>` when CUDA is available, else CPU.
    """
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device is None:
        dev = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = parse_device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device(f"cuda:{local}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank, world, local, dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """The mean of each value over all processes (unchanged in a single process)."""
    if not dist.is_initialized() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def choose_parallel(mode: str, info: DistInfo) -> str:
    """'auto' -> 'ddp' when several processes run, else 'none'."""
    if mode == "auto":
        return "ddp" if info.distributed else "none"
    if mode in ("ddp", "fsdp") and not info.distributed:
        return "none"
    return mode


def wrap_model(model: nn.Module, mode: str, info: DistInfo, shard_modules: list[nn.Module] | None = None) -> nn.Module:
    """DDP, FSDP (`fully_shard` on each of `shard_modules`, typically the backbone blocks, then on the root),
    or the model itself ('none'). The model must already be on `info.device`."""
    if mode == "none":
        return model
    if mode == "ddp":
        ids = [info.device.index] if info.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if mode == "fsdp":
        mesh = init_device_mesh(info.device.type, (info.world_size,))
        for module in shard_modules or []:
            fully_shard(module, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    raise ValueError(f"unknown parallel mode {mode!r}; expected none, ddp or fsdp")


@contextlib.contextmanager
def no_gradient_sync(model: nn.Module) -> Iterator[None]:
    """Backward passes inside keep their gradients local (DDP `no_sync`, FSDP2 `set_requires_gradient_sync`):
    the micro-batches of an accumulated step but the last need no all-reduce."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # an FSDP2 module
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (FSDP2 shards in place, so its model is already the module)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
