"""Fine-tuning Sapiens v1 networks: every v1 task learns, what is saved loads back as a v1 model, and
pretrain / task / .pth checkpoints initialise the network as the reference converts them."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import sapiens2
from sapiens2.hub import official_layout
from sapiens2.models.sapiens1 import Sapiens1Backbone, Sapiens1Config, Sapiens1TaskModel, V1Head, V1HeadConfig
from sapiens2.train.config import config_from_dict
from sapiens2.train.network import build_network, settle_config
from sapiens2.train.specs import build_transform
from sapiens2.training.config import ConfigError
from sapiens2.train.logger import read_csv_log
from sapiens2.train.loop import Trainer
from sapiens2.train.transforms import SegTransform
from sapiens2.zoo import find_model

from .conftest import V1_TASKS, H, W, make_data, tiny_v1_config

TINY = Sapiens1Config(embed_dim=32, depth=2, num_heads=2)


def _run(cfg, **kw) -> Trainer:
    return Trainer(cfg, progress=False, **kw)


@pytest.mark.parametrize("task", V1_TASKS)
def test_v1_overfits_one_batch(tiny_v1, task):
    cfg = tiny_v1(task, num_iters=15, save_every=100)
    cfg.optim.schedule = "constant"
    trainer = _run(cfg)
    assert isinstance(trainer.net, Sapiens1TaskModel) and trainer.cfg.model.generation == 1
    h = trainer.fit()
    first, last = h[0]["loss"], sum(r["loss"] for r in h[-3:]) / 3
    assert last < 0.7 * first, [round(r["loss"], 4) for r in h]


@pytest.mark.parametrize("task", V1_TASKS)
def test_what_is_saved_loads_back_as_the_v1_model(tiny_v1, task):
    cfg = tiny_v1(task, num_iters=2)
    trainer = _run(cfg)
    trainer.fit()
    path = f"{cfg.train.work_dir}/model.safetensors"
    layout = sapiens2.inspect(path)
    assert (layout.generation, layout.task) == (1, task)
    model = sapiens2.load(path)
    assert isinstance(model, Sapiens1TaskModel) and model.task == task
    prefix = "head." if task == "pose" else "decode_head."
    assert all(k.startswith(("backbone.", prefix)) for k in model.state_dict())
    assert "backbone.cls_token" not in model.state_dict()
    assert model.state_dict()["backbone.pos_embed"].shape == (1, (H // 16) * (W // 16), 32)
    # the patch-conv padding (not in the weights) is the task's, so the loaded model computes the same thing
    assert model.backbone.patch_embed.projection.padding == ((2, 2) if task in ("pose", "normal") else (0, 0))
    x = torch.randn(1, 3, H, W)
    trainer.net.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), trainer.net(x), atol=1e-6)


def _pretrain_file(tmp_path, grid: int = 8) -> tuple[str, dict[str, torch.Tensor]]:
    """A tiny v1 pretrain checkpoint as released: bare backbone keys, a cls token and a square grid."""
    torch.manual_seed(0)
    backbone = Sapiens1Backbone(Sapiens1Config(32, 2, 2, with_cls_token=True, pos_grid=(grid, grid)))
    backbone.init_weights()
    state = {k: v.contiguous() for k, v in backbone.state_dict().items()}
    path = tmp_path / "sapiens_tiny_pretrain.safetensors"
    save_file(state, str(path))
    return str(path), state


def _v1_cfg(tmp_path, task: str, **model) -> dict:
    data = make_data(task, tmp_path / f"data_{task}")
    cfg = tiny_v1_config(task, tmp_path / "run", data, num_iters=1)
    cfg["model"].pop("backbone")
    cfg["model"].pop("generation")
    cfg["model"].update(model)
    return cfg


def test_init_from_a_pretrain_checkpoint_converts_it_as_the_reference(tmp_path):
    path, state = _pretrain_file(tmp_path)
    cfg = config_from_dict(_v1_cfg(tmp_path, "pose", init=path))
    model, note = build_network(cfg, 17)
    assert note == f"backbone from {path}"
    bb = model.backbone
    assert not bb.config.with_cls_token and bb.config.pos_grid == (H // 16, W // 16)
    assert bb.config.patch_padding == 2  # pose
    sd = bb.state_dict()
    assert "cls_token" not in sd
    square = state["pos_embed"][:, 1:].reshape(1, 8, 8, 32).permute(0, 3, 1, 2)
    want = F.interpolate(square, size=(H // 16, W // 16), mode="bicubic", align_corners=False)
    assert torch.allclose(sd["pos_embed"], want.flatten(2).transpose(1, 2), atol=1e-6)
    assert all(torch.equal(sd[k], state[k]) for k in state if k not in ("cls_token", "pos_embed"))
    assert model.head.final_layer.out_channels == 17


def test_a_pth_needs_allow_pickle_in_the_config(tmp_path):
    _, state = _pretrain_file(tmp_path)
    pth = tmp_path / "tiny_pretrain_clean.pth"
    torch.save(state, pth)
    cfg = config_from_dict(_v1_cfg(tmp_path, "seg", init=str(pth)))
    with pytest.raises(ConfigError, match="model.allow_pickle = true") as e:
        build_network(cfg)
    assert e.value.field == "model.init" and str(pth) in str(e.value)
    cfg = config_from_dict(_v1_cfg(tmp_path, "seg", init=str(pth), allow_pickle=True))
    model, _ = build_network(cfg)
    assert isinstance(model, Sapiens1TaskModel)
    lite = tmp_path / "sapiens_0.3b_goliath_best_goliath_mIoU_7673_epoch_194_torchscript.pt2"
    lite.write_bytes(b"PK")
    with pytest.raises(ConfigError, match="lite program .* not weights to fine-tune"):
        build_network(config_from_dict(_v1_cfg(tmp_path, "seg", init=str(lite))))


def test_a_v1_task_checkpoint_gives_backbone_and_head(tmp_path):
    torch.manual_seed(1)
    head = V1Head(V1HeadConfig(32, (16, 16), (16,), 28), "seg")
    seg = Sapiens1TaskModel(Sapiens1Backbone(dataclasses.replace(TINY, pos_grid=(4, 3))), head, "seg")
    path = tmp_path / "seg28.safetensors"
    save_file({k: v.contiguous() for k, v in seg.state_dict().items()}, str(path))
    raw = _v1_cfg(tmp_path, "seg", init=str(path))
    raw["data"].pop("num_classes")  # None: the checkpoint's 28 classes
    cfg = config_from_dict(raw)
    trainer = _run(cfg)
    assert trainer.init_note == f"backbone and head from {path}"
    assert trainer.cfg.data.num_classes == 28
    assert trainer.criterion.ce is not None
    sd = trainer.net.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in seg.state_dict().items())
    # the 28 body parts flip with v1's own left/right pairs
    transform = build_transform(trainer.cfg, trainer.train_source.parts[0], train=True)
    assert isinstance(transform, SegTransform) and transform.flip_lut[4] == 13 and transform.flip_lut[20] == 11
    # more classes in the data than in the checkpoint: a new head
    raw["data"]["num_classes"] = 5
    assert "new head" in _run(config_from_dict(raw)).init_note


def test_generations_cannot_be_mixed(tmp_path):
    path, _ = _pretrain_file(tmp_path)
    cfg = config_from_dict(_v1_cfg(tmp_path, "pose", init=path, generation=2))
    with pytest.raises(ConfigError, match="is a Sapiens v1 checkpoint, but model.generation = 2"):
        build_network(cfg, 17)
    # a v1 checkpoint cannot start an albedo model: v1 has no such head
    data = make_data("albedo", tmp_path / "alb")
    raw = tiny_v1_config("albedo", tmp_path / "run_alb", data)
    raw["model"] = {"init": path, "head": {}}
    with pytest.raises(ConfigError, match="Sapiens v1 has no albedo head"):
        build_network(config_from_dict(raw))


@pytest.mark.parametrize("edit, field, reason", [
    (lambda d: d.update(task="albedo"), "task", "Sapiens v1 has no albedo head"),
    (lambda d: d["model"].pop("backbone") and d["model"].update(arch="0.4b"), "model.arch", "unknown Sapiens v1 arch"),
    (lambda d: d["model"]["backbone"].update(pos_grid=[4, 3]), "model.backbone.pos_grid", "follows from the task"),
    (lambda d: d["model"]["backbone"].update(with_cls_token=True), "model.backbone.with_cls_token", "cannot be set"),
    (lambda d: d["model"]["head"].update(out_channels=3), "model.head.out_channels", "cannot be set"),
    (lambda d: d["model"]["head"].update(deconv_channels="wide"), "model.head.deconv_channels", "expected an array"),
    (lambda d: d["data"].update(input_size=[32, 64]), "data.input_size", "4:3 (H:W) or square"),
])
def test_v1_config_errors_name_the_field(tmp_path, edit, field, reason):
    data = make_data("pose", tmp_path / "d")
    raw = copy.deepcopy(tiny_v1_config("pose", tmp_path / "run", data))
    edit(raw)
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw)
    assert e.value.field == field and reason in e.value.reason


def test_a_v1_size_without_generation_gets_a_hint(tmp_path):
    data = make_data("pose", tmp_path / "d")
    raw = tiny_v1_config("pose", tmp_path / "run", data)
    raw["model"] = {"arch": "0.6b"}
    with pytest.raises(ConfigError, match="it is a Sapiens v1 size: set model.generation = 1"):
        config_from_dict(raw)
    raw["model"] = {"arch": "0.6b", "generation": 1}
    assert config_from_dict(raw).model.generation == 1


def test_official_v1_sizes_build_with_the_official_head(tmp_path):
    data = make_data("pose", tmp_path / "d")
    raw = tiny_v1_config("pose", tmp_path / "run", data)
    raw["model"] = {"arch": "0.3b", "generation": 1}
    raw["data"]["input_size"] = [1024, 768]
    with torch.device("meta"):
        model, note = build_network(config_from_dict(raw), 133)
    assert note == "random init (no model.init)"
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = official_layout(find_model("sapiens-pose-0.3b-wholebody133"))
    with torch.device("meta"):
        ref = want.build()
    assert shapes == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert model.backbone.config == ref.backbone.config  # padding 2, no cls token, 64 x 48 positions


def test_dense_v1_training_stretches_like_the_v1_predictors(tiny_v1):
    import cv2

    cfg = settle_config(tiny_v1("normal"), Sapiens1TaskModel(Sapiens1Backbone(TINY), V1Head(
        V1HeadConfig(32, (16,), (16,), 3), "normal"), "normal"))
    rng = np.random.default_rng(0)
    sample = {"image": rng.integers(0, 256, (40, 60, 3), dtype=np.uint8), "mask": np.ones((40, 60), bool),
              "target": np.tile(np.array([0, 0, -1], np.float32), (40, 60, 1))}
    out = build_transform(cfg, None, train=False)(sample, rng)
    stretched = cv2.resize(sample["image"], (W, H), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(out["image"], stretched.transpose(2, 0, 1)) and out["mask"].all()
    v2 = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, generation=2))
    padded = build_transform(v2, None, train=False)(sample, rng)
    assert not padded["mask"][0].any() and padded["mask"][H // 2].all()  # Sapiens2 fits and pads


@pytest.mark.parametrize("task", ["pose", "depth"])
def test_v1_validation_scores(tiny_v1, task):
    cfg = tiny_v1(task, num_iters=1)
    cfg.data.val = list(cfg.data.train)
    _run(cfg).fit()
    rows = read_csv_log(f"{cfg.train.work_dir}/val_log.csv")
    assert {"pose": "AP", "depth": "abs_rel"}[task] in rows[0]


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    bb = Sapiens1Backbone(dataclasses.replace(TINY, pos_grid=(4, 3))).train()
    x = torch.randn(2, 3, 64, 48)
    grads = []
    for ckpt in (False, True):
        bb.zero_grad()
        bb.grad_checkpointing = ckpt
        bb.forward_featmap(x).square().sum().backward()
        grads.append([p.grad.clone() for p in bb.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))
