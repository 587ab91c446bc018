"""NT-Xent, SimCLR's normalised temperature-scaled cross-entropy, over the global batch.

Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020, https://arxiv.org/abs/2002.05709, eq. (1):

    u_a = z_a / ||z_a||                     (2N rows: view 1 and view 2 of the N images of the global batch)
    l(a) = -log  exp(u_a . u_p(a) / T)  /  sum_{b != a} exp(u_a . u_b / T)
    L = mean over the 2N rows a of l(a)     (p(a): the other view of a's image)

T = 0.2 by default: solo-learn's CIFAR recipe (REFERENCE §11); the paper's ImageNet runs use 0.1
to 0.5 depending on the batch size. The denominator holds 2N - 1 terms: the positive and the
2N - 2 negatives from every rank (SimCLR's "2(N-1) negative examples").

Across ranks. Each of W ranks holds n = N / W images (equal on every rank: the training loop
drops ragged batches, and all_gather needs equal shapes). A rank scores its own 2n rows against
all 2N rows gathered with the autograd-aware :func:`sslray.losses.distributed.gather` (minus the
row itself) and returns the mean of its 2n terms l(a). Global row indices: view 1 of local image
i is ``rank * n + i``, its view 2 ``N + rank * n + i``.

Why the gradient is right with DDP. Rank r's loss L_r depends on its own rows directly and on
every other rank's rows through the gather. The gather's backward sums, over the ranks, the
gradient each rank's L_s sends into a slice and returns rank r its own slice, so rank r holds
sum_s dL_s/dz_r; DDP then averages parameter gradients over the W ranks: the result is
d/dtheta (1/W) sum_s L_s, the gradient of the mean of the 2N terms, i.e. one process on the
combined batch. A plain ``all_gather`` (no autograd) would drop the sum_{s != r} part: the
negatives would push their own rank's rows only (REFERENCE §11, solo-learn #253).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from sslray.losses.distributed import gather, world_size


def _rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2, reduction: str = "mean") -> torch.Tensor:
    """SimCLR's loss (module docstring) for the local embeddings ``z1``, ``z2`` [n, D] of the two
    views (not yet normalised), negatives from the global batch; the mean of the local 2n terms,
    or with ``reduction="none"`` the terms themselves, [2, n]: l(a) of view 1's rows, then view 2's."""
    n, d = z1.shape
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    both = gather(torch.cat([z1, z2], dim=1))  # [N, 2D]: one collective for both views
    big_n = both.shape[0]
    every = torch.cat([both[:, :d], both[:, d:]])  # [2N, D]: view 1 of every image, then view 2
    local = torch.cat([z1, z2])  # [2n, D], the rows this rank scores
    logits = local @ every.T / temperature  # [2n, 2N]
    i = torch.arange(n, device=z1.device) + _rank() * n
    own = torch.cat([i, i + big_n])  # each local row's own global index
    positive = torch.cat([i + big_n, i])  # the other view of the same image
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[torch.arange(2 * n, device=z1.device), own] = True
    terms = F.cross_entropy(logits.masked_fill(self_mask, float("-inf")), positive, reduction="none")
    return terms.mean() if reduction == "mean" else terms.view(2, n)
