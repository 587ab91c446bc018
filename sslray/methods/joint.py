"""Joint-embedding methods whose whole state is their loss: VICReg, TiCo, VICReg-TiCo, Barlow Twins.

encoder -> projector on two crops, one two-view loss from :mod:`sslray.losses` on the two
embeddings; the method's parameters are the loss's (its ``PARAMS`` table). The loss module is a
submodule (``loss``), so its state (TiCo's running C) is in the method's ``state_dict`` as
``loss.C``. :func:`joint_method` makes the method of a loss; ``sslray.methods`` registers them:

    vicreg       VICReg (Bardes, Ponce & LeCun, ICLR 2022)       sslray.losses.vicreg.VICRegLoss
    tico         TiCo (Zhu, Liu & Huang, 2022)                   sslray.losses.tico.TiCoLoss
    vicreg_tico  VICReg with TiCo's covariance term (this project's question)
                                                                 sslray.losses.vicreg_tico.VICRegTiCoLoss
    barlow       Barlow Twins (Zbontar et al., ICML 2021)        sslray.losses.barlow.BarlowTwinsLoss

(formula, source and defaults in each loss's file).
"""
from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import nn

from sslray.methods.base import Method, MethodOutput, fp32, full_precision
from sslray.models import projector_dims


class JointEmbedding(Method):
    crops = 2
    loss_class: ClassVar[type[nn.Module]]

    def __init__(self, encoder: nn.Module, projector: str, num_classes: int, **params: Any):
        super().__init__(encoder, projector, num_classes)
        self.loss = make_loss(self.loss_class, params, projector_dims(projector)[-1])

    def forward(self, crops: list[torch.Tensor]) -> MethodOutput:
        # one encoder and one projector pass on both crops (the official VICReg code makes two):
        # BatchNorm statistics cover both views, DDP sees one forward per step
        h1, h2 = self.encode(crops)
        z1, z2 = self.projector(torch.cat([h1, h2])).split([h1.shape[0], h2.shape[0]])
        with full_precision(z1):
            out = self.loss(fp32(z1), fp32(z2))
        return MethodOutput(out.total, out.terms, h1)


def joint_method(name: str, loss_class: type[nn.Module]) -> type[JointEmbedding]:
    """The method ``name`` whose loss is ``loss_class`` (its parameters: the loss's ``PARAMS``)."""
    cls_name = loss_class.__name__.removesuffix("Loss")
    return type(cls_name, (JointEmbedding,), {"name": name, "loss_class": loss_class, "PARAMS": loss_class.PARAMS,
                                              "__module__": __name__, "__qualname__": cls_name,
                                              "__doc__": f"{cls_name}: encoder + projector, the loss "
                                                         f":class:`{loss_class.__module__}.{loss_class.__name__}`."})


def needs_dim(loss_class: type[nn.Module]) -> bool:
    """The loss keeps a D x D state and takes the embedding width ``dim``."""
    return "dim" in inspect.signature(loss_class.__init__).parameters


def make_loss(loss_class: type[nn.Module], params: dict[str, Any], dim: int) -> nn.Module:
    """``loss_class`` with ``params``; ``dim`` (the embedding width) goes only to losses that take it."""
    return loss_class(**params, dim=dim) if needs_dim(loss_class) else loss_class(**params)
