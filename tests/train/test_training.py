"""End to end on tiny models: every task learns one batch; a resumed run equals an uninterrupted one;
checkpoints load with `sapiens2.load`; validation scores with the metrics module."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import sapiens2
from sapiens2.train.config import config_from_dict
from sapiens2.train.logger import read_csv_log
from sapiens2.train.loop import Trainer, optimization_step
from sapiens2.training.checkpoint import resolve_checkpoint
from sapiens2.training.config import ConfigError

from .conftest import TASKS, make_data, tiny_config


@pytest.mark.parametrize("task", TASKS)
def test_overfits_one_batch(tiny, task):
    cfg = tiny(task, num_iters=15, save_every=100)
    cfg.optim.schedule = "constant"
    h = Trainer(cfg, progress=False).fit()
    first, last = h[0]["loss"], sum(r["loss"] for r in h[-3:]) / 3
    assert last < 0.7 * first, [round(r["loss"], 4) for r in h]


def _run(cfg, **kw):
    return Trainer(cfg, progress=False, **kw)


def test_resume_gives_the_same_losses(tiny):
    cfg = tiny("pose", n=3, num_iters=8, save_every=4)
    cfg.data.augment = True  # the random augmentations must replay too
    straight = _run(cfg).fit()
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, work_dir=cfg.train.work_dir + "_b"))
    first = _run(other).fit(stop_at=6)  # killed after step 6; the last checkpoint is step 4
    assert len(first) == 6
    resumed = _run(other, resume="auto")
    assert resumed.step == 4
    rest = resumed.fit()
    assert [r["loss"] for r in rest] == [r["loss"] for r in straight[4:]]
    assert [r["lr"] for r in rest] == [r["lr"] for r in straight[4:]]
    a = sapiens2.load(f"{cfg.train.work_dir}/model.safetensors").state_dict()
    b = sapiens2.load(f"{other.train.work_dir}/model.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the CSV log reads as one run: the rows of the killed run past step 4 were replaced
    steps = [int(r["step"]) for r in read_csv_log(f"{other.train.work_dir}/train_log.csv")]
    assert steps == list(range(1, 9))


def test_checkpoint_is_the_official_layout(tiny):
    cfg = tiny("seg", num_iters=2, save_every=1, keep_checkpoints=1)
    trainer = _run(cfg)
    trainer.fit()
    ckpt = resolve_checkpoint("auto", cfg.train.work_dir)
    assert ckpt.name == "iter_0000002"
    assert sorted(p.name for p in ckpt.parent.glob("iter_*")) == ["iter_0000002"]  # keep_checkpoints = 1
    model = sapiens2.load(ckpt / "model.safetensors")
    assert model.task == "seg"
    keys = model.state_dict().keys()
    assert all(k.startswith(("backbone.", "decode_head.")) for k in keys)
    trained = trainer.net.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in model.state_dict().items())
    x = torch.randn(1, 3, 64, 48)
    trainer.net.eval()
    assert torch.allclose(model(x), trainer.net(x), atol=1e-6)


def test_init_from_a_checkpoint_and_freeze(tiny, tmp_path):
    cfg = tiny("normal", num_iters=2)
    _run(cfg).fit()
    weights = f"{cfg.train.work_dir}/model.safetensors"
    start = sapiens2.load(weights).state_dict()
    # same task: backbone and head come from the file
    again = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init=weights, freeze_backbone=True),
                                train=dataclasses.replace(cfg.train, work_dir=str(tmp_path / "ft")))
    t = _run(again)
    assert "backbone and head from" in t.init_note
    t.fit()
    after = t.net.state_dict()
    assert all(torch.equal(after[k], start[k]) for k in start if k.startswith("backbone."))
    assert any(not torch.equal(after[k], start[k]) for k in start if k.startswith("decode_head."))
    # another task: the backbone only
    data = make_data("albedo", tmp_path / "albedo")
    other = config_from_dict({**tiny_config("albedo", tmp_path / "alb", data, num_iters=1), "model": {
        "init": weights, "head": cfg.model.head}})
    t2 = _run(other)
    assert t2.init_note == f"backbone from {weights}"
    assert torch.equal(t2.net.backbone.blocks[0].attn.wq.weight, start["backbone.blocks.0.attn.wq.weight"])


@pytest.mark.parametrize("task", TASKS)
def test_validation_scores_with_the_metrics(tiny, tmp_path, task):
    cfg = tiny(task, num_iters=1)
    cfg.data.val = list(cfg.data.train)
    cfg.data.val_batch_size = 2
    trainer = _run(cfg)
    trainer.fit()
    rows = read_csv_log(f"{cfg.train.work_dir}/val_log.csv")
    assert len(rows) == 1 and rows[0]["step"] == 1
    key = {"pose": "AP", "seg": "mIoU", "normal": "normal_mae", "pointmap": "l2_mean", "albedo": "mae",
           "matting": "sad"}[task]
    assert key in rows[0]


def test_accumulated_micro_batches_give_the_update_of_one_batch(tiny):
    """4 samples as one batch, or as 2 accumulated micro-batches of 2: the same gradients, hence the same step
    (checked through plain SGD, whose update is the gradient; AdamW would magnify float noise in the
    near-zero gradients of biases before InstanceNorm)."""
    cfg = tiny("pose", n=4, num_iters=2, batch_size=4)
    trainer = _run(cfg)
    batch = {k: v.to(trainer.device) if torch.is_tensor(v) else v for k, v in next(iter(trainer.train_loader())).items()}
    halves = [{k: v[i:i + 2] for k, v in batch.items()} for i in (0, 2)]
    start = copy.deepcopy(trainer.net.state_dict())
    updates, logged = [], []
    for micro in ([batch], halves):
        trainer.net.load_state_dict(start)
        sgd = torch.optim.SGD(trainer.net.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(sgd, lambda _: 1.0)
        logged.append(optimization_step(trainer.net, trainer.criterion, sgd, sched, list(trainer.net.parameters()),
                                        [(trainer.normalize(b["image"]), b) for b in micro], False, None))
        updates.append({k: v - start[k] for k, v in trainer.net.state_dict().items()})
    for k in updates[0]:
        assert torch.allclose(updates[0][k], updates[1][k], rtol=1e-4, atol=1e-7), k
    assert logged[0]["loss"] == pytest.approx(logged[1]["loss"], rel=1e-6)
    assert logged[0]["grad_norm"] == pytest.approx(logged[1]["grad_norm"], rel=1e-5)


def test_accumulation_in_the_loop_and_resume_position(tiny):
    logs = []
    for batch, steps in ((4, 1), (2, 2)):
        cfg = tiny("pose", n=4, num_iters=2, batch_size=batch, accumulate_steps=steps)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, work_dir=f"{cfg.train.work_dir}_{steps}"))
        trainer = _run(cfg)
        logs.append(trainer.fit())
        assert trainer.samples_seen() == 8  # where a resumed data stream starts
    for a, b in zip(*logs):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    with pytest.raises(ConfigError, match="train.accumulate_steps"):
        tiny("pose", accumulate_steps=0)
