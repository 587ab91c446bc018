"""The prediction MLP of BYOL and SimSiam: Linear - BN - ReLU - Linear, back to the input width.

BYOL (Grill et al. 2020, §3.3): hidden 4096, output the projection width (256). SimSiam (Chen &
He 2021, §3): a bottleneck, hidden 512 for a 2048-wide projection, no BN on its output. The first
Linear has no bias (BatchNorm follows it), the last one has one (both papers' code).
"""
from __future__ import annotations

from torch import nn


class Predictor(nn.Sequential):
    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, dim))
