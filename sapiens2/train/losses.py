"""The fine-tuning losses, one small module each, as the reference defines them (spec §6.5).

Every module takes its weight at construction and returns the weighted scalar. Conventions: predictions
and targets are B x C x H x W float; `mask` is B x H x W bool (valid pixels); "/ #valid" means the sum over
valid pixels (and channels where stated) divided by the number of valid pixels. A prediction whose size
differs from the target's is bilinearly resized to it first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SEG29_CLASS_WEIGHTS = (0.1, 10, 10, 3, 2, 4, 4, 2, 2, 6, 10, 3, 3, 1, 4, 4, 2, 2, 6, 10, 3, 3, 1, 1, 10, 10, 10, 10, 10)


def match_size(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if pred.shape[-2:] != target.shape[-2:]:
        return F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return pred


def finite(x: torch.Tensor) -> torch.Tensor:
    """NaN / Inf -> 0, as the reference guards its dense losses."""
    return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over valid pixels and channels of |pred - target|, / #valid."""
    m = mask[:, None].to(pred.dtype)
    return ((pred - target).abs() * m).sum() / m.sum().clamp(min=1)


def forward_diff_sq(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical terms: squared difference of forward differences, summed over channels and
    over pixel pairs where both pixels are valid, / #valid pairs."""
    out = []
    for dim in (-1, -2):
        n = pred.shape[dim]
        dp = pred.narrow(dim, 1, n - 1) - pred.narrow(dim, 0, n - 1)
        dt = target.narrow(dim, 1, n - 1) - target.narrow(dim, 0, n - 1)
        both = (mask.narrow(dim, 1, n - 1) & mask.narrow(dim, 0, n - 1))[:, None].to(pred.dtype)
        out.append(((dp - dt) ** 2 * both).sum() / both.sum().clamp(min=1))
    return out[0], out[1]


# ------------------------------------------------------------------------------------------- pose


class KeypointMSELoss(nn.Module):
    """weight x mean over B, K, H, W of w_k (pred - target)^2."""

    def __init__(self, weight: float = 10.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, keypoint_weights: torch.Tensor) -> torch.Tensor:
        pred = pred.to(target.dtype)
        return self.weight * ((pred - target) ** 2 * keypoint_weights[..., None, None]).mean()


class KeypointOHKMMSELoss(nn.Module):
    """Online hard keypoint mining: per sample, the mean of its `topk` largest per-keypoint losses."""

    def __init__(self, weight: float = 1.0, topk: int = 128) -> None:
        super().__init__()
        self.weight, self.topk = weight, topk

    def forward(self, pred: torch.Tensor, target: torch.Tensor, keypoint_weights: torch.Tensor) -> torch.Tensor:
        pred = pred.to(target.dtype)
        per_kp = ((pred - target) ** 2 * keypoint_weights[..., None, None]).mean(dim=(2, 3))
        k = min(self.topk, per_kp.shape[1])
        return self.weight * per_kp.topk(k, dim=1).values.mean(dim=1).mean()


# ------------------------------------------------------------------------------------ segmentation


class WeightedCrossEntropyLoss(nn.Module):
    """Per-pixel class-weighted CE, ignored pixels counted as 0, averaged over all B x H x W pixels
    (no normalization by the weight sum, as the reference)."""

    def __init__(self, weight: float = 1.0, class_weights: tuple[float, ...] | None = None, ignore_index: int = 255) -> None:
        super().__init__()
        self.weight, self.ignore_index = weight, ignore_index
        cw = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", cw, persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = match_size(logits.float(), labels)
        ce = F.cross_entropy(logits, labels, weight=self.class_weights, ignore_index=self.ignore_index, reduction="none")
        return self.weight * ce.mean()


class DiceLoss(nn.Module):
    """1 - mean over the non-background classes present in the GT of (2 sum pg + eps) / (sum p^2 + sum g^2 + eps),
    softmax probabilities, ignored pixels masked out; samples with nothing to score weigh 0; batch mean."""

    def __init__(self, weight: float = 1.0, ignore_index: int = 255, eps: float = 1e-3) -> None:
        super().__init__()
        self.weight, self.ignore_index, self.eps = weight, ignore_index, eps

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = match_size(logits.float(), labels)
        c = logits.shape[1]
        valid = labels != self.ignore_index
        prob = logits.softmax(dim=1) * valid[:, None]
        onehot = F.one_hot(torch.where(valid, labels, 0), c).permute(0, 3, 1, 2).to(prob.dtype) * valid[:, None]
        prob, onehot = prob[:, 1:], onehot[:, 1:]  # background excluded
        inter = (prob * onehot).sum(dim=(2, 3))
        dice = (2 * inter + self.eps) / ((prob**2).sum(dim=(2, 3)) + (onehot**2).sum(dim=(2, 3)) + self.eps)
        present = (onehot.sum(dim=(2, 3)) > 0).to(dice.dtype)
        n = present.sum(dim=1)
        per_sample = 1 - (dice * present).sum(dim=1) / n.clamp(min=1)
        scored = (n > 0) & valid.flatten(1).any(dim=1)
        return self.weight * (per_sample * scored).mean()


# ----------------------------------------------------------------------------------------- normals


class NormalCosineLoss(nn.Module):
    """Mean over valid pixels of 1 - cos(normalize(pred), normalize(gt))."""

    def __init__(self, weight: float = 10.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight, self.eps = weight, eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pred = match_size(pred, target)
        cos = (F.normalize(pred, dim=1, eps=self.eps) * F.normalize(target, dim=1, eps=self.eps)).sum(dim=1)
        m = mask.to(pred.dtype)
        return self.weight * finite(((1 - cos) * m).sum() / m.sum().clamp(min=1))


class MaskedL1Loss(nn.Module):
    """Sum over valid pixels and channels of |pred - target| / #valid (the prediction is not normalized)."""

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.weight * finite(masked_l1(match_size(pred, target), target, mask))


class GradientLoss(nn.Module):
    """Squared difference of forward differences (horizontal + vertical terms; `average=True` halves their
    sum, as the albedo variant does). The reference calls it a "GradL1" loss; it is squared."""

    def __init__(self, weight: float = 10.0, average: bool = False) -> None:
        super().__init__()
        self.weight, self.average = weight, average

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        gx, gy = forward_diff_sq(match_size(pred, target), target, mask)
        total = (gx + gy) * (0.5 if self.average else 1.0)
        return self.weight * finite(total)


# ---------------------------------------------------------------------------------------- pointmap


class ClampedL1Loss(nn.Module):
    """`MaskedL1Loss` on depth-normalized points (pred / M, gt / M with M the GT mean depth per sample),
    weighted, then clamped at `clamp`. `upsample=2` compares the maps bilinearly upsampled x2 (mask nearest)."""

    def __init__(self, weight: float = 2.0, clamp: float = 4.0, upsample: int = 1, shift_invariant: bool = False) -> None:
        super().__init__()
        self.weight, self.clamp, self.upsample, self.shift_invariant = weight, clamp, upsample, shift_invariant

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, mean_depth: torch.Tensor) -> torch.Tensor:
        m = mean_depth.clamp(min=1e-6)[:, None, None, None]
        p, t = match_size(pred, target) / m, target / m
        if self.shift_invariant:
            p, t = p - _centroid(p, mask), t - _centroid(t, mask)
        if self.upsample > 1:
            p = F.interpolate(p, scale_factor=self.upsample, mode="bilinear", align_corners=False)
            t = F.interpolate(t, scale_factor=self.upsample, mode="bilinear", align_corners=False)
            mask = F.interpolate(mask[:, None].float(), scale_factor=self.upsample, mode="nearest")[:, 0] > 0
        return (self.weight * finite(masked_l1(p, t, mask))).clamp(max=self.clamp)


def _centroid(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask[:, None].to(x.dtype)
    return (x * m).sum(dim=(2, 3), keepdim=True) / m.sum(dim=(2, 3), keepdim=True).clamp(min=1)


class SiLogLoss(nn.Module):
    """Scale-invariant log loss on canonical Z: per sample sqrt(mean d^2 - 0.5 (mean d)^2) with
    d = log(max(gt, 1e-4)) - log(max(pred, 1e-4)) over valid pixels; batch mean."""

    def __init__(self, weight: float = 1.0, variance_focus: float = 0.5) -> None:
        super().__init__()
        self.weight, self.lam = weight, variance_focus

    def forward(self, pred_z: torch.Tensor, target_z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        valid = mask & torch.isfinite(target_z) & torch.isfinite(pred_z)
        d = torch.log(target_z.clamp(min=1e-4)) - torch.log(pred_z.clamp(min=1e-4))
        d = torch.where(valid, d, torch.zeros_like(d))
        n = valid.flatten(1).sum(dim=1).clamp(min=1)
        mean = d.flatten(1).sum(dim=1) / n
        mean_sq = (d**2).flatten(1).sum(dim=1) / n
        per = torch.sqrt((mean_sq - self.lam * mean**2).clamp(min=1e-12))
        has = valid.flatten(1).any(dim=1)
        return self.weight * finite((per * has).sum() / has.sum().clamp(min=1))


class IntrinsicsConsistencyLoss(nn.Module):
    """X and Y predicted vs those implied by the predicted Z through the original intrinsics:
    sum over valid of |X - (u - cx) Z / fx| + |Y - (v - cy) Z / fy|, / #valid."""

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, pred: torch.Tensor, mask: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        b, _, h, w = pred.shape
        v, u = torch.meshgrid(torch.arange(h, device=pred.device, dtype=pred.dtype),
                              torch.arange(w, device=pred.device, dtype=pred.dtype), indexing="ij")
        fx, fy, cx, cy = (K[:, i, None, None].to(pred.dtype) for i in range(4))
        z = pred[:, 2]
        err = (pred[:, 0] - (u - cx) * z / fx).abs() + (pred[:, 1] - (v - cy) * z / fy).abs()
        m = mask.to(pred.dtype)
        return self.weight * finite((err * m).sum() / m.sum().clamp(min=1))


def normals_from_pointmap(points: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit normals from forward differences (reflect-padded, x100) and their raw norm."""
    p = F.pad(points, (1, 1, 1, 1), mode="reflect")
    centre = p[:, :, 1:-1, 1:-1]
    dx = (p[:, :, 1:-1, 2:] - centre) * 100
    dy = (p[:, :, 2:, 1:-1] - centre) * 100
    n = torch.cross(dx, dy, dim=1)
    norm = n.norm(dim=1, keepdim=True)
    return n / norm.clamp(min=eps), norm[:, 0]


class PointmapNormalLoss(nn.Module):
    """Normals of the metric maps (canonical / GT scale): mean over valid pixels with a non-degenerate GT
    normal of (1 - cos) + mean over channels of |n_pred - n_gt|."""

    def __init__(self, weight: float = 2.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        s = scale.clamp(min=1e-6)[:, None, None, None]
        n_pred, _ = normals_from_pointmap(pred / s)
        n_gt, gt_norm = normals_from_pointmap(target / s)
        valid = (mask & (gt_norm > 1e-6)).to(pred.dtype)
        per = (1 - (n_pred * n_gt).sum(dim=1)) + (n_pred - n_gt).abs().mean(dim=1)
        return self.weight * finite((per * valid).sum() / valid.sum().clamp(min=1))


class ScaleL1Loss(nn.Module):
    """mean |predicted scale - GT scale (canonical focal / fx)|."""

    def __init__(self, weight: float = 4.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, pred_scale: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.weight * (pred_scale.reshape(-1) - scale.reshape(-1)).abs().mean()


# ------------------------------------------------------------------------------------------ albedo


class ChromaticityL1Loss(nn.Module):
    """Prediction clamped to [0, 1]; chroma = rgb / (r + g + b + 1e-6); sum over valid and channels of
    |delta chroma| / #valid."""

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        p = match_size(pred, target).clamp(0, 1)
        cp = p / (p.sum(dim=1, keepdim=True) + 1e-6)
        ct = target / (target.sum(dim=1, keepdim=True) + 1e-6)
        return self.weight * finite(masked_l1(cp, ct, mask))


# ----------------------------------------------------------------------------------------- matting


class AlphaGradientL1Loss(nn.Module):
    """Mean |forward differences of pred - those of gt| over valid pixel pairs (both directions)."""

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pred = match_size(pred, target)
        total = pred.new_zeros(())
        for dim in (-1, -2):
            n = pred.shape[dim]
            dp = pred.narrow(dim, 1, n - 1) - pred.narrow(dim, 0, n - 1)
            dt = target.narrow(dim, 1, n - 1) - target.narrow(dim, 0, n - 1)
            both = (mask.narrow(dim, 1, n - 1) & mask.narrow(dim, 0, n - 1))[:, None].to(pred.dtype)
            total = total + ((dp - dt).abs() * both).sum() / both.sum().clamp(min=1)
        return self.weight * finite(total)


class ForegroundL1Loss(nn.Module):
    """Premultiplied foreground vs image x alpha, where alpha < `lo` or > `hi` (there the product is the
    premultiplied foreground: ~0, or the image itself); sum over channels / #such pixels."""

    def __init__(self, weight: float = 1.0, lo: float = 0.05, hi: float = 0.95) -> None:
        super().__init__()
        self.weight, self.lo, self.hi = weight, lo, hi

    def forward(self, fg: torch.Tensor, image: torch.Tensor, alpha: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a = alpha[:, 0]
        sure = mask & ((a < self.lo) | (a > self.hi))
        return self.weight * finite(masked_l1(match_size(fg, alpha), image * alpha, sure))


class LaplacianPyramidLoss(nn.Module):
    """Sum over pyramid levels of 2^level x mean |L_level(pred) - L_level(gt)| (masked pixels zeroed):
    matches alpha at every frequency band, the usual matting term."""

    def __init__(self, weight: float = 1.0, levels: int = 5) -> None:
        super().__init__()
        self.weight, self.levels = weight, levels
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
        k = torch.outer(k, k) / 256
        self.register_buffer("kernel", k[None, None], persistent=False)

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), self.kernel.to(x.dtype).expand(c, 1, 5, 5), groups=c)

    def _pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for _ in range(self.levels):
            if min(x.shape[-2:]) < 2:
                break
            down = self._blur(x)[..., ::2, ::2]
            up = F.interpolate(down, size=x.shape[-2:], mode="bilinear", align_corners=False)
            out.append(x - up)
            x = down
        out.append(x)
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask[:, None].to(pred.dtype)
        pred, target = match_size(pred, target) * m, target * m
        total = pred.new_zeros(())
        for i, (a, b) in enumerate(zip(self._pyramid(pred), self._pyramid(target))):
            total = total + (2**i) * (a - b).abs().mean()
        return self.weight * finite(total)
