"""2 gloo workers vs 1 worker for one method (used by the per-method test files): a full train_step
on each rank's half of a fixed batch of 2 crops (or ``views`` crops), then ``after_step(0, 10)``;
returns what to compare -- the all-reduced loss, DDP's averaged gradients and the whole state_dict
after the step (weights, BatchNorm statistics, EMA targets). ``projector``, ``views`` and ``uota``
(a ``loss.uota`` dict) default to the two-view setting every method shares."""
import torch
import torch.distributed as dist

from sslray.config import load_config
from sslray.loop import Runtime, train_step
from sslray.methods import build_method
from sslray.optim import build_optimizer
from sslray.parallel import GlobalBatchNorm, wrap_data_parallel

B = 16  # combined batch


def cfg(name, params, projector="32-16", views=2, uota=None):
    crops = {} if views == 2 else {"crops": [{"count": views}]}
    return load_config({"model": {"encoder": "small_cnn", "width": 4, "projector": projector},
                        "views": {"size": 16, **crops},
                        "loss": {"name": name, "params": params, **({"uota": uota} if uota else {})},
                        "optim": {"name": "lars", "lr": 0.5},
                        "data": {"source": "synthetic"}, "scale": {"workers": 0}})


def batch(views=2):
    """``views`` crops [B, 3, 16, 16] and labels (two views: the same draws as always)."""
    g = torch.Generator().manual_seed(0)
    crops = [torch.randn(B, 3, 16, 16, generator=g, dtype=torch.float64) for _ in range(2)]
    y = torch.randint(0, 10, (B,), generator=g)
    crops += [torch.randn(B, 3, 16, 16, generator=g, dtype=torch.float64) for _ in range(views - 2)]
    return crops, y


def setup(name, params, **settings):
    c = cfg(name, params, **settings)
    torch.manual_seed(0)
    model = build_method(c, 10).double()
    opt = build_optimizer(c.optim, model.param_groups(), B)
    probe_opt = torch.optim.AdamW(model.probe.parameters(), lr=1e-3)
    return model, (opt, probe_opt)


def state(model, out, probe_loss):
    return {"state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "grads": {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None},
            "loss": out.total.detach().clone(), "probe_loss": probe_loss.detach().clone()}


def step(name, params, rank=0, world=1, epoch=0, **settings):
    """One step of method ``name`` on rank ``rank``'s share of the batch (world 1: all of it, no DDP),
    in ``epoch`` (``start_epoch`` is called with it). ``settings``: ``cfg``'s projector, views, uota."""
    model, opts = setup(name, params, **settings)
    model.start_epoch(epoch)
    rt = Runtime(torch.device("cpu"), None, False, rank, world)
    crops, y = batch(settings.get("views", 2))
    sl = slice(rank * B // world, (rank + 1) * B // world)
    net = model
    if world > 1:
        net = wrap_data_parallel(model, rt.device, sync_batchnorm=True)
        assert any(isinstance(m, GlobalBatchNorm) for m in model.modules())
    out, probe_loss = train_step(net, model, opts, [c[sl] for c in crops], y[sl], rt)
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
