"""Choosing the parallel mode and its mesh, and compiling blocks: what can be checked in one process."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sapiens2.training.distributed import DistInfo, choose_parallel, compile_blocks, shard_mesh


def test_one_config_runs_on_one_process_and_many():
    one, two = DistInfo(0, 1), DistInfo(0, 2)
    for mode in ("ddp", "fsdp", "hsdp", "none"):
        assert choose_parallel(mode, one) == "none"
        assert choose_parallel(mode, two) == mode
    assert choose_parallel("auto", two) == "ddp" and choose_parallel("auto", one) == "none"
    with pytest.raises(ValueError, match="unknown parallel mode 'zero3'"):
        choose_parallel("zero3", two)


def test_hsdp_shard_groups_must_divide_the_processes(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match="shard group size 4 must divide the 6 processes"):
        shard_mesh("hsdp", DistInfo(0, 6), shard_size=4)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # default: one node's processes
    with pytest.raises(ValueError, match="shard group size 4"):
        shard_mesh("hsdp", DistInfo(0, 6))
    with pytest.raises(ValueError, match="no shard mesh"):
        shard_mesh("ddp", DistInfo(0, 2))


def test_compile_blocks_compiles_each_block_in_place():
    blocks = [nn.Linear(4, 4), nn.Linear(4, 4)]
    compile_blocks(blocks)
    assert all(b._compiled_call_impl is not None for b in blocks)
    assert isinstance(blocks[0].weight, torch.nn.Parameter)  # still the same module, not a wrapper
