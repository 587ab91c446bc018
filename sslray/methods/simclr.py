"""SimCLR (Chen, Kornblith, Norouzi & Hinton, ICML 2020, https://arxiv.org/abs/2002.05709).

encoder -> projector on two crops, one pass for both; the loss is NT-Xent over the global batch,
:func:`sslray.losses.nt_xent.nt_xent` (formula, the cross-rank gather and why its gradient is
right there). One parameter:

    temperature   T = 0.2   (solo-learn's CIFAR recipe: projector 2048-256, LARS lr 0.4, wd 1e-4)

No other state: the negatives are the other images of the current global batch.
"""
from __future__ import annotations

import torch
from torch import nn

from sslray.losses.nt_xent import nt_xent
from sslray.losses.params import Param
from sslray.methods.base import Method, MethodOutput, fp32, full_precision
from sslray.models import projector_dims


class SimCLR(Method):
    name = "simclr"
    crops = 2
    view_weighting = True  # the loss is a mean over the 2n anchors: view v's anchors carry view v's weight
    PARAMS = {"temperature": Param(0.2, lo=0.0, lo_open=True)}

    def __init__(self, encoder: nn.Module, projector: str, num_classes: int, **params: float):
        p = self.resolve(params, projector_dims(projector)[-1])
        super().__init__(encoder, projector, num_classes)
        self.temperature = float(p["temperature"])

    def forward(self, crops: list[torch.Tensor]) -> MethodOutput:
        h1, h2 = self.encode(crops)
        z1, z2 = self.projector(torch.cat([h1, h2])).split([h1.shape[0], h2.shape[0]])
        with full_precision(z1):
            z1, z2 = fp32(z1), fp32(z2)
            loss = self.view_mean(nt_xent(z1, z2, self.temperature, reduction="none"), torch.stack([z1, z2]))
        return MethodOutput(loss, {"nt_xent": loss}, h1)
