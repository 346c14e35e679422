"""Fine-tuning Sapiens2 on pose, segmentation, normals, pointmaps, albedo and matting, and Sapiens v1 on
pose, 28-class segmentation, normals and relative depth.

Run it:  `sapiens2 train CONFIG.toml [--resume]`, `python -m sapiens2.train CONFIG.toml`, or
`torchrun --nproc_per_node N -m sapiens2.train CONFIG.toml`; from Python,
`sapiens2.train.loop.train(sapiens2.train.config.load_config(path))`.
Example configs for every task are in the repository's `configs/`.

Modules, lowest first (each imports only those above it):
schema      the config sections as dataclasses (`TrainConfig`, `DataConfig`, ...).
losses      the loss terms; `criteria` each task's loss weights (`[loss]`) and criterion.
transforms  the reference augmentations (`[augment]`); `datasets/` the raw sample sources and the
            resumable, per-sample-seeded stream (`StreamSampler`, `TransformedDataset`).
evaluators  validation metrics per task (`sapiens2.metrics`).
specs       `TASK_SPECS`: per task, its tables and the builders of source, transform, criterion, evaluator.
v1, network the network to fine-tune (`build_network`), either generation.
config      `load_config(path, overrides)` / `config_from_dict(dict)`: read and check a config.
logger      `RunLogger` (console, CSV, TensorBoard if installed); `loop` the `Trainer`; `cli`.

What pretraining shares (config reading, optimizer groups and schedule, distributed setup, checkpoints) lives in
`sapiens2.training`, which both import.
"""
