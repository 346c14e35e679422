"""Fine-tuning Sapiens2 on pose, segmentation, normals, pointmaps, albedo and matting, and Sapiens v1 on
pose, 28-class segmentation, normals and relative depth.

Run it:  `sapiens2 train CONFIG.toml [--resume]`, `python -m sapiens2.train CONFIG.toml`, or
`torchrun --nproc_per_node N -m sapiens2.train CONFIG.toml`; from Python, `train(load_config(path))`.
Example configs for every task are in the repository's `configs/`.

Task-specific modules: `config` (the TOML schema), `datasets/`, `transforms`, `losses`, `tasks` (what
differs per task), `v1` (the Sapiens v1 networks), `loop` (the `Trainer`).

Generic API (no task in it; `sapiens2.pretrain` builds on these):

config      `from_dict(cls, data, where="") -> cls`: any dataclass from a parsed TOML table, every field
            converted and checked; `ConfigError(field, reason)`; `apply_override(data, "a.b=1")`;
            `to_dict(cfg)`, `dump_toml(dict) -> str`.
distributed `init_distributed(device=None) -> DistInfo(rank, world_size, local_rank, device)` (torchrun
            env; NCCL on GPU, gloo on CPU); `choose_parallel(mode, info)`; `wrap_model(model, "none" |
            "ddp" | "fsdp", info, shard_modules)` (FSDP2 `fully_shard` per given module, then the root);
            `unwrap(model)`; `barrier()`, `all_reduce_mean(dict, device)`, `broadcast_object`, `cleanup()`.
optim       `param_groups(named_params, lr, weight_decay, layer_decay=1.0, depth=0,
            backbone_prefix="backbone.") -> list[dict]` (layer-wise LR decay over the backbone blocks;
            no weight decay on 1-D params, biases, tokens, pos embeds; `backbone_prefix=""` for a bare
            backbone); `layer_id(name, depth, backbone_prefix)`; `build_optimizer(groups, betas, eps,
            fused=None) -> AdamW`; `Schedule(total_iters, warmup_iters, start_factor, kind="poly" |
            "cosine" | "constant", power, min_factor)` (a step -> lr factor callable);
            `build_scheduler(optimizer, schedule) -> LambdaLR`; `clip_gradients(params, max_norm) -> norm`.
checkpoint  `save_checkpoint(root, step, model, optimizer, scheduler, info, extra=None, keep=0,
            metadata=None) -> Path` (atomic `iter_<N>/` with `model.safetensors` + `training_state.pt` +
            per-rank RNG, then `root/latest`); `resolve_checkpoint(resume | "auto", work_dir) -> Path`;
            `load_checkpoint(path, model, optimizer, scheduler, info) -> dict` (step, extra);
            `full_model_state(model)`, `save_weights(state, path)`, `export_weights(ckpt, dest)`,
            `rng_state()`, `set_rng_state(state)`.
datasets    `StreamSampler(size, seed, rank, world_size, start)` (endless, resumable (index, epoch)
            stream); `TransformedDataset(source, transform(sample, rng), seed)` (per-sample seeded RNG,
            refetch of rejected samples); `ConcatSources(sources, repeats)`; `sample_rng(seed, epoch, i)`.
logger      `RunLogger(work_dir, total_steps, start_step, enabled)`: `.write(line)`,
            `.scalars("train" | "val", step, values)` (CSV + TensorBoard if installed), `.advance()`,
            `.eta(step)`, `.close()`; `read_csv_log(path)`.
"""

from sapiens2.train.config import ConfigError, TrainConfig, from_dict, load_config

__all__ = ["ConfigError", "TrainConfig", "Trainer", "from_dict", "load_config", "train"]


def __getattr__(name: str):
    # The loop pulls in torch, the models and the data code; keep `import sapiens2.train` light.
    if name in ("Trainer", "train"):
        from sapiens2.train import loop

        return getattr(loop, name)
    raise AttributeError(name)
