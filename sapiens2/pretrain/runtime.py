"""Process-level plumbing of a pretraining run: torchrun / single process, device, wrapping, atomic files.

A small interface on purpose (the fine-tuning package grows the general one): `Runtime.start` reads
the torchrun environment, initialises the process group (NCCL on CUDA, gloo on CPU) and picks the
device; `wrap_student` applies DDP or FSDP2 `fully_shard`; `atomic_write` never leaves half a file.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    parallel: str  # "none", "ddp" or "fsdp"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, parallel: str = "auto") -> Runtime:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available()
        device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
        if parallel == "auto":
            parallel = "ddp" if world > 1 else "none"
        if parallel != "none" and world == 1 and not dist.is_initialized():
            # DDP / FSDP need a process group even alone (a one-GPU FSDP smoke run, say).
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(_free_port()))
            dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)
        return cls(rank, world, local_rank, device, parallel)

    def barrier(self) -> None:
        if dist.is_initialized():
            dist.barrier()

    def shutdown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def all_mean(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        """Scalars averaged over processes (one collective), as floats."""
        names = sorted(values)
        t = torch.stack([values[k].detach().float().reshape(()) for k in names]).to(self.device)
        if dist.is_initialized() and self.world_size > 1:
            dist.all_reduce(t)
            t /= self.world_size
        return dict(zip(names, t.tolist()))


def wrap_student(student: nn.Module, teacher: nn.Module, rt: Runtime, bf16: bool) -> nn.Module:
    """The module to call for the student forward. DDP wraps the student (the teacher needs no
    gradients, hence no wrapper); FSDP shards every transformer block and then the whole of both, the
    teacher with the same layout so the EMA update is shard-to-shard."""
    if rt.parallel == "none":
        return student
    if rt.parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(student, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if rt.parallel == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # The decoder's Linear returns a view of its matmul; nothing here modifies outputs in place.
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")

        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
        kwargs = {"mp_policy": mp} if mp is not None else {}
        for net in (student, teacher):
            for block in net.backbone.blocks:
                fully_shard(block, **kwargs)
            # The teacher has no backward to reshard its root, so reshard it right after its forward.
            fully_shard(net, reshard_after_forward=True, **kwargs)
        return student
    raise ValueError(f"unknown parallel mode {rt.parallel!r}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, fsync it, and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes it private; give it the usual mode
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
