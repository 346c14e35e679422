"""The loop end to end on tiny models: learning, the 4K path, checkpoints, exact resume, torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sapiens2
from sapiens2.checkpoint import CheckpointError
from sapiens2.models import BackboneConfig, build_model
from sapiens2.pretrain.augment import MultiCrop, MultiCropConfig
from sapiens2.pretrain.config import OptimConfig, load_config
from sapiens2.pretrain.masking import MaskGenerator
from sapiens2.pretrain.runtime import Runtime
from sapiens2.pretrain.ssl_meta_arch import ObjectiveConfig, SSLMetaArch
from sapiens2.pretrain.trainer import (
    EXPORT_NAME,
    Pretrainer,
    build_optimizer,
    export_checkpoint,
)
from sapiens2.training.config import ConfigError
from tests.pretrain.conftest import TINY_BACKBONE, TINY_OBJECTIVE, tiny_config

REPO = Path(__file__).resolve().parents[2]


def _quiet(_msg: str) -> None:
    pass


def _trainer(cfg) -> Pretrainer:
    return Pretrainer(cfg, Runtime(0, 1, 0, torch.device("cpu"), "none"), printer=_quiet)


def test_total_loss_falls(tmp_path, images):
    cfg = tiny_config(tmp_path, images, train={"num_iters": 40, "save_every": 1000, "log_every": 1000})
    trainer = _trainer(cfg)
    losses = []
    for g, l in trainer.batches(sorted(images.glob("*.png"))):
        losses.append(trainer.train_step(g, l))
        if trainer.step == 40:
            break
    total = [float(m["loss"]) for m in losses]
    mae = [float(m["mae"]) for m in losses]
    assert np.mean(total[-8:]) < np.mean(total[:8]) - 0.1
    assert np.mean(mae[-8:]) < np.mean(mae[:8])


def test_4k_masks_after_the_window_tokenizer():
    torch.manual_seed(0)
    cfg = BackboneConfig(embed_dim=32, depth=1, num_heads=2, use_tokenizer=True, window_size=4,
                         num_tokenizer_layers=1, n_storage_tokens=2)
    bb = build_model(cfg, "pretrain").eval()
    meta = SSLMetaArch(bb, ObjectiveConfig(**TINY_OBJECTIVE, target_downsample=2))
    assert meta.token_grid((256, 192)) == (4, 3)  # 16 x 12 patches -> 4 x 3 pooled tokens
    assert meta.target_size == 32  # each token reconstructs its 64 x 64 px window at half resolution
    gen = MaskGenerator(meta.token_grid((256, 192)))
    masks = gen(2, torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        out = bb(x, keep=masks.keep)
        # Repaint every masked window: the encoder output must not change (nothing leaks across windows).
        y = x.clone()
        for i in range(2):
            for t in masks.masked[i].tolist():
                r, c = divmod(t, 3)
                y[i, :, r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64] = torch.randn(3, 64, 64)
        assert torch.allclose(bb(y, keep=masks.keep), out, atol=1e-5)
    g = torch.randn(2, 2, 3, 256, 192)
    step = meta(g, torch.randn(1, 2, 3, 128, 128), gen(4, torch.Generator().manual_seed(1)), 0.07)
    assert torch.isfinite(step.loss)
    step.loss.backward()


def test_4k_pools_only_the_kept_windows():
    """Masked pretraining pools only the windows it keeps: the same tokens as pooling every window and
    gathering, for a quarter of the tokenizer's work at a 75 % mask ratio."""
    torch.manual_seed(0)
    cfg = BackboneConfig(embed_dim=32, depth=1, num_heads=2, use_tokenizer=True, window_size=4,
                         num_tokenizer_layers=1, n_storage_tokens=2)
    bb = build_model(cfg, "pretrain").eval()
    x = torch.randn(2, 3, 256, 192)
    keep = torch.tensor([[0, 5, 11], [7, 2, 3]])
    pooled = []
    bb.tokenizer._pool = (lambda f: lambda w: pooled.append(len(w)) or f(w))(bb.tokenizer._pool)
    with torch.no_grad():
        patches, grid = bb.patch_embed(x)
        every, _ = bb.tokenizer(patches, grid)
        assert pooled == [24]
        kept, window_grid = bb.tokenizer(patches, grid, keep)
        assert pooled == [24, 6] and window_grid == (4, 3)
        want = every.gather(1, keep[..., None].expand(-1, -1, 32))
        assert torch.allclose(kept, want, atol=1e-6)
        # and through the backbone: the masked encoder sees exactly those tokens
        full = bb.tokens(x, keep)[0]
    assert full.shape == (2, 1 + 2 + 3, 32)


def test_global_views_have_no_colour_augmentation():
    img = np.random.default_rng(0).integers(0, 255, (80, 60, 3), dtype=np.uint8)
    crop = MultiCrop(MultiCropConfig(global_size=(80, 60), local_size=(40, 30), global_scale=(1.0, 1.0),
                                     aspect_jitter=(1.0, 1.0), jitter_prob=1.0, grayscale_prob=1.0))
    views = crop(img, torch.Generator().manual_seed(0))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    ref = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    for v in views.global_views:
        pixels = v * std + mean
        assert torch.allclose(pixels, ref, atol=1e-4) or torch.allclose(pixels, ref.flip(-1), atol=1e-4)
    gray = views.local_views[0]  # grayscale_prob 1: the channels agree after un-normalising
    un = gray * std + mean
    assert torch.allclose(un[0], un[1], atol=1e-4)


def test_no_weight_decay_on_norms_biases_and_tokens():
    meta = SSLMetaArch(build_model(BackboneConfig(**TINY_BACKBONE), "pretrain"), ObjectiveConfig(**TINY_OBJECTIVE))
    groups = build_optimizer(meta.student, OptimConfig(weight_decay=0.05)).param_groups
    decay, no_decay = sorted((g for g in groups if not g.get("last_layer")), key=lambda g: g["weight_decay"],
                             reverse=True)
    names = {id(p): n for n, p in meta.student.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    d = {names[id(p)] for p in decay["params"]}
    assert {"backbone.cls_token", "backbone.storage_tokens", "decoder.mask_token", "backbone.ln1.weight",
            "backbone.blocks.0.attn.wq.bias", "backbone.blocks.0.attn.gamma.weight"} <= nd
    assert "backbone.blocks.0.attn.wq.weight" in d and "backbone.patch_embed.projection.weight" in d
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05


def test_checkpoint_exports_into_sapiens2_load(tmp_path, images):
    cfg = tiny_config(tmp_path, images)
    trainer = _trainer(cfg)
    out = trainer.run()
    assert out == tmp_path / "run" / EXPORT_NAME
    model = sapiens2.load(out)
    teacher = trainer.meta.teacher.backbone.state_dict()
    loaded = model.state_dict()
    assert loaded.keys() == teacher.keys()
    assert all(torch.equal(loaded[k], teacher[k]) for k in teacher)
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        assert torch.allclose(model(x), trainer.meta.teacher.backbone.eval()(x), atol=1e-6)
    # The training checkpoints (sharded) keep the last two and export the same way.
    ckpts = sorted((tmp_path / "run" / "checkpoints").glob("iter_*"))
    assert [p.name for p in ckpts] == ["iter_0000003", "iter_0000006"]
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "iter_0000006"
    student = export_checkpoint(ckpts[-1], tmp_path / "student.safetensors", "student")
    assert sapiens2.load(student).state_dict()["cls_token"].shape == (1, 1, 32)
    assert torch.equal(sapiens2.load(student).state_dict()["cls_token"], trainer.meta.student.backbone.cls_token)
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        export_checkpoint(tmp_path, tmp_path / "x.safetensors")


def test_exact_resume(tmp_path, images):
    straight = _trainer(tiny_config(tmp_path / "a", images))
    straight.run()
    cfg = tiny_config(tmp_path / "b", images)
    first = _trainer(cfg)
    for g, l in first.batches(sorted(images.glob("*.png"))):  # stop after 4 steps, mid-epoch
        first.train_step(g, l)
        if first.step == 4:
            first.save()
            break
    resumed = _trainer(cfg)
    resumed.run()
    assert resumed.step == 6
    a, b = straight.full_state(), resumed.full_state()
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert torch.equal(a["optimizer"]["state"]["student.backbone.cls_token"]["exp_avg_sq"],
                       b["optimizer"]["state"]["student.backbone.cls_token"]["exp_avg_sq"])


def test_config_errors_name_the_field(tmp_path, images):
    with pytest.raises(ConfigError, match="crops.global_size"):
        tiny_config(tmp_path, images, crops={"global_size": [60, 48]})
    with pytest.raises(ConfigError, match="objective.centering"):
        tiny_config(tmp_path, images, objective={"centering": "none"})
    with pytest.raises(ConfigError, match="model"):
        tiny_config(tmp_path, images, model={"arch": "1b"})
    for path in sorted((REPO / "configs" / "pretrain").glob("*.toml")):
        load_config(path)


def test_torchrun_two_processes(tmp_path, images):
    cfg_path = tmp_path / "tiny.toml"
    cfg_path.write_text(
        "[model]\nrope_dtype = \"float32\"\n"
        "[model.backbone]\n" + "".join(f"{k} = {v}\n" for k, v in TINY_BACKBONE.items())
        + "[objective]\n" + "".join(f"{k} = {v}\n" for k, v in TINY_OBJECTIVE.items())
        + "[crops]\nglobal_size = [64, 48]\nlocal_size = [32, 32]\nn_local = 2\n"
        + f"[data]\nsource = [\"{images.as_posix()}\"]\nnum_workers = 0\n"
        + f"[train]\nwork_dir = \"{(tmp_path / 'run').as_posix()}\"\nnum_iters = 3\nbatch_size = 2\n"
        "save_every = 3\nlog_every = 1\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sapiens2.pretrain", str(cfg_path)]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "2 process(es), ddp" in res.stdout
    assert sapiens2.load(tmp_path / "run" / EXPORT_NAME) is not None


def test_cli_subcommand_parses_and_reports_config_errors(tmp_path, capsys):
    import argparse

    from sapiens2.pretrain.cli import add_pretrain_parser, run_pretrain

    parser = argparse.ArgumentParser(prog="sapiens2")
    add_pretrain_parser(parser.add_subparsers(dest="command"))
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\narch = "7b"\n[data]\nsource = "x"\n[train]\nwork_dir = "w"\n')
    args = parser.parse_args(["pretrain", str(bad), "--set", "train.num_iters=5"])
    assert args.func is run_pretrain
    assert run_pretrain(args) == 2
    assert "model.arch" in capsys.readouterr().err


def test_centering_defaults_to_ema_with_momentum_0_9(tmp_path, images):
    """The paper states a centre momentum of 0.9, which only EMA centring uses; Sinkhorn-Knopp is a choice."""
    assert ObjectiveConfig().centering == "ema" and ObjectiveConfig().center_momentum == 0.9
    for path in sorted((REPO / "configs" / "pretrain").glob("*.toml")):
        assert load_config(path).objective.centering == "ema", path.name
    meta = _trainer(tiny_config(tmp_path, images)).meta
    assert meta.dino_loss.centering == "ema"
    assert _trainer(tiny_config(tmp_path, images, objective={"centering": "sinkhorn"})).meta.dino_loss.centering == \
        "sinkhorn"


def test_dino_last_layer_is_frozen_for_the_first_iterations(tmp_path, images):
    assert OptimConfig().freeze_last_layer_iters == 1250  # DINOv2's one epoch
    trainer = _trainer(tiny_config(tmp_path, images, optim={"freeze_last_layer_iters": 2}))
    last = trainer.meta.student.head.last_layer.weight
    first_mlp = trainer.meta.student.head.mlp[0].weight
    history = [(last.detach().clone(), first_mlp.detach().clone())]
    for g, l in trainer.batches(sorted(images.glob("*.png"))):
        trainer.train_step(g, l)
        history.append((last.detach().clone(), first_mlp.detach().clone()))
        if trainer.step == 4:
            break
    assert torch.equal(history[0][0], history[2][0])  # steps 0 and 1: frozen
    assert not torch.equal(history[2][0], history[3][0])  # step 2 trains it
    assert not torch.equal(history[0][1], history[1][1])  # the rest of the head trains from the start
    with pytest.raises(ConfigError, match="optim.freeze_last_layer_iters"):
        tiny_config(tmp_path, images, optim={"freeze_last_layer_iters": -1})
