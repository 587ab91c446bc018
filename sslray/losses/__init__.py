"""SSL losses: one file per method, each term a small pure function.

Every loss is an ``nn.Module`` whose ``forward(z1, z2)`` returns :class:`LossOutput` -- the total
to backpropagate and every *unweighted* term for logging. Parameters are paper-named keyword
arguments with paper defaults, range-checked in ``__init__``.
"""
from __future__ import annotations

import inspect
from typing import NamedTuple

import torch
from torch import nn


class LossOutput(NamedTuple):
    total: torch.Tensor
    terms: dict[str, torch.Tensor]


def check_pair(z1: torch.Tensor, z2: torch.Tensor) -> None:
    """Shapes every two-view loss needs: two [n, D] tensors, n >= 2."""
    if z1.ndim != 2 or z2.ndim != 2:
        raise ValueError(f"embeddings must be 2-D [batch, dim]; got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape != z2.shape:
        raise ValueError(f"the two views' embeddings differ in shape: {tuple(z1.shape)} vs {tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError(f"batch size {z1.shape[0]}: variance/covariance terms need at least 2 samples")


def check_range(name: str, value: float, lo: float, hi: float | None = None, hi_open: bool = False,
                lo_open: bool = False) -> None:
    bad = value < lo or (lo_open and value == lo) or (hi is not None and (value > hi or (hi_open and value == hi)))
    if bad:
        if hi is None:
            allowed = f"> {lo:g}" if lo_open else f">= {lo:g}"
        else:
            allowed = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{name}: {value!r} is out of range; allowed: {allowed}")


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


def loss_params(name: str) -> dict[str, float]:
    """The paper-named parameters of a loss and their defaults."""
    sig = inspect.signature(LOSSES[name].__init__)
    return {p.name: p.default for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY and p.name != "dim"}


def build_loss(name: str, params: dict[str, float] | None = None, dim: int | None = None) -> nn.Module:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(LOSSES)}")
    params = dict(params or {})
    allowed = loss_params(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for loss {name!r}; allowed: {', '.join(allowed)}")
    for k, v in params.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{k}: expected a number, got {v!r}")
    if "dim" in inspect.signature(LOSSES[name].__init__).parameters:
        if dim is None:
            raise ValueError(f"loss {name!r} needs the embedding width (dim)")
        params["dim"] = dim
    return LOSSES[name](**params)


__all__ = ["LossOutput", "LOSSES", "build_loss", "loss_params", "BarlowTwinsLoss", "TiCoLoss", "VICRegLoss",
           "VICRegTiCoLoss"]
