"""UOTA view weighting: the weights against a loop-based reference of the paper's formula; two views
of an image weigh alike; mean 1; a far view weighs less; global over ranks (2 workers = 1); every
method that opts in keeps its loss when the weights are 1 and weighs its per-view terms otherwise;
2 workers = 1 worker for a whole training step with UOTA on; the config's checks."""
import math

from conftest import run_gloo_workers
import method_parallel as mp_check
import pytest
import torch

from sslray.config import ConfigError, load_config
from sslray.losses.nt_xent import nt_xent
from sslray.losses.uota import uota_weights
from sslray.methods import METHODS, build_method
from sslray.methods.uota import UOTA

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices (conftest.one_thread)

VIEW_METHODS = [n for n, m in METHODS.items() if m.view_weighting]


def ref_weights(e, tau, eps):
    """Eqs. M.9-M.11 of Wang et al. 2021, one number at a time: normalise, subtract the image's mean
    view, pool Sigma over every view, invert, d = delta^T Sigma^-1 delta / tau, softmax(-d) x V N."""
    v, n, d = e.shape
    rows = [[[float(x) for x in e[a, i]] for i in range(n)] for a in range(v)]
    for a in range(v):
        for i in range(n):
            norm = math.sqrt(sum(x * x for x in rows[a][i]))
            rows[a][i] = [x / norm for x in rows[a][i]]
    delta = {}
    for i in range(n):
        mean = [sum(rows[a][i][k] for a in range(v)) / v for k in range(d)]
        for a in range(v):
            delta[a, i] = [rows[a][i][k] - mean[k] for k in range(d)]
    sigma = [[sum(delta[key][r] * delta[key][c] for key in delta) / (v * n) + (eps if r == c else 0.0)
              for c in range(d)] for r in range(d)]
    inv = torch.linalg.inv(torch.tensor(sigma, dtype=torch.float64)).tolist()
    dist = {key: sum(x[r] * inv[r][c] * x[c] for r in range(d) for c in range(d)) / tau for key, x in delta.items()}
    z = sum(math.exp(-q) for q in dist.values())
    return torch.tensor([[math.exp(-dist[a, i]) / z * v * n for i in range(n)] for a in range(v)], dtype=torch.float64)


def _emb(v, n, d, seed=0):
    return torch.randn(v, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_weights_match_the_papers_formula():
    e = _emb(3, 6, 4)
    torch.testing.assert_close(uota_weights(e, tau=2.0, eps=1e-6), ref_weights(e, 2.0, 1e-6), rtol=1e-9, atol=1e-12)


def test_two_views_of_an_image_weigh_alike_and_the_mean_is_one():
    w = uota_weights(_emb(2, 32, 8), tau=1.0)
    torch.testing.assert_close(w[0], w[1], rtol=1e-12, atol=1e-12)
    assert w.mean().item() == pytest.approx(1.0, rel=1e-12)
    assert w.std().item() > 0.05  # images differ: UOTA weighs images when there are two views


def test_a_view_far_from_its_image_weighs_less():
    e = _emb(4, 16, 8) * 0.1 + _emb(1, 16, 8, seed=1)  # four views near each image's own point
    e[3, 5] = _emb(1, 1, 8, seed=2)[0, 0]  # ... except view 3 of image 5
    w = uota_weights(e, tau=1.0)
    assert w.argmin().item() == 3 * 16 + 5
    assert w.mean().item() == pytest.approx(1.0, rel=1e-12)


def test_large_tau_gives_weights_of_one():
    torch.testing.assert_close(uota_weights(_emb(4, 8, 4), tau=1e12), torch.ones(4, 8, dtype=torch.float64))


def _weights_worker(rank, world):
    e = _emb(3, 8, 4)
    return uota_weights(e[:, rank * 4:(rank + 1) * 4], tau=0.5)


def test_two_workers_give_the_weights_of_one_on_the_combined_batch(tmp_path):
    got = torch.cat(run_gloo_workers(_weights_worker, tmp_path), dim=1)
    torch.testing.assert_close(got, uota_weights(_emb(3, 8, 4), tau=0.5), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------- methods that compose with it
# what a method needs at this tiny scale (batch 16, embedding width 16)
TINY = {"moco": ({"queue_size": 64}, {}), "wmse": ({"w_size": 8}, {"projector": "32-4"})}


def _model(name, uota=None, seed=0):
    params, settings = TINY.get(name, ({}, {}))
    c = mp_check.cfg(name, params, **settings)
    torch.manual_seed(seed)
    model = build_method(c, 10).double()
    model.uota = uota
    return model


@pytest.mark.parametrize("name", VIEW_METHODS)
def test_the_loss_is_unchanged_before_the_start_epoch_and_weighted_after(name):
    (v1, v2), _ = mp_check.batch()
    plain = _model(name)(([v1, v2])).total
    late = _model(name, UOTA(tau=0.01, start_epoch=1))
    late.start_epoch(0)
    assert late([v1, v2]).total.item() == plain.item()  # before start_epoch: weights are not even computed
    late.start_epoch(1)
    weighted = late([v1, v2]).total
    assert math.isfinite(weighted.item()) and abs(weighted.item() - plain.item()) > 1e-6 * abs(plain.item())
    flat = _model(name, UOTA(tau=1e12))  # every weight 1 up to rounding
    assert flat([v1, v2]).total.item() == pytest.approx(plain.item(), rel=1e-9)


def test_simclr_with_uota_is_the_weighted_mean_of_its_anchor_terms():
    (v1, v2), _ = mp_check.batch()
    model = _model("simclr", UOTA(tau=0.05))
    got = model([v1, v2]).total
    z1, z2 = model.projector(torch.cat(model.encode([v1, v2]))).chunk(2)
    terms = nt_xent(z1, z2, model.temperature, reduction="none")
    w = uota_weights(torch.stack([z1, z2]), tau=0.05)
    assert got.item() == pytest.approx((w * terms).mean().item(), rel=1e-10)
    assert terms.mean().item() != pytest.approx(got.item(), rel=1e-6)


def _step_worker(rank, world):
    return mp_check.step("byol", {}, rank, world, uota={"enabled": True, "tau": 0.05})


def test_a_training_step_with_uota_on_two_workers_equals_one_worker(tmp_path):
    ref = _step_worker(0, 1)
    plain = mp_check.step("byol", {})
    assert abs(ref["loss"].item() - plain["loss"].item()) > 1e-6  # UOTA changed the step
    for rank, got in enumerate(run_gloo_workers(_step_worker, tmp_path)):
        mp_check.assert_same(got, ref, f"rank {rank}")


# ------------------------------------------------------------------------------------------- config
def _cfg(**uota):
    return {"loss": {"name": "byol", "uota": uota}, "train": {"epochs": 10}, "data": {"source": "synthetic"}}


def test_config_refuses_uota_for_a_loss_that_is_not_a_mean_over_views():
    with pytest.raises(ConfigError, match=r"^loss\.uota\.enabled: vicreg's loss is not a mean over views; "
                                          r"allowed: true only with loss\.name .*byol"):
        load_config({"loss": {"name": "vicreg", "uota": {"enabled": True}}})


@pytest.mark.parametrize("field,value,allowed", [("tau", 0.0, r"\(0, inf\)"), ("eps", -1.0, r"\(0, inf\)"),
                                                 ("start_epoch", 10, r"\[0, 9\]")])
def test_config_checks_uota_ranges(field, value, allowed):
    with pytest.raises(ConfigError, match=rf"^loss\.uota\.{field}: {value} is out of range; allowed: {allowed}$"):
        load_config(_cfg(enabled=True, **{field: value}))


def test_config_builds_the_method_with_uota():
    method = build_method(load_config(_cfg(enabled=True, tau=20, start_epoch=3)), 10)
    assert method.uota == UOTA(tau=20.0, eps=1e-8, start_epoch=3)
    assert build_method(load_config(_cfg(enabled=False, tau=20)), 10).uota is None
