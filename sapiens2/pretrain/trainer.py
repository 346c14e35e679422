"""The pretraining loop: data -> masks -> student / teacher step -> AdamW -> EMA; checkpoints and logs.

Everything random in a step is a function of (seed, step, rank) or (seed, epoch, image index) (shards: (seed,
epoch, stream, ordinal)), and the checkpoint holds the model (student, teacher, EMA centre), the optimizer, the
step and each process's data position, so a resumed run continues exactly as an uninterrupted one would (bit for
bit on CPU with the same process count).

Checkpoints are sharded (`sapiens2.training.checkpoint.save_sharded`): `checkpoints/iter_<N>/`, each process
writing its own shards, no gathering; they resume on any process count (the data order then changes: the streams
or the per-rank slices are others). The final backbone is exported from the last checkpoint by the main process,
reading only the backbone's tensors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
)
from torch.utils.data import DataLoader

from sapiens2.checkpoint import CheckpointError
from sapiens2.hub import load
from sapiens2.models.build import build_backbone
from sapiens2.pretrain.augment import MultiCrop
from sapiens2.pretrain.config import OptimConfig, PretrainConfig, backbone_config
from sapiens2.pretrain.data import (
    PretrainImages,
    ResumableSampler,
    ShardViews,
    collate_views,
    list_images,
    mix_seed,
)
from sapiens2.pretrain.masking import MaskGenerator
from sapiens2.pretrain.runtime import Runtime, wrap_student
from sapiens2.pretrain.schedules import (
    teacher_momentum,
    teacher_temperature,
    warmup_cosine,
)
from sapiens2.pretrain.ssl_meta_arch import SSLMetaArch
from sapiens2.training.checkpoint import (
    LATEST,
    dcp_load,
    export_sharded,
    is_sharded,
    load_sharded,
    save_sharded,
    save_weights,
)
from sapiens2.training.config import ConfigError
from sapiens2.training.optim import build_optimizer as adamw
from sapiens2.training.optim import clip_gradients, param_groups, pretrain_no_decay
from sapiens2.training.shards import ShardLoader, expand_shards, is_shard_spec

log = logging.getLogger("sapiens2.pretrain")

EXPORT_NAME = "pretrain_backbone.safetensors"
LAST_LAYER = "head.last_layer."  # the DINO head's prototype layer, in the student's names
_CKPT = re.compile(r"iter_(\d+)$")


def build_optimizer(student: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over `sapiens2.training.optim` groups with the pretraining rule: weight decay on matrices only,
    none on norms, biases, LayerScale and learned tokens; no layer-wise decay. Fused kernels on CUDA.

    The DINO head's last layer has groups of its own (marked `last_layer`), whose rate the loop holds at 0 for
    the first `freeze_last_layer_iters` steps."""
    named = list(student.named_parameters())
    rest = [(n, p) for n, p in named if not n.startswith(LAST_LAYER)]
    last = [(n, p) for n, p in named if n.startswith(LAST_LAYER)]
    groups = param_groups(rest, cfg.lr, cfg.weight_decay, no_decay=pretrain_no_decay)
    for g in param_groups(last, cfg.lr, cfg.weight_decay, no_decay=pretrain_no_decay):
        groups.append({**g, "last_layer": True, "name": f"last_layer_{g['name']}"})
    return adamw(groups, cfg.betas, cfg.eps)


def build_meta_arch(cfg: PretrainConfig, device: torch.device | str = "cpu") -> SSLMetaArch:
    """A freshly initialised student (and its teacher copy) for `cfg`."""
    rope = torch.bfloat16 if cfg.model.rope_dtype == "bfloat16" else torch.float32
    backbone = build_backbone(backbone_config(cfg.model), rope_dtype=rope).init_weights()
    backbone.grad_checkpointing = cfg.model.grad_checkpointing
    return SSLMetaArch(backbone, cfg.objective).to(device)


@dataclass
class Schedules:
    cfg: PretrainConfig

    def lr(self, step: int) -> float:
        o = self.cfg.optim
        return warmup_cosine(step, self.cfg.train.num_iters, o.lr, o.warmup_iters, o.min_lr)

    def momentum(self, step: int) -> float:
        t = self.cfg.teacher
        return teacher_momentum(step, self.cfg.train.num_iters, t.momentum, t.momentum_final)

    def teacher_temp(self, step: int) -> float:
        t = self.cfg.teacher
        return teacher_temperature(step, t.temp_warmup_start, t.temp, t.temp_warmup_iters)


class Pretrainer:
    """Owns one run: `run()` trains from scratch or from the newest checkpoint in `work_dir`."""

    def __init__(self, cfg: PretrainConfig, rt: Runtime | None = None,
                 printer: Callable[[str], None] | None = print) -> None:
        self.cfg = cfg
        self.rt = rt or Runtime.start(cfg.train.parallel, cfg.train.shard_size)
        self.print = printer if self.rt.is_main and printer is not None else (lambda _msg: None)
        self.work_dir = Path(cfg.train.work_dir)
        self.ckpt_dir = self.work_dir / "checkpoints"
        precision = cfg.train.precision
        self.bf16 = precision == "bf16" or (precision == "auto" and self.rt.device.type == "cuda")
        torch.manual_seed(cfg.train.seed)  # same initial weights on every rank
        self.meta = build_meta_arch(cfg, self.rt.device)
        self.student = wrap_student(self.meta.student, self.meta.teacher, self.rt, self.bf16, cfg.train.compile)
        self.optimizer = build_optimizer(self.meta.student, cfg.optim)
        self.schedules = Schedules(cfg)
        self.mask_generator = MaskGenerator(
            self.meta.token_grid(cfg.crops.global_size), cfg.objective.mask_ratio, cfg.objective.block_prob,
            cfg.objective.min_block,
        )
        self.step = 0
        self.streaming = all(is_shard_spec(s) for s in cfg.data.source)
        if not self.streaming and any(is_shard_spec(s) for s in cfg.data.source):
            raise ConfigError("data.source", "mixes tar shards with image files or folders; give one kind")
        self.data_state: dict | None = None  # a shard stream's position to resume from (this process's)
        self.loader: ShardLoader | None = None

    # ---------------------------------------------------------------------------------------- steps

    def train_step(self, global_views: torch.Tensor, local_views: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """One optimisation step on a batch (G x B x 3 x H x W global, L x B x 3 x h x w local views)."""
        cfg, step, dev = self.cfg, self.step, self.rt.device
        lr = self.schedules.lr(step)
        frozen = step < cfg.optim.freeze_last_layer_iters
        for group in self.optimizer.param_groups:
            # a frozen last layer: rate 0, so AdamW leaves it as it is (its moments still follow the gradients,
            # as in DINOv2 / DINOv3)
            group["lr"] = 0.0 if frozen and group.get("last_layer") else lr
        g = torch.Generator().manual_seed(mix_seed(cfg.train.seed, step, self.rt.rank, 1))
        masks = self.mask_generator(global_views.shape[0] * global_views.shape[1], g).to(dev)
        global_views = global_views.to(dev, non_blocking=True)
        local_views = None if local_views is None or local_views.numel() == 0 else local_views.to(dev, non_blocking=True)
        self.meta.train()
        with self._autocast():
            out = self.meta(global_views, local_views, masks, self.schedules.teacher_temp(step), self.student)
        out.loss.backward()
        metrics = dict(out.metrics)
        norm = clip_gradients(self.meta.student.parameters(), cfg.optim.clip_grad)
        metrics["grad_norm"] = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.meta.update_teacher(self.schedules.momentum(step))
        self.step += 1
        return metrics

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.rt.device.type, dtype=torch.bfloat16)

    # ----------------------------------------------------------------------------------------- loop

    def batches(self, paths: list[Path] | None = None) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """Batches from the current step on, epoch after epoch (resume-exact): from `paths`, or streamed from
        the config's shards when `paths` is None."""
        cfg = self.cfg
        if paths is None:
            shards, _ = expand_shards(cfg.data.source)
            self.loader = ShardLoader(shards, ShardViews(MultiCrop(cfg.crops)), cfg.train.batch_size, collate_views,
                                      self.rt.rank, self.rt.world_size, cfg.data.num_workers, cfg.train.seed,
                                      cfg.data.shuffle_buffer, pin_memory=self.rt.device.type == "cuda",
                                      state=self.data_state)
            yield from self.loader
            return
        dataset = PretrainImages(paths, MultiCrop(cfg.crops), cfg.train.seed)
        sampler = ResumableSampler(len(dataset), cfg.train.batch_size, self.rt.rank, self.rt.world_size,
                                   cfg.train.seed)
        while True:
            epoch, start = divmod(self.step, sampler.batches_per_epoch)
            sampler.set_position(epoch, start)
            dataset.set_epoch(epoch)
            loader = DataLoader(dataset, cfg.train.batch_size, sampler=sampler, num_workers=cfg.data.num_workers,
                                collate_fn=collate_views, drop_last=True,
                                pin_memory=self.rt.device.type == "cuda")
            yield from loader

    def run(self, resume: bool = True) -> Path:
        """Train to `train.num_iters`; returns the exported backbone (safetensors, official layout)."""
        cfg = self.cfg
        if not (resume and self.resume()) and cfg.model.init:
            self.initialize_from(cfg.model.init)
        paths = None if self.streaming else list_images(cfg.data.source)
        n_params = sum(p.numel() for p in self.meta.student.backbone.parameters())
        data = "tar shards (streamed)" if paths is None else f"{len(paths)} images"
        self.print(f"pretraining a {n_params / 1e6:.1f}M-parameter backbone on {data}, "
                   f"{self.rt.world_size} process(es), {self.rt.parallel}, {'bf16' if self.bf16 else 'fp32'}, "
                   f"from step {self.step} to {cfg.train.num_iters}; {self.mask_generator}")
        t0, first = time.perf_counter(), self.step
        if self.step < cfg.train.num_iters:
            for global_views, local_views in self.batches(paths):
                metrics = self.train_step(global_views, local_views)
                if self.step % cfg.train.log_every == 0 or self.step == cfg.train.num_iters:
                    self._log(metrics, (self.step - first) / (time.perf_counter() - t0))
                if self.step % cfg.train.save_every == 0 or self.step == cfg.train.num_iters:
                    self.save()
                if self.step >= cfg.train.num_iters:
                    break
        # The loop saves at its last step, so that checkpoint holds the final weights (every process takes this
        # branch without asking the file system, which another node may see later).
        out = self.export_from(self.ckpt_dir / f"iter_{self.step:07d}", self.work_dir / EXPORT_NAME, cfg.train.export)
        self.print(f"saved the {cfg.train.export} backbone to {out}")
        return out

    def _log(self, metrics: dict[str, torch.Tensor], steps_per_s: float) -> None:
        values = self.rt.all_mean(metrics)
        values.update(step=self.step, lr=self.optimizer.param_groups[0]["lr"],
                      momentum=self.schedules.momentum(self.step - 1),
                      teacher_temp=self.schedules.teacher_temp(self.step - 1))
        if not self.rt.is_main:
            return
        left = (self.cfg.train.num_iters - self.step) / max(steps_per_s, 1e-9)
        shown = " ".join(f"{k} {values[k]:.4f}" for k in ("loss", "mae", "dino", "koleo") if k in values)
        self.print(f"step {self.step}/{self.cfg.train.num_iters} {shown} lr {values['lr']:.3g} "
                   f"{steps_per_s:.2f} it/s eta {_duration(left)}")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.work_dir / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(values) + "\n")

    # ---------------------------------------------------------------------------------- checkpoints

    def full_state(self) -> dict:
        """Model and optimizer as full (unsharded) CPU state dicts, and the step."""
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd, optim_sd = get_state_dict(self.meta, self.optimizer, options=opts)
        return {"step": self.step, "model": model_sd, "optimizer": optim_sd}

    def save(self) -> Path:
        """A sharded checkpoint `checkpoints/iter_<N>/` (every process writes its shards and its data position);
        older ones beyond `keep_checkpoints` go."""
        rank_extra = {"data": self.loader.state_dict()} if self.loader is not None else None
        return save_sharded(self.ckpt_dir, self.step, self.meta, self.optimizer, self.rt.info,
                            extra={"images_per_step": self.cfg.train.batch_size * self.rt.world_size},
                            rank_extra=rank_extra, keep=self.cfg.train.keep_checkpoints)

    def checkpoints(self) -> list[Path]:
        return sorted(p for p in self.ckpt_dir.glob("iter_*") if _CKPT.search(p.name) and is_sharded(p))

    def resume(self, path: str | Path | None = None) -> bool:
        """Load the newest checkpoint in `work_dir` (or `path`); False when there is none."""
        if path is None:
            latest = self.ckpt_dir / LATEST
            path = self.ckpt_dir / latest.read_text().strip() if latest.is_file() else None
            if path is None or not is_sharded(path):
                found = self.checkpoints()
                if not found:
                    return False
                path = found[-1]
        state, rank_extra = load_sharded(path, self.meta, self.optimizer, self.rt.info)
        self.step = int(state["step"])
        self.data_state = (rank_extra or {}).get("data")
        if rank_extra is None:
            self.print(f"{path} was written by {state['world_size']} process(es), resumed on {self.rt.world_size}: "
                       "the data order from here differs from the original run's")
        self.print(f"resumed from {path} at step {self.step}")
        return True

    def initialize_from(self, source: str | Path) -> None:
        """Weights from a training checkpoint (an `iter_N` folder, or an older `.pt` file: the whole model) or a
        pretrain backbone file."""
        opts = StateDictOptions(full_state_dict=True)
        if is_sharded(source):
            sd = {"model": get_model_state_dict(self.meta)}
            dcp_load(sd, source)
            set_model_state_dict(self.meta, sd["model"])
            self.print(f"initialised from {source}")
            return
        if str(source).endswith(".pt"):
            state = torch.load(source, map_location="cpu", weights_only=True, mmap=True)["model"]
        else:
            backbone = load(source).state_dict()
            state = self.full_state()["model"]
            for net in ("student", "teacher"):
                state.update({f"{net}.backbone.{k}": v for k, v in backbone.items()})
        set_model_state_dict(self.meta, state, options=opts)
        self.print(f"initialised from {source}")

    def export_from(self, checkpoint: Path, path: str | Path, which: str = "teacher") -> Path:
        """`export`, from a sharded checkpoint of the current step: the main process reads the backbone's
        tensors from disk, nothing is gathered."""
        if self.rt.is_main:
            export_checkpoint(checkpoint, path, which)
        self.rt.barrier()
        return Path(path)

    def export(self, path: str | Path, which: str = "teacher") -> Path:
        """The `which` ('teacher' or 'student') backbone as bare keys in safetensors: the official
        pretrain layout, which `sapiens2.load` and fine-tuning read directly (gathered from the live model)."""
        if self.rt.sharded or self.rt.is_main:
            model = self.full_state()["model"]
            prefix = f"{which}.backbone."
            state = {k[len(prefix):]: v for k, v in model.items() if k.startswith(prefix)}
        if self.rt.is_main:
            save_backbone(state, path)
        self.rt.barrier()
        return Path(path)


def save_backbone(state: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Bare backbone keys -> a safetensors file, atomically."""
    return save_weights({k: v.clone() for k, v in state.items()}, path, metadata={"format": "pt"})


def export_checkpoint(checkpoint: str | Path, out: str | Path, which: str = "teacher") -> Path:
    """A training checkpoint's teacher (or student) backbone -> the official pretrain safetensors layout. A sharded
    `iter_N` folder is read tensor by tensor (only the backbone's); an older `step_N.pt` file whole."""
    if Path(checkpoint).is_dir():
        if not is_sharded(checkpoint):
            raise CheckpointError(checkpoint, "not a checkpoint folder (no sharded save in it)")
        try:
            return export_sharded(checkpoint, out, f"{which}.backbone.", metadata={"format": "pt"})
        except FileNotFoundError as e:
            raise CheckpointError(checkpoint, str(e)) from None
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    prefix = f"{which}.backbone."
    backbone = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not backbone:
        raise CheckpointError(f"{checkpoint} holds no {which} backbone")
    return save_backbone(backbone, out)


def pretrain(cfg: PretrainConfig, resume: bool = True, printer: Callable[[str], None] | None = print) -> Path:
    """Run pretraining for `cfg` in this process (under torchrun: this rank); returns the exported file."""
    trainer = Pretrainer(cfg, printer=printer)
    try:
        return trainer.run(resume)
    finally:
        trainer.rt.shutdown()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
