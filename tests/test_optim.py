import math

import pytest
import torch

from sslray.config import OptimConfig
from sslray.optim import LARS, build_optimizer, lr_factor, param_groups


def test_lars_step_matches_formula_and_skips_bias():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    w0, b0 = lin.weight.detach().clone(), lin.bias.detach().clone()
    lin(torch.randn(8, 4)).pow(2).sum().backward()
    gw, gb = lin.weight.grad.clone(), lin.bias.grad.clone()
    opt = LARS(param_groups(lin, weight_decay=0.1), lr=0.5, momentum=0.9, eta=0.02)
    opt.step()
    g = gw + 0.1 * w0
    q = 0.02 * w0.norm() / g.norm()
    torch.testing.assert_close(lin.weight.detach(), w0 - 0.5 * q * g)
    torch.testing.assert_close(lin.bias.detach(), b0 - 0.5 * gb)  # no decay, no trust ratio


def test_param_groups_exclude_bias_and_norm_from_decay():
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    decay, no_decay = param_groups(m, 0.5)
    assert decay["weight_decay"] == 0.5 and len(decay["params"]) == 1
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW), ("lars", LARS)])
def test_build_optimizer_scales_lr_by_batch(name, cls):
    opt = build_optimizer(OptimConfig(name=name, lr=0.3, lr_batch_size=256), torch.nn.Linear(2, 2), global_batch=512)
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == pytest.approx(0.6)


def test_warmup_then_cosine():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, min_ratio=0.1) == pytest.approx(0.1)
    mids = [lr_factor(s, 100, 10) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(mids, mids[1:]))
    assert lr_factor(30, 100, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.3)))
