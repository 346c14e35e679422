"""`sapiens2 export`: arguments, errors, and a real export of a checkpoint file."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from sapiens2.cli import main
from sapiens2.export import load_exported
from sapiens2.option_types import height_width
from tests.export.conftest import tiny_network


@pytest.fixture
def checkpoint(tmp_path):
    net = tiny_network("pretrain")
    path = tmp_path / "tiny.safetensors"
    save_file(net.state_dict(), path)
    return path, net


def test_export_writes_a_program_that_matches_the_checkpoint(checkpoint, tmp_path, capsys):
    path, net = checkpoint
    out = tmp_path / "tiny.pt2"
    assert main(["export", str(path), "--format", "pt2", "--input-size", "64x48", "--out", str(out)]) == 0
    assert f"{out}: pt2 fp32 64x48" in capsys.readouterr().out
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(load_exported(out, allow_code=True)(x), net(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--format", "onnx", "--out", "m.pt2"], "must end in .onnx"),
    (["--format", "pt2", "--dtype", "int8", "--out", "m.pt2"], "int8 is offered for --format onnx only"),
    (["--format", "onnx", "--aoti", "--out", "m.onnx"], "--aoti is offered for --format pt2 only"),
])
def test_inconsistent_options_are_refused_before_any_work(checkpoint, capsys, args, message):
    assert main(["export", str(checkpoint[0]), *args]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_model_is_one_clear_error(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope.safetensors"), "--format", "onnx", "--out",
                 str(tmp_path / "m.onnx")]) == 1
    assert "nope.safetensors" in capsys.readouterr().err


def test_an_exported_file_is_not_exported_again(tmp_path, capsys):
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert main(["export", str(tmp_path / "m.onnx"), "--format", "onnx", "--out", str(tmp_path / "n.onnx")]) == 1
    assert "already an exported model" in capsys.readouterr().err


def test_sizes_parse_as_height_by_width():
    assert height_width("1024x768") == (1024, 768)
    for bad in ("1024", "0x5", "axb"):
        with pytest.raises(Exception, match="HxW|positive"):
            height_width(bad)


def test_the_export_parser_imports_neither_torch_nor_onnx():
    code = ("import argparse, sys\nfrom sapiens2.export.cli import add_export_parser\n"
            "p = argparse.ArgumentParser(); add_export_parser(p.add_subparsers())\n"
            "p.parse_args(['export', 'm', '--format', 'onnx', '--out', 'm.onnx'])\n"
            "print('torch' in sys.modules, 'onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
