"""The loss side of each task: its weights (the `[loss]` table, one dataclass per task) and its criterion, an
`nn.Module` mapping (network output, batch) to named loss terms (`loss_*`, summed by the loop) and logged
accuracies (`acc_*`).

Loss weights default to the reference recipes (spec §6.5); a weight of 0 turns a term off. Matting has no
reference recipe: alpha (head channel 3) learns from L1 + gradient + Laplacian-pyramid losses, and the
premultiplied foreground (channels 0-2) from the image times alpha where alpha is near 0 or 1, the only pixels
where that product is the true premultiplied foreground.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sapiens2.train import losses as L
from sapiens2.training.config import ConfigError


# ------------------------------------------------------------------------------------ loss weights


@dataclass
class PoseLoss:
    mse: float = 10.0
    ohkm: float = 0.0  # the reference keeps OHKM commented out
    ohkm_topk: int = 128


@dataclass
class SegLoss:
    ce: float = 1.0
    dice: float = 1.0
    class_weights: list[float] | None = None  # None: the reference weights for 29 classes, else uniform


@dataclass
class NormalLoss:
    cosine: float = 10.0
    l1: float = 1.0
    grad: float = 10.0


@dataclass
class PointmapLoss:
    l1: float = 2.0
    multiscale_l1: float = 1.0
    silog: float = 1.0
    intrinsics: float = 1.0
    shift_invariant_l1: float = 1.0
    normal: float = 2.0
    scale: float = 4.0
    clamp: float = 4.0  # the L1 terms are clamped at this value after weighting


@dataclass
class AlbedoLoss:
    l1: float = 2.0
    grad: float = 2.0
    chroma: float = 1.0


@dataclass
class DepthLoss:
    silog: float = 1.0  # Sapiens v1 trained relative depth with the scale-invariant log loss


@dataclass
class MattingLoss:
    l1: float = 1.0
    grad: float = 1.0
    laplacian: float = 1.0
    foreground: float = 1.0


# --------------------------------------------------------------------------------------- criteria


class PoseCriterion(nn.Module):
    def __init__(self, w: PoseLoss) -> None:
        super().__init__()
        self.mse = L.KeypointMSELoss(w.mse) if w.mse else None
        self.ohkm = L.KeypointOHKMMSELoss(w.ohkm, w.ohkm_topk) if w.ohkm else None

    def forward(self, out: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        hm, kw = batch["heatmaps"], batch["keypoint_weights"]
        res = {}
        if self.mse is not None:
            res["loss_kpt"] = self.mse(out, hm, kw)
        if self.ohkm is not None:
            res["loss_ohkm"] = self.ohkm(out, hm, kw)
        res["acc_pose"] = pck_accuracy(out.detach(), hm, kw)
        return res


def pck_accuracy(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, thr: float = 0.05) -> torch.Tensor:
    """PCK@thr between heatmap argmaxes, distances normalized by the heatmap (W, H), over weighted points."""
    b, k, h, w = pred.shape

    def peaks(x: torch.Tensor) -> torch.Tensor:
        i = x.float().flatten(2).argmax(-1)
        return torch.stack([(i % w).float() / w, (i // w).float() / h], -1)

    d = (peaks(pred) - peaks(target)).norm(dim=-1)
    valid = weights > 0
    return ((d < thr) & valid).sum() / valid.sum().clamp(min=1)


class SegCriterion(nn.Module):
    def __init__(self, w: SegLoss, num_classes: int) -> None:
        super().__init__()
        cw = w.class_weights
        if cw is None and num_classes == len(L.SEG29_CLASS_WEIGHTS):
            cw = L.SEG29_CLASS_WEIGHTS
        if cw is not None and len(cw) != num_classes:
            raise ConfigError("loss.class_weights", f"has {len(cw)} weights for {num_classes} classes")
        self.ce = L.WeightedCrossEntropyLoss(w.ce, tuple(cw) if cw else None) if w.ce else None
        self.dice = L.DiceLoss(w.dice) if w.dice else None

    def forward(self, out: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        labels = batch["label"]
        res = {}
        if self.ce is not None:
            res["loss_ce"] = self.ce(out, labels)
        if self.dice is not None:
            res["loss_dice"] = self.dice(out, labels)
        logits = L.match_size(out.detach().float(), labels)
        valid = labels != 255
        res["acc_seg"] = 100 * ((logits.argmax(1) == labels) & valid).sum() / valid.sum().clamp(min=1)
        return res


def weighted_terms(*terms: tuple[str, nn.Module]) -> nn.ModuleDict:
    """The named loss terms whose weight is not zero: a zero weight in `[loss]` switches a term off."""
    return nn.ModuleDict({k: m for k, m in terms if m.weight})


class MaskedTermsCriterion(nn.Module):
    """Every term on (prediction, target, mask): the dense tasks whose losses all compare pixel for pixel."""

    def __init__(self, *terms: tuple[str, nn.Module]) -> None:
        super().__init__()
        self.terms = weighted_terms(*terms)

    def forward(self, out: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        return {k: m(out.float(), batch["target"], batch["mask"]) for k, m in self.terms.items()}


class NormalCriterion(MaskedTermsCriterion):
    def __init__(self, w: NormalLoss) -> None:
        super().__init__(("loss_cosine", L.NormalCosineLoss(w.cosine)), ("loss_l1", L.MaskedL1Loss(w.l1)),
                         ("loss_grad", L.GradientLoss(w.grad)))


class AlbedoCriterion(MaskedTermsCriterion):
    def __init__(self, w: AlbedoLoss) -> None:
        super().__init__(("loss_l1", L.MaskedL1Loss(w.l1)), ("loss_grad", L.GradientLoss(w.grad, average=True)),
                         ("loss_chroma", L.ChromaticityL1Loss(w.chroma)))


class MattingCriterion(nn.Module):
    """On the official matting head's output: channels 0-2 premultiplied foreground, channel 3 alpha."""

    def __init__(self, w: MattingLoss) -> None:
        super().__init__()
        self.terms = weighted_terms(("loss_l1", L.MaskedL1Loss(w.l1)), ("loss_grad", L.AlphaGradientL1Loss(w.grad)),
                                    ("loss_laplacian", L.LaplacianPyramidLoss(w.laplacian)))
        self.foreground = L.ForegroundL1Loss(w.foreground) if w.foreground else None

    def forward(self, out: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        out = out.float()
        alpha, mask = batch["target"], batch["mask"]
        res = {k: m(out[:, 3:4], alpha, mask) for k, m in self.terms.items()}
        if self.foreground is not None:
            res["loss_foreground"] = self.foreground(out[:, :3], batch["image"].float() / 255, alpha, mask)
        return res


class DepthCriterion(nn.Module):
    """Sapiens v1 relative depth: SiLog between the prediction (resized to the target) and the GT depth."""

    def __init__(self, w: DepthLoss) -> None:
        super().__init__()
        self.silog = L.SiLogLoss(w.silog) if w.silog else None

    def forward(self, out: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        pred = L.match_size(out.float(), batch["target"])
        return {"loss_silog": self.silog(pred[:, 0], batch["target"][:, 0], batch["mask"])} if self.silog else {}


class PointmapCriterion(nn.Module):
    def __init__(self, w: PointmapLoss) -> None:
        super().__init__()
        self.w = w
        self.l1 = L.ClampedL1Loss(w.l1, w.clamp)
        self.ms = L.ClampedL1Loss(w.multiscale_l1, w.clamp, upsample=2)
        self.si = L.ClampedL1Loss(w.shift_invariant_l1, w.clamp, shift_invariant=True)
        self.silog = L.SiLogLoss(w.silog)
        self.intr = L.IntrinsicsConsistencyLoss(w.intrinsics)
        self.normal = L.PointmapNormalLoss(w.normal)
        self.scale = L.ScaleL1Loss(w.scale)

    def forward(self, out: tuple[torch.Tensor, torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        pred, pred_scale = out
        pred = L.match_size(pred.float(), batch["target"])
        t, m, md = batch["target"], batch["mask"], batch["mean_depth"]
        w, res = self.w, {}
        if w.l1:
            res["loss_l1"] = self.l1(pred, t, m, md)
        if w.multiscale_l1:
            res["loss_multiscale_l1_2"] = self.ms(pred, t, m, md)
        if w.silog:
            res["loss_silog"] = self.silog(pred[:, 2], t[:, 2], m)
        if w.intrinsics:
            res["loss_intrinsics"] = self.intr(pred, m, batch["K"])
        if w.shift_invariant_l1:
            res["loss_shift_invariant_l1"] = self.si(pred, t, m, md)
        if w.normal:
            res["loss_normal"] = self.normal(pred, t, m, batch["scale"])
        if w.scale:
            res["loss_scale"] = self.scale(pred_scale.float(), batch["scale"])
        return res
