"""What loading trusts: every container is recognised by its bytes, pickles only meet the restricted
unpickler, and a program (TorchScript, torch.export) runs only with the explicit code opt-in."""

from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import sapiens2
from sapiens2.checkpoint import (
    BARE_PICKLE,
    SAFETENSORS,
    TORCH_EXPORT,
    TORCH_ZIP,
    TORCHSCRIPT,
    CorruptCheckpointError,
    ProgramCheckpointError,
    UnknownFormatError,
    detect_format,
)
from sapiens2.cli import main as cli_main
from sapiens2.hub import local_path
from sapiens2.safe_pickle import read_pickle_checkpoint
from sapiens2.weights import convert_to_safetensors, load_program, read_state_dict
from sapiens2.zoo import find_model


class _WritesOnLoad(torch.nn.Module):
    """A module whose scripted `__setstate__` writes 4 bytes to `target` when the archive is loaded."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.w = torch.nn.Parameter(torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w

    @torch.jit.export
    def __getstate__(self) -> tuple[str, torch.Tensor, bool]:
        return (self.target, self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, torch.Tensor, bool]) -> None:
        self.target = state[0]
        self.training = state[2]
        written = torch.from_file(self.target, shared=True, size=4, dtype=torch.uint8)
        written.fill_(65)
        self.w = state[1] + written.sum() * 0  # keeps the write from being optimised away


def write_code_archive(path: Path, marker: Path) -> Path:
    """A TorchScript archive, saved under any name, whose loading writes `marker`."""
    torch.jit.save(torch.jit.script(_WritesOnLoad(str(marker))), str(path))
    return path


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    return write_code_archive(tmp_path / "weights.pth", marker), marker


def test_the_archive_really_runs_code_when_loaded_by_torch(evil):
    path, marker = evil
    torch.jit.load(str(path))
    assert marker.read_bytes() == b"AAAA"  # so every refusal below is a real protection


def _refused(excinfo, path: Path) -> None:
    msg = str(excinfo.value)
    assert str(path) in msg and "allow_code=True" in msg and "--allow-code" in msg and "TorchScript" in msg


@pytest.mark.parametrize("allow_pickle", [False, True])
def test_load_refuses_a_program_named_pth(evil, allow_pickle):
    path, marker = evil
    with pytest.raises(ProgramCheckpointError) as e:
        sapiens2.load(path, allow_pickle=allow_pickle)
    _refused(e, path)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["weights.safetensors", "weights.bin", "weights.ckpt", "weights"])
def test_the_name_does_not_matter(tmp_path, name):
    marker = tmp_path / "pwned"
    path = write_code_archive(tmp_path / name, marker)
    assert detect_format(path) == TORCHSCRIPT
    with pytest.raises(ProgramCheckpointError):
        sapiens2.load(path, allow_pickle=True)
    assert not marker.exists()


def test_inspect_convert_and_the_pickle_reader_refuse_it(evil, tmp_path):
    path, marker = evil
    with pytest.raises(ProgramCheckpointError) as e:
        sapiens2.inspect(path, allow_pickle=True)
    _refused(e, path)
    with pytest.raises(ProgramCheckpointError) as e:
        convert_to_safetensors(path)
    _refused(e, path)
    with pytest.raises(ProgramCheckpointError):
        read_pickle_checkpoint(path)
    with pytest.raises(ProgramCheckpointError):
        read_state_dict(path, allow_pickle=True)
    assert not marker.exists() and not path.with_suffix(".safetensors").exists()


def test_the_cli_refuses_it(evil, capsys):
    path, marker = evil
    assert cli_main(["convert", str(path)]) == 1
    assert cli_main(["inspect", "--allow-pickle", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("allow_code=True") == 2 and str(path) in err
    assert not marker.exists()


def test_training_init_refuses_it(evil, tmp_path):
    from sapiens2.train.network import load_init
    from sapiens2.training.config import ConfigError

    path, marker = evil
    cfg = type("Cfg", (), {"model": type("M", (), {"init": str(path), "allow_pickle": True,
                                                     "rope_dtype": "bfloat16"})()})()
    with pytest.raises(ConfigError, match="not weights to fine-tune") as e:
        load_init(cfg)  # type: ignore[arg-type]
    assert str(path) in str(e.value)
    assert not marker.exists()


def test_the_default_detector_file_is_refused_without_any_flag(tmp_path, monkeypatch):
    from sapiens2.detect import PersonDetector
    from sapiens2.tasks.pose import _default_detector

    monkeypatch.setenv("SAPIENS_CHECKPOINT_ROOT", str(tmp_path / "root"))
    target = local_path(find_model("rtmdet-m-person"))
    target.parent.mkdir(parents=True)
    marker = tmp_path / "pwned"
    write_code_archive(target, marker)
    with pytest.raises(ProgramCheckpointError) as e:
        _default_detector("cpu")
    _refused(e, target)
    with pytest.raises(ProgramCheckpointError):
        PersonDetector.from_file(target)
    assert not marker.exists()


def test_with_the_opt_in_the_program_is_loaded(evil):
    path, marker = evil
    module = sapiens2.load(path, allow_code=True)
    assert marker.read_bytes() == b"AAAA"  # the opt-in means exactly this: its code ran
    assert torch.equal(module(torch.ones(2)), torch.ones(2))
    assert torch.equal(read_state_dict(path, allow_code=True)["w"], torch.ones(2))


def test_load_program_itself_insists_on_the_opt_in(evil):
    path, marker = evil
    with pytest.raises(ProgramCheckpointError):
        load_program(path, allow_code=False)
    assert not marker.exists()


def test_an_export_program_is_refused_then_loaded_with_the_opt_in(tmp_path):
    model = torch.nn.Linear(3, 2).eval()
    path = tmp_path / "linear.pth"
    torch.export.save(torch.export.export(model, (torch.randn(1, 3),)), str(path))
    assert detect_format(path) == TORCH_EXPORT
    with pytest.raises(ProgramCheckpointError, match="torch.export program"):
        read_state_dict(path, allow_pickle=True)
    state = read_state_dict(path, allow_code=True)
    assert torch.equal(state["weight"], model.weight.detach())
    out = convert_to_safetensors(path, tmp_path / "linear.safetensors", allow_code=True)
    assert torch.equal(read_state_dict(out)["bias"], model.bias.detach())


# ----------------------------------------------------------------------------------- recognising formats


def _zip_with(path: Path, source: Path, extra: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        root = src.namelist()[0].split("/")[0]
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        for name, data in extra.items():
            dst.writestr(f"{root}/{name}", data)
    return path


def test_formats_are_told_apart_by_their_bytes(tmp_path):
    save_file({"x": torch.zeros(2)}, tmp_path / "a.pth")
    torch.save({"x": torch.zeros(2)}, tmp_path / "b.safetensors")
    torch.save({"x": torch.zeros(2)}, tmp_path / "c.pth", _use_new_zipfile_serialization=False)
    (tmp_path / "d.pth").write_bytes(b"\x00" * 64)
    with zipfile.ZipFile(tmp_path / "e.pth", "w") as z:
        z.writestr("notes/readme.txt", "hello")
    assert detect_format(tmp_path / "a.pth") == SAFETENSORS
    assert detect_format(tmp_path / "b.safetensors") == TORCH_ZIP
    assert detect_format(tmp_path / "c.pth") == BARE_PICKLE
    with pytest.raises(UnknownFormatError, match=r"d\.pth: not a safetensors file, PyTorch archive or pickle"):
        detect_format(tmp_path / "d.pth")
    with pytest.raises(UnknownFormatError, match="not one written by torch.save"):
        detect_format(tmp_path / "e.pth")
    # And the file is read by what it is, whatever its name says.
    assert torch.equal(read_state_dict(tmp_path / "a.pth")["x"], torch.zeros(2))
    assert torch.equal(read_state_dict(tmp_path / "b.safetensors", allow_pickle=True)["x"], torch.zeros(2))


def test_a_weights_archive_with_a_code_member_counts_as_a_program(tmp_path):
    torch.save({"x": torch.zeros(2)}, tmp_path / "plain.pth")
    mixed = _zip_with(tmp_path / "mixed.pth", tmp_path / "plain.pth", {"constants.pkl": pickle.dumps(())})
    assert detect_format(mixed) == TORCHSCRIPT
    with pytest.raises(ProgramCheckpointError):
        read_state_dict(mixed, allow_pickle=True)


def test_the_legacy_bare_pickle_format_is_refused_unread(tmp_path):
    torch.save({"x": torch.zeros(2)}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(UnknownFormatError, match=r"old\.pth: not a torch.save zip archive but a bare pickle"):
        sapiens2.load(tmp_path / "old.pth", allow_pickle=True)


def test_a_damaged_zip_is_a_clean_error(tmp_path):
    torch.save({"x": torch.zeros(1000)}, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match=r"cut\.pth: a damaged zip archive"):
        read_state_dict(tmp_path / "cut.pth", allow_pickle=True)


# ----------------------------------------------------------------------------------- the archive reader


def test_storages_shared_in_the_file_stay_shared(tmp_path):
    base = torch.arange(6, dtype=torch.float32)
    torch.save({"a": base, "b": base[2:], "c": torch.nn.Parameter(base.view(2, 3))}, tmp_path / "s.pth")
    got = read_pickle_checkpoint(tmp_path / "s.pth")
    assert torch.equal(got["b"], base[2:]) and got["b"].untyped_storage().data_ptr() == got["a"].data_ptr()
    assert isinstance(got["c"], torch.nn.Parameter) and torch.equal(got["c"], base.view(2, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.bool, torch.float16])
def test_every_common_dtype_round_trips(tmp_path, dtype):
    t = (torch.arange(12) % 3).to(dtype).view(3, 4).t()  # non-contiguous too
    torch.save({"t": t}, tmp_path / "d.pth")
    got = read_pickle_checkpoint(tmp_path / "d.pth")["t"]
    assert got.dtype == dtype and got.stride() == t.stride() and torch.equal(got, t)


def test_a_big_endian_archive_is_byte_swapped(tmp_path):
    t = torch.tensor([1.5, -2.25, 3.0])
    torch.save({"t": t}, tmp_path / "little.pth")
    with zipfile.ZipFile(tmp_path / "little.pth") as src, zipfile.ZipFile(tmp_path / "big.pth", "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("/byteorder"):
                data = b"big"
            elif item.filename.endswith("/data/0"):
                data = t.numpy().astype(">f4").tobytes()
            dst.writestr(item.filename, data)
    assert torch.equal(read_pickle_checkpoint(tmp_path / "big.pth")["t"], t)


def _rewrite(path: Path, out: Path, change) -> Path:
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            dst.writestr(item.filename, change(item.filename, src.read(item)))
    return out


def test_a_storage_record_of_the_wrong_size_is_a_clean_error(tmp_path):
    torch.save({"t": torch.zeros(4)}, tmp_path / "ok.pth")
    bad = _rewrite(tmp_path / "ok.pth", tmp_path / "short.pth",
                   lambda name, data: data[:8] if name.endswith("/data/0") else data)
    with pytest.raises(CorruptCheckpointError, match=r"short\.pth: storage record .*data/0 holds 8 bytes; the "
                                                     r"pickle says 16"):
        read_pickle_checkpoint(bad)


def _pickle_calling(module: str, name: str, arg: int) -> bytes:
    """A protocol-2 pickle of `module.name(arg)` (BININT argument), as a hostile file would hold."""
    return (b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"J" + arg.to_bytes(4, "little", signed=True)
            + b"\x85R.")


@pytest.mark.parametrize("call", [("builtins", "bytearray", 2**31 - 1), ("posix", "system", 0),
                                  ("torch", "load", 0), ("torch.jit", "load", 0)])
def test_hostile_pickles_are_refused_before_any_call(tmp_path, call):
    torch.save({"t": torch.zeros(1)}, tmp_path / "ok.pth")
    bad = _rewrite(tmp_path / "ok.pth", tmp_path / "bad.pth",
                   lambda name, data: _pickle_calling(*call) if name.endswith("/data.pkl") else data)
    with pytest.raises(sapiens2.CheckpointError, match=r"bad\.pth: "):
        read_pickle_checkpoint(bad)


def test_a_storage_reference_must_come_from_a_storage_global(tmp_path):
    # persistent id ('storage', 5, '0', 'cpu', 1): an int where the storage type belongs.
    evil = b"\x80\x02(X\x07\x00\x00\x00storageK\x05X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQ."
    torch.save({"t": torch.zeros(1)}, tmp_path / "ok.pth")
    bad = _rewrite(tmp_path / "ok.pth", tmp_path / "bad.pth",
                   lambda name, data: evil if name.endswith("/data.pkl") else data)
    with pytest.raises(CorruptCheckpointError, match="malformed storage reference"):
        read_pickle_checkpoint(bad)


def test_a_view_claiming_more_than_its_storage_is_refused(tmp_path):
    huge = torch.zeros(1).as_strided((1 << 20, 1 << 20), (0, 0))  # a trillion elements over 4 bytes
    torch.save({"w": huge}, tmp_path / "inflated.pth")
    with pytest.raises(CorruptCheckpointError, match=r"inflated\.pth: tensor 'w' claims shape \[1048576, 1048576\]"):
        read_state_dict(tmp_path / "inflated.pth", allow_pickle=True)


def test_a_record_claiming_more_than_the_file_could_hold_is_refused_before_allocating(tmp_path):
    torch.save({"t": torch.zeros(4)}, tmp_path / "ok.pth")
    data = bytearray((tmp_path / "ok.pth").read_bytes())
    with zipfile.ZipFile(tmp_path / "ok.pth") as z:
        info = z.getinfo(next(n for n in z.namelist() if n.endswith("/data.pkl")))
    # Make the central directory claim a 1 TB data.pkl (both size fields of its entry).
    at = data.rfind(info.filename.encode()) - 46
    data[at + 20:at + 28] = struct.pack("<II", 0xFFFFFFF0, 0xFFFFFFF0)
    (tmp_path / "bomb.pth").write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match=r"bomb\.pth: .*claims 4294967280 bytes"):
        read_pickle_checkpoint(tmp_path / "bomb.pth")


def test_inspect_and_convert_read_a_v1_program_only_with_the_opt_in(tmp_path):
    from sapiens2.models.sapiens1 import Sapiens1Config, V1HeadConfig, build_sapiens1

    cfg = Sapiens1Config(embed_dim=64, depth=2, num_heads=4, mlp_hidden=256, pos_grid=(4, 3))
    model = build_sapiens1(cfg, "normal", V1HeadConfig(64, (8, 8, 8), (8, 8), 3)).eval()
    path = tmp_path / "sapiens_tiny_normal_torchscript.pt2"
    torch.jit.trace(model, torch.randn(1, 3, 64, 48)).save(str(path))
    with pytest.raises(ProgramCheckpointError):
        sapiens2.inspect(path)
    assert sapiens2.inspect(path, allow_code=True).task == "normal"
    out = convert_to_safetensors(path, allow_code=True)
    assert out.suffix == ".safetensors" and sapiens2.load(out).task == "normal"


def test_a_huge_memo_index_is_refused_at_once(tmp_path):
    # EMPTY_DICT, LONG_BINPUT 4294967280, STOP: CPython's unpickler would grow its memo to 4e9 slots.
    evil = b"\x80\x02}r\xf0\xff\xff\xff."
    torch.save({"t": torch.zeros(1)}, tmp_path / "ok.pth")
    bad = _rewrite(tmp_path / "ok.pth", tmp_path / "memo.pth",
                   lambda name, data: evil if name.endswith("/data.pkl") else data)
    with pytest.raises(CorruptCheckpointError, match=r"memo\.pth: corrupt pickle data: memo index 4294967280"):
        read_pickle_checkpoint(bad)


def test_only_the_policy_module_calls_the_loaders_that_run_code():
    """`torch.jit.load` / `torch.export.load` only in `weights.load_program`; `torch.load` only weights-only."""
    import ast

    package = Path(sapiens2.__file__).parent
    offenders = []
    for source in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            where = f"{source.relative_to(package)}:{node.lineno}"
            if name in ("torch.jit.load", "torch.export.load", "jit.load") and source.name != "weights.py":
                offenders.append(f"{where} calls {name}")
            if name == "torch.load" and not any(
                    k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in node.keywords):
                offenders.append(f"{where} calls torch.load without weights_only=True")
    assert offenders == []
