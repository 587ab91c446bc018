"""Optimisers (SGD, AdamW, LARS) and the warmup + cosine learning-rate schedule.

Biases and normalisation parameters (every parameter with ndim <= 1) get no weight decay and, in
LARS, no trust-ratio adaptation -- the convention of the VICReg / Barlow Twins / BYOL code.
The learning rate is ``optim.lr * global_batch / optim.lr_batch_size`` (linear scaling).
"""
from __future__ import annotations

import math

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017) on top of SGD with momentum.

    For a parameter w with gradient g in a group with ``lars=True``:
        g <- g + wd * w;   q = eta * ||w|| / ||g||  (1 if either norm is 0);   g <- q * g
    then heavy-ball momentum ``m <- momentum * m + g`` and ``w <- w - lr * m``.
    Groups with ``lars=False`` (biases, norms) skip both the decay and the trust ratio.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, eta: float = 0.02):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, lars=True))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["lars"]:
                    g = g.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    # torch.where keeps this on the device: no host sync per parameter.
                    q = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, torch.ones_like(w_norm))
                    g = g.mul(q)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(g).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def param_groups(groups: nn.Module | list[dict], weight_decay: float) -> list[dict]:
    """Each group (a method's ``param_groups()``, or one module's parameters) split in two: weights
    (decayed, LARS-adapted) and biases/norm parameters (neither); a group's other options (such as
    ``fixed_lr``) are kept on both halves. Empty halves are dropped."""
    if isinstance(groups, nn.Module):
        groups = [{"params": list(groups.parameters())}]
    out = []
    for group in groups:
        options = {k: v for k, v in group.items() if k != "params"}
        decay, no_decay = [], []
        for p in group["params"]:
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        out += [{"params": ps, **options, "weight_decay": wd, "lars": lars}
                for ps, wd, lars in ((decay, weight_decay, True), (no_decay, 0.0, False)) if ps]
    return out


def scaled_lr(cfg_optim, global_batch: int) -> float:
    return cfg_optim.lr * global_batch / cfg_optim.lr_batch_size


def build_optimizer(cfg_optim, module: nn.Module | list[dict], global_batch: int) -> torch.optim.Optimizer:
    lr = scaled_lr(cfg_optim, global_batch)
    groups = param_groups(module, cfg_optim.weight_decay)
    if cfg_optim.name == "lars":
        return LARS(groups, lr=lr, momentum=cfg_optim.momentum, eta=cfg_optim.eta)
    for g in groups:
        g.pop("lars")
    if cfg_optim.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg_optim.momentum)
    if cfg_optim.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg_optim.betas))
    raise ValueError(f"optim.name: unknown optimizer {cfg_optim.name!r}; allowed: sgd, adamw, lars")


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Linear warmup from 0 to 1 over ``warmup_steps``, then cosine decay to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float, base_lr: float | None = None) -> None:
    """The scheduled ``lr`` on every group; ``base_lr`` on groups marked ``fixed_lr`` (SimSiam's
    predictor: "we do not decay the learning rate of the predictor", Chen & He 2021, §4.4)."""
    for g in optimizer.param_groups:
        g["lr"] = base_lr if g.get("fixed_lr") and base_lr is not None else lr
