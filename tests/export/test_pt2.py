"""torch.export programs: round trips, and loading one is an explicit opt-in (it carries code)."""

from __future__ import annotations

import pytest
import torch

from sapiens2.checkpoint import CheckpointError, UnsafeCheckpointError
from sapiens2.export import ProgramNetwork, export_pt2, load_exported
from sapiens2.export.adapter import flatten
from sapiens2.tasks.models import load_network
from tests.export.conftest import input_size, tiny_network


@pytest.mark.parametrize("task", ["seg", "pose", pytest.param("pointmap", marks=pytest.mark.slow)])
def test_a_program_round_trips(exports, task):
    net = tiny_network(task)
    x = torch.randn(2, 3, *input_size(task))
    program = load_exported(exports.get(task, fmt="pt2"), allow_code=True)
    assert isinstance(program, ProgramNetwork) and program.task == task
    with torch.no_grad():
        want, got = flatten(net(x))[0], flatten(program(x))[0]
    for w, g in zip(want, got, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5)


def test_a_dynamic_batch_program_takes_any_batch(exports):
    program = load_exported(exports.get("seg", fmt="pt2", dynamic=True), allow_code=True)
    assert program.info.batch is None
    assert program(torch.zeros(3, 3, *input_size("seg"))).shape[0] == 3


def test_loading_a_program_needs_the_code_opt_in(exports):
    path = exports.get("seg", fmt="pt2")
    with pytest.raises(UnsafeCheckpointError, match="carries code.*allow_code=True"):
        load_exported(path)
    with pytest.raises(UnsafeCheckpointError, match="allow_code=True"):
        load_network("seg", path)
    assert load_network("seg", path, allow_code=True).task == "seg"


def test_a_program_of_another_task_is_refused(exports):
    with pytest.raises(ValueError, match="holds a 'seg' model, not 'normal'"):
        load_network("normal", exports.get("seg", fmt="pt2"), allow_code=True)


def test_int8_programs_are_refused_with_the_way_out(tmp_path):
    with pytest.raises(ValueError, match="export int8 as ONNX"):
        export_pt2(tiny_network("seg"), tmp_path / "s.pt2", input_size("seg"), dtype="int8")
    with pytest.raises(ValueError, match=r"\.pt2"):
        export_pt2(tiny_network("seg"), tmp_path / "s.onnx", input_size("seg"))


def test_a_program_without_sapiens2_info_or_not_a_program_is_refused(tmp_path):
    plain = torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),))
    torch.export.save(plain, str(tmp_path / "plain.pt2"))
    with pytest.raises(CheckpointError, match="without sapiens2.json"):
        load_exported(tmp_path / "plain.pt2", allow_code=True)
    (tmp_path / "junk.pt2").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a safetensors file, PyTorch archive or pickle"):
        load_exported(tmp_path / "junk.pt2", allow_code=True)
