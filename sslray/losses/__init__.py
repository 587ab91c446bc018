"""SSL losses: one file per method, each term a small pure function.

Every loss is an ``nn.Module`` whose ``forward(z1, z2)`` takes the two views' embeddings (float
[n, D], the same shape, n >= 2) and returns :class:`LossOutput` -- the total to backpropagate and
every *unweighted* term for logging. Parameters are paper-named keyword arguments with paper
defaults, range-checked in ``__init__``:

    vicreg       VICRegLoss       lam=25, mu=25, nu=1, eps=1e-4
    tico         TiCoLoss         beta=0.9, rho=8                          (+ dim, for C)
    vicreg_tico  VICRegTiCoLoss   lam=25, mu=25, nu (required, ~1/dim), beta=0.9, eps=1e-4,
                                  center, offdiag, symmetric, bias_correction = False  (+ dim, for C)
    barlow       BarlowTwinsLoss  lambda_bt=5e-3

Each parameter's type is its annotation: ``float`` parameters take numbers (not booleans),
``bool`` switches take only true/false (not 0/1), so a YAML typo fails instead of switching a
part on silently. ``loss_params`` lists every parameter with its default (None: no default).

Terms over the whole batch (variance, covariance, cross-correlation, TiCo's B) are computed on the
*global* batch across ranks; see :mod:`sslray.losses.distributed` for why the gradients are right.

Example::

    loss_fn = build_loss("tico", {"rho": 20.0}, dim=128)
    out = loss_fn(z1, z2)  # z1, z2: [n, 128] fp32
    out.total.backward()   # out.terms == {"inv": ..., "cov": ...}
"""
from __future__ import annotations

import inspect
import math
import typing
from typing import Any, NamedTuple

import torch
from torch import nn


class LossOutput(NamedTuple):
    total: torch.Tensor  # scalar to backpropagate: the weighted sum of the terms
    terms: dict[str, torch.Tensor]  # every term, unweighted, for logging


def check_pair(z1: torch.Tensor, z2: torch.Tensor, dim: int | None = None) -> None:
    """Shapes every two-view loss needs: two floating [n, D] tensors, n >= 2 (and D == dim if given)."""
    if z1.ndim != 2 or z2.ndim != 2:
        raise ValueError(f"embeddings must be 2-D [batch, dim]; got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape != z2.shape:
        raise ValueError(f"the two views' embeddings differ in shape: {tuple(z1.shape)} vs {tuple(z2.shape)}")
    if not (z1.is_floating_point() and z2.is_floating_point()):
        raise ValueError(f"embeddings must be floating point; got {z1.dtype} and {z2.dtype}")
    if z1.shape[0] < 2:
        raise ValueError(f"batch size {z1.shape[0]}: variance/covariance terms need at least 2 samples")
    if dim is not None and z1.shape[1] != dim:
        raise ValueError(f"embedding width {z1.shape[1]} does not match the loss's dim {dim} "
                         f"(its running covariance C is {dim} x {dim})")


def check_range(name: str, value: float, lo: float, hi: float | None = None, hi_open: bool = False,
                lo_open: bool = False) -> None:
    """Raise ``ValueError("beta: 1.0 is out of range; allowed: [0, 1)")`` style errors. NaN and inf fail."""
    ok = math.isfinite(value) and value >= lo and not (lo_open and value == lo)
    ok = ok and (hi is None or (value <= hi and not (hi_open and value == hi)))
    if not ok:
        if hi is None:
            allowed = f"> {lo:g}" if lo_open else f">= {lo:g}"
        else:
            allowed = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{name}: {value!r} is out of range; allowed: {allowed}")


def check_flag(name: str, value: Any) -> None:
    """Raise ``ValueError("center: 1 is not true or false; allowed: true, false")`` for a non-bool switch."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}: {value!r} is not true or false; allowed: true, false")


from sslray.losses.barlow import BarlowTwinsLoss  # noqa: E402
from sslray.losses.tico import TiCoLoss  # noqa: E402
from sslray.losses.vicreg import VICRegLoss  # noqa: E402
from sslray.losses.vicreg_tico import VICRegTiCoLoss  # noqa: E402

LOSSES: dict[str, type[nn.Module]] = {
    "vicreg": VICRegLoss,
    "tico": TiCoLoss,
    "vicreg_tico": VICRegTiCoLoss,
    "barlow": BarlowTwinsLoss,
}


def loss_params(name: str) -> dict[str, float | bool | None]:
    """The paper-named parameters of a loss and their defaults (None: no default, must be given)."""
    sig = inspect.signature(LOSSES[name].__init__)
    return {p.name: p.default for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY and p.name != "dim"}


def _check_type(name: str, value: Any, annotation: Any) -> None:
    """``value`` fits a parameter annotated ``annotation`` (bool, float, float | None)."""
    if annotation is bool:
        check_flag(name, value)
    elif value is None and type(None) in typing.get_args(annotation):
        return  # "not given": the loss itself says what is required
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: {value!r} is not a number; allowed: a number")


def check_params(owner: str, params: dict[str, Any], allowed: dict[str, Any], types: dict[str, Any]) -> None:
    """Every key of ``params`` is one of ``allowed`` and fits its type annotation in ``types``;
    else a ValueError naming the parameter (and ``owner``, e.g. "loss 'tico'") and what is allowed."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for {owner}; allowed: {', '.join(allowed)}")
    for k, v in params.items():
        _check_type(k, v, types[k])


def build_loss(name: str, params: dict[str, float | bool] | None = None, dim: int | None = None) -> nn.Module:
    """The loss ``name`` with ``params`` (paper names); ``dim`` goes only to losses that keep a D x D state.

    Every error is a ``ValueError`` that names the bad name or parameter and what is allowed.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(LOSSES)}")
    params = dict(params or {})
    check_params(f"loss {name!r}", params, loss_params(name), typing.get_type_hints(LOSSES[name].__init__))
    if "dim" in inspect.signature(LOSSES[name].__init__).parameters:
        if dim is None:
            raise ValueError(f"loss {name!r} needs the embedding width; allowed: build_loss({name!r}, params, dim=D)")
        params["dim"] = dim
    return LOSSES[name](**params)


__all__ = ["LossOutput", "LOSSES", "build_loss", "check_flag", "loss_params", "BarlowTwinsLoss", "TiCoLoss", "VICRegLoss",
           "VICRegTiCoLoss"]
