"""KoLeo: spread features out by penalising small nearest-neighbour distances within a batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KoLeoLoss(nn.Module):
    """-mean_i log(min_{j != i} ||x_i - x_j||) over L2-normalized rows of a B x D batch (B >= 2).

    The Kozachenko-Leonenko entropy estimator, up to constants; the nearest neighbour is chosen without
    gradient, and the distance to it carries the gradient.
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] < 2:
            return x.sum() * 0.0
        x = F.normalize(x.float(), dim=-1, eps=self.eps)
        with torch.no_grad():
            sims = x @ x.T
            sims.fill_diagonal_(-2.0)
            nearest = sims.argmax(dim=1)
        dist = (x - x[nearest]).norm(dim=-1)
        return -torch.log(dist + self.eps).mean()
