"""MoCo v2: InfoNCE against a loop-based reference of the paper's formula (value and gradient), the
symmetric loss of the method, the ring-buffer queue and the EMA key network, 2 gloo workers equal
to 1 worker on the combined batch over two steps (loss, gradients, weights, key network after the
EMA, queue and pointer -- the queue wrapping, and smaller than one step's keys), parameter checks."""
import pytest
from conftest import run_gloo_workers
import torch
import torch.distributed as dist
import torch.nn.functional as F

from sslray.config import ConfigError, load_config
from sslray.loop import Runtime, train_step
from sslray.losses.infonce import infonce
from sslray.methods import build_method, check_method, method_params
from sslray.methods.target import momentum_at
from sslray.optim import build_optimizer
from sslray.parallel import wrap_data_parallel

B = 16  # combined batch of the 2-vs-1 tests: 2 x 16 = 32 keys per step


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices (conftest.one_thread)


def ref_infonce(q, k, queue, temperature):
    """MoCo eq. (1), row by row: l_i = -log exp(q_i.k_i/T) / (exp(q_i.k_i/T) + sum_j exp(q_i.m_j/T));
    the mean over i. Scalar ops only; inputs already normalised."""
    n, d = q.shape
    total = 0.0
    for i in range(n):
        s = [sum(q[i, c] * k[i, c] for c in range(d)) / temperature]
        s += [sum(q[i, c] * queue[j, c] for c in range(d)) / temperature for j in range(queue.shape[0])]
        m = max(float(x.detach()) for x in s)
        total = total + m + torch.log(sum(torch.exp(x - m) for x in s)) - s[0]
    return total / n


def _unit(n, d, g):
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
def test_infonce_matches_loop_reference_value_and_gradient(temperature):
    g = torch.Generator().manual_seed(0)
    q, k, queue = _unit(5, 4, g), _unit(5, 4, g), _unit(7, 4, g)
    q1, q2 = q.clone().requires_grad_(), q.clone().requires_grad_()
    k1 = k.clone().requires_grad_()
    got = infonce(q1, k1, queue, temperature)
    ref = ref_infonce(q2, k, queue, temperature)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    got.backward()
    ref.backward()
    torch.testing.assert_close(q1.grad, q2.grad, rtol=1e-10, atol=1e-12)
    assert k1.grad is None  # keys are constants


def _cfg(params=None):
    params = {"queue_size": 48.0, "momentum": 0.9} if params is None else params
    return load_config({"model": {"encoder": "small_cnn", "width": 4, "projector": "32-16"}, "views": {"size": 16},
                        "loss": {"name": "moco", "params": params}, "optim": {"name": "lars", "lr": 0.5},
                        "data": {"source": "synthetic"}, "scale": {"workers": 0}})


def _crops(seed, n=B):
    g = torch.Generator().manual_seed(seed)
    return ([torch.randn(n, 3, 16, 16, generator=g, dtype=torch.float64) for _ in range(2)],
            torch.randint(0, 10, (n,), generator=g))


def test_method_loss_is_symmetric_infonce_and_the_key_network_follows_by_ema():
    torch.manual_seed(0)
    model = build_method(_cfg(), 10).double()
    crops, _ = _crops(0, 8)
    queue = model.queue.clone()
    out = model(crops)
    h1, h2 = model.encoder(torch.cat(crops)).split(8)  # BN: the forward runs both crops as one batch
    q1, q2 = (F.normalize(x, dim=1) for x in model.projector(torch.cat([h1, h2])).split(8))
    with torch.no_grad():  # the key network starts as a copy: its keys equal the queries here
        k1, k2 = q1.detach(), q2.detach()
    want = (infonce(q1, k2, queue, 0.2) + infonce(q2, k1, queue, 0.2)) / 2
    torch.testing.assert_close(out.total, want, rtol=1e-12, atol=1e-12)
    assert list(out.terms) == ["infonce"] and out.rep.shape == (8, 32)
    # the optimiser never sees the key network; the key network takes no gradient
    ids = {id(p) for g in model.param_groups() for p in g["params"]}
    assert not any(id(p) in ids or p.requires_grad for p in [*model.key_encoder.parameters(),
                                                            *model.key_projector.parameters()])
    out.total.backward()
    before = {k: v.clone() for k, v in model.key_encoder.state_dict().items()}
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    model.after_step(3, 10)
    tau = momentum_at(3, 10, 0.9, 1.0)
    for (name, p), o in zip(model.key_encoder.named_parameters(), model.encoder.parameters()):
        torch.testing.assert_close(p, tau * before[name] + (1 - tau) * o, rtol=1e-12, atol=1e-12)
    # the keys of both views entered the queue, normalised, view 1 first
    assert int(model.queue_ptr) == 16
    torch.testing.assert_close(model.queue[:8], k1)
    torch.testing.assert_close(model.queue[16:], queue[16:])


def test_queue_is_a_ring_buffer():
    torch.manual_seed(0)
    model = build_method(_cfg({"queue_size": 5.0}), 10).double()
    rows = torch.arange(1, 9, dtype=torch.float64)[:, None].expand(8, 16)
    from sslray.methods.ring import ring_write

    ring_write(model.queue, model.queue_ptr, rows[:3])  # 1 2 3 . .
    ring_write(model.queue, model.queue_ptr, rows[3:6])  # 5 6 3 4 4 -> ptr 1
    assert model.queue[:, 0].tolist()[:4] == [6, 2, 3, 4] and model.queue[4, 0] == 5 and int(model.queue_ptr) == 1
    # 8 keys into 5 rows from ptr 1 (rows 1 2 3 4 0 1 2 3): the last 5 (4..8) survive
    ring_write(model.queue, model.queue_ptr, rows)
    assert int(model.queue_ptr) == (1 + 8) % 5
    assert model.queue[:, 0].tolist() == [5, 6, 7, 8, 4]


# ---------------------------------------------------------------- 2 gloo workers = 1 worker
CASES = {"wrap": {"queue_size": 48.0, "momentum": 0.9},  # 32 keys per step: the 2nd step wraps around
         "short": {"queue_size": 20.0, "momentum": 0.9, "momentum_end": 0.999, "temperature": 0.5}}  # < 32 keys


def _setup(case):
    cfg = _cfg(CASES[case])
    torch.manual_seed(0)
    model = build_method(cfg, 10).double()
    opt = build_optimizer(cfg.optim, model.param_groups(), B)
    return model, (opt, torch.optim.AdamW(model.probe.parameters(), lr=1e-3))


def _run(model, net, opts, rank, world):
    rt = Runtime(torch.device("cpu"), None, False, rank, world)
    sl = slice(rank * B // world, (rank + 1) * B // world)
    losses = []
    for step in range(2):
        crops, y = _crops(step)
        out, _ = train_step(net, model, opts, [c[sl] for c in crops], y[sl], rt)
        model.after_step(step, 10)
        loss = out.total.detach().clone()
        if world > 1:
            dist.all_reduce(loss)
            loss /= world
        losses.append(loss)
    return {"loss": torch.stack(losses),
            "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "grads": {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}}


def _worker(rank, world):
    results = {}
    for case in CASES:
        model, opts = _setup(case)
        net = wrap_data_parallel(model, torch.device("cpu"), sync_batchnorm=True)
        results[case] = _run(model, net, opts, rank, world)
    return results


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    return run_gloo_workers(_worker, tmp_path_factory.mktemp("moco_ddp"))


@pytest.mark.parametrize("case", list(CASES))
def test_two_steps_two_workers_equal_one_worker(two_workers, case):
    model, opts = _setup(case)
    initial_queue = model.queue.clone()
    ref = _run(model, model, opts, 0, 1)
    assert int(ref["params"]["queue_ptr"]) == 64 % model.queue.shape[0]
    assert not torch.equal(ref["params"]["queue"], initial_queue)
    assert any(k.startswith("key_encoder.") for k in ref["params"]) and ref["grads"]
    for rank in range(2):
        got = two_workers[rank][case]
        torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-9, atol=1e-10)
        assert got["grads"].keys() == ref["grads"].keys()
        for k, v in ref["grads"].items():
            torch.testing.assert_close(got["grads"][k], v, rtol=1e-7, atol=1e-10, msg=f"{case}: grad {k}")
        assert got["params"].keys() == ref["params"].keys()
        # weights, key network after the EMA, BN statistics, queue and queue_ptr
        for k, v in ref["params"].items():
            torch.testing.assert_close(got["params"][k], v, rtol=1e-7, atol=1e-9, msg=f"{case}: {k}")


# ---------------------------------------------------------------- parameters
@pytest.mark.parametrize("params, message", [
    ({"temperature": 0.0}, "temperature: 0.0 is out of range; allowed: > 0"),
    ({"queue_size": 0.0}, "queue_size: 0.0 is out of range; allowed: >= 1"),
    ({"queue_size": 100.5}, "queue_size: 100.5 is not a whole number; allowed: an integer >= 1"),
    ({"queue_size": float("inf")}, "queue_size: inf is out of range; allowed: >= 1"),
    ({"momentum": 1.5}, "momentum: 1.5 is out of range; allowed: [0, 1]"),
    ({"momentum_end": -0.1}, "momentum_end: -0.1 is out of range; allowed: [0, 1]"),
    ({"momentum": False}, "momentum: False is not a number; allowed: a number"),
])
def test_bad_parameters_are_one_line_errors(params, message):
    with pytest.raises(ValueError) as e:
        check_method("moco", params, 16)
    assert str(e.value) == message and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="loss.params"):
        _cfg(params)


def test_defaults():
    assert method_params("moco") == {"temperature": 0.2, "queue_size": 32768.0, "momentum": 0.99, "momentum_end": 1.0}
    check_method("moco", {"queue_size": 4096.0, "momentum": 0.996, "momentum_end": 0.999}, 16)
