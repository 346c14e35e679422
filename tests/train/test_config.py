"""Config errors name the field and the reason; every shipped config validates."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import pytest

from sapiens2.keypoints import keypoints308
from sapiens2.task_table import TASKS
from sapiens2.train.cli import add_train_parser, run_train
from sapiens2.train.config import config_from_dict, load_config
from sapiens2.train.loop import Trainer
from sapiens2.train.specs import TASK_SPECS
from sapiens2.train.v1 import V1_TRAIN_TASKS
from sapiens2.training.config import ConfigError, dump_toml, to_dict

from .conftest import make_data, tiny_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TASK_DIRS = ("pose", "seg", "normal", "pointmap", "albedo", "matting", "tiny", "v1")


def _base(tmp_path: Path) -> dict:
    return tiny_config("seg", tmp_path / "run", {"root": str(tmp_path)})


def _error(data: dict) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        config_from_dict(data)
    return e.value


@pytest.mark.parametrize("edit, field, reason", [
    (lambda d: d["optim"].update(lr="fast"), "optim.lr", "expected a number"),
    (lambda d: d["optim"].update(lr=-1.0), "optim.lr", "must be > 0"),
    (lambda d: d["optim"].update(learning_rate=1e-3), "optim.learning_rate", "unknown field"),
    (lambda d: d["train"].pop("num_iters"), "train.num_iters", "is required"),
    (lambda d: d["train"].update(precision="fp8"), "train.precision", "must be one of"),
    (lambda d: d["data"]["train"][0].update(repeat=0), "data.train[0].repeat", "must be >= 1"),
    (lambda d: d["data"].update(input_size=[60, 48]), "data.input_size", "multiples of the patch size"),
    (lambda d: d["data"].update(input_size=[64]), "data.input_size", "array of 2 values"),
    (lambda d: d["model"]["head"].update(conv_channel=[3]), "model.head.conv_channel", "unknown field"),
    (lambda d: d["model"]["backbone"].update(depth="two"), "model.backbone.depth", "expected an integer"),
    (lambda d: d.update(loss={"dice": "yes"}), "loss.dice", "expected a number"),
    (lambda d: d.update(augment={"flip_p": True}), "augment.flip_p", "expected a number"),
    (lambda d: d.update(task="depthmap"), "task", "must be one of"),
    (lambda d: d.update(task="depth"), "task", "depth is a Sapiens v1 task"),
    (lambda d: d["optim"].update(warmup_iters=20), "optim.warmup_iters", "leaves no decay"),
    (lambda d: d["model"].update(arch="3b", backbone=None) or d["model"].pop("backbone"), "model.arch", "unknown arch"),
])
def test_error_names_field_and_reason(tmp_path, edit, field, reason):
    data = copy.deepcopy(_base(tmp_path))
    edit(data)
    err = _error(data)
    assert err.field == field
    assert reason in err.reason
    assert str(err).startswith(f"{field}: ")


def test_pose_needs_annotations(tmp_path):
    data = tiny_config("pose", tmp_path / "run", {"root": str(tmp_path)})
    assert _error(data).field == "data.train[0].annotations"


def test_toml_round_trip_and_overrides(tmp_path):
    cfg = config_from_dict(_base(tmp_path))
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(to_dict(cfg)))
    again = load_config(path, ["optim.lr=1e-4", "train.work_dir=elsewhere", "optim.betas=[0.9, 0.95]"])
    assert again.optim.lr == 1e-4 and again.train.work_dir == "elsewhere" and again.optim.betas == (0.9, 0.95)
    assert again.model == cfg.model and again.data == cfg.data


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("task = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")


def test_cli_reports_config_error(tmp_path, capsys):
    data = _base(tmp_path)
    data["optim"]["layer_decay"] = 1.5
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(data))
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    args = parser.parse_args(["train", str(path)])
    assert args.func is run_train and args.resume is None
    assert run_train(args) == 2
    err = capsys.readouterr().err
    assert "optim.layer_decay" in err and "must be in (0, 1]" in err
    assert parser.parse_args(["train", str(path), "--resume"]).resume == "auto"


@pytest.mark.parametrize("path", sorted(p for d in TASK_DIRS for p in (CONFIGS / d).glob("*.toml")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg.train.num_iters > cfg.optim.warmup_iters


@pytest.mark.parametrize("override, field, reason", [
    ("optim.lr=inf", "optim.lr", "must be a finite number"),
    ("optim.weight_decay=nan", "optim.weight_decay", "must be a finite number"),
    ("optim.clip_grad=nan", "optim.clip_grad", "must be a finite number"),
    ("optim.eps=-1", "optim.eps", "must be > 0"),
    ("optim.power=-3", "optim.power", "must be > 0"),
])
def test_unusable_numbers_are_refused_when_read(tmp_path, override, field, reason):
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(_base(tmp_path)))
    with pytest.raises(ConfigError) as e:
        load_config(path, [override])
    assert e.value.field == field and reason in e.value.reason


def test_work_dir_that_is_a_file_is_refused(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    for work_dir in (taken, taken / "run"):
        data = _base(tmp_path)
        data["train"]["work_dir"] = str(work_dir)
        err = _error(data)
        assert err.field == "train.work_dir" and "is a file" in err.reason and str(taken) in err.reason


def _run_cli(config: Path) -> int:
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    args = parser.parse_args(["train", str(config)])
    return args.func(args)


def test_cli_folder_or_binary_config_is_a_usage_error(tmp_path, capsys):
    assert _run_cli(tmp_path) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "is a folder" in err and "Traceback" not in err
    binary = tmp_path / "latin1.toml"
    binary.write_bytes('task = "pose" # caf\xe9\n'.encode("latin-1"))
    assert _run_cli(binary) == 2
    err = capsys.readouterr().err
    assert str(binary) in err and "not a UTF-8 text file" in err


def test_every_task_of_the_table_has_a_spec_and_no_other():
    assert list(TASK_SPECS) == list(TASKS)  # the fine-tuning specs follow the one table
    assert set(V1_TRAIN_TASKS) == {"pose", "seg", "normal", "depth"}


def test_cli_unknown_device_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(_base(tmp_path)))
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    assert run_train(parser.parse_args(["train", str(path), "--device", "tpu9"])) == 2
    err = capsys.readouterr().err
    assert "--device" in err and "tpu9" in err


def test_pose_sets_with_different_keypoints_are_a_config_error(tmp_path):
    data = tiny_config("pose", tmp_path / "run", make_data("pose", tmp_path / "a"))
    other = dict(data["data"]["train"][0], keypoint_indices=list(keypoints308().subsets["body"])[:10])
    data["data"]["train"].append(other)
    with pytest.raises(ConfigError, match="disagree on the keypoint count") as e:
        Trainer(config_from_dict(data), progress=False)
    assert e.value.field == "data.train"
