"""UOTA view weights: each view's weight from its Mahalanobis distance to its image's mean view.

Wang et al., "Improving Self-supervised Learning with Automated Unsupervised Outlier Arbitration",
NeurIPS 2021, https://arxiv.org/abs/2112.08132 (Eqs. M.9-M.11 of its appendix). With e_{v,i} the
L2-normalised embedding of view v of image i (V views per image, N images in the global batch):

    mean_i     = (1/V) sum_v e_{v,i}
    delta_{v,i} = e_{v,i} - mean_i
    Sigma      = (1/(V N)) sum_{v,i} delta_{v,i} delta_{v,i}^T + eps I       (pooled over the global batch)
    d_{v,i}    = delta_{v,i}^T Sigma^{-1} delta_{v,i} / tau
    w_{v,i}    = V N softmax(-d)_{v,i}       (softmax over all V N views: the weights have mean 1)

Views far from their image's mean (relative to the spread of all views) count less. tau = 350 and
eps = 1e-8 are the official code's defaults. With two views delta_{1,i} = -delta_{2,i}: both views
of an image get the same weight. The official code averages only the first two (global) crops for
mean_i in SwAV's multi-crop; here the mean is over every view, as the paper's text states it, so the
rule is the same for methods whose views all have one size.

No gradient flows through the weights (they arbitrate, they are not optimised). Sigma and the
softmax's normaliser are global: Sigma from the all-reduced sum of delta delta^T, the normaliser
from an all-reduced max and sum, so W ranks give the weights one process gives on the combined
batch. Sigma is solved in float64: with D larger than the V N - N independent deltas it is
singular up to eps, and float32 loses the distances.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from sslray.losses.distributed import all_reduce_sum_nograd, world_size


@torch.no_grad()
def uota_weights(embeddings: torch.Tensor, tau: float = 350.0, eps: float = 1e-8) -> torch.Tensor:
    """UOTA's weights ``[V, n]`` (module docstring) for this rank's embeddings ``[V, n, D]`` (view
    v of local image i at ``[v, i]``); their mean over the global batch is 1."""
    if embeddings.ndim != 3 or embeddings.shape[0] < 2:
        raise ValueError(f"embeddings must be [views >= 2, batch, dim]; got {tuple(embeddings.shape)}")
    v, n, d = embeddings.shape
    e = F.normalize(embeddings.detach().double(), dim=2)
    delta = (e - e.mean(dim=0, keepdim=True)).reshape(v * n, d)
    count = v * n * world_size()
    sigma = all_reduce_sum_nograd(delta.T @ delta) / count + eps * torch.eye(d, dtype=delta.dtype, device=delta.device)
    dist_sq = (delta * torch.linalg.solve(sigma, delta.T).T).sum(dim=1) / tau  # [V n]
    logits = -dist_sq
    top = logits.max()
    if world_size() > 1:
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
    norm = all_reduce_sum_nograd(torch.exp(logits - top).sum())
    w = torch.exp(logits - top) / norm * count
    return w.reshape(v, n).to(embeddings.dtype)
