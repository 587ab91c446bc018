"""Collapse diagnostics, computed on evaluation features every epoch.

- ``emb_std``: mean over dimensions of the per-dimension standard deviation of the L2-normalised
  embeddings (Chen & He 2021, SimSiam §4.1). Complete collapse gives 0; a healthy embedding of
  width D sits near 1/sqrt(D), so we also report ``emb_std_ratio = emb_std * sqrt(D)`` (about 1
  when healthy, whatever D is).
- ``rankme``: effective rank of the embedding matrix (Garrido et al. 2023, "RankMe"):
  p_k = sigma_k / sum(sigma) + eps,  RankMe = exp(-sum_k p_k log p_k), with eps = 1e-7.
  It ranges from 1 (everything on one direction) to min(N, D), needs no labels, and tracks
  downstream accuracy well -- a label-free score a search can select on.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def rankme(z: torch.Tensor, eps: float = 1e-7) -> float:
    s = torch.linalg.svdvals(z.float())
    p = s / s.sum() + eps
    return math.exp(-(p * p.log()).sum().item())


@torch.no_grad()
def embedding_std(z: torch.Tensor) -> float:
    return F.normalize(z.float(), dim=1).std(dim=0).mean().item()


def collapse_stats(reps: torch.Tensor, embs: torch.Tensor) -> dict[str, float]:
    std = embedding_std(embs)
    return {
        "emb_std": std,
        "emb_std_ratio": std * math.sqrt(embs.shape[1]),
        "rankme": rankme(embs),
        "rankme_rep": rankme(reps),
    }
