"""What every method is: a module that owns its networks and its state.

A :class:`Method` holds the online ``encoder`` (what downstream users and every evaluation see),
the ``projector``, the online linear ``probe`` (on detached representations: it never shapes the
encoder) and whatever else the method needs -- a predictor, an EMA target network, a queue,
prototypes, a loss with a running statistic -- as submodules, parameters and buffers. So:

- the checkpoint is ``method.state_dict()``: EMA networks, queues and TiCo's C survive a resume
  with no per-method keys in the loop;
- the loop calls five things only: ``start_epoch(epoch)`` (methods with epoch-dependent behaviour:
  SwAV's frozen prototypes and queue, UOTA's start epoch), ``forward(crops)`` (returns the total,
  the unweighted terms and the representation the probe sees), ``after_backward()`` (gradients
  a method drops: SwAV's prototypes while frozen), ``param_groups()`` (what the optimiser
  updates -- never a target network) and ``after_step(step, total_steps)`` (EMA from the step and
  the configured total, queue updates), and has no method-specific branch.

View weighting (UOTA, :mod:`sslray.methods.uota`). A method whose loss is a mean over views or
view pairs of per-image terms sets ``view_weighting = True`` and reduces its per-view, per-image
losses ``[V, n]`` with :meth:`Method.view_mean` (a plain mean unless UOTA is on and its start
epoch reached); a pair's term is split half to each of its two views, so the plain mean is the
paper's loss.

Crops arrive as a list of normalised image batches ``[B, 3, s, s]``, group by group as
``views.crops`` lists them; :meth:`Method.encode` runs the encoder once per crop size (one batch
per size: BatchNorm statistics cover every crop of that size, DDP sees one forward, one large
conv batch is cheaper than several small ones).

DDP and buffers. torch 2.15 re-broadcasts every module buffer from rank 0 on every forward by
default (REFERENCE §10). BatchNorm running statistics keep that (they are what torch users expect,
and with ``model.sync_batchnorm`` they are identical anyway). A method's own state (TiCo's C, a
queue, an update count) is listed by :meth:`Method.rank_state`: either *replicated* -- computed on
every rank from all-reduced or gathered values, so already identical, where a broadcast would only
cost bandwidth (16 MiB per step for a 2048-wide C, 32 MiB for a 32k x 256 queue) -- or *per rank* by
design, where a broadcast would be wrong. Both are excluded from DDP's buffer sync; the
2-vs-1-worker tests check that replicated state stays equal to one worker's. Every method here keeps
replicated state only -- SwAV's queue included, which the official code keeps per rank: per-rank
state would not survive a resume from rank 0's checkpoint (:mod:`sslray.methods.swav`).
"""
from __future__ import annotations

import abc
import contextlib
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from sslray.losses.params import Param, defaults, resolve as resolve_params
from sslray.models import Projector


class MethodOutput(NamedTuple):
    total: torch.Tensor  # scalar to backpropagate
    terms: dict[str, torch.Tensor]  # every loss term, unweighted, for logging
    rep: torch.Tensor  # representations of the first crop [B, F] (the online probe's input; detached there)


def fp32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def full_precision(x: torch.Tensor):
    """A context where autocast is off: losses run in fp32 at least (bf16 covariances lose the
    off-diagonals, bf16 logits over a queue lose the temperature's resolution)."""
    return torch.autocast(x.device.type, enabled=False) if torch.is_autocast_enabled(x.device.type) \
        else contextlib.nullcontext()


class Method(nn.Module, abc.ABC):
    """Base class; see the module docstring. Subclasses set ``name``, ``crops`` and ``PARAMS`` and
    implement ``forward``; ``PARAMS`` declares the method's paper-named parameters (``loss.params``
    in the config) once -- paper defaults, bounds, whether they size the state
    (:class:`sslray.losses.params.Param`) -- and ``__init__`` takes them as keyword arguments,
    checked and completed by :meth:`resolve`."""

    name: ClassVar[str]
    crops: ClassVar[int | None] = 2  # crops per image it takes (None: any number >= 2)
    PARAMS: ClassVar[dict[str, Param]] = {}
    shape_params: ClassVar[tuple[str, ...]] = ()  # from PARAMS: those that size weights or state (a resume keeps them)
    view_weighting: ClassVar[bool] = False  # reduces per-view losses with view_mean (UOTA composes with it)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.shape_params = tuple(k for k, p in cls.PARAMS.items() if p.sizes_state)

    def __init__(self, encoder: nn.Module, projector: str, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.projector = Projector(encoder.out_dim, projector)
        self.probe = nn.Linear(encoder.out_dim, num_classes)
        self.epoch = 0  # the current epoch (0-based), from start_epoch
        self.uota = None  # sslray.methods.uota.UOTA when view weighting is on (set by build_method)

    # ---- parameters (the config's loss.params)
    @classmethod
    def params(cls) -> dict[str, Any]:
        """Paper-named parameters and their defaults (None: must be given)."""
        return defaults(cls.PARAMS)

    @classmethod
    def resolve(cls, params: dict[str, Any] | None, dim: int) -> dict[str, Any]:
        """Every parameter, ``params`` checked against ``PARAMS`` (names, types, bounds) and
        :meth:`check_dim`, the defaults filled in; builds nothing. Every problem is a one-line
        ValueError naming the parameter and what is allowed."""
        values = resolve_params(repr(cls.name), cls.PARAMS, params, dim)
        cls.check_dim(values, dim)
        return values

    @classmethod
    def check_dim(cls, values: dict[str, Any], dim: int) -> None:
        """Check what the table cannot state: the parameters' relation to the embedding width
        ``dim`` (W-MSE's sub-batches must exceed it). Default: none."""

    @classmethod
    def check_batch(cls, params: dict[str, Any], batch_size: int) -> None:
        """Check ``params`` against the per-worker ``train.batch_size`` (W-MSE's sub-batches must
        divide it); raise ValueError saying what is allowed. Default: anything goes."""

    # ---- what the loop calls
    def encode(self, crops: list[torch.Tensor]) -> list[torch.Tensor]:
        """The encoder's representation of every crop, the encoder run once per crop size."""
        return run_by_size(self.encoder, crops)

    @abc.abstractmethod
    def forward(self, crops: list[torch.Tensor]) -> MethodOutput:
        """The total loss, its unweighted terms and the first crop's representation."""

    def start_epoch(self, epoch: int) -> None:
        """Called before every epoch (0-based; on resume, the first epoch run). Subclasses that
        override it call ``super().start_epoch(epoch)``."""
        self.epoch = epoch

    def after_backward(self) -> None:
        """Called after the backward pass, before the optimiser step (gradients are final: DDP has
        averaged them). Setting a parameter's ``grad`` to None here skips it in this step."""

    def view_mean(self, losses: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """The mean of per-view, per-image losses ``[V, n]``, each weighted by UOTA when it is on
        and ``self.epoch`` has reached its start epoch. ``embeddings`` ``[V, n, D]`` are the views'
        embeddings the weights come from (detached there)."""
        if self.uota is None or not self.uota.active(self.epoch):
            return losses.mean()
        return (self.uota.weights(embeddings) * losses).mean()

    def param_groups(self) -> list[dict]:
        """What the optimiser updates, as groups of ``{"params": [...]}`` plus options
        (``fixed_lr: True``: the learning-rate schedule does not apply). Never a target network,
        never the probe (it has its own optimiser)."""
        return [{"params": [p for m in (self.encoder, self.projector) for p in m.parameters()]}]

    def after_step(self, step: int, total_steps: int) -> None:
        """Called after every optimiser step, ``step`` counted from 0 over the whole run (the same
        on every rank), ``total_steps`` the configured total -- not an ASHA rung."""

    def rank_state(self) -> list[str]:
        """Names (in ``state_dict``) of buffers excluded from DDP's per-forward broadcast; see the
        module docstring. Default: every buffer outside BatchNorm layers."""
        norm = {f"{n}.{b}" if n else b for n, m in self.named_modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) for b, _ in m.named_buffers(recurse=False)}
        return [n for n, _ in self.named_buffers() if n not in norm]


def run_by_size(net: nn.Module, crops: list[torch.Tensor]) -> list[torch.Tensor]:
    """``net`` applied to every crop, once per distinct crop size (crops of one size batched)."""
    by_size: dict[tuple, list[int]] = {}
    for i, c in enumerate(crops):
        by_size.setdefault(tuple(c.shape[-2:]), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(crops)
    for idx in by_size.values():
        h = net(torch.cat([crops[i] for i in idx])) if len(idx) > 1 else net(crops[idx[0]])
        for i, part in zip(idx, h.split([crops[i].shape[0] for i in idx])):
            out[i] = part
    return out  # type: ignore[return-value]
