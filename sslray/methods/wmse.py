"""W-MSE (Ermolov et al., ICML 2021, https://arxiv.org/abs/2007.06346): encoder -> projector on V >= 2
views, each view whitened in sub-batches, then the MSE of the normalised whitened embeddings over
all view pairs -- :mod:`sslray.losses.wmse` (formula, source, why neither view is detached, and
what 2 workers mean for a per-rank whitening).

    z_v = g(f(x_v))                                     (one encoder pass per crop size, one projector pass)
    L   = mean over w_iter cuts, pairs v < u, images i of 2 - 2 cos(W z_{v,i}, W z_{u,i})

Parameters (``loss.params``; the official code's names and defaults, solo-learn's CIFAR recipe):

    w_size  = 128   rows per whitening sub-batch; must exceed the embedding width (the projector's
                    output: 64 in the paper's 1024-64) and divide ``train.batch_size`` (per worker)
    w_iter  = 1     whitening passes per step, each with its own cut of the batch into sub-batches
    w_eps   = 0     shrinkage of each sub-batch covariance towards I: (1 - w_eps) Sigma + w_eps I

Views. ``crops = None``: any number >= 2 (the paper runs 2 and 4). Four views are one crop group
with ``count: 4`` (``views: {crops: [{count: 4}]}``), or several groups; every view is whitened
with its own statistics and every pair enters the loss (4 views: 6 pairs).

UOTA. ``view_weighting = True``: the per-view, per-image losses ``[V, n]`` (each pair split half to
each of its views) are reduced by :meth:`Method.view_mean`, the weights computed from the
projector outputs z (UOTA's Mahalanobis distance whitens the views' deltas itself, and z does not
depend on the sub-batch cut). terms: ``wmse`` = the plain mean L (the total when UOTA is off or
before its start epoch).

State. The cuts of the passes after the first (``w_iter`` > 1) are random permutations of each
rank's rows from a ``torch.Generator`` seeded by (``split_seed``, ``split_step``): ``split_seed`` is
drawn from the global RNG at construction (the loop seeds it with ``train.seed`` before building
the method, so it is the same on every rank), ``split_step`` counts training forwards. Both are
buffers, so a resume continues the same sequence of cuts; both are replicated (every rank computes
the same values) and kept out of DDP's buffer broadcast by :meth:`Method.rank_state`. Reading them
is one host sync per step, only when ``w_iter`` > 1. The first cut is in row order (see
:mod:`sslray.losses.wmse`) and draws nothing.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sslray.losses.params import Param
from sslray.losses.wmse import wmse_view_losses
from sslray.methods.base import Method, MethodOutput, fp32, full_precision
from sslray.models import projector_dims


class WMSE(Method):
    name = "wmse"
    crops = None
    view_weighting = True
    PARAMS = {"w_size": Param(128.0, lo=1.0, whole="integers"), "w_iter": Param(1.0, lo=1.0, whole="integers"),
              "w_eps": Param(0.0, lo=0.0, hi=1.0, hi_open=True)}

    def __init__(self, encoder: nn.Module, projector: str, num_classes: int, **params: float):
        p = self.resolve(params, projector_dims(projector)[-1])
        super().__init__(encoder, projector, num_classes)
        self.w_size, self.w_iter, self.w_eps = int(p["w_size"]), int(p["w_iter"]), float(p["w_eps"])
        self.register_buffer("split_seed", torch.randint(0, 2**62, ()))
        self.register_buffer("split_step", torch.zeros((), dtype=torch.long))

    @classmethod
    def check_dim(cls, values: dict[str, Any], dim: int) -> None:
        w_size = values["w_size"]  # the default too: it may not fit the projector
        if int(w_size) <= dim:
            raise ValueError(f"w_size: {w_size!r} does not exceed the embedding width {dim} (the projector's "
                             f"output): a sub-batch of m rows has a covariance of rank <= m - 1, which Cholesky "
                             f"cannot factor; allowed: integers > {dim}, or a narrower projector")

    @classmethod
    def check_batch(cls, params: dict[str, Any], batch_size: int) -> None:
        w_size = int(params.get("w_size", cls.params()["w_size"]))
        if batch_size % w_size:
            raise ValueError(f"{batch_size} is not a multiple of loss.params.w_size={w_size} (W-MSE whitens each "
                             f"worker's batch in sub-batches of w_size rows); allowed: multiples of {w_size}")

    def forward(self, crops: list[torch.Tensor]) -> MethodOutput:
        if len(crops) < 2:
            raise ValueError(f"W-MSE needs at least 2 views per image; got {len(crops)}")
        h = self.encode(crops)
        n = h[0].shape[0]
        z = self.projector(torch.cat(h)).view(len(crops), n, -1)  # [V, n, D]
        with full_precision(z):
            z = fp32(z)
            losses = wmse_view_losses(z, self.w_size, self.w_eps, [None] + self._random_cuts(n, z.device))
            total = self.view_mean(losses, z)
        if self.training:
            self.split_step.add_(1)
        return MethodOutput(total, {"wmse": losses.mean()}, h[0])

    def _random_cuts(self, n: int, device: torch.device) -> list[torch.Tensor]:
        """The permutations of passes 2..w_iter (none for w_iter = 1): this step's, from the buffers."""
        if self.w_iter == 1:
            return []
        seed = (int(self.split_seed) * 1_000_003 + int(self.split_step)) % 2**63  # host sync (w_iter > 1 only)
        g = torch.Generator().manual_seed(seed)
        return [torch.randperm(n, generator=g).to(device) for _ in range(self.w_iter - 1)]
