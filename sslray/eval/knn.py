"""Weighted kNN classifier on frozen features (Wu et al. 2018, "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination"; the k=200, T=0.1 protocol of solo-learn and DINO).

Features are L2-normalised, so the dot product is the cosine similarity. For a test feature f the
k most similar training features vote for their class with weight exp(sim / T); the class with the
largest summed weight wins. Test rows are scored ``chunk`` at a time, so peak memory is
``chunk x n_train`` similarities (1024 x 50000 floats = 200 MB) instead of the full matrix.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                num_classes: int, k: int = 200, t: float = 0.1, chunk: int = 1024) -> torch.Tensor:
    """Predicted class of each test row."""
    train = F.normalize(train_feats.float(), dim=1)
    test = F.normalize(test_feats.float(), dim=1)
    k = min(k, train.shape[0])
    preds = []
    for start in range(0, test.shape[0], chunk):
        sim = test[start:start + chunk] @ train.T  # [chunk, n_train]
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / t).exp()
        votes = torch.zeros(sim.shape[0], num_classes, device=sim.device, dtype=weights.dtype)
        votes.scatter_add_(1, train_labels[top_idx], weights)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def knn_accuracy(train_feats, train_labels, test_feats, test_labels, num_classes: int,
                 k: int = 200, t: float = 0.1, chunk: int = 1024) -> float:
    """Top-1 accuracy in [0, 1]."""
    pred = knn_predict(train_feats, train_labels.to(train_feats.device), test_feats, num_classes, k, t, chunk)
    return (pred.cpu() == test_labels.cpu()).float().mean().item()
