"""2 gloo workers vs 1 worker for one method (used by the per-method test files): a full train_step
on each rank's half of a fixed batch of 2 crops, then ``after_step(0, 10)``; returns what to compare
-- the all-reduced loss, DDP's averaged gradients and the whole state_dict after the step (weights,
BatchNorm statistics, EMA targets)."""
import torch
import torch.distributed as dist

from sslray.config import load_config
from sslray.loop import Runtime, train_step
from sslray.methods import build_method
from sslray.optim import build_optimizer
from sslray.parallel import GlobalBatchNorm, wrap_data_parallel

B = 16  # combined batch


def cfg(name, params):
    return load_config({"model": {"encoder": "small_cnn", "width": 4, "projector": "32-16"}, "views": {"size": 16},
                        "loss": {"name": name, "params": params}, "optim": {"name": "lars", "lr": 0.5},
                        "data": {"source": "synthetic"}, "scale": {"workers": 0}})


def batch():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(B, 3, 16, 16, generator=g, dtype=torch.float64),
            torch.randn(B, 3, 16, 16, generator=g, dtype=torch.float64), torch.randint(0, 10, (B,), generator=g))


def setup(name, params):
    c = cfg(name, params)
    torch.manual_seed(0)
    model = build_method(c, 10).double()
    opt = build_optimizer(c.optim, model.param_groups(), B)
    probe_opt = torch.optim.AdamW(model.probe.parameters(), lr=1e-3)
    return model, (opt, probe_opt)


def state(model, out, probe_loss):
    return {"state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "grads": {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None},
            "loss": out.total.detach().clone(), "probe_loss": probe_loss.detach().clone()}


def step(name, params, rank=0, world=1):
    """One step of method ``name`` on rank ``rank``'s share of the batch (world 1: all of it, no DDP)."""
    model, opts = setup(name, params)
    rt = Runtime(torch.device("cpu"), None, False, rank, world)
    v1, v2, y = batch()
    sl = slice(rank * B // world, (rank + 1) * B // world)
    net = model
    if world > 1:
        net = wrap_data_parallel(model, rt.device, sync_batchnorm=True)
        assert any(isinstance(m, GlobalBatchNorm) for m in model.modules())
    out, probe_loss = train_step(net, model, opts, [v1[sl], v2[sl]], y[sl], rt)
    model.after_step(0, 10)
    if world > 1:
        for t in (out.total, probe_loss):
            dist.all_reduce(t.detach())
            t.detach().div_(world)
    return state(model, out, probe_loss)


def assert_same(got, ref, what):
    torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-9, atol=1e-10, msg=f"{what}: loss")
    torch.testing.assert_close(got["probe_loss"], ref["probe_loss"], rtol=1e-9, atol=1e-10, msg=f"{what}: probe loss")
    assert ref["grads"] and got["grads"].keys() == ref["grads"].keys()
    for k, v in ref["grads"].items():
        torch.testing.assert_close(got["grads"][k], v, rtol=1e-7, atol=1e-10, msg=f"{what}: grad {k}")
    assert got["state"].keys() == ref["state"].keys()
    for k, v in ref["state"].items():  # weights after the step, BN statistics, EMA targets
        torch.testing.assert_close(got["state"][k], v, rtol=1e-7, atol=1e-9, msg=f"{what}: {k}")
