"""Deterministic, class-stratified subsets."""
from __future__ import annotations

import torch


def stratified_subset(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices of ``n`` rows whose class proportions match ``labels``' (largest-remainder
    rounding), drawn with a seeded permutation inside each class -- so the same (labels, n, seed)
    always gives the same subset, whatever order the rows come in."""
    total = labels.numel()
    if n >= total:
        return torch.arange(total)
    classes, counts = labels.unique(return_counts=True)
    exact = counts.double() * n / total
    take = exact.floor().long()
    short = n - int(take.sum())
    if short:
        take[(exact - take.double()).argsort(descending=True, stable=True)[:short]] += 1
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c, k in zip(classes.tolist(), take.tolist()):
        rows = (labels == c).nonzero().squeeze(1)
        picked.append(rows[torch.randperm(rows.numel(), generator=g)[:k]])
    return torch.cat(picked).sort().values
