"""VICReg-TiCo: VICReg with its covariance term replaced by TiCo's covariance contrast.

This project's proposal (no paper): does TiCo's running-covariance term, which remembers past
batches, beat VICReg's per-batch covariance term?

    L = lam * inv + mu * var + nu * cov_tico
    inv, var       exactly VICReg's (z NOT normalised; var on the global batch; mu includes the 1/2)
    C <- beta * C + (1 - beta) * z1^T z1 / N       (global batch, detached, a buffer as in TiCo)
    cov_tico = mean_i z1_i C z1_i^T                 (the updated C)

terms: ``inv``, ``var`` (VICReg's) and ``cov`` = cov_tico, unweighted. Defaults lam = 25, mu = 25,
nu = 1, beta = 0.9. C behaves as in :class:`~sslray.losses.tico.TiCoLoss`: zeros at construction,
in ``state_dict``, updated only in training mode, identical on every rank. Only z1 enters C and
cov_tico, as in TiCo, so the loss is not symmetric in the views.

Scale of nu. With B = z1^T z1 / n the current batch's second moment, mean_i z_i C z_i^T = tr(C B).
For C ~ B and unit-variance, centred dimensions (what the variance hinge aims at) this is
sum_jk C_jk^2 = D + sum_{j!=k} C_jk^2: about D times VICReg's covariance term, which skips the
diagonal and divides by D. A nu comparable to VICReg's nu = 1 is therefore ~1/D (5e-4 for a
2048-wide projector); nu = 1 here is only the neutral paper-style default. Search nu on a log
scale (a search dimension): too large and the term, minimised by z -> 0, overpowers the variance
hinge.

Example::

    loss_fn = VICRegTiCoLoss(nu=1 / 2048, dim=2048)
    out = loss_fn(z1, z2)              # {"inv": ..., "var": ..., "cov": ...}
"""
from __future__ import annotations

import torch
from torch import nn

from sslray.losses import LossOutput, check_pair, check_range
from sslray.losses.distributed import gather
from sslray.losses.tico import covariance_contrast, ema_update, global_second_moment
from sslray.losses.vicreg import invariance, variance


class VICRegTiCoLoss(nn.Module):
    """VICReg-TiCo; see the module docstring. Weights >= 0, beta in [0, 1), eps > 0."""

    def __init__(self, *, lam: float = 25.0, mu: float = 25.0, nu: float = 1.0, beta: float = 0.9,
                 eps: float = 1e-4, dim: int):
        super().__init__()
        for name, v in (("lam", lam), ("mu", mu), ("nu", nu)):
            check_range(name, v, 0.0)
        check_range("beta", beta, 0.0, 1.0, hi_open=True)
        check_range("eps", eps, 0.0, lo_open=True)
        check_range("dim", dim, 1)
        self.lam, self.mu, self.nu, self.beta, self.eps, self.dim = lam, mu, nu, beta, eps, int(dim)
        self.register_buffer("C", torch.zeros(self.dim, self.dim))

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> LossOutput:
        check_pair(z1, z2, self.dim)
        if self.training:
            ema_update(self.C, global_second_moment(z1), self.beta)
        inv = invariance(z1, z2)
        var = variance(gather(z1), gather(z2), self.eps)
        cov = covariance_contrast(z1, self.C)
        total = self.lam * inv + self.mu * var + self.nu * cov
        return LossOutput(total, {"inv": inv, "var": var, "cov": cov})
