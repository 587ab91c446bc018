"""VICReg: Variance-Invariance-Covariance Regularization.

Bardes, Ponce & LeCun, ICLR 2022, https://arxiv.org/abs/2105.04906 (official code:
facebookresearch/vicreg, ``main_vicreg.py``).

    L = lam * inv + mu * var + nu * cov
    inv = MSE(z1, z2) = mean_{i,d} (z1_id - z2_id)^2                      (local batch)
    var = 1/2 [ mean_d relu(1 - S(z1)_d) + mean_d relu(1 - S(z2)_d) ],  S = sqrt(Var(z) + eps)
    cov = [ sum_{j!=k} Cov(z1)_jk^2 + sum_{j!=k} Cov(z2)_jk^2 ] / D,    Cov = (z - zbar)^T (z - zbar) / (N - 1)

with Var unbiased, eps = 1e-4, and var/cov on the *global* batch (gathered across ranks, as in the
official code). Defaults lam = 25, mu = 25, nu = 1 (the paper's).

Convention: our ``mu`` includes the 1/2 of the official code. One popular library drops it, so
its mu = 25 equals our mu = 50. The covariance is divided by the actual (gathered) batch size
minus one, not the configured one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslray.losses import LossOutput, check_pair, check_range
from sslray.losses.distributed import gather


def invariance(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(z1, z2)


def std_hinge(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """mean_d relu(1 - sqrt(Var(z)_d + eps)) for one view."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def variance(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    return 0.5 * (std_hinge(z1, eps) + std_hinge(z2, eps))


def offdiag_cov_sq(z: torch.Tensor) -> torch.Tensor:
    """sum_{j != k} Cov(z)_jk^2 / D for one view."""
    n, d = z.shape
    zc = z - z.mean(dim=0)
    cov = zc.T @ zc / (n - 1)
    return (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / d


def covariance(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    return offdiag_cov_sq(z1) + offdiag_cov_sq(z2)


class VICRegLoss(nn.Module):
    def __init__(self, *, lam: float = 25.0, mu: float = 25.0, nu: float = 1.0, eps: float = 1e-4):
        super().__init__()
        for name, v in (("lam", lam), ("mu", mu), ("nu", nu)):
            check_range(name, v, 0.0)
        check_range("eps", eps, 0.0, lo_open=True)
        self.lam, self.mu, self.nu, self.eps = lam, mu, nu, eps

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> LossOutput:
        check_pair(z1, z2)
        inv = invariance(z1, z2)
        g1, g2 = gather(z1), gather(z2)
        var = variance(g1, g2, self.eps)
        cov = covariance(g1, g2)
        total = self.lam * inv + self.mu * var + self.nu * cov
        return LossOutput(total, {"inv": inv, "var": var, "cov": cov})
