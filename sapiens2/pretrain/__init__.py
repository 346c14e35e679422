"""Sapiens2 pretraining: masked reconstruction (MAE) + self-distillation of the [cls] token (DINO-style).

Pieces, each usable alone:

- `MaskGenerator` / `TokenMasks` (masking.py): mixed blockwise / patchwise masks, exact counts, keep
  indices for `Sapiens2Backbone(x, keep=...)`.
- `MAEDecoder` (decoder.py), `DINOHead` (head.py), losses in `sapiens2.pretrain.loss`: `MAELoss`,
  `DINOClsTokenLoss` (EMA centring by default, Sinkhorn-Knopp as a choice), `KoLeoLoss`.
- `SSLMetaArch` (ssl_meta_arch.py): student + EMA teacher + the combined loss, `ObjectiveConfig`.
- `MultiCrop` (augment.py), `PretrainImages` / `ResumableSampler` (data.py) for files, `ShardViews` (data.py)
  for tar shards streamed by `sapiens2.training.shards`.
- `PretrainConfig` / `load_config` (config.py), `Pretrainer` / `pretrain` / `export_checkpoint`
  (trainer.py; sharded checkpoints `checkpoints/iter_N/`, FSDP / HSDP in runtime.py); the CLI in cli.py
  (`python -m sapiens2.pretrain CONFIG`).

The result is saved as bare backbone keys in safetensors, the official pretrain layout. This package file imports
nothing, so registering the `sapiens2 pretrain` sub-command (`cli.py`) loads no torch.
"""
