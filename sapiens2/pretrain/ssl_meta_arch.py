"""Wires the Sapiens2 objective: a student (backbone + DINO head + MAE decoder) and its EMA teacher.

One training step, per image of the batch:
- the 2 global views are masked (75 %); the student encoder sees only their visible tokens. Its output
  feeds the MAE decoder (reconstruct the masked tokens' pixels) and, through the [cls] token and the
  DINO head, the contrastive loss;
- the 4 local views go through the student unmasked and feed the contrastive loss only;
- the teacher (an EMA of the student's backbone and head, never trained) sees the full global views.

loss = mae_weight * L_mae + dino_weight * L_cl + koleo_weight * L_koleo, with L_koleo summed over the
global views' [cls] tokens (before the head), as DINOv2 sums it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from sapiens2.models.backbone import Sapiens2Backbone
from sapiens2.pretrain.decoder import MAEDecoder
from sapiens2.pretrain.head import DINOHead
from sapiens2.pretrain.loss import DINOClsTokenLoss, KoLeoLoss, MAELoss, patchify
from sapiens2.pretrain.masking import TokenMasks


@dataclass(frozen=True)
class ObjectiveConfig:
    """The loss side of pretraining; defaults are the Sapiens2 1B recipe (see the pretraining spec)."""

    mask_ratio: float = 0.75
    block_prob: float = 0.4
    min_block: int = 4
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    norm_pix: bool = True
    # The reconstruction target is the image downsampled by this factor (4K model: 2 = reconstruct at 2K).
    target_downsample: int = 1
    head_out_dim: int = 65536
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    head_layers: int = 3
    student_temp: float = 0.1
    # "ema": DINO's centring by a moving average of the teacher's logits, the paper's "center momentum 0.9";
    # "sinkhorn": Sinkhorn-Knopp (DINOv3's choice, which the paper says it builds on; center_momentum unused).
    centering: str = "ema"
    center_momentum: float = 0.9
    sinkhorn_iterations: int = 3
    mae_weight: float = 1.0
    dino_weight: float = 0.4
    koleo_weight: float = 0.04


def token_stride(backbone: Sapiens2Backbone) -> int:
    """Pixels per encoder token side: the patch size, times the window size for the 4K tokenizer."""
    cfg = backbone.config
    return cfg.patch_size * (cfg.window_size if cfg.use_tokenizer else 1)


def token_grid(backbone: Sapiens2Backbone, image_hw: tuple[int, int]) -> tuple[int, int]:
    """The grid the encoder blocks (and the masks) work on for an image of `image_hw` pixels."""
    s = token_stride(backbone)
    return image_hw[0] // s, image_hw[1] // s


class Student(nn.Module):
    """The trainable part, one `forward` per step (so DDP / FSDP see a single call)."""

    def __init__(self, backbone: Sapiens2Backbone, head: DINOHead, decoder: MAEDecoder) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.decoder = decoder

    def forward(
        self, global_views: torch.Tensor, keep: torch.Tensor, local_views: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """-> (global [cls] tokens, global logits, local logits or None, per-token pixel predictions)."""
        tokens, grid = self.backbone.tokens(global_views, keep)
        cls_global = tokens[:, 0]
        pred = self.decoder(tokens, keep, grid)
        logits_local = None
        if local_views is not None:
            logits_local = self.head(self.backbone(local_views)[:, 0])
        return cls_global, self.head(cls_global), logits_local, pred


class Teacher(nn.Module):
    """The EMA copy of the student's backbone and DINO head; no gradients."""

    def __init__(self, backbone: Sapiens2Backbone, head: DINOHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(views)[:, 0])


@dataclass
class StepOutput:
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]  # detached scalars: read them (a device sync) only when logging


class SSLMetaArch(nn.Module):
    """Student, teacher and losses. `forward(...)` gives the step's loss; `update_teacher(m)` the EMA."""

    def __init__(self, backbone: Sapiens2Backbone, cfg: ObjectiveConfig = ObjectiveConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        embed = backbone.config.embed_dim
        stride = token_stride(backbone)
        if stride % cfg.target_downsample:
            raise ValueError(f"target_downsample {cfg.target_downsample} must divide the token stride {stride}")
        self.target_size = stride // cfg.target_downsample
        head = DINOHead(embed, cfg.head_out_dim, cfg.head_hidden_dim, cfg.head_bottleneck_dim, cfg.head_layers)
        decoder = MAEDecoder(
            embed, self.target_size**2 * backbone.config.in_channels, cfg.decoder_dim, cfg.decoder_depth,
            cfg.decoder_heads, backbone.num_prefix_tokens,
        )
        self.student = Student(backbone, head, decoder)
        self.teacher = Teacher(copy.deepcopy(backbone), copy.deepcopy(head))
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.mae_loss = MAELoss(cfg.norm_pix)
        self.dino_loss = DINOClsTokenLoss(cfg.head_out_dim, cfg.student_temp, cfg.centering, cfg.center_momentum,
                                          cfg.sinkhorn_iterations)
        self.koleo_loss = KoLeoLoss()

    def train(self, mode: bool = True) -> SSLMetaArch:
        super().train(mode)
        self.teacher.eval()  # the teacher is never in training mode (no checkpointing, no grads)
        return self

    def token_grid(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        return token_grid(self.student.backbone, image_hw)

    def forward(
        self,
        global_views: torch.Tensor,
        local_views: torch.Tensor | None,
        masks: TokenMasks,
        teacher_temp: float,
        student: nn.Module | None = None,
    ) -> StepOutput:
        """global_views: G x B x 3 x H x W; local_views: L x B x 3 x h x w, or None; `masks` for the
        G * B global views flattened view-major (row v * B + b is view v of image b).

        `student` is the module to call for the student forward (a DDP / FSDP wrapper of `self.student`),
        `self.student` when None.
        """
        student = student if student is not None else self.student
        n_global, b = global_views.shape[:2]
        if masks.keep.shape[0] != n_global * b:
            raise ValueError(f"{n_global} x {b} global views but masks for {masks.keep.shape[0]}")
        flat_global = global_views.flatten(0, 1)
        flat_local = None if local_views is None or local_views.shape[0] == 0 else local_views.flatten(0, 1)
        with torch.no_grad():
            teacher_logits = self.teacher(flat_global)
            targets = self.dino_loss.teacher_targets(teacher_logits, teacher_temp)
        cls_global, logits_global, logits_local, pred = student(flat_global, masks.keep, flat_local)

        pixels = flat_global.float()
        if self.cfg.target_downsample > 1:
            pixels = nn.functional.avg_pool2d(pixels, self.cfg.target_downsample)
        mae = self.mae_loss(pred, patchify(pixels, self.target_size), masks.mask)
        dino = self.dino_loss(
            logits_global.view(n_global, b, -1),
            None if logits_local is None else logits_local.view(-1, b, logits_local.shape[-1]),
            targets.view(n_global, b, -1),
        )
        koleo = sum(self.koleo_loss(c) for c in cls_global.view(n_global, b, -1))
        loss = self.cfg.mae_weight * mae + self.cfg.dino_weight * dino + self.cfg.koleo_weight * koleo
        metrics = {"loss": loss.detach(), "mae": mae.detach(), "dino": dino.detach(), "koleo": koleo.detach()}
        return StepOutput(loss, metrics)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher <- momentum * teacher + (1 - momentum) * student, for the backbone and the head.

        Under FSDP2 both are sharded alike and the update is shard to shard."""
        for net in (self.student, self.teacher):
            if hasattr(net, "reshard"):  # an FSDP2 module: make sure its parameters are the shards
                net.reshard()
        pairs = [
            (t, s)
            for tm, sm in ((self.teacher.backbone, self.student.backbone), (self.teacher.head, self.student.head))
            for t, s in zip(tm.parameters(), sm.parameters(), strict=True)
        ]
        teacher = [_local(t) for t, _ in pairs]
        student = [_local(s).to(t.dtype) for t, s in zip(teacher, (s for _, s in pairs))]
        torch._foreach_lerp_(teacher, student, 1.0 - momentum)


def _local(p: torch.Tensor) -> torch.Tensor:
    """The local shard of an FSDP2 (DTensor) parameter, or the tensor itself."""
    to_local = getattr(p, "to_local", None)
    return to_local() if to_local is not None else p
