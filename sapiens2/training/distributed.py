"""Process groups and model wrapping: torchrun environment detection, DDP, FSDP and hybrid-sharded FSDP (PyTorch's
`fully_shard`, one unit per transformer block plus the root, over a 1-D or 2-D device mesh). Task-free.

Parallelism, by `parallel`:
- `ddp`: every process holds the whole model, gradients are all-reduced;
- `fsdp`: parameters, gradients and optimizer state sharded over all processes (mesh `(world,)`);
- `hsdp`: sharded within groups of `shard_size` processes (default: the processes of one node,
  LOCAL_WORLD_SIZE) and replicated across the groups (mesh `(world / shard_size, shard_size)`): the
  all-gathers stay on a node's fast links, only gradient all-reduces cross nodes.

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
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
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


PARALLEL_MODES = ("none", "ddp", "fsdp", "hsdp")


def choose_parallel(mode: str, info: DistInfo) -> str:
    """'auto' -> 'ddp' when several processes run, else 'none'; any mode in a single process -> 'none' (so one
    config runs alone, on one node and on many)."""
    if mode == "auto":
        return "ddp" if info.distributed else "none"
    if mode not in PARALLEL_MODES:
        raise ValueError(f"unknown parallel mode {mode!r}; expected auto, {', '.join(PARALLEL_MODES)}")
    return mode if info.distributed else "none"


def shard_mesh(mode: str, info: DistInfo, shard_size: int = 0) -> DeviceMesh:
    """The device mesh `fully_shard` uses: `(world,)` for fsdp, `(replicate, shard)` for hsdp, where `shard_size`
    0 means the processes of one node (torchrun's LOCAL_WORLD_SIZE)."""
    if mode == "fsdp":
        return init_device_mesh(info.device.type, (info.world_size,), mesh_dim_names=("shard",))
    if mode != "hsdp":
        raise ValueError(f"no shard mesh for parallel mode {mode!r}")
    shard = shard_size or int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
    if shard < 1 or info.world_size % shard:
        raise ValueError(f"hsdp: the shard group size {shard} must divide the {info.world_size} processes")
    return init_device_mesh(info.device.type, (info.world_size // shard, shard),
                            mesh_dim_names=("replicate", "shard"))


def compile_blocks(blocks: list[nn.Module]) -> None:
    """`torch.compile` each transformer block in place (before wrapping): same-shaped blocks share one compiled
    graph, and FSDP's per-block hooks stay outside the compiled code."""
    for block in blocks:
        block.compile()


def wrap_model(model: nn.Module, mode: str, info: DistInfo, shard_modules: list[nn.Module] | None = None,
               shard_size: int = 0) -> nn.Module:
    """DDP, FSDP or HSDP (`fully_shard` on each of `shard_modules`, typically the backbone blocks, then on the
    root, over `shard_mesh`), or the model itself ('none'). The model must already be on `info.device`."""
    if mode == "none":
        return model
    if mode == "ddp":
        ids = [info.device.index] if info.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if mode in ("fsdp", "hsdp"):
        mesh = shard_mesh(mode, info, shard_size)
        for module in shard_modules or []:
            fully_shard(module, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    raise ValueError(f"unknown parallel mode {mode!r}; expected {', '.join(PARALLEL_MODES)}")


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
