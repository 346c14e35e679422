"""ONNX export: every task network and the detector match PyTorch in onnxruntime; bf16 RoPE is preserved."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from sapiens2.checkpoint import CheckpointError
from sapiens2.export import export_onnx, load_exported
from sapiens2.export.adapter import flatten
from sapiens2.export.bf16 import emulate_bfloat16
from sapiens2.models import BackboneConfig, build_model
from tests.export.conftest import input_size, tiny_network

FP32_TOL = 1e-4  # max abs difference, fp32 file vs the PyTorch network
FP16_REL = 1e-2  # relative L2 error of an fp16 file (half-precision weights and arithmetic) vs fp32 PyTorch

FAST = ["seg", "pose"]  # exporting takes seconds per tiny network: the rest run with SAPIENS2_SLOW_TESTS=1
SLOW = ["pointmap", "detect", "normal", "albedo", "matting", "pretrain"]


def _flat(outputs) -> list[torch.Tensor]:
    return flatten(outputs)[0]


def _compare(task: str, path, batch: int = 1, tol: float = FP32_TOL) -> None:
    net = tiny_network(task)
    x = torch.randn(batch, 3, *input_size(task), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = _flat(net(x)), _flat(load_exported(path)(x))
    assert [t.shape for t in got] == [t.shape for t in want]
    for w, g in zip(want, got):
        assert (g - w).abs().max().item() <= tol


@pytest.mark.parametrize("task", FAST + [pytest.param(t, marks=pytest.mark.slow) for t in SLOW])
def test_fp32_onnx_matches_pytorch(exports, task):
    _compare(task, exports.get(task, dynamic=task == "seg"))


def test_dynamic_batch_runs_any_batch(exports):
    path = exports.get("seg", dynamic=True)
    _compare("seg", path, batch=3)
    assert load_exported(path).info.batch is None


def test_a_fixed_batch_file_takes_a_batch_one_image_at_a_time(exports):
    assert load_exported(exports.get("pose")).info.batch == 1
    _compare("pose", exports.get("pose"), batch=2)


def test_fp16_onnx_is_within_its_bound(exports):
    net = tiny_network("seg")
    x = torch.randn(1, 3, *input_size("seg"), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = net(x), load_exported(exports.get("seg", dtype="fp16"))(x)
    assert got.dtype == torch.float32  # half inside the graph, float32 at its edges
    assert ((got - want).norm() / want.norm()).item() <= FP16_REL
    weights = onnx.load(str(exports.get("seg", dtype="fp16"))).graph.initializer
    assert any(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)


def test_bf16_rope_is_preserved_in_the_optimized_graph(tmp_path):
    # LayerScale 1 makes attention (where RoPE acts) matter; then bf16 and fp32 RoPE differ visibly.
    cfg = BackboneConfig(embed_dim=64, depth=2, num_heads=2, layer_scale=1.0, full_attention_first=1,
                         full_attention_last=1)
    torch.manual_seed(0)
    net = build_model(cfg, "pretrain").eval()
    fp32_rope = build_model(cfg, "pretrain", rope_dtype=torch.float32).eval()
    fp32_rope.load_state_dict(net.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want, other = net(x), fp32_rope(x)
        got = load_exported(export_onnx(net, tmp_path / "b.onnx", (64, 64)))(x)  # optimize=True, the default
    rope_effect = (other - want).abs().max().item()
    assert rope_effect > 1e-3
    assert (got - want).abs().max().item() < rope_effect / 20
    assert (got - want).abs().max().item() <= FP32_TOL


def test_no_bfloat16_arithmetic_is_left_in_the_graph(exports):
    model = onnx.load(str(exports.get("seg", dynamic=True)))
    inferred = onnx.shape_inference.infer_shapes(model).graph
    bf16 = {v.name for v in inferred.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.BFLOAT16}
    assert bf16  # the rounding steps are there ...
    for node in model.graph.node:  # ... but only Casts produce bfloat16 values
        if any(o in bf16 for o in node.output):
            assert node.op_type == "Cast"


def test_emulate_bfloat16_leaves_a_float_graph_alone():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Neg", ["x"], ["y"])], "g", [x], [y])
    model = onnx.helper.make_model(graph)
    before = model.SerializeToString()
    assert emulate_bfloat16(model).SerializeToString() == before


def test_the_file_says_what_the_predictors_need(exports):
    meta = {p.key: p.value for p in onnx.load(str(exports.get("pose"))).metadata_props}
    info = json.loads(meta["sapiens2"])
    assert info["task"] == "pose" and info["num_keypoints"] == 17 and info["input_size"] == [64, 48]
    net = load_exported(exports.get("seg", dynamic=True))
    assert net.info.outputs == ["logits"] and [i.name for i in net.session.get_inputs()] == ["image"]


@pytest.mark.slow
def test_the_detector_file_keeps_its_strides_and_levels(exports):
    net = load_exported(exports.get("detect"))
    assert net.strides == (8, 16, 32) and net.info.outputs == [f"{k}_s{s}" for k in ("cls", "box") for s in (8, 16, 32)]
    cls, box = net(torch.zeros(1, 3, *input_size("detect")))
    assert isinstance(cls, list) and len(cls) == len(box) == 3


def test_a_wrong_input_size_names_the_size_to_use(exports):
    net = load_exported(exports.get("seg", dynamic=True))
    with pytest.raises(ValueError, match=r"exported for 64x48 inputs.*input_size=\(64, 48\)"):
        net(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        net(torch.zeros(3, 64, 48))


def test_bad_files_and_names_are_refused(tmp_path, exports):
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_onnx(tiny_network("seg"), tmp_path / "seg.bin", input_size("seg"))
    with pytest.raises(ValueError, match="multiples of 16"):
        export_onnx(tiny_network("seg"), tmp_path / "seg.onnx", (60, 48))
    with pytest.raises(ValueError, match="export dtype"):
        export_onnx(tiny_network("seg"), tmp_path / "seg.onnx", input_size("seg"), dtype="bf16")
    with pytest.raises(ValueError, match="neither a Sapiens network"):
        export_onnx(torch.nn.Conv2d(3, 3, 1), tmp_path / "c.onnx", (16, 16))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="junk.onnx: onnxruntime cannot load it"):
        load_exported(tmp_path / "junk.onnx")
    with pytest.raises(FileNotFoundError, match="no such exported model"):
        load_exported(tmp_path / "missing.onnx")


def test_a_foreign_onnx_file_is_not_taken_for_a_sapiens2_export(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 16, 16])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 16, 16])
    model = onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Neg", ["x"], ["y"])], "g", [x], [y]),
                                   opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "other.onnx"))
    with pytest.raises(CheckpointError, match="not a sapiens2 export"):
        load_exported(tmp_path / "other.onnx")


def test_the_users_network_is_left_as_it_was(exports):
    net = exports.network("seg")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    exports.get("seg", dtype="fp16")
    assert type(net.backbone.rope_embed).__name__ == "RopePositionEmbedding"
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
    assert np.isfinite(net(torch.zeros(1, 3, *input_size("seg"))).detach().numpy()).all()
