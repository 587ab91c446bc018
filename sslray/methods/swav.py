"""SwAV: Swapping Assignments between multiple Views (Caron et al., NeurIPS 2020,
https://arxiv.org/abs/2006.09882), with multi-crop.

    z_v = normalize(g(f(x_v)))                 every crop v = 0..V-1 (encoder once per crop size,
                                               projector once over all crops)
    s_v = z_v C^T                              C: K prototypes [K, D], unit rows (a bias-free linear layer)
    q_a = sinkhorn(s_a [+ queue_a C^T])        codes of the two global crops a = 0, 1, no gradient
    L   = 1/2 sum_a 1/(V-1) sum_{v != a} mean_i -sum_k q_a,ik log softmax(s_v,i / T)_k

formulas, the cross-rank Sinkhorn and its precision in :mod:`sslray.losses.swav`. The first two
crops are the assignment crops (the official ``crops_for_assign`` = [0, 1]), so ``views.crops``'
first group(s) must give the two large crops: e.g. ``[{}, {}, {count: 6, size: 16, crop_scale:
[0.05, 0.14]}]`` -- the default two 32 px crops, then six small ones (the multi-crop recipe
``cifar10_resnet18_swav.yaml``). Any number V >= 2 of crops; with V = 2 it is the two-crop SwAV.

Parameters (``loss.params``; names as the official code's where it has one):

    num_prototypes            K = 3000   (official ``nmb_prototypes``; solo-learn's CIFAR recipe)
    temperature               T = 0.1    softmax temperature of the predictions
    epsilon                   eps = 0.05 Sinkhorn's entropic regularisation
    sinkhorn_iterations       3          alternating normalisations
    freeze_prototypes_epochs  2          epochs (0-based: epochs 0 and 1) whose prototype gradient is
                                         dropped; the official code counts iterations
                                         (``freeze_prototypes_niters``), solo-learn epochs
    queue_size                3840       rows of past global-crop embeddings per assignment crop
                                         (official ``queue_length``; 0 = no queue)
    epoch_queue_starts        50         0-based epoch from which the queue is filled; it enlarges
                                         Sinkhorn's batch once full (solo-learn's CIFAR recipe)

with projector 2048-128 and LARS lr 0.6, wd 1e-6 in the recipe (REFERENCE §11).

Prototypes. ``prototypes`` is ``nn.Linear(D, K, bias=False)`` whose rows are L2-normalised (under
no_grad) at construction and after every optimiser step (:meth:`after_step`), so every forward
scores against unit prototypes -- the official code normalises at the top of each iteration, the
same thing; the gradient is taken with respect to the unit rows (no weight-norm
reparametrisation). While ``epoch < freeze_prototypes_epochs`` :meth:`after_backward` sets their
gradient to None: under DDP that is after the gradients were all-reduced, on every rank alike
(the epoch is the same everywhere), so the optimiser skips them (no step, no decay, no momentum).

Queue: one layout for every world size. The official queue is per rank (each rank keeps its own
images' embeddings, ``queue_length / world`` rows, in a separate file per rank); a checkpoint of
rank 0's ``state_dict`` would then lose every other rank's queue. Here the queue is *replicated*:
the buffer ``queue`` [2, queue_size, D] holds the normalised embeddings z_0, z_1 of the global
crops of the last ``queue_size`` images of the *global* batch -- gathered from every rank (no
gradient) in ``forward``, written in rank order in :meth:`after_step` as a ring buffer (:mod:`sslray.methods.ring`)
(``queue_ptr``, ``queue_rows`` = rows filled so far) -- so it is identical on every rank, equal to
one process's queue on the combined batch, and rank 0's checkpoint restores every rank's (even
under another world size). Sinkhorn only needs each queue row as *one* column somewhere: rank r
adds rows [r L / W, (r+1) L / W) of the queue (scored with today's prototypes), the column sums
are local and the row sums all-reduced, so W ranks solve Sinkhorn over queue + global batch
exactly as one process does; no divisibility of ``queue_size`` by the batch is needed. The codes
of a rank's own images are its last n rows, as in the official code. The queue is filled from
``epoch_queue_starts`` on and used from the first step at which it is full (the official code's
test that its last row is non-zero): never on zero rows. The buffers are kept out of DDP's
per-forward broadcast (:meth:`rank_state`'s default); host-side flags (``_filling``, ``_use_queue``)
are refreshed from ``queue_rows`` in :meth:`start_epoch` and after ``load_state_dict`` (one host
read per epoch), so a step reads no device value; under ``train.compile`` the forward compiles
once more when the queue joins (measured: 2 graphs, no graph break, the eager run's losses).

View weighting (UOTA, ``loss.uota``): term (v, a) is view v's (the predicting view's) -- per-view,
per-image losses [V, n] reduced by :meth:`view_mean` with the normalised projections z_v as the
embeddings. terms: ``swav`` = L, the unweighted mean; the total equals it
unless UOTA is on and active.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslray.losses.distributed import gather, rank, world_size
from sslray.losses.params import Param
from sslray.losses.swav import sinkhorn, swapped_prediction
from sslray.methods.base import Method, MethodOutput, fp32, full_precision
from sslray.methods.ring import ring_write
from sslray.models import projector_dims

ASSIGNED = 2  # crops whose codes are computed: the two global crops (official crops_for_assign = [0, 1])


def _after_load(module: "SwAV", incompatible_keys) -> None:
    module._sync_queue_flags()  # the loaded queue_rows decides whether the queue is in use


class SwAV(Method):
    name = "swav"
    crops = None  # any number >= 2; the first two are the global (assignment) crops
    view_weighting = True
    PARAMS = {"num_prototypes": Param(3000.0, lo=2.0, whole="an integer", sizes_state=True),
              "temperature": Param(0.1, lo=0.0, lo_open=True), "epsilon": Param(0.05, lo=0.0, lo_open=True),
              "sinkhorn_iterations": Param(3.0, lo=1.0, whole="an integer"),
              "freeze_prototypes_epochs": Param(2.0, lo=0.0, whole="an integer"),
              "queue_size": Param(3840.0, lo=0.0, whole="an integer", sizes_state=True),
              "epoch_queue_starts": Param(50.0, lo=0.0, whole="an integer")}

    def __init__(self, encoder: nn.Module, projector: str, num_classes: int, **params: float):
        dim = projector_dims(projector)[-1]
        p = self.resolve(params, dim)
        super().__init__(encoder, projector, num_classes)
        self.temperature, self.epsilon = float(p["temperature"]), float(p["epsilon"])
        self.sinkhorn_iterations = int(p["sinkhorn_iterations"])
        self.freeze_prototypes_epochs = int(p["freeze_prototypes_epochs"])
        self.epoch_queue_starts = int(p["epoch_queue_starts"])
        self.prototypes = nn.Linear(dim, int(p["num_prototypes"]), bias=False)
        self.normalise_prototypes()
        self.register_buffer("queue", torch.zeros(ASSIGNED, int(p["queue_size"]), dim))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("queue_rows", torch.zeros(1, dtype=torch.long))  # rows filled, <= queue_size
        # this step's gathered global-crop embeddings [N, 2, D], enqueued in after_step
        self._pending: torch.Tensor | None = None
        self._rows = 0  # host copy of queue_rows
        self.register_load_state_dict_post_hook(_after_load)
        self._sync_queue_flags()

    # ---- the loop's hooks
    def forward(self, crops: list[torch.Tensor]) -> MethodOutput:
        if len(crops) < ASSIGNED:
            raise ValueError(f"SwAV takes at least {ASSIGNED} crops per image (the first two: the global crops); "
                             f"got {len(crops)}")
        h = self.encode(crops)
        v, n = len(crops), h[0].shape[0]
        z = self.projector(torch.cat(h))  # one pass: the projector's BatchNorm sees every crop
        with full_precision(z):
            z = F.normalize(fp32(z), dim=1)
            w = fp32(self.prototypes.weight)
            scores = F.linear(z, w).view(v, n, -1)  # [V, n, K]
            z = z.view(v, n, -1)
            codes = torch.stack([self._codes(scores[a], w, a) for a in range(ASSIGNED)])  # [2, n, K]
            losses = swapped_prediction(scores, codes, self.temperature)  # [V, n]
            total = self.view_mean(losses, z)
        if self.training and self._filling:
            with torch.no_grad():  # every rank's global-crop embeddings, rank order: [N, 2, D]
                self._pending = gather(z[:ASSIGNED].detach().transpose(0, 1).contiguous())
        return MethodOutput(total, {"swav": losses.mean()}, h[0])

    def start_epoch(self, epoch: int) -> None:
        super().start_epoch(epoch)
        self._sync_queue_flags()

    def after_backward(self) -> None:
        if self.epoch < self.freeze_prototypes_epochs:
            self.prototypes.weight.grad = None

    def param_groups(self) -> list[dict]:
        return [{"params": [p for m in (self.encoder, self.projector, self.prototypes) for p in m.parameters()]}]

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        if self._pending is not None:
            self._enqueue(self._pending)
            self._pending = None
        self.normalise_prototypes()

    # ---- parts
    @torch.no_grad()
    def normalise_prototypes(self) -> None:
        """Every prototype (a row of ``prototypes.weight``) to unit L2 norm, in place."""
        w = self.prototypes.weight
        w.copy_(F.normalize(w, dim=1))

    @torch.no_grad()
    def _codes(self, scores: torch.Tensor, w: torch.Tensor, a: int) -> torch.Tensor:
        """Sinkhorn codes [n, K] of assignment crop ``a`` from its scores [n, K]; once the queue is
        in use, this rank's share of the queue joins as extra columns (scored with ``w``)."""
        s = scores.detach()
        if self._use_queue:
            size, r, world = self.queue.shape[1], rank(), world_size()
            past = self.queue[a, r * size // world:(r + 1) * size // world].to(w.dtype)
            s = torch.cat([F.linear(past, w.detach()), s])
        return sinkhorn(s, self.epsilon, self.sinkhorn_iterations)[-scores.shape[0]:]

    @torch.no_grad()
    def _enqueue(self, rows: torch.Tensor) -> None:
        """Write ``rows`` [m, 2, D] into the ring buffer (:mod:`sslray.methods.ring`); count the rows filled."""
        size, m = self.queue.shape[1], rows.shape[0]
        ring_write(self.queue, self.queue_ptr, rows.transpose(0, 1))
        self.queue_rows.add_(m).clamp_(max=size)
        self._rows = min(size, self._rows + m)
        self._set_queue_flags()

    def _sync_queue_flags(self) -> None:
        self._rows = int(self.queue_rows)  # a host read: once per epoch and after loading a state dict
        self._set_queue_flags()

    def _set_queue_flags(self) -> None:
        size = self.queue.shape[1]
        self._filling = size > 0 and self.epoch >= self.epoch_queue_starts
        self._use_queue = self._filling and self._rows >= size
