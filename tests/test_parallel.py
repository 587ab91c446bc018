"""A full optimisation step of encoder + projector (+ online probe) on 2 DDP workers equals one
worker on the combined batch -- BatchNorm included (global statistics on the CPU via
GlobalBatchNorm) -- for every loss, with LARS, and for each of VICReg-TiCo's switches: the same
loss, gradients, weights after the step and loss state (C, and the update count of
bias_correction)."""

import pytest
from conftest import run_gloo_workers
import torch
import torch.distributed as dist

from sslray.config import load_config
from sslray.loop import Runtime, train_step
from sslray.methods import build_method, loss_methods
from sslray.optim import build_optimizer
from sslray.parallel import GlobalBatchNorm, wrap_data_parallel

B = 16  # combined batch
# case -> (loss, params); vicreg_tico's nu has no default: 1.0 is what this test always ran with
CASES = {name: (name, {"nu": 1.0} if name == "vicreg_tico" else {}) for name in loss_methods()}
CASES.update({f"vicreg_tico-{switch}": ("vicreg_tico", {"nu": 1.0, switch: True})
              for switch in ("center", "offdiag", "symmetric", "bias_correction")})
CASES["vicreg_tico-all-beta0"] = ("vicreg_tico", {"nu": 1.0, "beta": 0.0, "center": True, "offdiag": True,
                                                  "symmetric": True, "bias_correction": True})


def _cfg(case):
    loss, params = CASES[case]
    return load_config({"model": {"encoder": "small_cnn", "width": 4, "projector": "32-16"}, "views": {"size": 16},
                        "loss": {"name": loss, "params": params}, "optim": {"name": "lars", "lr": 0.5},
                        "data": {"source": "synthetic"}, "scale": {"workers": 0}})


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, 3, 16, 16, generator=g), torch.randn(B, 3, 16, 16, generator=g), torch.randint(0, 10, (B,), generator=g)


def _setup(case):
    cfg = _cfg(case)
    torch.manual_seed(0)
    model = build_method(cfg, 10).double()
    opt = build_optimizer(cfg.optim, model.param_groups(), B)
    probe_opt = torch.optim.AdamW(model.probe.parameters(), lr=1e-3)
    return model, model.loss, (opt, probe_opt)


def _state(model, loss_fn, out, probe_loss):
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "grads": {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None},
            "loss": out.total.detach(), "probe_loss": probe_loss.detach(),
            "loss_state": {k: v.clone() for k, v in loss_fn.state_dict().items()}}


def _worker(rank, world):
    rt = Runtime(torch.device("cpu"), None, False, rank, world)
    v1, v2, y = _batch()
    sl = slice(rank * B // world, (rank + 1) * B // world)
    results = {}
    for case in CASES:
        model, loss_fn, opts = _setup(case)
        net = wrap_data_parallel(model, rt.device, sync_batchnorm=True)
        assert any(isinstance(m, GlobalBatchNorm) for m in model.modules())
        out, probe_loss = train_step(net, model, opts, [v1[sl].double(), v2[sl].double()], y[sl], rt)
        for t in (out.total, probe_loss):
            dist.all_reduce(t)
            t /= world
        results[case] = _state(model, loss_fn, out, probe_loss)
    return results


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp_step")
    return run_gloo_workers(_worker, tmp)


@pytest.mark.parametrize("case", list(CASES))
def test_full_step_two_workers_equal_one_worker(two_workers, case):
    model, loss_fn, opts = _setup(case)
    v1, v2, y = _batch()
    out, probe_loss = train_step(model, model, opts, [v1.double(), v2.double()], y,
                                 Runtime(torch.device("cpu"), None, False, 0, 1))
    ref = _state(model, loss_fn, out, probe_loss)
    assert ref["grads"] and (ref["loss_state"] or not hasattr(loss_fn, "C"))
    for rank in range(2):
        got = two_workers[rank][case]
        torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(got["probe_loss"], ref["probe_loss"], rtol=1e-9, atol=1e-10)
        assert got["grads"].keys() == ref["grads"].keys()
        for k, v in ref["grads"].items():  # DDP's averaged gradients
            torch.testing.assert_close(got["grads"][k], v, rtol=1e-7, atol=1e-10, msg=f"{case}: grad {k}")
        for k, v in ref["params"].items():  # weights after the step, BN running statistics included
            torch.testing.assert_close(got["params"][k], v, rtol=1e-7, atol=1e-9, msg=f"{case}: {k}")
        assert got["loss_state"].keys() == ref["loss_state"].keys()
        for k, v in ref["loss_state"].items():  # TiCo's C (and VICReg-TiCo's update count): as one worker's
            torch.testing.assert_close(got["loss_state"][k], v, rtol=1e-9, atol=1e-12, msg=f"{case}: {k}")
