"""The `sapiens2` command line: version, model listing, download and inspect."""

from __future__ import annotations

import subprocess
import sys

import sapiens2
from sapiens2.cli import main
from tests.conftest import official_layout, write_sparse_safetensors


def test_version_from_the_installed_script():
    out = subprocess.run([sys.executable, "-m", "sapiens2.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"sapiens2 {sapiens2.__version__}"


def test_models_lists_the_zoo_and_local_files(shared, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAPIENS_CHECKPOINT_ROOT", str(tmp_path))
    (tmp_path / "pose").mkdir()
    write_sparse_safetensors(official_layout(shared, "sapiens2_0.4b_pose"), tmp_path / "pose" / "sapiens2_0.4b_pose.safetensors")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert len([line for line in out.splitlines() if line.startswith(("sapiens2-", "sapiens-"))]) == len(sapiens2.MODELS)
    pose_line = next(line for line in out.splitlines() if line.startswith("sapiens2-pose-0.4b "))
    assert str(tmp_path / "pose" / "sapiens2_0.4b_pose.safetensors") in pose_line
    assert "facebook/sapiens2-pretrain-1b-4k" in out and "4096x3072" in out


def test_download_offline_fails_with_the_how_to(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert main(["download", "sapiens2-normal-1b"]) == 1
    assert "sapiens2_1b_normal.safetensors" in capsys.readouterr().err
    assert main(["download", "sapiens2-normal-2b"]) == 2


def test_inspect_reports_each_file_and_fails_on_bad_ones(shared, tmp_path, capsys):
    good = write_sparse_safetensors(official_layout(shared, "sapiens2_1b_4k_pretrain"), tmp_path / "a.safetensors")
    bad = tmp_path / "b.safetensors"
    bad.write_bytes(b"\x00" * 3)
    assert main(["inspect", str(good), str(bad)]) == 1
    captured = capsys.readouterr()
    assert "Sapiens2 1b-4k pretrain backbone" in captured.out
    assert "b.safetensors" in captured.err
