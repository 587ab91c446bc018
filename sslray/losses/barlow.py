"""Barlow Twins: redundancy reduction.

Zbontar, Jing, Misra, LeCun & Deny, ICML 2021, https://arxiv.org/abs/2103.03230.

    zn = (z - mean(z)) / sqrt(Var_biased(z) + 1e-5)    per view, per dimension (BatchNorm1d, no affine)
    c  = zn1^T zn2 / N                                   (D x D cross-correlation, global batch)
    L  = sum_i (1 - c_ii)^2 + lambda_bt * sum_{i != j} c_ij^2

Default lambda_bt = 5e-3 (the paper's). Under DDP, normalisation statistics and c are computed on
the gathered global batch through the autograd-aware gather -- not with a plain ``all_reduce`` of
c, which scales gradients by 1/world_size (see ``sslray.losses.distributed``).
"""
from __future__ import annotations

import torch
from torch import nn

from sslray.losses import LossOutput, check_pair, check_range
from sslray.losses.distributed import gather


def batch_standardise(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    return batch_standardise(z1).T @ batch_standardise(z2) / z1.shape[0]


def on_diagonal(c: torch.Tensor) -> torch.Tensor:
    return (1.0 - c.diagonal()).pow(2).sum()


def off_diagonal(c: torch.Tensor) -> torch.Tensor:
    return c.pow(2).sum() - c.diagonal().pow(2).sum()


class BarlowTwinsLoss(nn.Module):
    def __init__(self, *, lambda_bt: float = 5e-3):
        super().__init__()
        check_range("lambda_bt", lambda_bt, 0.0)
        self.lambda_bt = lambda_bt

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> LossOutput:
        check_pair(z1, z2)
        c = cross_correlation(gather(z1), gather(z2))
        on, off = on_diagonal(c), off_diagonal(c)
        return LossOutput(on + self.lambda_bt * off, {"on_diag": on, "off_diag": off})
