"""SimSiam: Exploring Simple Siamese Representation Learning (Chen & He, CVPR 2021,
https://arxiv.org/abs/2011.10566).

    z_v = g(f(x_v)),   p_v = h(z_v)                   (encoder f, projector g, predictor h; one network)
    L = D(p_1, stopgrad(z_2)) / 2 + D(p_2, stopgrad(z_1)) / 2,   D(p, z) = -mean_i cos(p_i, z_i)   (eq. 3)

No target network, no EMA, no negatives: the stop-gradient alone prevents collapse (§4.2).

Networks (§3, "Baseline settings"): the projector has BN on every layer, its output BN without
affine parameters (``model.projector`` "2048-2048-2048", built with ``last_bn``); the predictor is
a bottleneck Linear-BN-ReLU-Linear, hidden ``pred_hidden`` = 512 (a quarter of the projection
width), no BN on its output. Its learning rate is not decayed ("we do not decay the learning rate
of the predictor", §4.4): :meth:`param_groups` marks its group ``fixed_lr``, kept at the base lr by
:func:`sslray.optim.set_lr`. terms: ``neg_cos`` = L (the total, in [-1, 1]).
"""
from __future__ import annotations

import torch
from torch import nn

from sslray.losses.cosine import negative_cosine
from sslray.losses.params import Param
from sslray.methods.base import Method, MethodOutput, fp32, full_precision
from sslray.methods.predictor import Predictor
from sslray.models import Projector, projector_dims


class SimSiam(Method):
    name = "simsiam"
    crops = 2
    view_weighting = True  # the term where view v predicts carries view v's weight
    PARAMS = {"pred_hidden": Param(512, lo=1.0, whole="integers", sizes_state=True)}

    def __init__(self, encoder: nn.Module, projector: str, num_classes: int, **params: float):
        p = self.resolve(params, projector_dims(projector)[-1])
        super().__init__(encoder, projector, num_classes)
        self.projector = Projector(encoder.out_dim, projector, last_bn=True)
        self.predictor = Predictor(self.projector.out_dim, int(p["pred_hidden"]))

    def forward(self, crops: list[torch.Tensor]) -> MethodOutput:
        h1, h2 = self.encode(crops)
        z = self.projector(torch.cat([h1, h2]))
        p1, p2 = self.predictor(z).split([h1.shape[0], h2.shape[0]])
        z1, z2 = z.split([h1.shape[0], h2.shape[0]])
        with full_precision(p1):
            terms = torch.stack([negative_cosine(fp32(p1), fp32(z2), reduction="none"),
                                 negative_cosine(fp32(p2), fp32(z1), reduction="none")])
            loss = self.view_mean(terms, torch.stack([fp32(z1), fp32(z2)]))  # plain: the two halves' sum
        return MethodOutput(loss, {"neg_cos": loss}, h1)

    def param_groups(self) -> list[dict]:
        return [{"params": [p for m in (self.encoder, self.projector) for p in m.parameters()]},
                {"params": list(self.predictor.parameters()), "fixed_lr": True}]
