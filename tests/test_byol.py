"""BYOL: the regression loss against a loop-based reference of the paper's formula (value and
gradient), the stop-gradient into the target network, the EMA schedule, parameter checks and
2 workers = 1 worker (BatchNorm global, target after the EMA included)."""
import copy
import math

import method_parallel as mp_check
import pytest
import torch

from sslray.config import ConfigError, load_config
from sslray.losses.cosine import byol_regression
from sslray.methods import BYOL, check_method
from sslray.methods.target import momentum_at
from sslray.models import build_encoder


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices (conftest.one_thread)


def _pz(n=5, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)


def ref_byol(p, z):
    """mean_i || p_i/||p_i|| - z_i/||z_i|| ||^2 (Grill et al. 2020, eq. 2), element by element."""
    p, z = p.detach(), z.detach()
    n, d = p.shape
    total = 0.0
    for i in range(n):
        pn = math.sqrt(sum(float(p[i, j]) ** 2 for j in range(d)))
        zn = math.sqrt(sum(float(z[i, j]) ** 2 for j in range(d)))
        total += sum((float(p[i, j]) / pn - float(z[i, j]) / zn) ** 2 for j in range(d))
    return total / n


def ref_byol_grad(p, z):
    """d/dp_ij of ref_byol: (2/n) sum_k (p^_ik - z^_ik) (delta_kj - p^_ik p^_ij) / ||p_i||."""
    n, d = p.shape
    g = [[0.0] * d for _ in range(n)]
    for i in range(n):
        pn = math.sqrt(sum(float(p[i, j]) ** 2 for j in range(d)))
        zn = math.sqrt(sum(float(z[i, j]) ** 2 for j in range(d)))
        ph = [float(p[i, j]) / pn for j in range(d)]
        zh = [float(z[i, j]) / zn for j in range(d)]
        for j in range(d):
            g[i][j] = 2 / n * sum((ph[k] - zh[k]) * ((k == j) - ph[k] * ph[j]) / pn for k in range(d))
    return torch.tensor(g, dtype=torch.float64)


def test_regression_matches_reference_value_and_gradient():
    p, z = _pz()
    p.requires_grad_(True)
    z.requires_grad_(True)
    loss = byol_regression(p, z)
    assert loss.item() == pytest.approx(ref_byol(p, z), rel=1e-12)
    loss.backward()
    torch.testing.assert_close(p.grad, ref_byol_grad(p.detach(), z.detach()), rtol=1e-10, atol=1e-12)
    assert z.grad is None  # the target side is detached inside


def test_regression_bounds():
    p, _ = _pz()
    assert byol_regression(p, 3 * p).item() == pytest.approx(0.0, abs=1e-12)  # scale-free
    assert byol_regression(p, -p).item() == pytest.approx(4.0, rel=1e-12)


def _model(**params):
    torch.manual_seed(0)
    return BYOL(build_encoder("small_cnn", "auto", 16, 2), "16-8", 10, pred_hidden=6.0, **params).double()


def _crops(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, 16, 16, generator=g, dtype=torch.float64) for _ in range(2)]


def test_method_loss_and_gradients_match_reference():
    """The method's symmetrised loss L(p1, z'2) + L(p2, z'1) and its gradients, against the loop
    reference on the same networks' outputs; no gradient reaches the target network."""
    model, crops = _model(), _crops()
    ref_model = copy.deepcopy(model)
    out = model(crops)
    out.total.backward()
    assert set(out.terms) == {"regression"} and out.rep.shape == (4, 16)

    n = crops[0].shape[0]
    p = ref_model.predictor(ref_model.projector(ref_model.encoder(torch.cat(crops))))
    t = ref_model.target_projector(ref_model.target_encoder(torch.cat(crops)))
    p1, p2, t1, t2 = p[:n], p[n:], t[:n], t[n:]
    ref = ref_byol(p1, t2) + ref_byol(p2, t1)
    assert out.total.item() == pytest.approx(ref, rel=1e-10)
    # the reference gradient enters through p only (the target is a constant): backpropagate it
    dp = torch.cat([ref_byol_grad(p1.detach(), t2.detach()), ref_byol_grad(p2.detach(), t1.detach())])
    p.backward(dp)
    for (k, a), (_, b) in zip(model.named_parameters(), ref_model.named_parameters()):
        if k.startswith("target_"):
            assert a.grad is None and not a.requires_grad, k
        elif not k.startswith("probe"):
            assert a.grad is not None, k
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-12, msg=k)


def test_target_is_never_optimised():
    model = _model()
    target = {id(p) for m in (model.target_encoder, model.target_projector) for p in m.parameters()}
    groups = [p for g in model.param_groups() for p in g["params"]]
    assert target and not target & {id(p) for p in groups}
    online = [p for m in (model.encoder, model.projector, model.predictor) for p in m.parameters()]
    assert {id(p) for p in groups} == {id(p) for p in online}
    assert not any(p.requires_grad for p in model.target_encoder.parameters())


@pytest.mark.parametrize("step,total,tau", [
    (0, 10, 0.9),                                                     # tau_base
    (5, 10, 0.95),                                                    # half-way: the mean
    (9, 10, 1 - 0.1 * (math.cos(math.pi * 0.9) + 1) / 2),             # the loop's last step
    (10, 10, 1.0),                                                    # k = K: tau_end
])
def test_ema_moves_target_by_tau(step, total, tau):
    model = _model(momentum=0.9)
    assert momentum_at(step, total, 0.9, 1.0) == pytest.approx(tau, abs=1e-15)
    with torch.no_grad():  # online weights away from the target's
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p))
        for p in model.projector.parameters():
            p.mul_(2.0)
    pairs = [(model.target_encoder, model.encoder), (model.target_projector, model.projector)]
    before = [([x.clone() for x in t.parameters()], [x.clone() for x in o.parameters()]) for t, o in pairs]
    buffers = {k: v.clone() for k, v in model.target_encoder.named_buffers()}
    model.after_step(step, total)
    for (t, o), (xi, theta) in zip(pairs, before):
        for new, a, b, o_now in zip(t.parameters(), xi, theta, o.parameters()):
            torch.testing.assert_close(new, tau * a + (1 - tau) * b, rtol=1e-13, atol=1e-15)
            assert torch.equal(o_now, b)  # the online network is untouched
    for k, v in model.target_encoder.named_buffers():  # BN statistics are the target's own
        assert torch.equal(v, buffers[k]), k


def test_ema_end_value():
    model = _model(momentum=0.99, momentum_end=0.999)
    with torch.no_grad():
        for p in model.projector.parameters():
            p.mul_(3.0)
    xi = [p.clone() for p in model.target_projector.parameters()]
    theta = [p.clone() for p in model.projector.parameters()]
    model.after_step(100, 100)
    for new, a, b in zip(model.target_projector.parameters(), xi, theta):
        torch.testing.assert_close(new, 0.999 * a + 0.001 * b, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("params,match", [
    ({"pred_hidden": 0.0}, r"^pred_hidden: 0\.0 is out of range; allowed: >= 1$"),
    ({"pred_hidden": 4.5}, r"^pred_hidden: 4\.5 is not a whole number; allowed: integers >= 1$"),
    ({"pred_hidden": float("inf")}, r"^pred_hidden: inf is out of range; allowed: >= 1$"),
    ({"momentum": 1.5}, r"^momentum: 1\.5 is out of range; allowed: \[0, 1\]$"),
    ({"momentum_end": -0.1}, r"^momentum_end: -0\.1 is out of range; allowed: \[0, 1\]$"),
    ({"momentum": float("nan")}, r"^momentum: nan is out of range; allowed: \[0, 1\]$"),
    ({"momentum": True}, r"^momentum: True is not a number; allowed: a number$"),
    ({"tau": 0.9}, r"^unknown parameter\(s\) tau for 'byol'; allowed: pred_hidden, momentum, momentum_end$"),
])
def test_bad_params_are_one_line_errors(params, match):
    with pytest.raises(ValueError, match=match):
        check_method("byol", params, 16)
    with pytest.raises(ConfigError, match="loss.params: "):
        load_config({"loss": {"name": "byol", "params": params}})


def test_defaults_and_shape_params():
    assert BYOL.params() == {"pred_hidden": 4096, "momentum": 0.99, "momentum_end": 1.0}
    assert BYOL.shape_params == ("pred_hidden",)
    check_method("byol", {"pred_hidden": 8.0, "momentum": 1.0, "momentum_end": 0.0}, 16)  # the bounds are allowed


def test_the_step_moves_the_target():
    """2 gloo workers = 1 worker for this very step (pred_hidden 8): tests/test_method_contract.py."""
    ref = mp_check.step("byol", {"pred_hidden": 8.0})
    # the EMA did move the target (towards the stepped online weights)
    assert not torch.equal(ref["state"]["target_projector.0.weight"], ref["state"]["projector.0.weight"])


def test_recipe_and_search_space_start_from_the_paper():
    from pathlib import Path

    from sslray.search.space import load_search_space

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "sslray/recipes/cifar10_resnet18_byol.yaml")
    assert (cfg.model.encoder, cfg.model.stem, cfg.model.projector) == ("resnet18", "cifar", "4096-256")
    assert cfg.loss.params == {"pred_hidden": 4096, "momentum": 0.99, "momentum_end": 1.0}
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay) == ("lars", 1.0, 1e-5)
    space = load_search_space(repo / "search_spaces/byol.yaml")
    assert space.optuna.points_to_evaluate[0] == {"loss.params.momentum": 0.99, "optim.lr": 1.0,
                                                  "optim.weight_decay": 1e-5}
