"""The [cls] self-distillation loss: teacher -> student cross-entropy over prototype distributions.

The teacher's distribution is centred either by subtracting an EMA of its mean logits (DINO's centring,
momentum 0.9: the default, as the Sapiens2 paper states a centre momentum) or by Sinkhorn-Knopp (DINOv3's
choice; each batch spread evenly over the prototypes).
Both are computed across all processes when torch.distributed is initialised.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

CENTERINGS = ("sinkhorn", "ema")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(t: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(t, op=op)
    return t


@torch.no_grad()
def sinkhorn_knopp(logits: torch.Tensor, temperature: float, iterations: int = 3) -> torch.Tensor:
    """Teacher targets from N x K logits: every row (sample) sums to 1, and each column (prototype) sums
    to about N_total / K, exactly so in the limit of iterations. N_total counts all processes' rows.
    """
    logits = logits.float() / temperature
    # A common shift cancels in the normalisation and keeps exp() finite.
    shift = _all_reduce(logits.max().clone(), dist.ReduceOp.MAX)
    q = torch.exp(logits - shift).T  # K x N
    k = q.shape[0]
    n_total = _all_reduce(torch.tensor(float(q.shape[1]), device=q.device))
    q /= _all_reduce(q.sum())
    for _ in range(iterations):
        q /= _all_reduce(q.sum(dim=1, keepdim=True))  # each prototype: total mass 1 ...
        q /= k  # ... then 1/K
        q /= q.sum(dim=0, keepdim=True)  # each sample: mass 1 ...
        q /= n_total  # ... then 1/N
    return (q * n_total).T


class DINOClsTokenLoss(nn.Module):
    """H(teacher, student) averaged over the positive pairs of global and local views.

    Pairs: every student global view against every *other* teacher global view (the same view is
    skipped), and every student local view against every teacher global view; local-local pairs are not
    used. Student logits are sharpened with `student_temp`; teacher targets come from `teacher_targets`.
    """

    def __init__(
        self,
        out_dim: int,
        student_temp: float = 0.1,
        centering: str = "ema",
        center_momentum: float = 0.9,
        sinkhorn_iterations: int = 3,
    ) -> None:
        super().__init__()
        if centering not in CENTERINGS:
            raise ValueError(f"centering must be one of {CENTERINGS}, got {centering!r}")
        self.student_temp = student_temp
        self.centering = centering
        self.center_momentum = center_momentum
        self.sinkhorn_iterations = sinkhorn_iterations
        self.register_buffer("center", torch.zeros(1, out_dim))

    @torch.no_grad()
    def teacher_targets(self, logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """N x K teacher logits -> N x K target distributions (rows sum to 1). EMA centring also moves
        the centre towards this batch's mean, after using the old centre, as DINO does."""
        if self.centering == "sinkhorn":
            return sinkhorn_knopp(logits, teacher_temp, self.sinkhorn_iterations)
        logits = logits.float()
        probs = F.softmax((logits - self.center) / teacher_temp, dim=-1)
        batch_sum = _all_reduce(logits.sum(dim=0, keepdim=True))
        count = _all_reduce(torch.tensor(float(logits.shape[0]), device=logits.device))
        self.center.mul_(self.center_momentum).add_(batch_sum / count, alpha=1 - self.center_momentum)
        return probs

    def forward(
        self, student_global: torch.Tensor, student_local: torch.Tensor | None, teacher: torch.Tensor
    ) -> torch.Tensor:
        """student_global: G x B x K logits, student_local: L x B x K logits (or None), teacher: G x B x K
        targets (view v of the teacher is view v of the student's global crops)."""
        g = student_global.shape[0]
        if teacher.shape[0] != g:
            raise ValueError(f"{teacher.shape[0]} teacher views for {g} student global views")
        teacher = teacher.float()
        batch = teacher.shape[1]
        logp = F.log_softmax(student_global.float() / self.student_temp, dim=-1)
        # ce[t, s] = mean over the batch of H(teacher view t, student view s)
        ce = -torch.einsum("tbk,sbk->ts", teacher, logp) / batch
        off_diagonal = ~torch.eye(g, dtype=torch.bool, device=ce.device)
        total, pairs = ce[off_diagonal].sum(), int(off_diagonal.sum())
        if student_local is not None and student_local.shape[0] > 0:
            logp_local = F.log_softmax(student_local.float() / self.student_temp, dim=-1)
            total = total - torch.einsum("tbk,sbk->", teacher, logp_local) / batch
            pairs += g * student_local.shape[0]
        if pairs == 0:
            raise ValueError("no positive pairs: need at least 2 global views, or local views")
        return total / pairs
