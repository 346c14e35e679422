"""Process-level plumbing of a pretraining run: processes, device, wrapping.

`Runtime.start` joins torchrun's process group through `sapiens2.training.distributed` (shared with
fine-tuning). `wrap_student` is pretraining's own: DDP on the student only, or FSDP2 on student *and* teacher
with the same layout (so the EMA update is shard to shard).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel

from sapiens2.training.distributed import (
    DistInfo,
    barrier,
    choose_parallel,
    cleanup,
    compile_blocks,
    init_distributed,
    shard_mesh,
)


@dataclass
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    parallel: str  # "none", "ddp", "fsdp" or "hsdp"
    shard_size: int = 0  # hsdp: processes per shard group (0: one node's)

    @property
    def info(self) -> DistInfo:
        return DistInfo(self.rank, self.world_size, self.local_rank, self.device)

    @property
    def sharded(self) -> bool:
        return self.parallel in ("fsdp", "hsdp")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls, parallel: str = "auto", shard_size: int = 0) -> Runtime:
        """Join the torchrun process group, if any, and pick the device (`sapiens2.training.distributed`).
        'auto' means DDP under torchrun; DDP / FSDP / HSDP asked for in a single process run plain."""
        info = init_distributed()
        return cls(info.rank, info.world_size, info.local_rank, info.device, choose_parallel(parallel, info),
                   shard_size)

    def barrier(self) -> None:
        barrier()

    def shutdown(self) -> None:
        cleanup()

    def all_mean(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        """Scalars averaged over processes (one collective), as floats."""
        names = sorted(values)
        t = torch.stack([values[k].detach().float().reshape(()) for k in names]).to(self.device)
        if dist.is_initialized() and self.world_size > 1:
            dist.all_reduce(t)
            t /= self.world_size
        return dict(zip(names, t.tolist()))


def wrap_student(student: nn.Module, teacher: nn.Module, rt: Runtime, bf16: bool, compile: bool = False) -> nn.Module:
    """The module to call for the student forward. DDP wraps the student (the teacher needs no
    gradients, hence no wrapper); FSDP / HSDP shard every transformer block and then the whole of both, the
    teacher with the same layout so the EMA update is shard-to-shard. `compile`: each block compiled first."""
    if compile:
        compile_blocks([*student.backbone.blocks, *teacher.backbone.blocks])
    if rt.parallel == "none":
        return student
    if rt.parallel == "ddp":
        return DistributedDataParallel(student, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if rt.sharded:
        # The decoder's Linear returns a view of its matmul; nothing here modifies outputs in place.
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")

        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
        kwargs = {"mesh": shard_mesh(rt.parallel, rt.info, rt.shard_size)}
        if mp is not None:
            kwargs["mp_policy"] = mp
        for net in (student, teacher):
            for block in net.backbone.blocks:
                fully_shard(block, **kwargs)
            # The teacher has no backward to reshard its root, so reshard it right after its forward.
            fully_shard(net, reshard_after_forward=True, **kwargs)
        return student
    raise ValueError(f"unknown parallel mode {rt.parallel!r}")
