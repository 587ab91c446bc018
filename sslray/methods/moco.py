"""MoCo v2 (He et al., CVPR 2020, https://arxiv.org/abs/1911.05722; Chen et al. 2020,
https://arxiv.org/abs/2003.04297), symmetric as MoCo v2+ in solo-learn.

Networks. The online encoder + projector give the queries; a key network -- ``key_encoder`` and
``key_projector``, frozen copies of the online ones at construction -- gives the keys and follows
the online weights by EMA after every optimiser step (:mod:`sslray.methods.target`):

    xi <- tau_k xi + (1 - tau_k) theta,   tau_k cosine from ``momentum`` (k = 0) to ``momentum_end``
                                           (k = the configured total steps)

Loss. With q_v, k_v the normalised query and key embeddings of view v and Q the queue,

    L = ( infonce(q1, k2, Q) + infonce(q2, k1, Q) ) / 2          (:mod:`sslray.losses.infonce`)

then the keys of both views of every rank's images enter Q (a ring buffer, oldest out:
:mod:`sslray.methods.ring`). solo-learn
keeps one queue per view (q1 meets only view-2 keys); here both views share one queue of
``queue_size`` rows, so it spans queue_size / (2 x global batch) steps of history.

Defaults (solo-learn's CIFAR MoCo v2+ recipe, REFERENCE §11: projector 2048-256, SGD lr 0.3,
wd 1e-4): temperature 0.2, queue_size 32768, momentum 0.99. ``momentum_end`` is 1.0 (the
BYOL-style cosine to 1 over the run); solo-learn's recipe ends at 0.999 (set momentum_end=0.999).

Keys and batch statistics. The paper's shuffle-BN keeps BatchNorm from leaking which key belongs
to which query through the batch statistics. Here queries and keys never share statistics: the key
network runs its own forward (train mode) on the key batch only, with its own BatchNorm layers,
separate from the online network's forward on the query batch. Shuffle-BN across GPUs is not
done. With ``model.sync_batchnorm`` the statistics of each network are global (all ranks' crops of
that network's pass), without it per rank; either way never mixed between queries and keys.

Across ranks. The keys of both views are gathered from every rank (no gradient) in ``forward``,
stashed, and written in ``after_step`` in rank order, so every rank writes the same rows at the
same place: the queue and its pointer stay identical everywhere (and equal one process on the
combined batch). Both were built under the same seed on every rank, and :meth:`rank_state` (the
base default: every non-BatchNorm buffer) keeps them out of DDP's per-forward broadcast, which
would cost 32 MiB per step for nothing. No divisibility of queue_size by the batch is required.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslray.losses.distributed import gather
from sslray.losses.infonce import infonce
from sslray.losses.params import Param
from sslray.methods.base import Method, MethodOutput, fp32, full_precision, run_by_size
from sslray.methods.ring import ring_write
from sslray.methods.target import ema_update, frozen_copy, momentum_at
from sslray.models import projector_dims


class MoCoV2(Method):
    name = "moco"
    crops = 2
    view_weighting = True  # view v's queries carry view v's weight
    PARAMS = {"temperature": Param(0.2, lo=0.0, lo_open=True),
              "queue_size": Param(32768.0, lo=1.0, whole="an integer", sizes_state=True),
              "momentum": Param(0.99, lo=0.0, hi=1.0), "momentum_end": Param(1.0, lo=0.0, hi=1.0)}

    def __init__(self, encoder: nn.Module, projector: str, num_classes: int, **params: float):
        dim = projector_dims(projector)[-1]
        p = self.resolve(params, dim)
        super().__init__(encoder, projector, num_classes)
        self.temperature, self.momentum, self.momentum_end = (float(p["temperature"]), float(p["momentum"]),
                                                              float(p["momentum_end"]))
        self.key_encoder = frozen_copy(self.encoder)
        self.key_projector = frozen_copy(self.projector)
        # drawn from the global torch RNG: the same seed on every rank gives the same queue
        self.register_buffer("queue", F.normalize(torch.randn(int(p["queue_size"]), dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        # this step's gathered keys, enqueued in after_step (one training forward per step: a second
        # forward before after_step replaces them)
        self._pending: torch.Tensor | None = None

    def forward(self, crops: list[torch.Tensor]) -> MethodOutput:
        h1, h2 = self.encode(crops)
        q1, q2 = self.projector(torch.cat([h1, h2])).split([h1.shape[0], h2.shape[0]])
        with torch.no_grad():  # the key network: its own forward, its own BatchNorm statistics
            g1, g2 = run_by_size(self.key_encoder, crops)
            k1, k2 = self.key_projector(torch.cat([g1, g2])).split([g1.shape[0], g2.shape[0]])
        with full_precision(q1):
            q1, q2 = F.normalize(fp32(q1), dim=1), F.normalize(fp32(q2), dim=1)
            k1, k2 = F.normalize(fp32(k1), dim=1), F.normalize(fp32(k2), dim=1)
            terms = torch.stack([infonce(q1, k2, self.queue, self.temperature, reduction="none"),
                                 infonce(q2, k1, self.queue, self.temperature, reduction="none")])
            loss = self.view_mean(terms, torch.stack([q1, q2]))  # plain: the mean of the two directions
        if self.training:
            with torch.no_grad():
                both = gather(torch.cat([k1, k2], dim=1).detach())  # [N, 2D], rank order
                self._pending = torch.cat(both.split(k1.shape[1], dim=1))  # every view-1 key, then view 2
        return MethodOutput(loss, {"infonce": loss}, h1)

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        if self._pending is not None:
            ring_write(self.queue, self.queue_ptr, self._pending)
            self._pending = None
        tau = momentum_at(step, total_steps, self.momentum, self.momentum_end)
        ema_update(self.key_encoder, self.encoder, tau)
        ema_update(self.key_projector, self.projector, tau)
