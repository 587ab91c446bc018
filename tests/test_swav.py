"""SwAV: Sinkhorn-Knopp and the swapped-prediction loss against element-by-element references of
the paper's formulas (value and gradient), the method's forward composed by hand (multi-crop: the
encoder once per crop size), prototype normalisation, frozen prototypes, the queue (filled from
epoch_queue_starts, used once full), UOTA composing, parameter checks, 2 gloo workers equal to 1
worker on the combined batch over four steps (Sinkhorn's global sums with the queue split unevenly
among the ranks, gradients, prototypes frozen then not, queue), and a resume with multi-crop and
the queue in use."""
import math

from conftest import run_gloo_workers
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from sslray.checkpoint import load_checkpoint
from sslray.config import ConfigError, load_config
from sslray.loop import Runtime, run, train_step
from sslray.losses.swav import sinkhorn, swapped_prediction, swav_loss
from sslray.losses.uota import uota_weights
from sslray.methods import build_method, check_method, method_params
from sslray.optim import build_optimizer
from sslray.parallel import wrap_data_parallel
from sslray.local_run import LocalReporter

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices (conftest.one_thread)

B = 16  # combined batch of the 2-vs-1 test


# ---------------------------------------------------------------- references (scalar loops)
def ref_sinkhorn(scores, eps, iters):
    """The paper's Sinkhorn-Knopp (Caron et al. 2020, A.1; official ``distributed_sinkhorn``) on
    python floats: Q[k][i] = exp(s_ik / eps), Q /= sum Q, then ``iters`` times every prototype row
    to 1/K and every sample column to 1/B; codes[i][k] = B Q[k][i]."""
    n, k = scores.shape
    q = [[math.exp(float(scores[i, j]) / eps) for i in range(n)] for j in range(k)]
    total = sum(sum(row) for row in q)
    q = [[x / total for x in row] for row in q]
    for _ in range(iters):
        q = [[x / sum(row) / k for x in row] for row in q]
        cols = [sum(q[j][i] for j in range(k)) for i in range(n)]
        q = [[q[j][i] / cols[i] / n for i in range(n)] for j in range(k)]
    return torch.tensor([[n * q[j][i] for j in range(k)] for i in range(n)], dtype=torch.float64)


def ref_swav_loss(scores, codes, temperature):
    """1/A sum_a 1/(V-1) sum_{v != a} mean_i -sum_k q_a,ik log softmax(s_v,i / T)_k (the official
    code's averaging), element by element; differentiable in ``scores``."""
    v_count, n, k = scores.shape
    a_count = codes.shape[0]
    loss = 0.0
    for a in range(a_count):
        sub = 0.0
        for v in range(v_count):
            if v == a:
                continue
            for i in range(n):
                logits = [scores[v, i, j] / temperature for j in range(k)]
                m = max(float(x.detach()) for x in logits)
                log_z = m + torch.log(sum(torch.exp(x - m) for x in logits))
                sub = sub - sum(codes[a, i, j] * (logits[j] - log_z) for j in range(k)) / n
        loss = loss + sub / (v_count - 1)
    return loss / a_count


def _unit(n, d, g):
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


# ---------------------------------------------------------------- Sinkhorn
@pytest.mark.parametrize("eps, iters", [(0.05, 3), (0.3, 1), (1.0, 5)])
def test_sinkhorn_matches_loop_reference(eps, iters):
    g = torch.Generator().manual_seed(0)
    scores = _unit(7, 4, g) @ _unit(5, 4, g).T  # 7 samples, 5 prototypes, cosine scores
    got = sinkhorn(scores, eps, iters)
    torch.testing.assert_close(got, ref_sinkhorn(scores, eps, iters), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(7, dtype=torch.float64))  # each sample: a distribution


def test_sinkhorn_converges_to_equipartition_and_survives_small_eps_and_autocast():
    g = torch.Generator().manual_seed(1)
    scores = _unit(12, 8, g) @ _unit(4, 8, g).T
    q = sinkhorn(scores, 0.05, 200)
    torch.testing.assert_close(q.sum(dim=0), torch.full((4,), 12 / 4, dtype=torch.float64), rtol=1e-6, atol=0)
    # exp(1 / 0.005) = e^200 overflows float32: computed in float64 from s - max(s), still the reference
    tiny = sinkhorn(scores.float(), 0.005, 3)
    assert tiny.dtype == torch.float32 and torch.isfinite(tiny).all()
    torch.testing.assert_close(tiny, ref_sinkhorn(scores.float().double(), 0.005, 3).float(), rtol=1e-5, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # no bf16 inside
        q32 = sinkhorn(scores.float(), 0.05, 3)
    torch.testing.assert_close(q32, ref_sinkhorn(scores.float().double(), 0.05, 3).float(), rtol=1e-6, atol=1e-7)


def test_sinkhorn_bad_input():
    with pytest.raises(ValueError, match=r"\[samples, prototypes\]"):
        sinkhorn(torch.zeros(3))
    with pytest.raises(ValueError, match="iters: 0"):
        sinkhorn(torch.zeros(3, 2), iters=0)


# ---------------------------------------------------------------- swapped prediction
@pytest.mark.parametrize("views, temperature", [(2, 0.1), (5, 0.1), (4, 1.0)])
def test_swapped_prediction_matches_loop_reference_value_and_gradient(views, temperature):
    g = torch.Generator().manual_seed(views)
    n, k = 3, 4
    scores = torch.stack([_unit(n, 6, g) @ _unit(k, 6, g).T for _ in range(views)])  # [V, n, K]
    codes = torch.stack([ref_sinkhorn(scores[a], 0.05, 3) for a in range(2)])
    s1, s2 = scores.clone().requires_grad_(), scores.clone().requires_grad_()
    got = swav_loss(s1, codes, temperature)
    ref = ref_swav_loss(s2, codes, temperature)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    got.backward()
    ref.backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-10, atol=1e-12)
    # per view: term (v, a) belongs to the predicting view v, scaled so that the plain mean is L
    per_view = swapped_prediction(scores, codes, temperature)
    assert per_view.shape == (views, n)
    for v in range(views):
        # ref_swav_loss of the pair [a, v] with codes of a alone (V = 2, A = 1) is mean_i l(q_a, p_v)
        terms = [ref_swav_loss(scores[[a, v]], codes[[a]], temperature) for a in range(2) if a != v]
        torch.testing.assert_close(per_view[v].mean(), sum(terms) * views / (2 * (views - 1)), rtol=1e-12, atol=1e-12)


def test_swapped_prediction_bad_shapes():
    with pytest.raises(ValueError, match="views >= 2"):
        swapped_prediction(torch.zeros(1, 3, 4), torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match="views >= 2"):
        swapped_prediction(torch.zeros(3, 3, 4), torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match=r"\[views, batch, prototypes\]"):
        swapped_prediction(torch.zeros(3, 4), torch.zeros(2, 3, 4))


# ---------------------------------------------------------------- the method
def _cfg(params=None, crops=None, uota=None, size=20):
    params = {"num_prototypes": 10.0} if params is None else params
    views = {"size": size}
    if crops is not None:
        views["crops"] = crops
    loss = {"name": "swav", "params": params}
    if uota is not None:
        loss["uota"] = uota
    return load_config({"model": {"encoder": "small_cnn", "width": 4, "projector": "32-16"}, "views": views,
                        "loss": loss, "optim": {"name": "lars", "lr": 0.5},
                        "data": {"source": "synthetic"}, "scale": {"workers": 0}})


MULTI = [{}, {}, {"count": 2, "size": 16}]  # 2 x 20 px + 2 x 16 px


def _crops(seed, n=B, sizes=(20, 20, 16, 16)):
    g = torch.Generator().manual_seed(seed)
    return ([torch.randn(n, 3, s, s, generator=g, dtype=torch.float64) for s in sizes],
            torch.randint(0, 10, (n,), generator=g))


def _by_hand(model, crops, queue_rows=None):
    """The loss composed from the model's parts: encoder per crop size (one batch per size),
    projector over all crops, normalised z, scores against the prototypes, codes of crops 0 and 1
    (with ``queue_rows`` [2, L, D] as extra Sinkhorn columns), then the paper's loss."""
    sizes = sorted({c.shape[-1] for c in crops}, reverse=True)
    n = crops[0].shape[0]
    h = [None] * len(crops)
    for s in sizes:
        idx = [i for i, c in enumerate(crops) if c.shape[-1] == s]
        for i, part in zip(idx, model.encoder(torch.cat([crops[i] for i in idx])).split(n)):
            h[i] = part
    z = F.normalize(model.projector(torch.cat(h)), dim=1)
    w = model.prototypes.weight
    scores = (z @ w.T).view(len(crops), n, -1)
    codes = []
    for a in range(2):
        s = scores[a].detach()
        if queue_rows is not None:
            s = torch.cat([queue_rows[a] @ w.detach().T, s])
        codes.append(ref_sinkhorn(s, model.epsilon, model.sinkhorn_iterations)[-n:])
    return swav_loss(scores, torch.stack(codes), model.temperature), z.view(len(crops), n, -1), h[0]


def test_multicrop_forward_is_the_formula_with_the_encoder_once_per_crop_size():
    torch.manual_seed(0)
    model = build_method(_cfg(crops=MULTI), 10).double()
    crops, _ = _crops(0, 6)
    calls = []
    handle = model.encoder.register_forward_hook(lambda m, args, out: calls.append(tuple(args[0].shape)))
    out = model(crops)
    handle.remove()
    assert calls == [(12, 3, 20, 20), (12, 3, 16, 16)]  # one batch per size, global crops first
    want, _, rep = _by_hand(model, crops)
    torch.testing.assert_close(out.total, want, rtol=1e-12, atol=1e-12)
    assert list(out.terms) == ["swav"] and out.terms["swav"] is not None
    torch.testing.assert_close(out.terms["swav"], want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.rep, rep)  # the first crop's representation: the probe's input
    with pytest.raises(ValueError, match="at least 2 crops"):
        model(crops[:1])


def test_prototypes_are_unit_rows_at_construction_and_after_every_step():
    torch.manual_seed(0)
    model = build_method(_cfg({"num_prototypes": 10.0, "freeze_prototypes_epochs": 0.0}), 10).double()
    ones = torch.ones(10, dtype=torch.float64)
    # normalised in float32 at construction, before .double()
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1), ones, rtol=1e-6, atol=0)
    ids = {id(p) for g in model.param_groups() for p in g["params"]}
    assert id(model.prototypes.weight) in ids and model.prototypes.bias is None
    opt = torch.optim.SGD(model.param_groups(), lr=10.0)
    crops, _ = _crops(0, 8, (20, 20))
    model(crops).total.backward()
    model.after_backward()
    assert model.prototypes.weight.grad is not None
    opt.step()
    assert (model.prototypes.weight.norm(dim=1) - 1).abs().max() > 1e-3  # the step left the sphere
    model.after_step(0, 10)
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1), ones, rtol=1e-12, atol=0)


def test_loss_descends_under_gradient_steps():
    """A descent check (solo-learn's habit): on a fixed batch of three fixed crops the loss falls
    from about log K towards 0 within 30 AdamW steps -- the gradients reach every part."""
    torch.manual_seed(0)
    model = build_method(_cfg({"num_prototypes": 10.0, "freeze_prototypes_epochs": 0.0}, size=16), 10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 16, 16, generator=g)
    crops = [x + 0.1 * torch.randn(32, 3, 16, 16, generator=g) for _ in range(3)]
    opt = torch.optim.AdamW([p for group in model.param_groups() for p in group["params"]], lr=1e-2)
    losses = []
    for step in range(30):
        out = model(crops)
        opt.zero_grad()
        out.total.backward()
        model.after_backward()
        opt.step()
        model.after_step(step, 30)
        losses.append(out.total.item())
    assert losses[0] > 0.8 * math.log(10) and losses[-1] < 0.1 * losses[0], losses


def _setup(cfg):
    torch.manual_seed(0)
    model = build_method(cfg, 10).double()
    model.normalise_prototypes()  # unit rows in float64 (construction normalised them in float32)
    opt = build_optimizer(cfg.optim, model.param_groups(), B)
    return model, (opt, torch.optim.AdamW(model.probe.parameters(), lr=1e-3))


def test_prototypes_are_frozen_for_the_first_epochs_then_learn():
    model, opts = _setup(_cfg({"num_prototypes": 10.0, "freeze_prototypes_epochs": 2.0}, size=16))
    rt = Runtime(torch.device("cpu"), None, False, 0, 1)
    for epoch in range(3):
        model.start_epoch(epoch)
        before = model.prototypes.weight.detach().clone()
        enc_before = next(model.encoder.parameters()).detach().clone()
        crops, y = _crops(epoch, 8, (16, 16))
        train_step(model, model, opts, crops, y, rt)
        model.after_step(epoch, 10)
        assert not torch.equal(next(model.encoder.parameters()), enc_before)  # the rest learns throughout
        moved = (model.prototypes.weight - before).abs().max().item()
        if epoch < 2:
            assert model.prototypes.weight.grad is None and moved < 1e-14, (epoch, moved)
            assert model.prototypes.weight not in opts[0].state  # no momentum, no decay either
        else:
            assert model.prototypes.weight.grad is not None and moved > 1e-6, (epoch, moved)


def test_queue_is_filled_from_its_epoch_and_used_once_full():
    cfg = _cfg({"num_prototypes": 10.0, "queue_size": 20.0, "epoch_queue_starts": 1.0}, size=16)
    model, opts = _setup(cfg)
    rt = Runtime(torch.device("cpu"), None, False, 0, 1)
    n, used = 8, []
    for step, epoch in enumerate([0, 0, 1, 1, 1, 1, 1]):
        model.start_epoch(epoch)
        crops, y = _crops(step, n, (16, 16))
        queue = model.queue.clone()
        with torch.no_grad():
            plain, z, _ = _by_hand(model, crops)
            with_queue = _by_hand(model, crops, queue)[0] if model._use_queue else None
        out, _ = train_step(model, model, opts, crops, y, rt)
        torch.testing.assert_close(out.total, plain if with_queue is None else with_queue, rtol=1e-12, atol=1e-12)
        used.append(with_queue is not None)
        model.after_step(step, 10)
        if epoch == 0:
            assert not model.queue.any() and int(model.queue_ptr) == 0  # not filled before its epoch
        else:  # this step's global crops went in at the pointer (ring buffer)
            rows = (torch.arange(n) + (int(model.queue_ptr) - n)) % 20
            torch.testing.assert_close(model.queue[:, rows], z[:2])
    # epoch 1 fills 8, 16, 20 (full, wrapped) rows: the queue joins Sinkhorn from its 4th step on
    assert used == [False] * 5 + [True] * 2
    assert int(model.queue_rows) == 20 and int(model.queue_ptr) == (5 * n) % 20


def test_the_queue_flag_follows_a_loaded_state_dict():
    cfg = _cfg({"num_prototypes": 10.0, "queue_size": 12.0, "epoch_queue_starts": 0.0}, size=16)
    model, _ = _setup(cfg)
    model._enqueue(torch.randn(12, 2, 16, dtype=torch.float64))
    assert model._use_queue
    fresh, _ = _setup(cfg)
    assert not fresh._use_queue
    fresh.load_state_dict(model.state_dict())
    assert fresh._use_queue and torch.equal(fresh.queue, model.queue)


@pytest.mark.parametrize("crops", [None, MULTI], ids=["two", "multi"])
def test_uota_weights_views_from_its_start_epoch(crops):
    cfg = _cfg(crops=crops, uota={"enabled": True, "start_epoch": 1, "tau": 0.5})  # small tau: weights far from 1
    torch.manual_seed(0)
    model = build_method(cfg, 10).double()
    # 40 images > D = 16: with fewer, the pooled covariance's leverages are all equal (so are the weights)
    views, _ = _crops(0, 40, (20, 20) if crops is None else (20, 20, 16, 16))
    model.start_epoch(0)
    plain = model(views)
    torch.testing.assert_close(plain.total, plain.terms["swav"], rtol=0, atol=0)  # weights 1 before the start
    model.start_epoch(1)
    out = model(views)
    with torch.no_grad():
        _, z, _ = _by_hand(model, views)
    per_view = swapped_prediction(*_scores_and_codes(model, views), model.temperature)
    w = uota_weights(z, tau=0.5)
    torch.testing.assert_close(out.total, (w * per_view).mean(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.terms["swav"], per_view.mean(), rtol=1e-12, atol=1e-12)
    if crops is None:  # two views: both views of an image share one weight
        torch.testing.assert_close(w[0], w[1], rtol=1e-10, atol=1e-12)
    else:
        assert not torch.allclose(w[0], w[2])
    assert (w - 1).abs().max() > 0.1 and not torch.allclose(out.total, out.terms["swav"])


def _scores_and_codes(model, crops):
    with torch.no_grad():
        n = crops[0].shape[0]
        z = F.normalize(model.projector(torch.cat(model.encode(crops))), dim=1)
        scores = (z @ model.prototypes.weight.T).view(len(crops), n, -1)
        codes = torch.stack([sinkhorn(scores[a], model.epsilon, model.sinkhorn_iterations) for a in range(2)])
    return scores, codes


# ---------------------------------------------------------------- 2 gloo workers = 1 worker
# four steps: epochs 0, 0, 0, 1 -- prototypes frozen in epoch 0 (case multi); the queue filled from
# step 0 and used from the step at which it is full (multi: 20 rows, full after 2 steps of 16;
# short: 13 rows < one global batch, split 6 / 7 between the ranks)
CASES = {"multi": ({"num_prototypes": 10.0, "queue_size": 20.0, "epoch_queue_starts": 0.0,
                    "freeze_prototypes_epochs": 1.0}, MULTI, (20, 20, 16, 16)),
         "short": ({"num_prototypes": 7.0, "queue_size": 13.0, "epoch_queue_starts": 0.0, "freeze_prototypes_epochs": 0.0,
                    "temperature": 0.5, "epsilon": 0.1, "sinkhorn_iterations": 5.0}, None, (20, 20))}
EPOCHS = [0, 0, 0, 1]


def _run_case(case, rank, world):
    params, crops_cfg, sizes = CASES[case]
    model, opts = _setup(_cfg(params, crops_cfg))
    net = wrap_data_parallel(model, torch.device("cpu"), sync_batchnorm=True) if world > 1 else model
    rt = Runtime(torch.device("cpu"), None, False, rank, world)
    sl = slice(rank * B // world, (rank + 1) * B // world)
    losses, used, frozen = [], [], []
    for step, epoch in enumerate(EPOCHS):
        model.start_epoch(epoch)
        crops, y = _crops(step, B, sizes)
        used.append(model._use_queue)
        out, _ = train_step(net, model, opts, [c[sl] for c in crops], y[sl], rt)
        frozen.append(model.prototypes.weight.grad is None)
        model.after_step(step, 10)
        loss = out.total.detach().clone()
        if world > 1:
            dist.all_reduce(loss)
            loss /= world
        losses.append(loss)
    return {"loss": torch.stack(losses), "used": used, "frozen": frozen,
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "grads": {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}}


def _worker(rank, world):
    return {case: _run_case(case, rank, world) for case in CASES}


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    return run_gloo_workers(_worker, tmp_path_factory.mktemp("swav_ddp"))


@pytest.mark.parametrize("case", list(CASES))
def test_four_steps_two_workers_equal_one_worker(two_workers, case):
    ref = _run_case(case, 0, 1)
    assert ref["used"] == ([False, False, True, True] if case == "multi" else [False, True, True, True])
    assert ref["frozen"] == ([True, True, True, False] if case == "multi" else [False] * 4)
    assert "prototypes.weight" in ref["grads"] and int(ref["state"]["queue_rows"]) == CASES[case][0]["queue_size"]
    for rank in range(2):
        got = two_workers[rank][case]
        assert got["used"] == ref["used"] and got["frozen"] == ref["frozen"]
        torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-9, atol=1e-10)
        assert got["grads"].keys() == ref["grads"].keys()
        for k, v in ref["grads"].items():
            torch.testing.assert_close(got["grads"][k], v, rtol=1e-7, atol=1e-10, msg=f"{case}: grad {k}")
        assert got["state"].keys() == ref["state"].keys()
        # weights, prototypes, BatchNorm statistics, the replicated queue, its pointer and fill count
        for k, v in ref["state"].items():
            torch.testing.assert_close(got["state"][k], v, rtol=1e-7, atol=1e-9, msg=f"{case}: {k}")


# ---------------------------------------------------------------- resume with multi-crop and the queue
def test_resume_with_multicrop_and_the_queue_in_use_is_bit_identical(tiny_cfg, tmp_path):
    tiny_cfg["train"]["epochs"] = 3
    tiny_cfg["views"] = {"preset": "symmetric", "size": 20, "crops": MULTI}
    tiny_cfg["loss"] = {"name": "swav", "params": {"num_prototypes": 20, "queue_size": 48, "epoch_queue_starts": 1,
                                                   "freeze_prototypes_epochs": 1}}
    tiny_cfg["optim"]["name"] = "lars"
    tiny_cfg["eval"]["every"] = 0

    def _run(run_dir, resume=None):
        cfg = load_config(tiny_cfg)
        return run(cfg, LocalReporter(cfg, run_dir, resume, echo=False))

    _run(tmp_path / "full")
    full = load_checkpoint(tmp_path / "full" / "checkpoints" / "epoch_0003.pt")
    epoch2 = load_checkpoint(tmp_path / "full" / "checkpoints" / "epoch_0002.pt")
    assert int(epoch2["model"]["queue_rows"]) == 48 and epoch2["model"]["queue"].abs().sum() > 0  # in use at resume
    assert epoch2["model"]["queue"].shape == (2, 48, 32)  # tiny_cfg projector 32-32
    summary = _run(tmp_path / "resumed", resume=tmp_path / "full" / "checkpoints" / "epoch_0002.pt")
    assert summary["epochs_completed"] == 3
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "epoch_0003.pt")
    assert full["model"].keys() == resumed["model"].keys()
    for k in full["model"]:
        assert torch.equal(full["model"][k], resumed["model"][k]), f"model.{k} differs after resume"
    assert full["metrics"]["loss"] == resumed["metrics"]["loss"]


# ---------------------------------------------------------------- parameters
@pytest.mark.parametrize("params, message", [
    ({"num_prototypes": 1.0}, "num_prototypes: 1.0 is out of range; allowed: >= 2"),
    ({"num_prototypes": 30.5}, "num_prototypes: 30.5 is not a whole number; allowed: an integer >= 2"),
    ({"temperature": 0.0}, "temperature: 0.0 is out of range; allowed: > 0"),
    ({"epsilon": -0.05}, "epsilon: -0.05 is out of range; allowed: > 0"),
    ({"sinkhorn_iterations": 0.0}, "sinkhorn_iterations: 0.0 is out of range; allowed: >= 1"),
    ({"freeze_prototypes_epochs": -1.0}, "freeze_prototypes_epochs: -1.0 is out of range; allowed: >= 0"),
    ({"queue_size": 10.5}, "queue_size: 10.5 is not a whole number; allowed: an integer >= 0"),
    ({"queue_size": float("inf")}, "queue_size: inf is out of range; allowed: >= 0"),
    ({"epoch_queue_starts": -2.0}, "epoch_queue_starts: -2.0 is out of range; allowed: >= 0"),
    ({"epsilon": True}, "epsilon: True is not a number; allowed: a number"),
    ({"sk_epsilon": 0.05}, "unknown parameter(s) sk_epsilon for 'swav'; allowed: num_prototypes, temperature, "
                           "epsilon, sinkhorn_iterations, freeze_prototypes_epochs, queue_size, epoch_queue_starts"),
])
def test_bad_parameters_are_one_line_errors(params, message):
    with pytest.raises(ValueError) as e:
        check_method("swav", params, 16)
    assert str(e.value) == message and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="loss.params"):
        _cfg(params)


def test_one_crop_is_a_config_error():
    with pytest.raises(ConfigError, match="views.crops: swav takes 2 or more crops per image"):
        _cfg(crops=[{}])


def test_defaults():
    assert method_params("swav") == {"num_prototypes": 3000.0, "temperature": 0.1, "epsilon": 0.05,
                                     "sinkhorn_iterations": 3.0, "freeze_prototypes_epochs": 2.0,
                                     "queue_size": 3840.0, "epoch_queue_starts": 50.0}
    check_method("swav", {"queue_size": 0.0, "freeze_prototypes_epochs": 0.0}, 128)
    model = build_method(_cfg({"queue_size": 0.0}), 10)  # no queue: an empty buffer, never used
    assert model.queue.shape == (2, 0, 16) and not model._filling and not model._use_queue
