"""N workers vs one worker on the combined batch: same loss, same gradients, same step, same C.

Two gloo processes on the CPU (one spawn for all losses), each holding half of a fixed float64
batch, a shared-seed linear projector wrapped in DDP, and every loss; two SGD steps each, compared
step by step with one process on the whole batch. A negative control shows the check catches the classic bug
(a plain ``dist.all_reduce`` of Barlow Twins' cross-correlation inside the graph).
"""

import pytest
from conftest import run_gloo_workers
import torch
import torch.distributed as dist

from sslray.methods import build_loss, loss_methods
from sslray.losses.barlow import batch_standardise, off_diagonal, on_diagonal
from sslray.losses.distributed import gather

N, D_IN, D = 16, 12, 8
PARAMS = {"tico": {"beta": 0.5}, "vicreg_tico": {"beta": 0.5, "nu": 0.3}}
# case -> (loss, params): every loss, and each of VICReg-TiCo's switches (two steps: C's EMA from a
# non-zero C, bias_correction at t = 2)
CASES = {name: (name, PARAMS.get(name, {})) for name in loss_methods()}
CASES.update({f"vicreg_tico-{s}": ("vicreg_tico", {**PARAMS["vicreg_tico"], s: True})
              for s in ("center", "offdiag", "symmetric", "bias_correction")})
CASES["vicreg_tico-all"] = ("vicreg_tico", {**PARAMS["vicreg_tico"], "center": True, "offdiag": True,
                                            "symmetric": True, "bias_correction": True})


def _data():
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(N, D_IN, generator=g, dtype=torch.float64)
    return x1, x1 + 0.5 * torch.randn(N, D_IN, generator=g, dtype=torch.float64)


def _proj():
    torch.manual_seed(1)
    return torch.nn.Linear(D_IN, D).double()


def _buggy_barlow(z1, z2):
    """The bug: normalised globally, but c reduced with a plain (non-autograd) all_reduce."""
    a, b = batch_standardise(gather(z1)), batch_standardise(gather(z2))
    n, r = z1.shape[0], dist.get_rank() if dist.is_initialized() else 0
    c = a[r * n:(r + 1) * n].T @ b[r * n:(r + 1) * n] / a.shape[0]
    if dist.is_initialized():
        dist.all_reduce(c)
    return on_diagonal(c) + 5e-3 * off_diagonal(c)


def _steps(loss_fn, model, x1, x2, steps=2):
    """Per SGD step: loss value, parameter gradients, parameters after the step, C if the loss has one.

    Two steps, so TiCo's C is also checked after an EMA update from a non-zero C.
    """
    out = []
    for _ in range(steps):
        res = loss_fn(model(x1), model(x2))
        total = res.total if hasattr(res, "total") else res
        model.zero_grad()
        total.backward()
        grads = [p.grad.detach().clone() for p in model.parameters()]
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
        C = loss_fn.C.clone() if hasattr(loss_fn, "C") else None
        t = loss_fn.num_updates.clone() if hasattr(loss_fn, "num_updates") else None
        out.append({"loss": total.detach(), "grads": grads, "params": [p.detach().clone() for p in model.parameters()],
                    "C": C, "t": t})
    return out


def _worker(rank, world):
    torch.set_num_threads(1)  # two processes on two cores
    x1, x2 = _data()
    sl = slice(rank * N // world, (rank + 1) * N // world)
    results = {}
    cases = [(case, lambda c=case: build_loss(*CASES[c], dim=D).double()) for case in CASES]
    cases.append(("buggy_barlow", lambda: _buggy_barlow))
    for name, make in cases:
        model = torch.nn.parallel.DistributedDataParallel(_proj())
        results[name] = _steps(make(), model, x1[sl], x2[sl])
        for r in results[name]:
            dist.all_reduce(r["loss"])  # the logged value: mean over ranks
            r["loss"] /= world
    return results


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    return run_gloo_workers(_worker, tmp)


def _single(name):
    x1, x2 = _data()
    make = _buggy_barlow if name == "buggy_barlow" else build_loss(*CASES[name], dim=D).double()
    return _steps(make, _proj(), x1, x2)


@pytest.mark.parametrize("name", list(CASES))
def test_two_workers_equal_one_worker_on_the_combined_batch(two_workers, name):
    ref = _single(name)
    for rank in range(2):
        for step, (got, want) in enumerate(zip(two_workers[rank][name], ref)):
            where = f"{name}, rank {rank}, step {step + 1}"
            torch.testing.assert_close(got["loss"], want["loss"], rtol=1e-9, atol=1e-12, msg=f"loss: {where}")
            for g, r in zip(got["grads"], want["grads"]):
                torch.testing.assert_close(g, r, rtol=1e-7, atol=1e-10, msg=f"gradient: {where}")
            for p, r in zip(got["params"], want["params"]):
                torch.testing.assert_close(p, r, rtol=1e-7, atol=1e-10, msg=f"parameters: {where}")
            if want["C"] is not None:  # TiCo's running C: identical on every rank and to one worker
                torch.testing.assert_close(got["C"], want["C"], rtol=1e-9, atol=1e-12, msg=f"C: {where}")
                assert torch.equal(got["C"], two_workers[1 - rank][name][step]["C"])
            if want["t"] is not None:  # bias_correction's update count: one per step, on every rank
                assert got["t"].item() == want["t"].item() == step + 1


def test_negative_control_plain_all_reduce_gives_wrong_gradients(two_workers):
    ref = _single("buggy_barlow")[0]  # on one process the "bug" is the correct loss
    got = two_workers[0]["buggy_barlow"][0]
    torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-9, atol=1e-12)  # the value looks right...
    assert not torch.allclose(got["grads"][0], ref["grads"][0], rtol=1e-3)  # ...the gradients are not
    # ...they are 1/world_size of the right ones
    torch.testing.assert_close(got["grads"][0], ref["grads"][0] / 2, rtol=1e-7, atol=1e-10)
