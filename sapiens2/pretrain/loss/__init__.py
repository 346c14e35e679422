"""The pretraining losses, one small module each."""

from sapiens2.pretrain.loss.dino_clstoken_loss import DINOClsTokenLoss, sinkhorn_knopp
from sapiens2.pretrain.loss.koleo_loss import KoLeoLoss
from sapiens2.pretrain.loss.mae_loss import MAELoss, normalize_patches, patchify

__all__ = ["DINOClsTokenLoss", "KoLeoLoss", "MAELoss", "normalize_patches", "patchify", "sinkhorn_knopp"]
