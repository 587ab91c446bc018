"""VICReg: Variance-Invariance-Covariance Regularization.

Bardes, Ponce & LeCun, ICLR 2022, https://arxiv.org/abs/2105.04906 (official code:
facebookresearch/vicreg, ``main_vicreg.py``).

    L   = lam * inv + mu * var + nu * cov
    inv = MSE(z1, z2) = mean_{i,d} (z1_id - z2_id)^2                       (local batch)
    var = 1/2 [ mean_d relu(1 - S(z1)_d) + mean_d relu(1 - S(z2)_d) ],   S = sqrt(Var(z) + eps)
    cov = [ sum_{j!=k} Cov(z1)_jk^2 + sum_{j!=k} Cov(z2)_jk^2 ] / D,     Cov = (z - zbar)^T (z - zbar) / (N - 1)

with Var unbiased, eps = 1e-4, and var and cov on the *global* batch of N embeddings (gathered
across ranks with the autograd-aware gather, as in the official code). Defaults lam = 25, mu = 25,
nu = 1 (the paper's).

Convention: our ``mu`` includes the 1/2 of the official code (whose mu = 25 produced the paper's
numbers). The paper's equation writes mu [v(Z) + v(Z')] without the 1/2, and one popular library
follows it: its mu = 25 equals our mu = 50. The covariance term is a sum over the two views in both.
The covariance is divided by the actual (gathered) batch size minus one, not the configured one.

The variance hinge pushes every dimension's std up to 1 (so the embedding cannot collapse);
eps keeps sqrt differentiable when a dimension has collapsed (Var = 0). The terms are
symmetric in the two views.

Example::

    loss_fn = VICRegLoss()           # lam=25, mu=25, nu=1
    out = loss_fn(z1, z2)            # z1, z2: [n, D]
    out.terms                        # {"inv": ..., "var": ..., "cov": ...}, unweighted
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslray.losses.base import LossOutput, check_pair
from sslray.losses.distributed import gather
from sslray.losses.params import Param, resolve

PARAMS = {"lam": Param(25.0, lo=0.0), "mu": Param(25.0, lo=0.0), "nu": Param(1.0, lo=0.0),
          "eps": Param(1e-4, lo=0.0, lo_open=True)}


def invariance(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """mean_{i,d} (z1_id - z2_id)^2."""
    return F.mse_loss(z1, z2)


def std_hinge(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """mean_d relu(1 - sqrt(Var(z)_d + eps)) for one view, Var unbiased."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def variance(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """The mean of the two views' std hinges (the 1/2 of the official code)."""
    return 0.5 * (std_hinge(z1, eps) + std_hinge(z2, eps))


def off_diagonal_sq(m: torch.Tensor) -> torch.Tensor:
    """sum_{j != k} m_jk^2. The diagonal is zeroed, not subtracted: no cancellation against it."""
    return (m - torch.diag_embed(m.diagonal())).pow(2).sum()


def offdiag_cov_sq(z: torch.Tensor) -> torch.Tensor:
    """sum_{j != k} Cov(z)_jk^2 / D for one view."""
    n, d = z.shape
    zc = z - z.mean(dim=0)
    return off_diagonal_sq(zc.T @ zc / (n - 1)) / d


def covariance(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Sum (not mean) of the two views' off-diagonal covariance terms, as in the official code."""
    return offdiag_cov_sq(z1) + offdiag_cov_sq(z2)


class VICRegLoss(nn.Module):
    """VICReg; see the module docstring. ``PARAMS``: all weights >= 0, eps > 0."""

    PARAMS = PARAMS

    def __init__(self, **params: float):
        super().__init__()
        p = resolve("VICRegLoss", PARAMS, params)
        self.lam, self.mu, self.nu, self.eps = p["lam"], p["mu"], p["nu"], p["eps"]

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> LossOutput:
        check_pair(z1, z2)
        inv = invariance(z1, z2)
        g1, g2 = gather(z1), gather(z2)
        var = variance(g1, g2, self.eps)
        cov = covariance(g1, g2)
        total = self.lam * inv + self.mu * var + self.nu * cov
        return LossOutput(total, {"inv": inv, "var": var, "cov": cov})
