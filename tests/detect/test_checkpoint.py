"""Reading detector checkpoints: mmengine-style pickles read safely, safetensors conversion, clear errors."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sapiens2.detect.checkpoint import (
    DetectorCheckpointError,
    UnsafeCheckpointError,
    convert_detector_checkpoint,
    load_detector,
    read_detector_state_dict,
    read_pickle_checkpoint,
)
from sapiens2.detect.rtmdet import RTMDet
from tests.detect.conftest import SMALL_M


@pytest.fixture
def fake_mmengine(monkeypatch):
    """An importable stand-in for mmengine's HistoryBuffer so that a test can pickle one."""

    class HistoryBuffer:
        def __init__(self) -> None:
            self._log_history = np.array([0.5, 0.25])
            self._count_history = np.array([1, 2])
            self.max_length = 1000000

    names = ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer")
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    HistoryBuffer.__module__, HistoryBuffer.__qualname__ = names[-1], "HistoryBuffer"
    sys.modules[names[-1]].HistoryBuffer = HistoryBuffer
    return HistoryBuffer


def _mmengine_checkpoint(state: dict, history_buffer: type | None = None) -> dict:
    meta = {
        "epoch": 100, "iter": np.int64(123456), "seed": np.int32(21), "lr": np.float64(4e-4),
        "loss": np.float32(0.75), "flag": np.bool_(True), "mmdet_version": "3.0.0rc5",
        "dataset_meta": {"classes": ("person",), "palette": [(220, 20, 60)]},
        "hook_msgs": {"best_score": np.array(0.5), "history": np.arange(6, dtype=np.float32).reshape(2, 3)},
        "env_info": "sys.platform: linux\nPython: 3.8",
    }
    ckpt = {"meta": meta, "state_dict": state}
    if history_buffer is not None:
        ckpt["message_hub"] = {"log_scalars": {"train/loss": history_buffer()}}
    return ckpt


@pytest.fixture
def state(small_model: RTMDet) -> dict:
    return small_model.state_dict()


@pytest.fixture
def pth(tmp_path: Path, state: dict, fake_mmengine) -> Path:
    path = tmp_path / "rtmdet_m.pth"
    torch.save(_mmengine_checkpoint(state, fake_mmengine), path)
    return path


# ----------------------------------------------------------------------------- the restricted unpickler


def test_reads_a_synthetic_mmengine_checkpoint_with_numpy_meta(pth: Path, state: dict):
    ckpt = read_pickle_checkpoint(pth)
    meta = ckpt["meta"]
    assert meta["iter"] == 123456 and isinstance(meta["iter"], np.int64)
    assert meta["loss"] == np.float32(0.75) and meta["flag"]
    assert meta["dataset_meta"]["classes"] == ("person",)
    np.testing.assert_array_equal(meta["hook_msgs"]["history"], np.arange(6, dtype=np.float32).reshape(2, 3))
    # mmengine's own classes come back as inert placeholders holding their data.
    buf = ckpt["message_hub"]["log_scalars"]["train/loss"]
    assert "mmengine.logging.history_buffer.HistoryBuffer" in repr(buf)
    np.testing.assert_array_equal(buf.state["_log_history"], [0.5, 0.25])
    assert ckpt["state_dict"].keys() == state.keys()
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in state.items())


def test_reads_numpy_1_style_names(tmp_path: Path, pth: Path):
    # Files written under numpy 1 name numpy.core.multiarray instead of numpy 2's numpy._core.multiarray.
    old = tmp_path / "numpy1.pth"
    with zipfile.ZipFile(pth) as src, zipfile.ZipFile(old, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            dst.writestr(item, data)
    assert read_pickle_checkpoint(old)["meta"]["lr"] == np.float64(4e-4)


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Evals:
    def __reduce__(self):
        return eval, ("__import__('os').getpid()",)


class _Popen:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return subprocess.Popen, (["touch", str(self.marker)],)


@pytest.mark.parametrize("payload", [_RunsShell, _Popen, _Evals])
def test_malicious_reduce_is_refused_without_running(tmp_path: Path, state: dict, payload):
    marker = tmp_path / "pwned"
    evil = payload(marker) if payload is not _Evals else payload()
    path = tmp_path / "evil.pth"
    torch.save({"meta": {"note": evil}, "state_dict": state}, path)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load global") as info:
        read_pickle_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError):
        load_detector(path)
    assert not marker.exists()


def test_bare_pickle_is_refused_unread(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_RunsShell(marker), protocol=2))
    with pytest.raises(DetectorCheckpointError, match="not a torch.save zip"):
        read_pickle_checkpoint(path)
    assert not marker.exists()


# ----------------------------------------------------------------------------- safetensors conversion


def test_conversion_round_trip(pth: Path, state: dict):
    out = convert_detector_checkpoint(pth)
    assert out == pth.with_suffix(".safetensors")
    loaded = load_file(out)
    assert loaded.keys() == state.keys()
    for k, v in state.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v), k
    assert not list(pth.parent.glob(".*.tmp"))  # no temporary left behind


def test_loader_prefers_fresh_safetensors_beside_the_pth(pth: Path, state: dict):
    sibling = convert_detector_checkpoint(pth, pth.with_suffix(".safetensors"))
    _, source = read_detector_state_dict(pth)
    assert source == sibling
    # A conversion older than the .pth is stale and ignored.
    stamp = pth.stat().st_mtime
    os.utime(sibling, (stamp - 100, stamp - 100))
    _, source = read_detector_state_dict(pth)
    assert source == pth


def test_load_detector_from_pth_and_safetensors_agree(pth: Path, small_model: RTMDet):
    x = torch.randn(1, 3, 64, 64)
    from_pth = load_detector(pth)
    from_st = load_detector(convert_detector_checkpoint(pth, pth.parent / "other.safetensors"))
    with torch.inference_mode():
        ref = small_model(x)
        for model in (from_pth, from_st):
            out = model(x)
            for a, b in zip(out[0] + out[1], ref[0] + ref[1]):
                assert torch.equal(a, b)
    assert not from_pth.training
    # Loading kept the head's weight sharing (one tensor, not three copies).
    head = from_st.bbox_head
    assert head.cls_convs[2][0].conv.weight is head.cls_convs[0][0].conv.weight


# ----------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_empty_file(tmp_path: Path, suffix: str):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    with pytest.raises(DetectorCheckpointError, match="empty file") as info:
        load_detector(path)
    assert str(path) in str(info.value)


def test_truncated_pth(tmp_path: Path, pth: Path):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(pth.read_bytes()[: pth.stat().st_size // 2])
    with pytest.raises(DetectorCheckpointError, match="cut.pth"):
        load_detector(cut)


def test_truncated_safetensors(tmp_path: Path, pth: Path):
    full = convert_detector_checkpoint(pth)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size - 1000])
    with pytest.raises(DetectorCheckpointError, match="truncated"):
        load_detector(cut)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_random_bytes(tmp_path: Path, suffix: str):
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(DetectorCheckpointError, match="noise"):
        load_detector(path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_detector(tmp_path / "nope.pth")


def test_not_a_state_dict(tmp_path: Path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(DetectorCheckpointError, match="not a checkpoint with a 'state_dict'"):
        load_detector(path)


def test_wrong_keys_are_listed(tmp_path: Path, state: dict):
    bad = dict(state)
    del bad["backbone.stem.0.conv.weight"]
    bad["backbone.extra.weight"] = torch.zeros(1)
    bad["neck.out_convs.1.bn.bias"] = torch.zeros(7)
    path = tmp_path / "wrong.safetensors"
    save_file({k: v.clone() for k, v in bad.items()}, str(path))
    with pytest.raises(DetectorCheckpointError) as info:
        load_detector(path, config=SMALL_M)
    msg = str(info.value)
    assert str(path) in msg
    assert "1 missing keys: backbone.stem.0.conv.weight" in msg
    assert "1 unexpected keys: backbone.extra.weight" in msg
    assert "neck.out_convs.1.bn.bias: file (7,) vs model (32,)" in msg


def test_not_an_rtmdet_state_dict(tmp_path: Path):
    path = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(3)}, str(path))
    with pytest.raises(DetectorCheckpointError, match="not an RTMDet state dict"):
        load_detector(path)


def test_shared_head_convs_must_agree(tmp_path: Path, state: dict):
    bad = {k: v.clone() for k, v in state.items()}
    bad["bbox_head.reg_convs.2.1.conv.weight"] += 1
    path = tmp_path / "unshared.safetensors"
    save_file(bad, str(path))
    with pytest.raises(DetectorCheckpointError, match="shared across levels"):
        load_detector(path)


def test_a_program_holding_detector_weights_loads_only_with_the_opt_in(tmp_path: Path, small_model: RTMDet,
                                                                       state: dict):
    from sapiens2.checkpoint import ProgramCheckpointError

    class Holder(torch.nn.Module):  # the detector's modules in a program (tracing the detector itself is slow)
        def __init__(self, det: RTMDet) -> None:
            super().__init__()
            for name, child in det.named_children():
                self.add_module(name, child)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    path = tmp_path / "rtmdet_m.pth"
    torch.jit.trace(Holder(small_model), torch.randn(1), check_trace=False).save(str(path))
    with pytest.raises(ProgramCheckpointError, match="allow_code=True") as info:
        load_detector(path)
    assert str(path) in str(info.value)
    model = load_detector(path, allow_code=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
