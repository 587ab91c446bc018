"""UOTA view weighting for any method whose loss is a mean over views or view pairs.

Configured as ``loss.uota`` (``enabled``, ``tau``, ``eps``, ``start_epoch``); the weights' formula,
source and defaults are in :mod:`sslray.losses.uota`. A method opts in with
``view_weighting = True`` and reduces its per-view, per-image losses with
:meth:`sslray.methods.base.Method.view_mean`; before ``start_epoch`` (0-based) every weight is 1.
The number of views M is the config's crop count (``views.crops``): searchable for methods that
take any number of crops (SwAV, W-MSE); the two-view methods have M = 2, where UOTA weighs images
(both views of an image get one weight), not views.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sslray.losses.uota import uota_weights


@dataclass
class UOTA:
    tau: float = 350.0
    eps: float = 1e-8
    start_epoch: int = 0

    def active(self, epoch: int) -> bool:
        return epoch >= self.start_epoch

    def weights(self, embeddings: torch.Tensor) -> torch.Tensor:
        return uota_weights(embeddings, self.tau, self.eps)
