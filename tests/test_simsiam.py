"""SimSiam: the negative cosine against a loop-based reference of the paper's formula (value and
gradient), the stop-gradient on z, the networks (output BN without affine, bottleneck predictor),
the predictor's fixed learning rate, parameter checks and 2 workers = 1 worker."""
import copy
import math

import method_parallel as mp_check
import pytest
import torch
from torch import nn

from sslray.config import ConfigError, load_config
from sslray.losses.cosine import negative_cosine
from sslray.methods import SimSiam, check_method
from sslray.models import build_encoder
from sslray.optim import build_optimizer, lr_factor, scaled_lr, set_lr


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices (conftest.one_thread)


def _pz(n=5, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)


def _unit(row):
    norm = math.sqrt(sum(x * x for x in row))
    return [x / norm for x in row], norm


def ref_d(p, z):
    """D(p, z) = -(1/n) sum_i <p_i/||p_i||, z_i/||z_i||> (Chen & He 2021, eq. 1), element by element."""
    p, z = p.detach().tolist(), z.detach().tolist()
    return -sum(sum(a * b for a, b in zip(_unit(pi)[0], _unit(zi)[0])) for pi, zi in zip(p, z)) / len(p)


def ref_d_grad(p, z):
    """d/dp_ij of ref_d, z a constant: -(1/n) sum_k z^_ik (delta_kj - p^_ik p^_ij) / ||p_i||."""
    p, z = p.detach().tolist(), z.detach().tolist()
    n, d = len(p), len(p[0])
    g = []
    for pi, zi in zip(p, z):
        ph, pn = _unit(pi)
        zh, _ = _unit(zi)
        g.append([-1 / n * sum(zh[k] * ((k == j) - ph[k] * ph[j]) / pn for k in range(d)) for j in range(d)])
    return torch.tensor(g, dtype=torch.float64)


def test_negative_cosine_matches_reference_value_and_gradient():
    p, z = _pz()
    p.requires_grad_(True)
    z.requires_grad_(True)
    loss = negative_cosine(p, z)
    assert loss.item() == pytest.approx(ref_d(p, z), rel=1e-12)
    loss.backward()
    torch.testing.assert_close(p.grad, ref_d_grad(p, z), rtol=1e-10, atol=1e-12)
    assert z.grad is None  # stop-gradient: nothing flows into z
    assert negative_cosine(p, 2 * p).item() == pytest.approx(-1.0, rel=1e-12)


def _model(pred_hidden=6.0):
    torch.manual_seed(0)
    return SimSiam(build_encoder("small_cnn", "auto", 16, 2), "16-16-8", 10, pred_hidden=pred_hidden).double()


def _crops(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, 16, 16, generator=g, dtype=torch.float64) for _ in range(2)]


def test_networks():
    model = _model()
    assert isinstance(model.projector[-1], nn.BatchNorm1d) and not model.projector[-1].affine  # output BN, no affine
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.projector) == 3  # BN on every projector layer
    hidden = [m for m in model.predictor if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in hidden] == [(8, 6), (6, 8)]  # bottleneck back to the width
    assert not isinstance(model.predictor[-1], nn.BatchNorm1d)  # no BN on the predictor's output
    assert SimSiam.params() == {"pred_hidden": 512} and SimSiam.shape_params == ("pred_hidden",)
    assert not any(k.startswith("target") for k in model.state_dict())  # no target network


def test_method_loss_and_gradients_match_reference():
    """D(p1, z2)/2 + D(p2, z1)/2 and its gradients -- through p only, z a constant -- against the loop
    reference on the same networks; the gradient differs from one without the stop-gradient."""
    model, crops = _model(), _crops()
    ref_model, free_model = copy.deepcopy(model), copy.deepcopy(model)
    out = model(crops)
    out.total.backward()
    assert set(out.terms) == {"neg_cos"} and out.rep.shape == (4, 16)

    n = crops[0].shape[0]
    z = ref_model.projector(ref_model.encoder(torch.cat(crops)))
    p = ref_model.predictor(z)
    p1, p2, z1, z2 = p[:n], p[n:], z[:n], z[n:]
    assert out.total.item() == pytest.approx(ref_d(p1, z2) / 2 + ref_d(p2, z1) / 2, rel=1e-10)
    p.backward(torch.cat([ref_d_grad(p1, z2), ref_d_grad(p2, z1)]) / 2)  # z enters only through p
    for (k, a), (_, b) in zip(model.named_parameters(), ref_model.named_parameters()):
        if not k.startswith("probe"):
            assert a.grad is not None, k
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-12, msg=k)

    zf = free_model.projector(free_model.encoder(torch.cat(crops)))  # no stop-gradient: a different gradient
    pf = free_model.predictor(zf)
    cos = nn.functional.cosine_similarity
    (-(cos(pf[:n], zf[n:]).mean() + cos(pf[n:], zf[:n]).mean()) / 2).backward()
    assert not torch.allclose(free_model.projector[0].weight.grad, model.projector[0].weight.grad)


def test_after_step_changes_nothing():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.after_step(0, 10)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("opt_name", ["sgd", "lars"])
def test_predictor_lr_is_not_decayed(opt_name):
    """With build_optimizer + set_lr, the predictor's groups keep the base lr over the whole schedule
    (warmup and cosine decay included); every other group follows the schedule."""
    cfg = load_config({"model": {"encoder": "small_cnn", "width": 2, "projector": "16-16-8"}, "views": {"size": 16},
                       "loss": {"name": "simsiam", "params": {"pred_hidden": 6.0}},
                       "optim": {"name": opt_name, "lr": 0.5, "weight_decay": 1e-5, "warmup_epochs": 1},
                       "data": {"source": "synthetic"}, "scale": {"workers": 0}})
    model = _model()
    opt = build_optimizer(cfg.optim, model.param_groups(), 512)
    base = scaled_lr(cfg.optim, 512)
    assert base == pytest.approx(1.0)
    pred = {id(p) for p in model.predictor.parameters()}
    fixed = [g for g in opt.param_groups if g.get("fixed_lr")]
    assert {id(p) for g in fixed for p in g["params"]} == pred  # weights and biases of the predictor, nothing else
    assert len(fixed) == 2 and {g["weight_decay"] for g in fixed} == {1e-5, 0.0}  # decay still applies to weights
    for step in (0, 3, 10, 50, 99):
        lr = base * lr_factor(step, 100, 10)
        set_lr(opt, lr, base)
        for g in opt.param_groups:
            in_pred = {id(p) for p in g["params"]} <= pred
            assert g["lr"] == (base if in_pred else lr), (step, in_pred)
    assert lr < base / 100  # the others did decay


@pytest.mark.parametrize("params,match", [
    ({"pred_hidden": 0.0}, r"^pred_hidden: 0\.0 is out of range; allowed: >= 1$"),
    ({"pred_hidden": -512.0}, r"^pred_hidden: -512\.0 is out of range; allowed: >= 1$"),
    ({"pred_hidden": 511.5}, r"^pred_hidden: 511\.5 is not a whole number; allowed: integers >= 1$"),
    ({"pred_hidden": float("nan")}, r"^pred_hidden: nan is out of range; allowed: >= 1$"),
    ({"pred_hidden": False}, r"^pred_hidden: False is not a number; allowed: a number$"),
    ({"momentum": 0.99}, r"^unknown parameter\(s\) momentum for 'simsiam'; allowed: pred_hidden$"),
])
def test_bad_params_are_one_line_errors(params, match):
    with pytest.raises(ValueError, match=match):
        check_method("simsiam", params, 16)
    with pytest.raises(ConfigError, match="loss.params: "):
        load_config({"loss": {"name": "simsiam", "params": params}})


def test_the_output_bn_statistics_are_state():
    """2 gloo workers = 1 worker for this very step (pred_hidden 8): tests/test_method_contract.py."""
    ref = mp_check.step("simsiam", {"pred_hidden": 8.0})
    assert "projector.4.running_mean" in ref["state"]  # the output BN's statistics are compared too


def test_recipe_and_search_space_start_from_the_paper():
    from pathlib import Path

    from sslray.search.space import load_search_space

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "sslray/recipes/cifar10_resnet18_simsiam.yaml")
    assert (cfg.model.encoder, cfg.model.stem, cfg.model.projector) == ("resnet18", "cifar", "2048-2048-2048")
    assert cfg.loss.params == {"pred_hidden": 512}
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay) == ("sgd", 0.5, 1e-5)
    space = load_search_space(repo / "search_spaces/simsiam.yaml")
    assert space.optuna.points_to_evaluate[0] == {"optim.lr": 0.5, "optim.weight_decay": 1e-5}
