"""From-scratch initialisation of a Sapiens2 backbone for pretraining (the official recipe's init)."""

from __future__ import annotations

from torch import nn

from sapiens2.models.backbone import Sapiens2Backbone


def init_backbone_(backbone: Sapiens2Backbone, std: float = 0.02) -> Sapiens2Backbone:
    """Truncated-normal (std 0.02) Linear / Conv weights with zero biases, RMSNorm gains at 1, and
    truncated-normal [cls], storage and 4K-tokenizer tokens. LayerScale keeps its constructor value."""
    for m in backbone.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.RMSNorm) and m.weight is not None:
            nn.init.ones_(m.weight)
    tokens = [backbone.cls_token, backbone.storage_tokens]
    if getattr(backbone, "tokenizer", None) is not None:
        tokens += [backbone.tokenizer.w_cls, backbone.tokenizer.local_pos_embed]
    for t in tokens:
        nn.init.trunc_normal_(t, std=std)
    return backbone
