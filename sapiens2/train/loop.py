"""The fine-tuning loop: iteration based, as the reference (spec §6.2).

Each step: next batch (the stream never ends, so epochs roll over by themselves) -> normalize on the device
-> forward under bf16 autocast (CUDA; fp32 on CPU unless told) -> the task's losses in fp32 -> backward (for
each of `train.accumulate_steps` micro-batches, gradients summed) -> clip the global grad norm -> AdamW step ->
schedule step. Every `log_every` steps a console line and a CSV
row; every `save_every` an atomic checkpoint; every `val_every` validation with `sapiens2.metrics`.
`Trainer(cfg, resume="auto")` continues a run exactly where its last checkpoint left it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset, default_collate

from sapiens2.keypoints.topdown import average_flip_heatmaps
from sapiens2.train.datasets import ConcatSources, StreamSampler, TransformedDataset, worker_init
from sapiens2.train.datasets.shards import ShardSource, ShardTransform, is_shard_root
from sapiens2.train.logger import RunLogger
from sapiens2.train.network import build_network, settle_config
from sapiens2.train.schema import TrainConfig
from sapiens2.train.specs import TASK_SPECS, build_criterion, build_evaluator, build_transform
from sapiens2.training.checkpoint import (
    export_sharded,
    export_weights,
    is_sharded,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    save_sharded,
)
from sapiens2.training.config import ConfigError, dump_toml, to_dict
from sapiens2.training.distributed import (
    all_reduce_mean,
    barrier,
    choose_parallel,
    compile_blocks,
    init_distributed,
    no_gradient_sync,
    unwrap,
    wrap_model,
)
from sapiens2.training.optim import Schedule, build_optimizer, build_scheduler, clip_gradients, param_groups
from sapiens2.training.shards import ShardLoader

log = logging.getLogger("sapiens2.train")

MEAN = (123.675, 116.28, 103.53)  # RGB, 0-255 scale (spec §1.1)
STD = (58.395, 57.12, 57.375)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def autocast_context(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def optimization_step(model, criterion, optimizer, scheduler, params, micro_batches: Sequence[tuple[torch.Tensor, dict]],
                      bf16: bool, clip: float | None, step: int = 0) -> dict[str, float]:
    """One step over (normalized input, batch) micro-batches: for each, forward (autocast), the task losses in
    fp32 and backward of their sum / the micro-batch count (so the gradients add up to the mean's); then clip,
    AdamW and schedule steps. Only the last backward synchronizes gradients across processes. Returns the loss
    terms and their sum `loss`, averaged over the micro-batches, and the pre-clip `grad_norm`."""
    optimizer.zero_grad(set_to_none=True)
    n = len(micro_batches)
    sums: dict[str, float] = {}
    for i, (x, batch) in enumerate(micro_batches):
        with contextlib.nullcontext() if i == n - 1 else no_gradient_sync(model):
            with autocast_context(x.device, bf16):
                out = model(x)
            out = tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()
            terms = criterion(out, batch)
            total = sum(v for k, v in terms.items() if k.startswith("loss"))
            if not torch.isfinite(total):
                raise FloatingPointError(f"step {step}: the loss is {total.item()} "
                                         f"({ {k: float(v.detach()) for k, v in terms.items()} })")
            (total / n if n > 1 else total).backward()
        for k, v in {**terms, "loss": total}.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
    grad_norm = clip_gradients(params, clip)
    if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
        grad_norm = grad_norm.full_tensor()
    optimizer.step()
    scheduler.step()
    values = {k: v / n for k, v in sums.items()}
    values["grad_norm"] = float(grad_norm)
    return values


class Trainer:
    """Builds everything from a `TrainConfig` and runs it. `device` overrides the automatic choice."""

    def __init__(self, cfg: TrainConfig, resume: str | None = None, device: str | None = None,
                 progress: bool = True) -> None:
        self.cfg = cfg
        self.info = info = init_distributed(device)
        self.device = info.device
        run = cfg.train
        if self.device.type == "cuda" and run.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.bf16 = run.precision == "bf16" or (run.precision == "auto" and self.device.type == "cuda")
        self.work_dir = Path(run.work_dir)

        self.spec = spec = TASK_SPECS[cfg.task]
        train_sources = [ShardSource(cfg.task, d, f"data.train[{i}]") if is_shard_root(d)
                         else spec.source(d, f"data.train[{i}]") for i, d in enumerate(cfg.data.train)]
        self.train_source = ConcatSources(train_sources, [d.repeat for d in cfg.data.train])
        self.streaming = any(isinstance(s, ShardSource) for s in train_sources)
        if self.streaming and not all(isinstance(s, ShardSource) for s in train_sources):
            raise ConfigError("data.train", "mixes tar shards with folders; pack every training set with "
                              "`sapiens2 shard`, or none")
        if len(self.train_source) == 0 and not self.streaming:
            raise ConfigError("data.train", "the training datasets hold no samples")
        outputs = spec.data_outputs(train_sources) if spec.data_outputs is not None else None
        for i, d in enumerate(cfg.data.val):
            if is_shard_root(d):
                raise ConfigError(f"data.val[{i}].root", "validation reads folders (shards stream; metrics need "
                                  "every sample by index)")
        self.val_sources = [spec.source(d, f"data.val[{i}]") for i, d in enumerate(cfg.data.val)]
        self.data_state: dict | None = None  # a shard stream's position to resume from (this process's)
        self.loader: ShardLoader | None = None

        seed_everything(run.seed)  # the same initial weights on every process (FSDP shards them as they are)
        model, self.init_note = build_network(cfg, outputs)
        self.cfg = cfg = settle_config(cfg, model)
        seed_everything(run.seed + info.rank)
        model.to(self.device)
        self.parallel = choose_parallel(run.parallel, info)
        if run.compile:
            compile_blocks(list(model.backbone.blocks))
        shard = list(model.backbone.blocks) if self.parallel in ("fsdp", "hsdp") else None
        self.model = wrap_model(model, self.parallel, info, shard, run.shard_size)
        self.net = unwrap(self.model)
        depth = self.net.backbone.config.depth
        o = cfg.optim
        groups = param_groups(self.net.named_parameters(), o.lr, o.weight_decay, o.layer_decay, depth)
        self.optimizer = build_optimizer(groups, o.betas, o.eps)
        self.schedule = Schedule(run.num_iters, o.warmup_iters, o.warmup_start_factor, o.schedule, o.power,
                                 o.min_lr / o.lr)
        self.scheduler = build_scheduler(self.optimizer, self.schedule)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.criterion = build_criterion(cfg).to(self.device)
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1)

        self.step = 0
        self.resumed_from = None
        if resume:
            path = resolve_checkpoint(resume, self.work_dir)
            state = load_checkpoint(path, self.model, self.optimizer, self.scheduler, info)
            self.step = int(state["step"])
            self.data_state = (state.get("rank_extra") or {}).get("data")
            self.resumed_from = path
            if state.get("world_size", info.world_size) != info.world_size:
                log.warning("resuming a %s-process run on %s processes: the data order changes",
                            state["world_size"], info.world_size)
        self.history: list[dict[str, float]] = []  # per-step local values (tests and callers)
        self.logger = RunLogger(self.work_dir, run.num_iters, self.step, enabled=info.is_main, progress=progress)
        if info.is_main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            (self.work_dir / "config.toml").write_text(dump_toml(to_dict(cfg)))

    # ------------------------------------------------------------------------------------ data

    def train_loader(self) -> DataLoader | ShardLoader:
        cfg, run = self.cfg, self.cfg.train
        transform = build_transform(cfg, self.train_source.parts[0], train=True)
        if self.streaming:
            shards = [url for part in self.train_source.parts for url in part.shards]  # repeats listed again
            self.loader = ShardLoader(shards, ShardTransform(transform), run.batch_size, default_collate,
                                      self.info.rank, self.info.world_size, cfg.data.num_workers, run.seed,
                                      cfg.data.shuffle_buffer, pin_memory=self.device.type == "cuda",
                                      state=self.data_state, worker_init_fn=worker_init)
            return self.loader
        ds = TransformedDataset(self.train_source, transform, seed=run.seed)
        sampler = StreamSampler(len(ds), run.seed, self.info.rank, self.info.world_size, start=self.samples_seen())
        workers = cfg.data.num_workers
        return DataLoader(ds, batch_size=run.batch_size, sampler=sampler, num_workers=workers,
                          pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                          worker_init_fn=worker_init, drop_last=True)

    def val_loaders(self) -> list[tuple[object, DataLoader]]:
        out = []
        for source in self.val_sources:
            transform = build_transform(self.cfg, source, train=False)
            ds = TransformedDataset(source, transform, seed=self.cfg.train.seed, refetch=False)
            if self.cfg.data.max_val_samples is not None:
                ds = Subset(ds, range(min(len(ds), self.cfg.data.max_val_samples)))
            workers = min(2, self.cfg.data.num_workers)
            out.append((source, DataLoader(ds, batch_size=self.cfg.data.val_batch_size, shuffle=False,
                                           num_workers=workers, worker_init_fn=worker_init)))
        return out

    # ------------------------------------------------------------------------------------ steps

    def samples_seen(self) -> int:
        """Samples this process has trained on: where its data stream resumes."""
        run = self.cfg.train
        return self.step * run.batch_size * run.accumulate_steps

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean) / self.std

    def train_step(self, batches: Sequence[dict]) -> dict[str, float]:
        """One optimizer step over `train.accumulate_steps` micro-batches."""
        micro = []
        for batch in batches:
            batch = to_device(batch, self.device)
            micro.append((self.normalize(batch["image"]), batch))
        return optimization_step(self.model, self.criterion, self.optimizer, self.scheduler, self.params, micro,
                                 self.bf16, self.cfg.optim.clip_grad, self.step + 1)

    def lrs(self) -> dict[str, float]:
        rates = [g["lr"] for g in self.optimizer.param_groups]
        return {"lr": max(rates), "lr_min": min(rates)}

    # ------------------------------------------------------------------------------------ run

    def fit(self, stop_at: int | None = None) -> list[dict[str, float]]:
        """Train to `train.num_iters` (or stop after step `stop_at`, for tests of resuming)."""
        run = self.cfg.train
        if self.info.is_main:
            what = f"resumed from {self.resumed_from} at step {self.step}" if self.resumed_from else self.init_note
            n_params = sum(p.numel() for p in self.net.parameters())
            n_train = sum(p.numel() for p in self.net.parameters() if p.requires_grad)
            self.logger.write(f"sapiens2 train: {self.cfg.task}, {n_params / 1e6:.2f}M parameters "
                              f"({n_train / 1e6:.2f}M trained), {what}; {self.info.world_size} process(es) on "
                              f"{self.device.type}, {self.parallel}, {'bf16' if self.bf16 else 'fp32'}; "
                              f"{len(self.train_source)} training samples")
        it = iter(self.train_loader())
        window: list[dict[str, float]] = []
        t_last = time.perf_counter()
        data_time = 0.0
        try:
            while self.step < run.num_iters:
                t0 = time.perf_counter()
                batches = [next(it) for _ in range(run.accumulate_steps)]
                data_time += time.perf_counter() - t0
                values = self.train_step(batches)
                self.step += 1
                values.update(self.lrs())
                self.history.append({"step": self.step, **values})
                window.append(values)
                self.logger.advance()
                last = self.step == run.num_iters
                if self.step % run.log_every == 0 or last:
                    elapsed = time.perf_counter() - t_last
                    self._log(window, elapsed / len(window), data_time / len(window))
                    window, data_time, t_last = [], 0.0, time.perf_counter()
                if self.step % run.save_every == 0 or last:
                    self.save()
                if self.val_sources and (self.step % run.val_every == 0 or last):
                    self.validate()
                if stop_at is not None and self.step >= stop_at:
                    break
            if self.step == run.num_iters and self.info.is_main:
                last = self.work_dir / "checkpoints" / f"iter_{self.step:07d}"
                if is_sharded(last):
                    dest = export_sharded(last, self.work_dir / "model.safetensors", metadata=self.weights_metadata())
                else:
                    dest = export_weights(last, self.work_dir / "model.safetensors")
                self.logger.write(f"done: fine-tuned weights in {dest} (sapiens2.load reads it)")
        finally:
            self.logger.close()
        barrier()
        return self.history

    def _log(self, window: list[dict[str, float]], sec_per_it: float, data_per_it: float) -> None:
        keys = [k for k in window[0] if k not in ("lr", "lr_min")]
        mean = {k: sum(w[k] for w in window) / len(window) for k in keys}
        mean = all_reduce_mean(mean, self.device)
        mean.update({k: window[-1][k] for k in ("lr", "lr_min")})
        mean["time"] = sec_per_it
        mean["data_time"] = data_per_it
        if self.device.type == "cuda":
            mean["max_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        terms = " ".join(f"{k} {v:.4g}" for k, v in mean.items() if k.startswith(("loss_", "acc_")))
        mem = f" | mem {mean['max_mem_gb']:.1f}G" if "max_mem_gb" in mean else ""
        self.logger.write(
            f"step {self.step}/{self.cfg.train.num_iters} | loss {mean['loss']:.4g} ({terms}) | lr {mean['lr']:.3g}"
            f" | grad {mean['grad_norm']:.3g} | {sec_per_it:.3f} s/it (data {data_per_it:.3f}) | eta "
            f"{self.logger.eta(self.step)}{mem}")
        self.logger.scalars("train", self.step, mean)

    def weights_metadata(self) -> dict[str, str]:
        """What the weights' shapes cannot tell `sapiens2.load`: the task, and the attention heads of a custom
        width (v1)."""
        return {"task": self.cfg.task, "num_heads": str(self.net.backbone.config.num_heads)}

    def save(self) -> Path:
        run = self.cfg.train
        extra = {"samples_seen_per_rank": self.samples_seen(), "task": self.cfg.task,
                 "config": dump_toml(to_dict(self.cfg))}
        rank_extra = {"data": self.loader.state_dict()} if self.loader is not None else None
        if run.checkpoint == "sharded":
            path = save_sharded(self.work_dir / "checkpoints", self.step, self.model, self.optimizer, self.info,
                                self.scheduler, extra, rank_extra, keep=run.keep_checkpoints)
        else:
            path = save_checkpoint(self.work_dir / "checkpoints", self.step, self.model, self.optimizer,
                                   self.scheduler, self.info, extra, keep=run.keep_checkpoints,
                                   metadata=self.weights_metadata(), rank_extra=rank_extra)
        self.logger.write(f"checkpoint: {path}")
        return path

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Every process runs the whole validation set (FSDP needs all of them in each forward); the main
        process scores it."""
        self.model.eval()
        results: dict[str, float] = {}
        flip = None
        if self.spec.flip_indices is not None and self.cfg.train.flip_test and self.val_sources:
            flip = self.spec.flip_indices(self.val_sources[0])
        try:
            for i, (source, loader) in enumerate(self.val_loaders()):
                evaluator = build_evaluator(self.cfg, source)
                for batch in loader:
                    batch_dev = to_device(batch, self.device)
                    x = self.normalize(batch_dev["image"])
                    with autocast_context(self.device, self.bf16):
                        out = self.model(x)
                        if flip is not None:
                            out = average_flip_heatmaps(out.float(), self.model(x.flip(-1)).float(), flip)
                    out = tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()
                    if self.info.is_main:
                        evaluator.update(out, {k: v.cpu() if torch.is_tensor(v) else v for k, v in batch_dev.items()})
                if self.info.is_main:
                    prefix = "" if len(self.val_sources) == 1 else f"val{i}/"
                    results.update({prefix + k: v for k, v in evaluator.compute().items()})
        finally:
            self.model.train()
        if self.info.is_main:
            shown = " ".join(f"{k} {v:.4g}" for k, v in list(results.items())[:12] if math.isfinite(v))
            self.logger.write(f"val step {self.step}: {shown}")
            self.logger.scalars("val", self.step, results)
        barrier()
        return results


def train(cfg: TrainConfig, resume: str | None = None, device: str | None = None) -> Trainer:
    """Build a `Trainer` and run it to the end; returns it (history, paths) for inspection."""
    trainer = Trainer(cfg, resume=resume, device=device)
    trainer.fit()
    return trainer
