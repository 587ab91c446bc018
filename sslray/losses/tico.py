"""TiCo: Transformation Invariance and Covariance Contrast.

Zhu, Liu & Huang, 2022, https://arxiv.org/abs/2206.10698.

    z <- z / ||z||                          (both views, L2-normalised rows)
    B  = z1^T z1 / N                        (global batch of N, detached)
    C <- beta * C + (1 - beta) * B          (running second moment, a registered buffer)
    L  = 1 - mean_i <z1_i, z2_i>  +  rho * mean_i z1_i C z1_i^T      (the updated C)

terms: ``inv`` = 1 - mean_i <z1_i, z2_i>, ``cov`` = mean_i z1_i C z1_i^T (unweighted). Defaults
beta = 0.9, rho = 8 (the paper's per one implementation; rho = 20 is also used -- a search
dimension). The formula is not symmetric in the views: only z1 enters C and the contrast term.

C acts as a constant in the gradient (it is detached): the contrast term pushes each z1_i away
from the directions the recent batches already occupy, 2 rho C z1_i / n, a covariance contrast
against a memory of past embeddings instead of against negatives.

Two forwards before one backward (symmetrising by hand, gradient accumulation) work: the term
uses a copy of C whenever a graph is built (see :func:`graph_constant`), so the second call's
in-place update of C cannot invalidate what the first call's backward needs; each call's
gradient uses the C of its own update.

C is a *buffer* of shape dim x dim, zeros at construction: it is in ``state_dict`` (saved in
checkpoints, restored on resume) and moves with ``.to(device)``. It is updated only in training
mode (``module.train()``); in eval mode forward uses C without changing it. Under DDP, B is the
all-reduced sum of z1^T z1 divided by the all-reduced N, so C stays identical on every rank. (A
popular implementation keeps C as a plain attribute: lost on checkpoint and different per rank.)

Example::

    loss_fn = TiCoLoss(dim=2048)      # beta=0.9, rho=8; dim = projector output width
    out = loss_fn(z1, z2)             # z1, z2: [n, 2048]; updates loss_fn.C in train mode
    out.terms                         # {"inv": ..., "cov": ...}
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslray.losses.base import LossOutput, check_pair
from sslray.losses.distributed import all_reduce_sum_nograd
from sslray.losses.params import Param, check_range, resolve

PARAMS = {"beta": Param(0.9, lo=0.0, hi=1.0, hi_open=True), "rho": Param(8.0, lo=0.0)}


def alignment(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """1 - mean_i <z1_i, z2_i> (rows assumed L2-normalised)."""
    return 1.0 - (z1 * z2).sum(dim=1).mean()


@torch.no_grad()
def global_second_moment(z: torch.Tensor) -> torch.Tensor:
    """B = z^T z / N over the global batch, detached; identical on every rank.

    One all_reduce carries both the sum of z^T z and the local batch sizes, so N is the true
    global count even if ranks held different numbers of rows.
    """
    d = z.shape[1]
    packed = torch.cat([(z.T @ z).flatten(), z.new_tensor([z.shape[0]])])
    packed = all_reduce_sum_nograd(packed)
    return packed[:-1].view(d, d) / packed[-1]


@torch.no_grad()
def ema_update(c: torch.Tensor, b: torch.Tensor, beta: float) -> None:
    """C <- beta C + (1 - beta) B, in place."""
    c.mul_(beta).add_(b.to(c.dtype), alpha=1.0 - beta)


def graph_constant(c: torch.Tensor, *zs: torch.Tensor) -> torch.Tensor:
    """The buffer ``c`` as a constant of the graphs of ``zs``: a detached copy when autograd keeps it.

    Why: d/dz of z C z^T is 2 C z / n, so autograd saves C for backward; an in-place EMA update
    of the buffer before that backward (a second forward) bumps its version and backward fails
    ("modified by an inplace operation"). Cost: one D x D copy per forward that builds a graph
    (16 MiB for D = 2048 in fp32, a memcpy far cheaper than the n x D x D contrast), freed with
    the graph; none in eval or under no_grad. The buffer itself stays updated in place rather
    than replaced, so it remains one tensor: state_dict, ``.to()``, DDP's buffer broadcast (which
    also writes in place) and any reference to ``loss.C`` keep seeing the live C.
    """
    c = c.detach()
    return c.clone() if torch.is_grad_enabled() and any(z.requires_grad for z in zs) else c


def covariance_contrast(z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """mean_i z_i C z_i^T, with C a constant (no gradient flows into it)."""
    return ((z @ c.detach().to(z.dtype)) * z).sum(dim=1).mean()


class TiCoLoss(nn.Module):
    """TiCo; see the module docstring. ``PARAMS``: beta in [0, 1), rho >= 0; dim = the embedding width."""

    PARAMS = PARAMS

    def __init__(self, *, dim: int, **params: float):
        super().__init__()
        p = resolve("TiCoLoss", PARAMS, params, dim)
        check_range("dim", dim, 1)
        self.beta, self.rho, self.dim = p["beta"], p["rho"], int(dim)
        self.register_buffer("C", torch.zeros(self.dim, self.dim))

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> LossOutput:
        check_pair(z1, z2, self.dim)
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        if self.training:
            ema_update(self.C, global_second_moment(z1), self.beta)
        inv = alignment(z1, z2)
        cov = covariance_contrast(z1, graph_constant(self.C, z1))
        return LossOutput(inv + self.rho * cov, {"inv": inv, "cov": cov})
