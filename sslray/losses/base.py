"""What every two-view loss returns and the shapes it takes (see :mod:`sslray.losses`)."""
from __future__ import annotations

from typing import NamedTuple

import torch


class LossOutput(NamedTuple):
    total: torch.Tensor  # scalar to backpropagate: the weighted sum of the terms
    terms: dict[str, torch.Tensor]  # every term, unweighted, for logging


def check_pair(z1: torch.Tensor, z2: torch.Tensor, dim: int | None = None) -> None:
    """Shapes every two-view loss needs: two floating [n, D] tensors, n >= 2 (and D == dim if given)."""
    if z1.ndim != 2 or z2.ndim != 2:
        raise ValueError(f"embeddings must be 2-D [batch, dim]; got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape != z2.shape:
        raise ValueError(f"the two views' embeddings differ in shape: {tuple(z1.shape)} vs {tuple(z2.shape)}")
    if not (z1.is_floating_point() and z2.is_floating_point()):
        raise ValueError(f"embeddings must be floating point; got {z1.dtype} and {z2.dtype}")
    if z1.shape[0] < 2:
        raise ValueError(f"batch size {z1.shape[0]}: variance/covariance terms need at least 2 samples")
    if dim is not None and z1.shape[1] != dim:
        raise ValueError(f"embedding width {z1.shape[1]} does not match the loss's dim {dim} "
                         f"(its running covariance C is {dim} x {dim})")
