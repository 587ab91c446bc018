"""Linear probes.

- Online probe: a Linear head inside :class:`sslray.models.SSLModel`, trained during pretraining
  on detached representations of the first view (it never changes the encoder). Its test accuracy
  costs one matmul per epoch, on features the kNN evaluation computes anyway.
- Offline probe: a Linear classifier trained on frozen, un-augmented features (standardised with
  the training features' mean and std) with AdamW + cosine decay and cross-entropy; the score
  reported in papers as "linear evaluation" is this one with augmentation, so expect ours to run
  slightly below published figures.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def probe_accuracy(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> float:
    logits = head(feats.to(next(head.parameters()).device).float())
    return (logits.argmax(1).cpu() == labels.cpu()).float().mean().item()


def linear_probe(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, num_classes: int, epochs: int = 100, lr: float = 1e-2,
                 batch_size: int = 256, weight_decay: float = 1e-4, seed: int = 0) -> dict[str, float]:
    """Train a linear classifier on frozen features; returns train and test top-1 in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    device = train_feats.device
    mean, std = train_feats.mean(0), train_feats.std(0) + 1e-6
    xtr, xte = (train_feats - mean) / std, (test_feats - mean) / std
    ytr = train_labels.to(device)
    torch.manual_seed(seed)
    head = nn.Linear(xtr.shape[1], num_classes).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, xtr.shape[0] // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    for _ in range(epochs):
        perm = torch.randperm(xtr.shape[0], generator=gen).to(device)
        for s in range(steps_per_epoch):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            loss = F.cross_entropy(head(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return {"probe_train_top1": probe_accuracy(head, xtr, train_labels),
            "probe_test_top1": probe_accuracy(head, xte, test_labels)}
