"""Cross-rank helpers for losses computed on the global batch.

Why the gradients come out right. Let W ranks each hold a local batch of n embeddings and let
L(Z) be a global term (VICReg's variance and covariance, Barlow Twins' cross-correlation) of the
combined batch Z = [z_0; ...; z_{W-1}]:

1. ``gather`` returns Z on every rank via ``torch.distributed.nn.functional.all_gather``, so every
   rank computes the *same* value L(Z).
2. On backward, that all_gather sums each slice's gradient over the ranks and hands every rank its
   own slice: rank r receives sum over the W identical losses of dL/dz_r = W * dL/dz_r.
3. DDP averages parameter gradients over the ranks, dividing by W again. The result is exactly
   the gradient of the single-process loss on the combined batch.

Local terms (VICReg's invariance, TiCo's alignment and covariance contrast) are means over the
local batch; DDP's average of W equal-sized local means is the global mean. Both routes assume
equal local batch sizes on every rank (the training loop drops the ragged last batch).

The known bug. ``torch.distributed.all_reduce`` is not an autograd function: on a tensor inside the
graph (e.g. summing Barlow Twins' cross-correlation over ranks) its backward is the identity, so
rank r only receives the gradient through its *own* contribution, once, not the W copies of step 2.
After DDP's division by W the gradient is 1/W of the true one -- silently, the loss value looks
right. One SSL library shipped this and fixed it; another still has it. Here plain ``all_reduce``
is used only under ``no_grad`` on detached statistics (TiCo's B and the global batch size), where
no gradient flows. ``tests/test_losses_distributed.py`` has a negative control showing the bug
(recent torch also warns "c10d::allreduce_: an autograd kernel was not registered" when it happens).

torch 2.14 marks ``torch.distributed.nn.functional.all_gather`` deprecated in favour of the private
``torch.distributed._functional_collectives``. It still works and its backward sums over ranks and
returns the own slice (the 2-process test checks this), so we keep the public function and
silence that one FutureWarning.
"""
from __future__ import annotations

import warnings

import torch
import torch.distributed as dist

warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated",
                        category=FutureWarning)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 on one process)."""
    return dist.get_rank() if world_size() > 1 else 0


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` over ranks along dim 0, differentiably (identity on one process).

    Every rank must pass the same shape (all_gather requires it).
    """
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


@torch.no_grad()
def all_reduce_sum_nograd(x: torch.Tensor) -> torch.Tensor:
    """Sum of a *detached* copy of ``x`` over ranks (a detached copy on one process)."""
    x = x.detach().clone()
    if world_size() > 1:
        dist.all_reduce(x)
    return x
