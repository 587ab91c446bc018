"""Cross-rank helpers for losses computed on the global batch.

Why an autograd-aware gather: every rank computes the *same* global term (VICReg variance and
covariance, Barlow Twins' cross-correlation, ...) from the concatenation of all ranks' embeddings.
``torch.distributed.nn.functional.all_gather`` returns that concatenation and, on backward,
sums the gradient of each rank's slice over all ranks and hands each rank its own slice. Every
rank's gradient on its local embeddings is then W * dL/dz_local (W identical losses), and DDP's
averaging of parameter gradients divides by W again: exactly the gradient of the single-process
loss on the combined batch. Local terms (invariance) are means over the local batch, and DDP's
average of W local means is the global mean.

The known bug: ``torch.distributed.all_reduce`` on a tensor that is part of the graph is not
differentiable as a collective -- its backward sees only the local contribution, so the gradient
ends up scaled by 1/world_size after DDP averaging (shipped by one SSL library, fixed in another).
Plain ``all_reduce`` is used here only under ``no_grad`` on detached statistics (TiCo's B).
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` over ranks along dim 0, differentiably (identity on one process)."""
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


@torch.no_grad()
def all_reduce_sum_nograd(x: torch.Tensor) -> torch.Tensor:
    """Sum of a *detached* tensor over ranks (identity on one process)."""
    x = x.detach().clone()
    if world_size() > 1:
        dist.all_reduce(x)
    return x
