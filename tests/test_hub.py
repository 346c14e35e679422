"""`sapiens2.load`: where files are found, and every way a bad file or name is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import sapiens2
from sapiens2.hub import resolve
from sapiens2.models import BackboneConfig, build_model
from tests.conftest import official_layout, write_sparse_safetensors

TINY = BackboneConfig(embed_dim=32, depth=3, num_heads=2, full_attention_first=1, full_attention_last=1)


@pytest.fixture
def tiny_file(tmp_path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model(TINY, "pretrain").eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    path = tmp_path / "tiny.safetensors"
    save_file(model.state_dict(), path)
    return path, model


def test_round_trip_gives_the_same_network(tiny_file):
    path, model = tiny_file
    loaded = sapiens2.load(path)
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not loaded.training
    assert loaded.config.kv_heads(1) == 1 and loaded.config.kv_heads(0) == 2


def test_dtype_is_converted_tensor_by_tensor_but_rope_periods_stay_bf16(tiny_file):
    path, _ = tiny_file
    model = sapiens2.load(path, dtype=torch.float16)
    assert model.blocks[0].attn.wq.weight.dtype == torch.float16
    assert model.rope_embed.periods.dtype == torch.bfloat16


def test_bf16_file_loads_as_float32_by_default(tiny_file, tmp_path):
    path, model = tiny_file
    bf16 = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    save_file(bf16, tmp_path / "bf16.safetensors")
    loaded = sapiens2.load(tmp_path / "bf16.safetensors")
    assert loaded.cls_token.dtype == torch.float32
    assert torch.equal(loaded.cls_token, bf16["cls_token"].float())


def test_missing_rope_periods_are_regenerated(tiny_file, tmp_path):
    path, model = tiny_file
    state = {k: v for k, v in model.state_dict().items() if k != "rope_embed.periods"}
    save_file(state, tmp_path / "noperiods.safetensors")
    loaded = sapiens2.load(tmp_path / "noperiods.safetensors")
    assert torch.equal(loaded.rope_embed.periods, model.rope_embed.periods)


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("these are not weights, just some text that is long enough")
    with pytest.raises(sapiens2.CheckpointError, match=r"notes\.safetensors: not a safetensors file"):
        sapiens2.load(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.touch()
    with pytest.raises(sapiens2.CheckpointError, match="only 0 bytes"):
        sapiens2.load(path)


def test_truncated_file(tiny_file, tmp_path):
    path, _ = tiny_file
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size - 100])
    with pytest.raises(sapiens2.CheckpointError, match=r"cut\.safetensors: truncated: tensor .*\(the download may be incomplete\)"):
        sapiens2.load(cut)


def test_truncated_header(tiny_file, tmp_path):
    path, _ = tiny_file
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:50])
    with pytest.raises(sapiens2.CheckpointError, match="header length"):
        sapiens2.load(cut)


def test_pickle_refused_without_opt_in(tiny_file, tmp_path):
    _, model = tiny_file
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    with pytest.raises(sapiens2.UnsafeCheckpointError, match="pickle checkpoint.*allow_pickle=True"):
        sapiens2.load(path)
    loaded = sapiens2.load(path, allow_pickle=True)
    assert torch.equal(loaded.cls_token, model.cls_token)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_pickle_with_code_is_refused_even_with_opt_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": {"x": _Exploit()}}, tmp_path / "evil.pth")
    with pytest.raises(sapiens2.UnsafeCheckpointError, match=r"refusing to load global '(posix|os)\.system'"):
        sapiens2.load(tmp_path / "evil.pth", allow_pickle=True)
    assert not (tmp_path / "pwned.txt").exists()


def test_unknown_name_suggests_close_ones():
    with pytest.raises(sapiens2.UnknownModelError, match="Did you mean sapiens2-seg-0.4b"):
        sapiens2.load("sapiens2-seg-04b")


def test_missing_local_path_is_a_plain_not_found(tmp_path):
    with pytest.raises(sapiens2.CheckpointNotFoundError, match="no such checkpoint file"):
        sapiens2.load(tmp_path / "nothing.safetensors")


def test_directory_is_refused(tmp_path):
    with pytest.raises(sapiens2.CheckpointError, match="is a directory"):
        sapiens2.load(tmp_path)


@pytest.fixture
def empty_homes(tmp_path, monkeypatch):
    monkeypatch.setenv("SAPIENS_CHECKPOINT_ROOT", str(tmp_path / "host"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these once, at import.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path


@pytest.mark.parametrize("name", ["sapiens2-pose-0.4b", "facebook/sapiens2-pose-0.4b", "sapiens2_0.4b_pose.safetensors"])
def test_offline_with_empty_cache_says_where_and_how(empty_homes, name):
    with pytest.raises(sapiens2.CheckpointNotFoundError) as e:
        sapiens2.load(name)
    msg = str(e.value)
    assert "sapiens2_0.4b_pose.safetensors" in msg and "facebook/sapiens2-pose-0.4b" in msg
    assert "HF_HUB_OFFLINE=1" in msg and "sapiens2 download sapiens2-pose-0.4b" in msg
    assert str(empty_homes / "host" / "pose" / "sapiens2_0.4b_pose.safetensors") in msg


def test_reference_folder_layout_is_searched_first(shared, empty_homes):
    target = empty_homes / "host" / "pretrain" / "sapiens2_0.1b_pretrain.safetensors"
    target.parent.mkdir(parents=True)
    write_sparse_safetensors(official_layout(shared, "sapiens2_0.1b_pretrain"), target)
    path, info = resolve("sapiens2-pretrain-0.1b")
    assert path == target and info.arch == "0.1b"
    assert sapiens2.load("facebook/sapiens2-pretrain-0.1b", device="meta").config.embed_dim == 768


def test_hub_cache_is_used_offline(shared, empty_homes):
    snapshot = empty_homes / "hf" / "models--facebook--sapiens2-seg-0.4b" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (empty_homes / "hf" / "models--facebook--sapiens2-seg-0.4b" / "refs").mkdir()
    (empty_homes / "hf" / "models--facebook--sapiens2-seg-0.4b" / "refs" / "main").write_text("abc123")
    write_sparse_safetensors(official_layout(shared, "sapiens2_0.4b_seg"), snapshot / "sapiens2_0.4b_seg.safetensors")
    model = sapiens2.load("sapiens2-seg-0.4b", device="meta")
    assert model.task == "seg"
