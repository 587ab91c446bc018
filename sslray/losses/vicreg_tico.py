"""VICReg-TiCo: VICReg with its covariance term replaced by TiCo's covariance contrast.

This project's proposal (no paper): does TiCo's running-covariance term, which remembers past
batches, beat VICReg's per-batch covariance term?

    L = lam * inv + mu * var + nu * cov_tico
    inv, var       exactly VICReg's (z NOT normalised; var on the global batch; mu includes the 1/2)
    C <- beta * C + (1 - beta) * z1^T z1 / N       (global batch, detached, a buffer as in TiCo)
    cov_tico = mean_i z1_i C z1_i^T                 (the updated C)

terms: ``inv``, ``var`` (VICReg's) and ``cov`` = cov_tico, unweighted. Defaults lam = 25, mu = 25,
beta = 0.9, eps = 1e-4; nu has none (see "Scale of nu"). C behaves as in
:class:`~sslray.losses.tico.TiCoLoss`: zeros at construction, in ``state_dict``, updated only in
training mode, identical on every rank. By default only z1 enters C and cov_tico, as in TiCo, so
the loss is not symmetric in the views.

The parts of the hybrid. Against VICReg's covariance term, cov_tico changes several things at
once: it adds memory (beta); tr(CB) includes the diagonal, so it also pulls every dimension's
scale down against the variance hinge; it is uncentred; and only one view enters it. Each has a
keyword-only switch (all False by default: the formula above, exactly):

    views     V = (z1,);  symmetric=True: V = (z1, z2)
    center    z~_v = z_v - m_v, m_v = the view's mean over the global batch (detached, see below);
              otherwise z~_v = z_v
    B         = mean_{v in V} z~_v^T z~_v / N    (global batch of N, detached) -- with two views this
              is also the second moment of the concatenated (each view centred on its own mean) rows
    C        <- beta * C + (1 - beta) * B       (training mode; t <- t + 1 with bias_correction)
    M         = C;  bias_correction=True: C / (1 - beta^t), t = the number of updates so far
              (t = 0, before any update: M = C = 0);  then offdiag=True: M - diag(M)
    cov_tico  = mean_{v in V} mean_i z~_{v,i} M z~_{v,i}^T

- ``center``: C is the running *covariance* of the embeddings instead of their uncentred second
  moment, and the term contrasts centred embeddings: a mean offset is no longer penalised. Each
  batch is centred on its own global mean, so C averages within-batch covariances (the drift of
  the mean between batches does not enter).
- ``offdiag``: only correlations are contrasted, sum_{j != k} M_jk z~_ij z~_ik: the diagonal of C
  (each dimension's second moment, ~1 under the variance hinge) no longer shrinks the embeddings
  against the hinge.
- ``symmetric``: both views enter C and the term (their mean). With asymmetric augmentations
  (solarisation on view 2 only) C otherwise never sees the second view's distribution. The per-view
  B are averaged (each view centred on its own mean, as VICReg's covariance of each view), not
  computed on the pooled, pooled-centred rows: that would add the between-view mean difference
  to C.
- ``bias_correction``: C starts at zero, so without correction the term reaches its scale only
  after ~1/(1 - beta) steps; dividing by 1 - beta^t (Adam's correction, Kingma & Ba 2015) makes
  beta set only the memory, not also the warm-up. t is a buffer (``num_updates``, in
  ``state_dict``, so it survives checkpoint/resume; incremented once per training forward on every
  rank, so identical on all), registered only with this switch (the default state_dict is
  unchanged and old checkpoints still load).
- ``beta = 0`` is the no-memory control: C = B of the current batch. With center, offdiag and
  beta = 0, on one process, cov_tico = sum_{j != k} B_jk^2 = D ((N-1)/N)^2 times VICReg's covariance term of z1
  (its Cov divides by N - 1 and it divides by D): the switches together recover VICReg's term, so
  a study can measure each part on its own.

The gradient through the centring mean. VICReg's covariance carries gradient through the mean of
its gathered batch. Here the term, summed over the global batch, is (1/N) sum_i (z_i - m) M
(z_i - m)^T with M a constant, and its derivative with respect to m is -(2/N) M sum_i (z_i - m) = 0
exactly (deviations from the mean sum to zero). So the gradient through m is identically zero and
m is computed detached, with one all_reduce (in the spirit of ``global_second_moment``): exact,
and cheaper than an autograd-aware collective. Each rank's *local* term does depend on m, but what
DDP's average of the local gradients amounts to is the gradient of the global term, where those
dependences sum to zero.
A test checks the one-process gradient against autograd through a non-detached mean, and the
2-vs-1-worker tests check every switch.

Scale of nu -- no default. With B = z1^T z1 / n the current batch's second moment, mean_i z_i C
z_i^T = tr(C B). For C ~ B and unit-variance, centred dimensions (what the variance hinge aims at)
this is sum_jk C_jk^2 = D + sum_{j!=k} C_jk^2: about D times VICReg's covariance term, which skips
the diagonal and divides by D (with offdiag the diagonal's D goes, but sum_{j!=k} C_jk^2 is still
D times VICReg's sum_{j!=k} Cov_jk^2 / D). A nu comparable to VICReg's nu = 1 is therefore ~1/D (5e-4 for a 2048-wide projector);
VICReg's nu = 1 here lets the term, minimised by z -> 0, overpower the variance hinge and collapse
the embeddings. A scale-aware default (1/D resolved at construction) would hide a value that
depends on the projector width from the config and the MLflow record, and change under a search
of the projector; so nu must be given (``PARAMS`` lists it with default None) and the error says the
scale. Search it on a log scale (search_spaces/tico.yaml).

Example::

    loss_fn = VICRegTiCoLoss(nu=1 / 2048, dim=2048)
    out = loss_fn(z1, z2)              # {"inv": ..., "var": ..., "cov": ...}
    VICRegTiCoLoss(nu=1 / 2048, beta=0.0, center=True, offdiag=True, dim=2048)   # ~VICReg's term
"""
from __future__ import annotations

import torch
from torch import nn

from sslray.losses.base import LossOutput, check_pair
from sslray.losses.distributed import all_reduce_sum_nograd, gather
from sslray.losses.params import Param, check_range, resolve
from sslray.losses.tico import covariance_contrast, ema_update, global_second_moment, graph_constant
from sslray.losses.vicreg import invariance, variance


@torch.no_grad()
def global_means(*zs: torch.Tensor) -> list[torch.Tensor]:
    """Each view's mean over the global batch, mean_i z_i over all N rows; detached, identical on
    every rank. One all_reduce carries every view's column sums and the local batch size."""
    packed = torch.cat([z.sum(dim=0) for z in zs] + [zs[0].new_tensor([zs[0].shape[0]])])
    packed = all_reduce_sum_nograd(packed)
    return list((packed[:-1] / packed[-1]).split(zs[0].shape[1]))


@torch.no_grad()
def mean_second_moment(views: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """B = mean_v z_v^T z_v / N over the global batch, detached: the second moment of the
    concatenated views (all views have the same row count), in one all_reduce."""
    return global_second_moment(views[0] if len(views) == 1 else torch.cat(views))


def debiased(c: torch.Tensor, beta: float, t: torch.Tensor) -> torch.Tensor:
    """C / (1 - beta^t), the EMA's zero start divided out (Kingma & Ba 2015, Adam); C when t = 0.

    Computed on the device from the counter tensor: no host sync per step.
    """
    denom = 1.0 - torch.full((), beta, dtype=c.dtype, device=c.device).pow(t)
    return c / torch.where(t > 0, denom, torch.ones_like(denom))


def off_diagonal_part(m: torch.Tensor) -> torch.Tensor:
    """M with its diagonal zeroed: z M z^T = sum_{j != k} M_jk z_j z_k."""
    return m - torch.diag_embed(m.diagonal())


def _nu_missing(dim: int | None) -> str:
    return (f"nu: None (VICReg-TiCo has no default nu: its covariance term is ~dim = {int(dim)} "
            f"times VICReg's, so VICReg's nu = 1 collapses the embeddings); allowed: a number >= 0, "
            f"comparable to VICReg's nu = 1 near 1/dim = {1 / int(dim):.3g}")


# a missing nu is reported after every value given is checked: a wrong value before a missing one
PARAMS = {"lam": Param(25.0, lo=0.0), "mu": Param(25.0, lo=0.0), "nu": Param(None, lo=0.0, missing=_nu_missing),
          "beta": Param(0.9, lo=0.0, hi=1.0, hi_open=True), "eps": Param(1e-4, lo=0.0, lo_open=True),
          "center": Param(False), "offdiag": Param(False), "symmetric": Param(False),
          "bias_correction": Param(False, sizes_state=True)}  # registers num_updates


class VICRegTiCoLoss(nn.Module):
    """VICReg-TiCo; see the module docstring. ``PARAMS``: weights >= 0 (nu required), beta in [0, 1), eps > 0."""

    PARAMS = PARAMS

    def __init__(self, *, dim: int, **params: float | bool):
        super().__init__()
        check_range("dim", dim, 1)
        p = resolve("VICRegTiCoLoss", PARAMS, params, dim)
        self.lam, self.mu, self.nu, self.beta, self.eps = p["lam"], p["mu"], p["nu"], p["beta"], p["eps"]
        self.dim = int(dim)
        self.center, self.offdiag, self.symmetric = p["center"], p["offdiag"], p["symmetric"]
        bias_correction = self.bias_correction = p["bias_correction"]
        self.register_buffer("C", torch.zeros(self.dim, self.dim))
        if bias_correction:
            self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def contrast_matrix(self, *zs: torch.Tensor) -> torch.Tensor:
        """M of the term (see the module docstring), a constant of the graphs of ``zs``."""
        m = self.C
        if self.bias_correction:
            m = debiased(m, self.beta, self.num_updates)
        if self.offdiag:
            m = off_diagonal_part(m)
        # a derived M is already a new tensor; C itself must not be saved by autograd (graph_constant)
        return graph_constant(m, *zs) if m is self.C else m.detach()

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> LossOutput:
        check_pair(z1, z2, self.dim)
        views = (z1, z2) if self.symmetric else (z1,)
        if self.center:  # the mean is detached: its gradient is exactly zero (module docstring)
            views = tuple(z - m for z, m in zip(views, global_means(*views)))
        if self.training:
            ema_update(self.C, mean_second_moment(views), self.beta)
            if self.bias_correction:
                self.num_updates.add_(1)
        inv = invariance(z1, z2)
        var = variance(gather(z1), gather(z2), self.eps)
        m = self.contrast_matrix(*views)
        per_view = [covariance_contrast(z, m) for z in views]
        cov = per_view[0] if len(per_view) == 1 else 0.5 * (per_view[0] + per_view[1])
        total = self.lam * inv + self.mu * var + self.nu * cov
        return LossOutput(total, {"inv": inv, "var": var, "cov": cov})
