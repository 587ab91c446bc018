"""Cosine losses between a prediction and a stop-gradient target: BYOL and SimSiam.

BYOL (Grill et al., NeurIPS 2020, https://arxiv.org/abs/2006.07733, eq. 2):

    L(p, z) = mean_i || p_i/||p_i|| - z_i/||z_i|| ||^2  =  mean_i (2 - 2 cos(p_i, z_i))

p the online network's prediction, z the target network's projection of the other view.

SimSiam (Chen & He, CVPR 2021, https://arxiv.org/abs/2011.10566, eq. 1 with stop-gradient, eq. 3):

    D(p, z) = - mean_i cos(p_i, stopgrad(z_i))

Both functions take [n, D] floating tensors and detach ``z`` themselves: the stop-gradient is part
of the formula, so no gradient ever reaches z (BYOL's target network, SimSiam's other branch) even
if the caller passes a tensor with a graph. Neither has parameters; the symmetrisation over the
two views is the method's (:mod:`sslray.methods.byol`, :mod:`sslray.methods.simsiam`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _cos(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """cos(p_i, z_i) per row, z detached (eps 1e-12 on the norms, as F.normalize)."""
    if p.ndim != 2 or p.shape != z.shape:
        raise ValueError(f"prediction and target must be 2-D [batch, dim] of one shape; got {tuple(p.shape)} "
                         f"and {tuple(z.shape)}")
    return (F.normalize(p, dim=1) * F.normalize(z.detach(), dim=1)).sum(dim=1)


def byol_regression(p: torch.Tensor, z: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """mean_i (2 - 2 cos(p_i, z_i)) = mean_i ||p^_i - z^_i||^2 (BYOL eq. 2); z detached here.
    ``reduction="none"``: the per-row terms."""
    terms = 2.0 - 2.0 * _cos(p, z)
    return terms.mean() if reduction == "mean" else terms


def negative_cosine(p: torch.Tensor, z: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """-mean_i cos(p_i, stopgrad(z_i)) (SimSiam eq. 1); z detached here. ``reduction="none"``: the
    per-row terms."""
    terms = -_cos(p, z)
    return terms.mean() if reduction == "mean" else terms
