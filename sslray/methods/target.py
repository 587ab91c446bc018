"""Momentum (EMA) target networks, for BYOL and MoCo.

    xi <- tau * xi + (1 - tau) * theta          (after every optimiser step)
    tau_k = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2          (BYOL, Grill et al. 2020, §3.2)

k is the step just taken (counted over the whole run), K the configured total steps -- not an
ASHA rung: a trial stopped early never reaches tau_end, as it would not have (REFERENCE §11).
With ``tau_end`` the schedule runs from tau_base to tau_end (MoCo v2+ in solo-learn: 0.99 ->
0.999; BYOL: 0.996 -> 1 on ImageNet, 0.99 -> 1 on CIFAR).

The target is a deep copy of the online networks: parameters with ``requires_grad=False`` (never
in the optimiser, no gradient), buffers (BatchNorm statistics) of its own. It runs in train mode,
as in BYOL and MoCo (its BatchNorm normalises with the target batch's statistics).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def momentum_at(step: int, total_steps: int, tau_base: float, tau_end: float = 1.0) -> float:
    """tau for step k = ``step`` of K = ``total_steps``: cosine from tau_base (k = 0) to tau_end (k = K)."""
    progress = min(max(step / max(1, total_steps), 0.0), 1.0)
    return tau_end - (tau_end - tau_base) * (math.cos(math.pi * progress) + 1) / 2


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters take no gradient (the target network's initial weights
    equal the online network's, as in BYOL and MoCo)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """xi <- tau xi + (1 - tau) theta for every parameter pair (buffers are the target's own)."""
    t = [p for p in target.parameters()]
    o = [p.detach() for p in online.parameters()]
    torch._foreach_lerp_(t, o, 1.0 - tau)  # xi + (1 - tau)(theta - xi): one fused kernel per dtype/device
