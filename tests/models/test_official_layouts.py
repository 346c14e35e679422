"""Every official checkpoint layout loads strictly; a damaged one fails with a readable message."""

from __future__ import annotations

import json

import pytest
import torch

import sapiens2
from sapiens2.zoo import MODELS, find_model
from tests.conftest import SHARED, official_layout, write_sparse_safetensors

STEMS = sorted(p.stem for p in (SHARED / "spec" / "keys").glob("sapiens2_*.json")) if SHARED.is_dir() else []
# Parameter totals from the spec (module counts), in millions.
PARAMS_M = {
    "sapiens2_0.1b_pretrain": 113.99, "sapiens2_0.4b_pretrain": 395.45, "sapiens2_0.8b_pretrain": 814.28,
    "sapiens2_1b_pretrain": 1455.47, "sapiens2_5b_pretrain": 5066.90, "sapiens2_1b_4k_pretrain": 1606.59,
    "sapiens2_0.4b_pose": 425.7, "sapiens2_0.4b_seg": 406.6, "sapiens2_0.4b_normal": 453.4,
    "sapiens2_0.4b_pointmap": 528.7, "sapiens2_1b_pose": 1520, "sapiens2_5b_pointmap": 5348,
}


@pytest.mark.parametrize("stem", STEMS)
def test_official_layout_loads_strictly(shared, tmp_path, stem):
    path = write_sparse_safetensors(official_layout(shared, stem), tmp_path / f"{stem}.safetensors")
    model = sapiens2.load(path, device="meta")
    info = find_model(path.name)
    assert info is not None and info.filename == path.name
    assert set(model.state_dict()) == set(official_layout(shared, stem))
    if stem in PARAMS_M:
        n = sum(p.numel() for p in model.parameters()) / 1e6
        assert n == pytest.approx(PARAMS_M[stem], rel=5e-4)
    assert sapiens2.inspect(path).is_official


def test_every_zoo_model_has_an_official_layout(shared):
    assert {m.filename.removesuffix(".safetensors") for m in MODELS.values() if m.generation == 2 and m.task not in ("detect", "matting")} == set(STEMS)


def test_official_file_really_loads_its_zeros(shared, tmp_path):
    path = write_sparse_safetensors(official_layout(shared, "sapiens2_0.1b_pretrain"), tmp_path / "x.safetensors")
    model = sapiens2.load(path)
    assert model.blocks[3].attn.wq.weight.abs().sum() == 0
    assert model.rope_embed.periods.dtype == torch.bfloat16
    assert model.patch_embed.projection.weight.device.type == "cpu"


def _damaged(shared, tmp_path, stem, edit):
    layout = official_layout(shared, stem)
    edit(layout)
    return write_sparse_safetensors(layout, tmp_path / f"{stem}.safetensors")


def test_removed_key_is_named(shared, tmp_path):
    path = _damaged(shared, tmp_path, "sapiens2_0.4b_pose", lambda l: l.pop("backbone.blocks.11.attn.wv.bias"))
    with pytest.raises(sapiens2.CheckpointMismatchError) as e:
        sapiens2.load(path, device="meta")
    msg = str(e.value)
    assert "1 missing" in msg and "backbone.blocks.11.attn.wv.bias [512]" in msg
    assert str(path) in msg and "sapiens2-pose-0.4b" in msg


def test_renamed_key_is_missing_and_unexpected(shared, tmp_path):
    def rename(layout):
        layout["decode_head.conv_layers.3.weights"] = layout.pop("decode_head.conv_layers.3.weight")

    path = _damaged(shared, tmp_path, "sapiens2_1b_seg", rename)
    with pytest.raises(sapiens2.CheckpointMismatchError) as e:
        sapiens2.load(path, device="meta")
    msg = str(e.value)
    assert "missing" in msg and "decode_head.conv_layers.3.weight [64, 64, 1, 1]" in msg
    assert "unexpected" in msg and "decode_head.conv_layers.3.weights" in msg


def test_reshaped_key_shows_both_shapes(shared, tmp_path):
    def reshape(layout):
        layout["backbone.blocks.2.ffn.w3.weight"] = ([1024, 4000], "float32")

    path = _damaged(shared, tmp_path, "sapiens2_0.4b_normal", reshape)
    with pytest.raises(sapiens2.CheckpointMismatchError) as e:
        sapiens2.load(path, device="meta")
    assert "backbone.blocks.2.ffn.w3.weight: file [1024, 4000], model [1024, 4096]" in str(e.value)


def test_removed_key_in_a_renamed_file_is_still_named(shared, tmp_path):
    layout = official_layout(shared, "sapiens2_0.8b_pretrain")
    layout.pop("blocks.20.attn.wk.weight")
    path = write_sparse_safetensors(layout, tmp_path / "my_finetune.safetensors")
    with pytest.raises(sapiens2.CheckpointMismatchError, match=r"blocks\.20\.attn\.wk\.weight \[640, 1280\]"):
        sapiens2.load(path, device="meta")


def test_other_arch_under_an_official_name(shared, tmp_path):
    path = write_sparse_safetensors(official_layout(shared, "sapiens2_0.8b_pose"), tmp_path / "sapiens2_0.4b_pose.safetensors")
    with pytest.raises(sapiens2.CheckpointMismatchError, match="expected sapiens2-pose-0.4b .* looks like Sapiens2 0.8b pose"):
        sapiens2.load(path, device="meta")


def test_other_task_under_an_official_name(shared, tmp_path):
    path = write_sparse_safetensors(official_layout(shared, "sapiens2_1b_seg"), tmp_path / "sapiens2_1b_normal.safetensors")
    with pytest.raises(sapiens2.CheckpointMismatchError, match="looks like Sapiens2 1b seg model"):
        sapiens2.load(path, device="meta")


def test_pretrain_file_under_a_task_name(shared, tmp_path):
    path = write_sparse_safetensors(official_layout(shared, "sapiens2_1b_pretrain"), tmp_path / "sapiens2_1b_pose.safetensors")
    with pytest.raises(sapiens2.CheckpointMismatchError, match="pretrain backbone"):
        sapiens2.load(path, device="meta")


def test_v1_file_under_a_sapiens2_name_says_which_generation_it_is(shared, tmp_path):
    path = write_sparse_safetensors(official_layout(shared, "sapiens_0.3b_pose17"),
                                    tmp_path / "sapiens2_0.4b_pose.safetensors")
    with pytest.raises(sapiens2.CheckpointMismatchError, match="looks like Sapiens v1 0.3b pose model with 17 keypoints"):
        sapiens2.load(path, device="meta")


def test_detector_checkpoint_is_recognised(shared, tmp_path):
    keys = json.loads((shared / "spec" / "keys_detector" / "rtmdet_m_person.json").read_text())
    layout = {k: (v[0], "float32") for k, v in keys.items() if isinstance(v, list) and v and isinstance(v[0], list)}
    if not layout:
        pytest.skip("detector key file has another format")
    path = write_sparse_safetensors(layout, tmp_path / "rtmdet.safetensors")
    with pytest.raises(sapiens2.CheckpointError, match="not a Sapiens checkpoint"):
        sapiens2.load(path, device="meta")


def test_official_matting_layout_loads_strictly_under_its_name(tmp_path):
    # No key dump exists for the later matting release: build its layout from the official head widths.
    with torch.device("meta"):
        model = sapiens2.build_model("1b", "matting")
    layout = {k: (list(v.shape), "bfloat16" if k.endswith("periods") else "float32") for k, v in model.state_dict().items()}
    path = write_sparse_safetensors(layout, tmp_path / "sapiens2_1b_matting.safetensors")
    loaded = sapiens2.load(path, device="meta")
    assert loaded.task == "matting" and loaded.decode_head.conv_matting.out_channels == 4
    assert sapiens2.inspect(path).describe() == "Sapiens2 1b matting model"
