"""Methods: one file per method, each a :class:`~sslray.methods.base.Method` that owns its networks
(projector, predictor, target network), its state (queue, running statistics) and its loss.

The config's ``loss.name`` names the method and ``loss.params`` holds its paper-named parameters:

    vicreg       lam=25, mu=25, nu=1, eps=1e-4                                (sslray.losses.vicreg)
    tico         beta=0.9, rho=8                                              (sslray.losses.tico)
    vicreg_tico  lam=25, mu=25, nu (required, ~1/dim), beta=0.9, eps=1e-4, center, offdiag,
                 symmetric, bias_correction = False                           (sslray.losses.vicreg_tico)
    barlow       lambda_bt=5e-3                                               (sslray.losses.barlow)
                 (the four above: sslray.methods.joint, the method of a loss)
    simclr       temperature=0.2                                              (sslray.methods.simclr)
    moco         temperature=0.2, queue_size=32768, momentum=0.99, momentum_end=1.0   (sslray.methods.moco)
    byol         pred_hidden=4096, momentum=0.99, momentum_end=1.0            (sslray.methods.byol)
    simsiam      pred_hidden=512                                              (sslray.methods.simsiam)
    wmse         w_size=128, w_iter=1, w_eps=0 (views: any number >= 2)     (sslray.losses.wmse, sslray.methods.wmse)
    swav         num_prototypes=3000, temperature=0.1, epsilon=0.05, sinkhorn_iterations=3,
                 freeze_prototypes_epochs=2, queue_size=3840, epoch_queue_starts=50;
                 any number >= 2 of crops, the first two global                (sslray.methods.swav)

``METHODS`` below is the one registry: a method is added by listing it there (and tested by
``tests/test_method_contract.py`` from then on). Each method declares its parameters once, in its
``PARAMS`` table (:mod:`sslray.losses.params`: default, bounds, whether it sizes the state);
``method_params(name)`` lists them with their defaults, ``check_method`` checks a config's values
against them without building anything.

Example::

    method = build_method(cfg, num_classes=10)      # cfg: sslray.config.Config
    out = method(crops)                             # crops: list of [B, 3, s, s] normalised batches
    out.total.backward(); optimiser.step(); method.after_step(step, total_steps)
"""
from __future__ import annotations

from typing import Any

from torch import nn

from sslray.losses.barlow import BarlowTwinsLoss
from sslray.losses.params import resolve
from sslray.losses.tico import TiCoLoss
from sslray.losses.vicreg import VICRegLoss
from sslray.losses.vicreg_tico import VICRegTiCoLoss
from sslray.methods.base import Method, MethodOutput
from sslray.methods.byol import BYOL
from sslray.methods.joint import JointEmbedding, joint_method, make_loss, needs_dim
from sslray.methods.moco import MoCoV2
from sslray.methods.simclr import SimCLR
from sslray.methods.simsiam import SimSiam
from sslray.methods.swav import SwAV
from sslray.methods.wmse import WMSE

METHODS: dict[str, type[Method]] = {m.name: m for m in (
    joint_method("vicreg", VICRegLoss), joint_method("tico", TiCoLoss), joint_method("vicreg_tico", VICRegTiCoLoss),
    joint_method("barlow", BarlowTwinsLoss), SimCLR, MoCoV2, BYOL, SimSiam, WMSE, SwAV)}


def method_params(name: str) -> dict[str, Any]:
    """The paper-named parameters of method ``name`` and their defaults (None: must be given)."""
    return METHODS[name].params()


def check_method(name: str, params: dict[str, Any] | None, dim: int) -> None:
    """``params`` are valid for method ``name`` with embeddings of width ``dim``; every problem is a
    ValueError naming the parameter and what is allowed. Builds nothing."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}")
    METHODS[name].resolve(params, dim)


def loss_methods() -> list[str]:
    """The methods that are a two-view loss and nothing more (:mod:`sslray.methods.joint`)."""
    return [n for n, m in METHODS.items() if issubclass(m, JointEmbedding)]


def build_loss(name: str, params: dict[str, Any] | None = None, dim: int | None = None) -> nn.Module:
    """The loss of method ``name`` (one of :func:`loss_methods`) alone, with ``params`` (paper
    names); ``dim`` goes only to losses that keep a D x D state. Every error is a ``ValueError``
    that names the bad name or parameter and what is allowed."""
    if name not in loss_methods():
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(loss_methods())}")
    loss_class = METHODS[name].loss_class
    params = resolve(f"loss {name!r}", loss_class.PARAMS, params, dim)
    if dim is None and needs_dim(loss_class):
        raise ValueError(f"loss {name!r} needs the embedding width; allowed: build_loss({name!r}, params, dim=D)")
    return make_loss(loss_class, params, dim)


def build_method(cfg, num_classes: int) -> Method:
    """The method of a :class:`sslray.config.Config` (``loss.name``, ``loss.params``), its encoder
    from ``model``; call under ``torch.manual_seed`` for identical initial weights on every rank."""
    from sslray.models import build_encoder

    check_method(cfg.loss.name, cfg.loss.params, _dim(cfg))
    encoder = build_encoder(cfg.model.encoder, cfg.model.stem, cfg.views.size, cfg.model.width)
    method = METHODS[cfg.loss.name](encoder, cfg.model.projector, num_classes, **cfg.loss.params)
    u = cfg.loss.uota
    if u.enabled:
        from sslray.methods.uota import UOTA

        method.uota = UOTA(u.tau, u.eps, u.start_epoch)
    return method


def _dim(cfg) -> int:
    from sslray.models import projector_dims

    return projector_dims(cfg.model.projector)[-1]


__all__ = ["BYOL", "METHODS", "Method", "MethodOutput", "MoCoV2", "SimCLR", "SimSiam", "SwAV", "WMSE", "build_loss",
           "build_method", "check_method", "loss_methods", "method_params"]
