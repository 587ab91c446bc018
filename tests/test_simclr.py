"""SimCLR: NT-Xent against a loop-based reference of the paper's formula (value and gradient), a
closed form, 2 gloo workers equal to 1 worker on the combined batch (loss, input gradients through
the gather, and a full DDP step of the method), parameter checks."""
import math

import pytest
from conftest import run_gloo_workers
import torch
import torch.distributed as dist

from sslray.config import ConfigError, load_config
from sslray.loop import Runtime, train_step
from sslray.losses.nt_xent import nt_xent
from sslray.methods import build_method, check_method
from sslray.optim import build_optimizer
from sslray.parallel import wrap_data_parallel

B = 16  # combined batch of the 2-vs-1 tests


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices (conftest.one_thread)


def ref_nt_xent(z1, z2, temperature):
    """SimCLR eq. (1), row by row: u = z/||z||; l(a) = -s(a, p(a)) + log sum_{b != a} exp s(a, b),
    s = u_a . u_b / T, p(a) the other view; mean over the 2n rows. Scalar ops only."""
    n, d = z1.shape
    rows = [z1[i] for i in range(n)] + [z2[i] for i in range(n)]
    u = [[r[j] / torch.sqrt(sum(r[k] * r[k] for k in range(d))) for j in range(d)] for r in rows]
    total = 0.0
    for a in range(2 * n):
        s = [sum(u[a][j] * u[b][j] for j in range(d)) / temperature for b in range(2 * n)]
        others = [s[b] for b in range(2 * n) if b != a]
        m = max(float(x.detach()) for x in others)
        log_denominator = m + torch.log(sum(torch.exp(x - m) for x in others))
        total = total + log_denominator - s[(a + n) % (2 * n)]
    return total / (2 * n)


def _z(n=5, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True),
            torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True))


@pytest.mark.parametrize("temperature", [0.2, 0.5, 1.0])
def test_nt_xent_matches_loop_reference_value_and_gradient(temperature):
    z1, z2 = _z()
    got = nt_xent(z1, z2, temperature)
    g1, g2 = torch.autograd.grad(got, (z1, z2))
    r1, r2 = _z()
    ref = ref_nt_xent(r1, r2, temperature)
    e1, e2 = torch.autograd.grad(ref, (r1, r2))
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g1, e1, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g2, e2, rtol=1e-10, atol=1e-12)


def test_nt_xent_closed_form_for_orthonormal_aligned_views():
    # z1 = z2 = orthonormal rows: the positive scores 1/T, every negative 0 (2n - 2 of them)
    n, t = 4, 0.2
    z = torch.eye(n, 6, dtype=torch.float64) * 3.0  # norms drop out
    want = -1 / t + math.log(math.exp(1 / t) + 2 * n - 2)
    assert nt_xent(z, z.clone(), t).item() == pytest.approx(want, rel=1e-12)


# ---------------------------------------------------------------- 2 gloo workers = 1 worker
def _cfg(params=None):
    return load_config({"model": {"encoder": "small_cnn", "width": 4, "projector": "32-16"}, "views": {"size": 16},
                        "loss": {"name": "simclr", "params": params or {}}, "optim": {"name": "lars", "lr": 0.5},
                        "data": {"source": "synthetic"}, "scale": {"workers": 0}})


def _batch():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(B, 3, 16, 16, generator=g, dtype=torch.float64),
            torch.randn(B, 3, 16, 16, generator=g, dtype=torch.float64), torch.randint(0, 10, (B,), generator=g))


def _setup():
    cfg = _cfg()
    torch.manual_seed(0)
    model = build_method(cfg, 10).double()
    opt = build_optimizer(cfg.optim, model.param_groups(), B)
    return model, (opt, torch.optim.AdamW(model.probe.parameters(), lr=1e-3))


def _state(model, out):
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "grads": {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None},
            "loss": out.total.detach().clone(), "nt_xent": out.terms["nt_xent"].detach().clone()}


def _worker(rank, world):
    v1, v2, y = _batch()
    sl = slice(rank * B // world, (rank + 1) * B // world)
    # the loss alone: its value and the gradient the gather hands each rank
    z1, z2 = _z(n=B, d=6, seed=1)
    a, b = z1.detach()[sl].clone().requires_grad_(), z2.detach()[sl].clone().requires_grad_()
    loss = nt_xent(a, b, 0.3)
    loss.backward()
    results = {"z_loss": loss.detach().clone(), "z_grads": (a.grad, b.grad)}
    # a full DDP step of the method
    model, opts = _setup()
    net = wrap_data_parallel(model, torch.device("cpu"), sync_batchnorm=True)
    out, _ = train_step(net, model, opts, [v1[sl], v2[sl]], y[sl], Runtime(torch.device("cpu"), None, False, rank, world))
    model.after_step(0, 10)
    for t in (out.total, results["z_loss"]):
        dist.all_reduce(t)
        t /= world
    results["step"] = _state(model, out)
    return results


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    return run_gloo_workers(_worker, tmp_path_factory.mktemp("simclr_ddp"))


def test_nt_xent_two_workers_equal_one_worker_loss_and_input_gradients(two_workers):
    z1, z2 = _z(n=B, d=6, seed=1)
    loss = nt_xent(z1, z2, 0.3)
    g1, g2 = torch.autograd.grad(loss, (z1, z2))
    for rank in range(2):
        got = two_workers[rank]
        sl = slice(rank * B // 2, (rank + 1) * B // 2)
        torch.testing.assert_close(got["z_loss"], loss, rtol=1e-12, atol=1e-12)
        # rank r holds sum_s dL_s/dz_r = W * d(mean_s L_s)/dz_r; DDP's average divides by W
        torch.testing.assert_close(got["z_grads"][0] / 2, g1[sl], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got["z_grads"][1] / 2, g2[sl], rtol=1e-10, atol=1e-12)


def test_full_step_two_workers_equal_one_worker(two_workers):
    model, opts = _setup()
    v1, v2, y = _batch()
    out, _ = train_step(model, model, opts, [v1, v2], y, Runtime(torch.device("cpu"), None, False, 0, 1))
    model.after_step(0, 10)
    ref = _state(model, out)
    assert ref["grads"] and torch.equal(ref["loss"], ref["nt_xent"])
    for rank in range(2):
        got = two_workers[rank]["step"]
        torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-9, atol=1e-10)
        assert got["grads"].keys() == ref["grads"].keys()
        for k, v in ref["grads"].items():
            torch.testing.assert_close(got["grads"][k], v, rtol=1e-7, atol=1e-10, msg=f"grad {k}")
        assert got["params"].keys() == ref["params"].keys()
        for k, v in ref["params"].items():
            torch.testing.assert_close(got["params"][k], v, rtol=1e-7, atol=1e-9, msg=k)


# ---------------------------------------------------------------- parameters
@pytest.mark.parametrize("params, message", [
    ({"temperature": 0.0}, "temperature: 0.0 is out of range; allowed: > 0"),
    ({"temperature": -0.2}, "temperature: -0.2 is out of range; allowed: > 0"),
    ({"temperature": float("nan")}, "temperature: nan is out of range; allowed: > 0"),
    ({"temperature": True}, "temperature: True is not a number; allowed: a number"),
    ({"tau": 0.2}, "unknown parameter(s) tau for 'simclr'; allowed: temperature"),
])
def test_bad_parameters_are_one_line_errors(params, message):
    with pytest.raises(ValueError) as e:
        check_method("simclr", params, 16)
    assert str(e.value) == message and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="loss.params"):
        _cfg(params)


def test_defaults():
    from sslray.methods import method_params

    assert method_params("simclr") == {"temperature": 0.2}
    check_method("simclr", {"temperature": 0.07}, 16)
