"""W-MSE: whitening (identity covariance, against a loop-based Cholesky and forward substitution) and
the loss (value and gradient, 2 and 4 views, random cuts) against an element-by-element reference
of the paper's formula; neither view detached; the method's forward and its cut sequence across a
resume; UOTA composing; parameter checks; 2 gloo workers = 1 worker on the combined batch."""
import copy
import math

import pytest
import torch
from conftest import run_gloo_workers
import method_parallel as mp_check

from sslray.config import ConfigError, load_config
from sslray.losses.uota import uota_weights
from sslray.losses.wmse import view_pair_losses, whiten, whiten_sub_batches, wmse_loss, wmse_view_losses
from sslray.methods import METHODS, WMSE, build_method, check_method
from sslray.models import build_encoder

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices (conftest.one_thread)


# ---------------------------------------------------------------- the reference, scalar by scalar
def ref_whiten(rows):
    """Rows (lists of 0-d tensors) of one sub-batch, whitened: mean, covariance / (m - 1),
    Cholesky-Banachiewicz L, then y_i = L^{-1} (x_i - mu) by forward substitution."""
    m, d = len(rows), len(rows[0])
    mu = [sum(rows[i][a] for i in range(m)) / m for a in range(d)]
    xc = [[rows[i][a] - mu[a] for a in range(d)] for i in range(m)]
    cov = [[sum(xc[i][a] * xc[i][b] for i in range(m)) / (m - 1) for b in range(d)] for a in range(d)]
    L = [[None] * d for _ in range(d)]
    for a in range(d):
        for b in range(a + 1):
            s = sum(L[a][k] * L[b][k] for k in range(b))
            L[a][b] = torch.sqrt(cov[a][a] - s) if a == b else (cov[a][b] - s) / L[b][b]
    out = []
    for i in range(m):
        y = []
        for a in range(d):
            y.append((xc[i][a] - sum(L[a][k] * y[k] for k in range(a))) / L[a][a])
        out.append(y)
    return out


def ref_wmse(z, w_size, orders=(None,)):
    """(1/iters) sum_cuts (1/P) sum_{v<u} (1/n) sum_i (2 - 2 cos(w_{v,i}, w_{u,i})), each view whitened
    on its own rows of each sub-batch (the cut: images order[k m : (k+1) m]); scalar ops only."""
    V, n, d = z.shape
    total = 0.0
    for order in orders:
        order = list(range(n)) if order is None else [int(i) for i in order]
        w = [[None] * n for _ in range(V)]
        for k in range(n // w_size):
            idx = order[k * w_size:(k + 1) * w_size]
            for v in range(V):
                for i, row in zip(idx, ref_whiten([[z[v, i, a] for a in range(d)] for i in idx])):
                    w[v][i] = row
        for v in range(V):
            for u in range(v + 1, V):
                for i in range(n):
                    dot = sum(w[v][i][a] * w[u][i][a] for a in range(d))
                    norms = torch.sqrt(sum(x * x for x in w[v][i])) * torch.sqrt(sum(x * x for x in w[u][i]))
                    total = total + 2 - 2 * dot / norms
    return total / (len(orders) * V * (V - 1) / 2 * n)


def _z(v=2, n=8, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(v, n, d, generator=g, dtype=torch.float64)


# ---------------------------------------------------------------- whitening
def test_whitening_matches_loop_cholesky_and_gives_identity_covariance():
    x = _z(1, 12, 4)[0]
    w = whiten(x)
    ref = torch.stack([torch.stack(r) for r in ref_whiten([[x[i, a] for a in range(4)] for i in range(12)])])
    torch.testing.assert_close(w, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(w.T @ w / 11, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(w.mean(0), torch.zeros(4, dtype=torch.float64), rtol=0, atol=1e-13)
    # W is lower triangular: the first coordinate is only standardised
    torch.testing.assert_close(w[:, 0], (x[:, 0] - x[:, 0].mean()) / x[:, 0].std(), rtol=1e-12, atol=1e-12)


def test_whitening_is_batched_over_sub_batches_and_equivariant_in_rows():
    x = _z(3, 10, 4, seed=1)
    w = whiten(x)
    for k in range(3):
        torch.testing.assert_close(w[k], whiten(x[k]), rtol=1e-12, atol=1e-13)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(whiten(x[0][perm]), w[0][perm], rtol=1e-10, atol=1e-12)


def test_whitening_runs_in_fp32_under_bf16_autocast():
    x = _z(1, 64, 8, seed=2)[0].float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w = whiten(x.bfloat16())
    assert w.dtype == torch.float32
    torch.testing.assert_close(w.T @ w / 63, torch.eye(8), rtol=0, atol=1e-4)


def test_shrinkage_and_a_singular_covariance():
    x = _z(1, 12, 4, seed=3)[0]
    cov = torch.cov(x.T)
    shrunk = whiten(x, eps=0.3)
    target = 0.7 * cov + 0.3 * torch.eye(4, dtype=torch.float64)  # whitened w.r.t. the shrunk covariance
    L = torch.linalg.cholesky(target)
    torch.testing.assert_close(shrunk, torch.linalg.solve_triangular(L, (x - x.mean(0)).T, upper=False).T)
    # a collapsed sub-batch: NaN (the loop's divergence check), no exception, the other sub-batch intact
    both = torch.stack([torch.ones(12, 4, dtype=torch.float64), x])
    out = whiten(both)
    assert out[0].isnan().all() and torch.isfinite(out[1]).all()


def test_whitening_needs_more_rows_than_dimensions():
    with pytest.raises(ValueError, match=r"m > D"):
        whiten(torch.randn(4, 4))
    with pytest.raises(ValueError, match=r"^w_size 4 must exceed the embedding width 4"):
        wmse_view_losses(torch.randn(2, 8, 4), 4)
    with pytest.raises(ValueError, match=r"not a multiple of w_size"):
        wmse_view_losses(torch.randn(2, 10, 3), 4)
    with pytest.raises(ValueError, match=r"views >= 2"):
        wmse_view_losses(torch.randn(1, 8, 3), 4)


# ---------------------------------------------------------------- the loss
@pytest.mark.parametrize("views", [2, 4])
def test_loss_matches_loop_reference_value_and_gradient(views):
    z = _z(views, 8, 2, seed=views)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    got, ref = wmse_loss(z1, 4), ref_wmse(z2, 4)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    got.backward()
    ref.backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-9, atol=1e-12)
    # neither view is detached: every view (and every image of it) receives a gradient
    assert (z1.grad.abs().sum(dim=2) > 1e-8).all()


def test_neither_view_is_detached():
    """Both views of a pair receive a gradient; detaching one (the "simplified" loss of one library)
    leaves the other's gradient as it is and drops that view's half."""
    z = _z(2, 8, 2, seed=5).requires_grad_()
    wmse_loss(z, 4).backward()
    full = z.grad.clone()
    assert full[0].abs().sum() > 1e-3 and full[1].abs().sum() > 1e-3
    z.grad = None
    wmse_loss(torch.stack([z[0], z[1].detach()]), 4).backward()
    assert z.grad[1].abs().sum() == 0
    torch.testing.assert_close(z.grad[0], full[0], rtol=1e-10, atol=1e-14)


def test_four_views_are_six_pairs_and_each_pair_is_split_half_to_its_views():
    z = _z(4, 8, 2, seed=6)
    w = whiten_sub_batches(z, 4)
    pair = {(v, u): 2 - 2 * torch.nn.functional.cosine_similarity(w[v], w[u], dim=1)
            for v in range(4) for u in range(v + 1, 4)}
    assert len(pair) == 6
    losses = view_pair_losses(w)
    for v in range(4):  # view v's loss: its mean distance to the 3 other views
        mine = [pair[min(v, u), max(v, u)] for u in range(4) if u != v]
        torch.testing.assert_close(losses[v], sum(mine) / 3, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(losses.mean(), torch.stack(list(pair.values())).mean(), rtol=1e-12, atol=1e-12)
    two = view_pair_losses(w[:2])  # two views: both carry the pair's whole term
    torch.testing.assert_close(two[0], two[1], rtol=0, atol=0)


def test_random_cuts_match_the_reference_and_sub_batches_follow_the_order():
    z = _z(2, 8, 2, seed=7)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    got = wmse_loss(z, 4, orders=[None, perm])
    torch.testing.assert_close(got, ref_wmse(z, 4, [None, perm]), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(wmse_loss(z, 4, orders=[perm]), wmse_loss(z, 4))  # the cut matters
    # the same sub-batches in another order inside them: the same whitened rows
    within = torch.cat([perm[:4].flip(0), perm[4:]])
    torch.testing.assert_close(whiten_sub_batches(z, 4, order=within), whiten_sub_batches(z, 4, order=perm))


def test_per_rank_whitening_is_one_process_whose_cuts_stay_inside_each_rank_block():
    """What W ranks compute: each rank whitens its own rows. One process on the combined batch equals
    them when its cuts never straddle a rank's block -- the row-order cut (w_size dividing the local
    batch) and a permutation that maps each block onto itself (rank r's permutation, offset)."""
    z = _z(3, 16, 2, seed=8)
    p = torch.randperm(8, generator=torch.Generator().manual_seed(2))
    halves = [wmse_view_losses(z[:, r * 8:(r + 1) * 8], 4, orders=[None, p]) for r in range(2)]
    combined = wmse_view_losses(z, 4, orders=[None, torch.cat([p, p + 8])])
    torch.testing.assert_close(combined, torch.cat(halves, dim=1), rtol=1e-12, atol=1e-13)
    assert wmse_loss(z, 4, orders=[None, torch.cat([p, p + 8])]).item() == pytest.approx(
        (halves[0].mean() + halves[1].mean()).item() / 2, rel=1e-12)  # DDP's mean over ranks


# ---------------------------------------------------------------- the method
def _model(seed=0, **params):
    torch.manual_seed(seed)
    return WMSE(build_encoder("small_cnn", "auto", 16, 2), "16-2", 10, **{"w_size": 4.0, **params}).double()


def _crops(views=2, n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, 16, 16, generator=g, dtype=torch.float64) for _ in range(views)]


@pytest.mark.parametrize("views", [2, 4])
def test_method_loss_and_gradients_match_reference(views):
    model, crops = _model(), _crops(views)
    ref_model = copy.deepcopy(model)
    out = model(crops)
    out.total.backward()
    assert set(out.terms) == {"wmse"} and out.rep.shape == (8, 16)
    torch.testing.assert_close(out.terms["wmse"], out.total, rtol=0, atol=0)  # no UOTA: the plain mean
    z = ref_model.projector(ref_model.encoder(torch.cat(crops))).view(views, 8, 2)
    ref = ref_wmse(z, 4)
    assert out.total.item() == pytest.approx(ref.item(), rel=1e-10)
    ref.backward()
    for (k, a), (_, b) in zip(model.named_parameters(), ref_model.named_parameters()):
        if not k.startswith("probe"):
            assert a.grad is not None and a.grad.abs().sum() > 0, k
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-12, msg=k)


def test_random_cuts_come_from_the_state_and_survive_a_resume():
    crops = _crops()
    model = _model(w_iter=3.0)
    assert model.split_step.item() == 0
    first = model(crops).total.detach()
    after_one = copy.deepcopy(model.state_dict())
    second = model(crops).total.detach()
    assert model.split_step.item() == 2 and not torch.equal(first, second)  # a new cut every step
    resumed = _model(seed=5, w_iter=3.0)  # other weights and another split_seed, then the checkpoint
    resumed.load_state_dict(after_one)
    torch.testing.assert_close(resumed(crops).total.detach(), second, rtol=0, atol=0)
    # the documented rule: the cuts after the first are randperm(n) from seed*1_000_003 + step
    seed = (int(after_one["split_seed"]) * 1_000_003 + 1) % 2**63
    g = torch.Generator().manual_seed(seed)
    orders = [None] + [torch.randperm(8, generator=g) for _ in range(2)]
    with torch.no_grad():
        z = resumed.projector(resumed.encoder(torch.cat(crops))).view(2, 8, 2)
    torch.testing.assert_close(second, wmse_loss(z, 4, orders=orders), rtol=1e-10, atol=1e-12)
    # eval-mode forwards draw no cut; w_iter = 1 draws nothing at all
    resumed.eval()
    resumed(crops)
    assert resumed.split_step.item() == 2
    plain = _model()
    assert torch.equal(plain(crops).total, plain(crops).total)


def _cfg(uota=None, **over):
    raw = {"model": {"encoder": "small_cnn", "width": 2, "projector": "16-2"}, "views": {"size": 16},
           "loss": {"name": "wmse", "params": {"w_size": 4.0}}, "train": {"epochs": 2, "batch_size": 8},
           "data": {"source": "synthetic"}, "scale": {"workers": 0}}
    if uota:
        raw["loss"]["uota"] = uota
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v}
    return load_config(raw)


def test_uota_composes_two_views_share_a_weight_and_before_its_start_epoch_nothing_changes():
    torch.manual_seed(0)
    model = build_method(_cfg({"enabled": True, "start_epoch": 1, "tau": 1.0}), 10).double()
    crops = _crops()
    model.start_epoch(0)  # before UOTA's start: every weight 1
    before = model(crops)
    torch.testing.assert_close(before.total, before.terms["wmse"], rtol=0, atol=0)
    model.start_epoch(1)
    after = model(crops)
    with torch.no_grad():
        z = model.projector(model.encoder(torch.cat(crops))).view(2, 8, 2)
        losses = wmse_view_losses(z, 4)
    w = uota_weights(z, tau=1.0)
    torch.testing.assert_close(w[0], w[1], rtol=1e-12, atol=1e-12)  # two views: one weight per image
    assert w.std() > 1e-3  # the weights do differ between images (tau small)
    torch.testing.assert_close(after.total.detach(), (w * losses).mean(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(after.terms["wmse"].detach(), losses.mean(), rtol=1e-10, atol=1e-12)
    assert not torch.allclose(after.total, after.terms["wmse"])


def test_four_views_from_one_crop_group():
    cfg = _cfg(views={"crops": [{"count": 4}]})
    assert [g.count for g in cfg.views.crops] == [4]
    torch.manual_seed(0)
    model = build_method(cfg, 10).double()
    crops = _crops(4)
    out = model(crops)
    with torch.no_grad():
        z = model.projector(model.encoder(torch.cat(crops))).view(4, 8, 2)
    torch.testing.assert_close(out.total.detach(), ref_wmse(z, 4), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- parameters and config
@pytest.mark.parametrize("params,match", [
    ({"w_size": 16.0}, r"^w_size: 16\.0 does not exceed the embedding width 16 \(the projector's output\): .*; "
                       r"allowed: integers > 16, or a narrower projector$"),
    ({"w_size": 0.0}, r"^w_size: 0\.0 is out of range; allowed: >= 1$"),
    ({"w_size": 64.5}, r"^w_size: 64\.5 is not a whole number; allowed: integers >= 1$"),
    ({"w_iter": 0.0}, r"^w_iter: 0\.0 is out of range; allowed: >= 1$"),
    ({"w_iter": 1.5}, r"^w_iter: 1\.5 is not a whole number; allowed: integers >= 1$"),
    ({"w_eps": 1.0}, r"^w_eps: 1\.0 is out of range; allowed: \[0, 1\)$"),
    ({"w_eps": -0.1}, r"^w_eps: -0\.1 is out of range; allowed: \[0, 1\)$"),
    ({"w_eps": float("nan")}, r"^w_eps: nan is out of range; allowed: \[0, 1\)$"),
    ({"w_iter": True}, r"^w_iter: True is not a number; allowed: a number$"),
    ({"temperature": 0.2}, r"^unknown parameter\(s\) temperature for 'wmse'; allowed: w_size, w_iter, w_eps$"),
])
def test_bad_params_are_one_line_errors(params, match):
    with pytest.raises(ValueError, match=match):
        check_method("wmse", {"w_size": 32.0, **params}, 16)
    with pytest.raises(ConfigError, match="^loss.params: "):
        load_config({"model": {"projector": "64-16"}, "loss": {"name": "wmse", "params": {"w_size": 32.0, **params}}})


def test_config_checks_the_default_sub_batch_the_batch_and_the_views():
    with pytest.raises(ConfigError, match=r"^loss.params: w_size: 128\.0 does not exceed the embedding width 2048 "):
        load_config({"loss": {"name": "wmse"}})  # the default projector is 2048 wide
    with pytest.raises(ConfigError, match=r"^train.batch_size: 200 is not a multiple of loss.params.w_size=128 .*; "
                                          r"allowed: multiples of 128$"):
        load_config({"model": {"projector": "1024-64"}, "loss": {"name": "wmse"}, "train": {"batch_size": 200}})
    with pytest.raises(ConfigError, match=r"^views.crops: wmse takes 2 or more crops per image, these groups give 1"):
        load_config({"model": {"projector": "1024-64"}, "loss": {"name": "wmse"}, "views": {"crops": [{"count": 1}]}})
    cfg = load_config({"model": {"projector": "1024-64"}, "loss": {"name": "wmse", "uota": {"enabled": True}},
                       "views": {"crops": [{"count": 4}]}})
    assert cfg.loss.uota.enabled and sum(g.count for g in cfg.views.crops) == 4


def test_defaults_and_registry():
    assert METHODS["wmse"] is WMSE and WMSE.crops is None and WMSE.view_weighting
    assert WMSE.params() == {"w_size": 128.0, "w_iter": 1.0, "w_eps": 0.0}
    check_method("wmse", {"w_size": 17.0, "w_iter": 1.0, "w_eps": 0.0}, 16)  # the bounds are allowed
    model = _model()
    assert set(model.rank_state()) == {"split_seed", "split_step"}  # replicated: kept out of DDP's broadcast
    assert {id(p) for g in model.param_groups() for p in g["params"]} == \
        {id(p) for m in (model.encoder, model.projector) for p in m.parameters()}


def test_recipe_and_search_space_start_from_the_paper():
    from pathlib import Path

    from sslray.search.space import load_search_space

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "sslray/recipes/cifar10_resnet18_wmse.yaml")
    assert (cfg.model.encoder, cfg.model.stem, cfg.model.projector) == ("resnet18", "cifar", "1024-64")
    assert cfg.loss.params == {"w_size": 128, "w_iter": 1, "w_eps": 0.0}
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay) == ("adamw", 2e-3, 1e-6)
    assert cfg.train.batch_size % 128 == 0
    space = load_search_space(repo / "search_spaces/wmse.yaml")
    assert space.optuna.points_to_evaluate[0] == {"optim.lr": 2e-3, "optim.weight_decay": 1e-6,
                                                  "loss.params.w_size": 128, "loss.params.w_iter": 1}


# ---------------------------------------------------------------- 2 workers = 1 worker
SETTINGS = {
    # per rank 8 rows = 2 sub-batches of 4 (2-dim head); one worker: 4 sub-batches of the 16, row order
    "two views": ({"w_size": 4.0}, dict(projector="32-2")),
    # 4 views, UOTA weights from the global batch; per rank one sub-batch of 8, one worker two
    "four views + UOTA": ({"w_size": 8.0}, dict(projector="32-4", views=4, uota={"enabled": True, "tau": 1.0})),
}


def _worker(rank, world, case):
    params, settings = SETTINGS[case]
    return mp_check.step("wmse", params, rank, world, **settings)


@pytest.mark.parametrize("case", list(SETTINGS))
def test_two_workers_equal_one_worker(tmp_path, case):
    import functools

    got = run_gloo_workers(functools.partial(_worker, case=case), tmp_path)
    params, settings = SETTINGS[case]
    ref = mp_check.step("wmse", params, **settings)
    assert math.isfinite(ref["loss"].item()) and ref["state"]["split_step"].item() == 1
    for rank in range(2):
        mp_check.assert_same(got[rank], ref, f"rank {rank}")
