"""InfoNCE against a queue of negatives: MoCo's contrastive loss.

He, Fan, Wu, Xie & Girshick, "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR 2020, https://arxiv.org/abs/1911.05722, eq. (1); MoCo v2 (Chen, Fan, Girshick &
He 2020, https://arxiv.org/abs/2003.04297) keeps it and adds the MLP projector, blur and cosine lr:

    l_i = -log  exp(q_i . k_i / T)  /  ( exp(q_i . k_i / T) + sum_{j=1..K} exp(q_i . m_j / T) )
    L   = mean_i l_i

q_i: a query (online network), k_i: its positive key (the key network on the other view of the
same image), m_j: the K keys of earlier batches in the queue; all L2-normalised. Computed as a
(K + 1)-way cross-entropy whose target is column 0, the positive. Keys and queue are constants
(no gradient: the key network is an EMA of the online one). T = 0.2 (MoCo v2; solo-learn's
CIFAR MoCo v2+ recipe, REFERENCE §11; MoCo v1 used 0.07).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def infonce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2,
            reduction: str = "mean") -> torch.Tensor:
    """MoCo's loss (module docstring): ``q`` [n, D] normalised queries, ``k`` [n, D] normalised
    positive keys, ``queue`` [K, D] normalised negatives; ``k`` and ``queue`` are detached here.
    ``reduction="none"``: the n terms l_i."""
    k, queue = k.detach().to(q.dtype), queue.detach().to(q.dtype)
    positive = (q * k).sum(dim=1, keepdim=True)  # [n, 1]
    negative = q @ queue.T  # [n, K]
    logits = torch.cat([positive, negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device), reduction=reduction)
