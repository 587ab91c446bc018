"""The distillation loss of SimCLRv2 (Chen, Kornblith, Swersky, Norouzi & Hinton, NeurIPS 2020,
"Big Self-Supervised Models are Strong Semi-Supervised Learners", https://arxiv.org/abs/2006.10029,
eq. 2):

    L = - sum_i sum_y P^T(y | x_i; tau) log P^S(y | x_i; tau),
    P(y | x; tau) = exp(f_y(x) / tau) / sum_y' exp(f_y'(x) / tau)

the cross-entropy between the teacher's and the student's temperature-scaled softmax, over
unlabelled images. The teacher is fixed: its probabilities are a target, never differentiated.
Here the sum over images is a mean over the batch (the stochastic estimate of the sum, up to the
dataset size), and there is no ``tau**2`` factor (Hinton et al.'s 2015 distillation multiplies by
it to keep gradient magnitudes across temperatures; SimCLRv2's formula does not, and its default
``tau = 1`` makes the two the same).

The gradient with respect to the student's logits is ``(P^S - P^T) / (tau * n)`` per row: zero
when the student reproduces the teacher's distribution.

Example::

    loss = distillation_loss(student(x), teacher(x).detach(), temperature=1.0)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """Mean over the batch of ``-sum_y softmax(t / T)_y * log_softmax(s / T)_y``, in fp32 at least.

    ``student_logits`` and ``teacher_logits``: ``[n, classes]``; the teacher's are detached here.
    Raises ValueError on mismatched or non-2-D shapes and on ``temperature <= 0``."""
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(f"logits must both be [n, classes]; got student {tuple(student_logits.shape)}, "
                         f"teacher {tuple(teacher_logits.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature: {temperature} is out of range; allowed: > 0")
    s, t = _fp32(student_logits), _fp32(teacher_logits.detach())
    target = F.softmax(t / temperature, dim=1)
    return -(target * F.log_softmax(s / temperature, dim=1)).sum(dim=1).mean()


def _fp32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
