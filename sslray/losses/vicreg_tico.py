"""VICReg-TiCo: VICReg with its covariance term replaced by TiCo's covariance contrast.

This project's research question (no paper): does TiCo's running-covariance term beat VICReg's
batch covariance term on CIFAR-10?

    L = lam * inv + mu * var + nu * cov_tico
    inv, var                  as VICReg (z not normalised; var on the global batch)
    C <- beta * C + (1 - beta) * z1^T z1 / N    (global batch, detached, a buffer as in TiCo)
    cov_tico = mean_i z1_i C z1_i^T

Scale: mean_i z_i C z_i^T = tr(C B). For C ~ B with unit-variance, centred dimensions this is
sum_jk C_jk^2 = D + sum_{j!=k} C_jk^2 -- about D times VICReg's covariance term (which divides by
D and skips the diagonal). A nu comparable to VICReg's nu = 1 is therefore ~1/D; the default here
keeps the paper-style nu = 1 only as a neutral starting point: search it on a log scale
(``search_spaces/tico.yaml``). Large nu collapses the embedding (the term is minimised by z = 0
unless the variance hinge holds it up), which is what the search is meant to map.
"""
from __future__ import annotations

import torch
from torch import nn

from sslray.losses import LossOutput, check_pair, check_range
from sslray.losses.distributed import gather
from sslray.losses.tico import covariance_contrast, ema_update, global_second_moment
from sslray.losses.vicreg import invariance, variance


class VICRegTiCoLoss(nn.Module):
    def __init__(self, *, lam: float = 25.0, mu: float = 25.0, nu: float = 1.0, beta: float = 0.9,
                 eps: float = 1e-4, dim: int):
        super().__init__()
        for name, v in (("lam", lam), ("mu", mu), ("nu", nu)):
            check_range(name, v, 0.0)
        check_range("beta", beta, 0.0, 1.0, hi_open=True)
        check_range("eps", eps, 0.0, lo_open=True)
        self.lam, self.mu, self.nu, self.beta, self.eps = lam, mu, nu, beta, eps
        self.register_buffer("C", torch.zeros(dim, dim))

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> LossOutput:
        check_pair(z1, z2)
        if self.training:
            ema_update(self.C, global_second_moment(z1), self.beta)
        inv = invariance(z1, z2)
        var = variance(gather(z1), gather(z2), self.eps)
        cov = covariance_contrast(z1, self.C)
        total = self.lam * inv + self.mu * var + self.nu * cov
        return LossOutput(total, {"inv": inv, "var": var, "cov": cov})
