"""BYOL: Bootstrap Your Own Latent (Grill et al., NeurIPS 2020, https://arxiv.org/abs/2006.07733).

    online:  z_v = g_theta(f_theta(x_v)),   p_v = q_theta(z_v)         (encoder, projector, predictor)
    target:  z'_v = g_xi(f_xi(x_v))                                    (EMA copies; no predictor, no gradient)
    L = l(p_1, z'_2) + l(p_2, z'_1),   l(p, z) = mean_i (2 - 2 cos(p_i, z_i))     (eq. 2, L + L~)
    xi <- tau xi + (1 - tau) theta after every step,
    tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2                  (§3.2; tau_base -> momentum_end)

Parameters (``loss.params``): ``pred_hidden`` = 4096 (the predictor's hidden width; its output is
the projector's width, ``model.projector`` "4096-256" in the paper), ``momentum`` = 0.99 (tau_base
of the CIFAR recipes, solo-learn; the ImageNet paper uses 0.996), ``momentum_end`` = 1.0. The
schedule follows the step over the configured total (:func:`sslray.methods.target.momentum_at`).

State: ``target_encoder`` and ``target_projector`` (frozen copies of the online networks at
construction: the same initial weights) are submodules, so they are in ``state_dict`` and resume
with the run; they run in train mode (their BatchNorm uses the target batch's statistics) under
``torch.no_grad``, and are never in :meth:`param_groups`. terms: ``regression`` = L (the total).
"""
from __future__ import annotations

import torch
from torch import nn

from sslray.losses.cosine import byol_regression
from sslray.losses.params import Param
from sslray.methods.base import Method, MethodOutput, fp32, full_precision, run_by_size
from sslray.methods.predictor import Predictor
from sslray.methods.target import ema_update, frozen_copy, momentum_at
from sslray.models import projector_dims


class BYOL(Method):
    name = "byol"
    crops = 2
    view_weighting = True  # the term where view v's prediction regresses carries view v's weight
    PARAMS = {"pred_hidden": Param(4096, lo=1.0, whole="integers", sizes_state=True),
              "momentum": Param(0.99, lo=0.0, hi=1.0), "momentum_end": Param(1.0, lo=0.0, hi=1.0)}

    def __init__(self, encoder: nn.Module, projector: str, num_classes: int, **params: float):
        p = self.resolve(params, projector_dims(projector)[-1])
        super().__init__(encoder, projector, num_classes)
        self.momentum, self.momentum_end = float(p["momentum"]), float(p["momentum_end"])
        self.predictor = Predictor(self.projector.out_dim, int(p["pred_hidden"]))
        self.target_encoder = frozen_copy(self.encoder)
        self.target_projector = frozen_copy(self.projector)

    def forward(self, crops: list[torch.Tensor]) -> MethodOutput:
        h1, h2 = self.encode(crops)
        n1, n2 = h1.shape[0], h2.shape[0]
        z = self.projector(torch.cat([h1, h2]))
        p1, p2 = self.predictor(z).split([n1, n2])
        with torch.no_grad():
            t1, t2 = self.target_projector(torch.cat(run_by_size(self.target_encoder, crops))).split([n1, n2])
        with full_precision(p1):
            terms = torch.stack([byol_regression(fp32(p1), fp32(t2), reduction="none"),
                                 byol_regression(fp32(p2), fp32(t1), reduction="none")])
            # the paper's symmetrised loss is the sum of the two directions: twice their mean
            loss = 2 * self.view_mean(terms, torch.stack(fp32(z).split([n1, n2])))
        return MethodOutput(loss, {"regression": loss}, h1)

    def param_groups(self) -> list[dict]:
        return [{"params": [p for m in (self.encoder, self.projector, self.predictor) for p in m.parameters()]}]

    def after_step(self, step: int, total_steps: int) -> None:
        tau = momentum_at(step, total_steps, self.momentum, self.momentum_end)
        ema_update(self.target_encoder, self.encoder, tau)
        ema_update(self.target_projector, self.projector, tau)
