"""Pretraining config errors name the field (or the file) and the reason."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from sapiens2.pretrain.cli import add_pretrain_parser, run_pretrain
from sapiens2.pretrain.config import load_config
from sapiens2.pretrain.runtime import Runtime
from sapiens2.pretrain.trainer import Pretrainer
from sapiens2.training.config import ConfigError

from .conftest import draw_images, tiny_config


@pytest.mark.parametrize("section, values, field, reason", [
    ("optim", {"lr": float("inf")}, "optim.lr", "must be a finite number"),
    ("optim", {"weight_decay": float("nan")}, "optim.weight_decay", "must be a finite number"),
    ("optim", {"clip_grad": float("nan")}, "optim.clip_grad", "must be a finite number"),
    ("optim", {"eps": -1.0}, "optim.eps", "must be > 0"),
    ("optim", {"weight_decay": -0.1}, "optim.weight_decay", "must be >= 0"),
    ("optim", {"betas": [0.9, 1.5]}, "optim.betas", "each beta must be in [0, 1)"),
])
def test_unusable_optimizer_values(tmp_path, images, section, values, field, reason):
    with pytest.raises(ConfigError) as e:
        tiny_config(tmp_path, images, **{section: values})
    assert e.value.field == field and reason in e.value.reason


def test_work_dir_that_is_a_file(tmp_path, images):
    taken = tmp_path / "taken"
    taken.write_text("x")
    with pytest.raises(ConfigError, match="is a file") as e:
        tiny_config(tmp_path, images, train={"work_dir": str(taken)})
    assert e.value.field == "train.work_dir"


def test_cli_folder_or_binary_config(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="sapiens2")
    add_pretrain_parser(parser.add_subparsers(dest="command"))
    binary = tmp_path / "latin1.toml"
    binary.write_bytes("[model] # \xe9\n".encode("latin-1"))
    for path, reason in ((tmp_path, "is a folder"), (binary, "not a UTF-8 text file")):
        assert run_pretrain(parser.parse_args(["pretrain", str(path)])) == 2
        err = capsys.readouterr().err
        assert str(path) in err and reason in err


def test_a_pretraining_config_for_every_official_size():
    folder = Path(__file__).resolve().parents[2] / "configs" / "pretrain"
    for size in ("0.1b", "0.4b", "0.8b", "1b", "5b"):
        cfg = load_config(folder / f"sapiens2_{size}.toml")
        assert cfg.model.arch == size and cfg.train.num_iters == 500_000 and cfg.objective.dino_weight == 0.4


def test_cli_missing_images_or_checkpoint_is_an_error_not_a_traceback(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="sapiens2")
    add_pretrain_parser(parser.add_subparsers(dest="command"))
    config = Path(__file__).resolve().parents[2] / "configs" / "pretrain" / "tiny_cpu.toml"
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["pretrain", str(config), "--work-dir", str(tmp_path / "run"), "--set", f'data.source=["{empty}"]']
    for extra, named in (([], str(empty)), (["--export", str(tmp_path / "nope.pt")], "nope.pt"),
                         (["--set", f'model.init="{tmp_path / "nope.safetensors"}"'], "nope.safetensors")):
        assert run_pretrain(parser.parse_args(base + extra)) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and named in err


def test_scale_settings_are_checked(tmp_path):
    images = draw_images(tmp_path / "img", 2)
    with pytest.raises(ConfigError, match="train.shard_size"):
        tiny_config(tmp_path, images, train={"shard_size": -1})
    with pytest.raises(ConfigError, match="data.shuffle_buffer"):
        tiny_config(tmp_path, images, data={"shuffle_buffer": 0})
    with pytest.raises(ConfigError, match="train.parallel"):
        tiny_config(tmp_path, images, train={"parallel": "zero3"})
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "index.json").write_text('{"shards": []}')
    mixed = tiny_config(tmp_path, images, data={"source": [str(images), str(tmp_path / "s")]})
    with pytest.raises(ConfigError, match="mixes tar shards with image files"):
        Pretrainer(mixed, Runtime(0, 1, 0, torch.device("cpu"), "none"), printer=None)
    compiled = tiny_config(tmp_path, images, train={"compile": True})
    trainer = Pretrainer(compiled, Runtime(0, 1, 0, torch.device("cpu"), "none"), printer=None)
    blocks = [*trainer.meta.student.backbone.blocks, *trainer.meta.teacher.backbone.blocks]
    assert all(b._compiled_call_impl is not None for b in blocks)
