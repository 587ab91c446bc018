"""Joint-embedding methods whose whole state is their loss: VICReg, TiCo, VICReg-TiCo, Barlow Twins.

encoder -> projector on two crops, one loss from :mod:`sslray.losses` on the two embeddings. The
loss module is a submodule (``loss``), so its state (TiCo's running C) is in the method's
``state_dict`` as ``loss.C``.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from sslray.losses import build_loss, loss_params
from sslray.methods.base import Method, MethodOutput, fp32, full_precision
from sslray.models import projector_dims


class JointEmbedding(Method):
    crops = 2
    loss_name: ClassVar[str]

    def __init__(self, encoder: nn.Module, projector: str, num_classes: int, **params: Any):
        super().__init__(encoder, projector, num_classes)
        self.loss = build_loss(self.loss_name, params, dim=projector_dims(projector)[-1])

    @classmethod
    def params(cls) -> dict[str, Any]:
        return loss_params(cls.loss_name)

    @classmethod
    def param_types(cls) -> dict[str, Any]:
        import typing

        from sslray.losses import LOSSES

        hints = typing.get_type_hints(LOSSES[cls.loss_name].__init__)
        return {k: hints[k] for k in cls.params()}

    @classmethod
    def check(cls, params: dict[str, Any], dim: int) -> None:
        build_loss(cls.loss_name, params, dim=dim)  # the loss checks its own ranges (and builds C: D x D)

    def forward(self, crops: list[torch.Tensor]) -> MethodOutput:
        # one encoder and one projector pass on both crops (the official VICReg code makes two):
        # BatchNorm statistics cover both views, DDP sees one forward per step
        h1, h2 = self.encode(crops)
        z1, z2 = self.projector(torch.cat([h1, h2])).split([h1.shape[0], h2.shape[0]])
        with full_precision(z1):
            out = self.loss(fp32(z1), fp32(z2))
        return MethodOutput(out.total, out.terms, h1)
