"""Barlow Twins: redundancy reduction.

Zbontar, Jing, Misra, LeCun & Deny, ICML 2021, https://arxiv.org/abs/2103.03230.

    zn = (z - mean(z)) / sqrt(Var_biased(z) + 1e-5)    per view, per dimension (BatchNorm1d, no affine)
    c  = zn1^T zn2 / N                                   (D x D cross-correlation, global batch of N)
    L  = sum_i (1 - c_ii)^2 + lambda_bt * sum_{i != j} c_ij^2

terms: ``on_diag`` = sum_i (1 - c_ii)^2 and ``off_diag`` = sum_{i != j} c_ij^2, unweighted. Default
lambda_bt = 5e-3 (the paper's). Swapping the views transposes c and leaves L unchanged.

Under DDP the normalisation statistics and c are computed on the gathered global batch through
the autograd-aware gather. The official code instead sums per-rank pieces of c with a plain
``torch.distributed.all_reduce``, which scales gradients by 1/world_size (see
``sslray.losses.distributed``); with a gather the question does not arise.

Example::

    loss_fn = BarlowTwinsLoss()       # lambda_bt=5e-3
    out = loss_fn(z1, z2)             # {"on_diag": ..., "off_diag": ...}
"""
from __future__ import annotations

import torch
from torch import nn

from sslray.losses.base import LossOutput, check_pair
from sslray.losses.distributed import gather
from sslray.losses.params import Param, resolve
from sslray.losses.vicreg import off_diagonal_sq

PARAMS = {"lambda_bt": Param(5e-3, lo=0.0)}


def batch_standardise(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(z - mean) / sqrt(biased var + eps) per dimension: BatchNorm1d in training mode, no affine."""
    return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """c = zn1^T zn2 / N, each view standardised over its N rows."""
    return batch_standardise(z1).T @ batch_standardise(z2) / z1.shape[0]


def on_diagonal(c: torch.Tensor) -> torch.Tensor:
    """sum_i (1 - c_ii)^2: each dimension should agree across the views."""
    return (1.0 - c.diagonal()).pow(2).sum()


def off_diagonal(c: torch.Tensor) -> torch.Tensor:
    """sum_{i != j} c_ij^2: different dimensions should be decorrelated."""
    return off_diagonal_sq(c)


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins; see the module docstring. ``PARAMS``: lambda_bt >= 0."""

    PARAMS = PARAMS

    def __init__(self, **params: float):
        super().__init__()
        self.lambda_bt = resolve("BarlowTwinsLoss", PARAMS, params)["lambda_bt"]

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> LossOutput:
        check_pair(z1, z2)
        c = cross_correlation(gather(z1), gather(z2))
        on, off = on_diagonal(c), off_diagonal(c)
        return LossOutput(on + self.lambda_bt * off, {"on_diag": on, "off_diag": off})
