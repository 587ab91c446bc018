"""TiCo: Transformation Invariance and Covariance Contrast.

Zhu, Liu & Huang, 2022, https://arxiv.org/abs/2206.10698.

    z <- z / ||z||                          (both views, L2-normalised rows)
    B = z1^T z1 / N                         (global batch, detached)
    C <- beta * C + (1 - beta) * B          (running covariance, a registered buffer)
    L = 1 - mean_i <z1_i, z2_i>  +  rho * mean_i z1_i C z1_i^T

Defaults beta = 0.9, rho = 8 (the paper's; rho = 20 is also used in the wild -- a search dimension).

C is a *buffer*: it is in ``state_dict`` (saved in checkpoints, restored on resume) and moves with
``.to(device)``. It is updated only in training mode, from the all-reduced B, so it is identical on
every rank. (A popular implementation keeps C as a plain attribute: lost on checkpoint, and
different on every rank.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslray.losses import LossOutput, check_pair, check_range
from sslray.losses.distributed import all_reduce_sum_nograd, world_size


def alignment(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """1 - mean_i <z1_i, z2_i> (rows assumed L2-normalised)."""
    return 1.0 - (z1 * z2).sum(dim=1).mean()


@torch.no_grad()
def global_second_moment(z: torch.Tensor) -> torch.Tensor:
    """B = z^T z / N over the global batch, detached; identical on every rank."""
    s = all_reduce_sum_nograd(z.T @ z)
    return s / (z.shape[0] * world_size())  # every rank holds an equal-sized batch


@torch.no_grad()
def ema_update(c: torch.Tensor, b: torch.Tensor, beta: float) -> None:
    c.mul_(beta).add_(b, alpha=1.0 - beta)


def covariance_contrast(z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """mean_i z_i C z_i^T (C a constant)."""
    return ((z @ c) * z).sum(dim=1).mean()


class TiCoLoss(nn.Module):
    def __init__(self, *, beta: float = 0.9, rho: float = 8.0, dim: int):
        super().__init__()
        check_range("beta", beta, 0.0, 1.0, hi_open=True)
        check_range("rho", rho, 0.0)
        self.beta, self.rho = beta, rho
        self.register_buffer("C", torch.zeros(dim, dim))

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> LossOutput:
        check_pair(z1, z2)
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        if self.training:
            ema_update(self.C, global_second_moment(z1), self.beta)
        inv = alignment(z1, z2)
        cov = covariance_contrast(z1, self.C)
        return LossOutput(inv + self.rho * cov, {"inv": inv, "cov": cov})
