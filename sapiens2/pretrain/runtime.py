"""Process-level plumbing of a pretraining run: processes, device, wrapping, atomic files.

`Runtime.start` joins torchrun's process group through `sapiens2.train.distributed`. `wrap_student`
is pretraining's own: DDP on the student only, or FSDP2 on student *and* teacher with the same layout
(so the EMA update is shard to shard). `atomic_write` never leaves half a file.
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
        """Join the torchrun process group, if any, and pick the device (`sapiens2.train.distributed`).
        'auto' means DDP under torchrun; DDP / FSDP asked for in a single process run plain."""
        from sapiens2.train.distributed import choose_parallel, init_distributed

        info = init_distributed()
        return cls(info.rank, info.world_size, info.local_rank, info.device, choose_parallel(parallel, info))

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
