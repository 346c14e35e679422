"""What fine-tuning (`sapiens2.train`) and pretraining (`sapiens2.pretrain`) share; it knows no task and
imports neither.

config       `from_dict(cls, data, where="") -> cls`: any dataclass from a parsed TOML table, every field
             converted and checked (non-finite numbers refused); `ConfigError(field, reason)`;
             `read_toml(path, overrides)` (a missing, folder, non-UTF-8 or malformed file is a ConfigError
             naming it); `apply_override(data, "a.b=1")`; `to_dict(cfg)`, `dump_toml(dict) -> str`.
optim        `param_groups(named_params, lr, weight_decay, layer_decay=1.0, depth=0, backbone_prefix="backbone.",
             no_decay=finetune_no_decay)` (layer-wise LR decay over the backbone blocks; which parameters skip
             weight decay is the recipe's rule: `finetune_no_decay` or `pretrain_no_decay`); `layer_id(...)`;
             `build_optimizer(groups, betas, eps, fused=None) -> AdamW`; `Schedule(...)` (a step -> lr factor
             callable); `build_scheduler(optimizer, schedule) -> LambdaLR`; `clip_gradients(params, max_norm)`.
distributed  `init_distributed(device=None) -> DistInfo(rank, world_size, local_rank, device)` (torchrun env;
             NCCL on GPU, gloo on CPU); `choose_parallel(mode, info)`; `shard_mesh(mode, info, shard_size)` (1-D
             for fsdp, 2-D replicate x shard for hsdp); `wrap_model(model, "none" | "ddp" | "fsdp" | "hsdp", info,
             shard_modules, shard_size)`; `compile_blocks(blocks)`; `unwrap(model)`; `barrier()`,
             `all_reduce_mean(dict, device)`, `cleanup()`.
checkpoint   `save_checkpoint(root, step, model, optimizer, scheduler, info, extra=None, keep=0, metadata=None)`
             (atomic `iter_<N>/` with `model.safetensors` + `training_state.pt` + per-rank RNG, then
             `root/latest`); `resolve_checkpoint(resume | "auto", work_dir)`; `load_checkpoint(...)`;
             `full_model_state(model)`, `save_weights(state, path)`, `export_weights(ckpt, dest)`; sharded
             (torch.distributed.checkpoint, every process its own shards, any process count on load):
             `save_sharded(...)`, `load_sharded(...) -> (state, rank_extra)`, `export_sharded(ckpt, dest, prefix)`.
shards       WebDataset-style tar shards: `ShardWriter` (or `write_shard` + `write_index`), `pack_files`,
             `expand_shards(specs)` (folders with index.json, curate outputs, ranges, globs, URLs), `ShardStream`
             (split by rank and worker, buffer-shuffled, deterministic), `ShardLoader` (a DataLoader whose
             `state_dict()` resumes exactly).
"""
