"""Each loss against an independent, loop-based reference of the paper formula."""
import io
import math

import numpy as np
import pytest
import torch

from sslray.methods import build_loss, loss_methods
from sslray.methods import method_params as loss_params
from sslray.losses.vicreg_tico import VICRegTiCoLoss


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices (conftest.one_thread)


# VICReg-TiCo's nu has no default; 1.0 is the value these generic tests always ran with
NEEDS = {"vicreg_tico": {"nu": 1.0}}


def _z(n=12, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)


def _cov(z):  # unbiased covariance, element by element
    n, d = z.shape
    m = [sum(z[i, j] for i in range(n)) / n for j in range(d)]
    return [[sum((z[i, a] - m[a]) * (z[i, b] - m[b]) for i in range(n)) / (n - 1) for b in range(d)] for a in range(d)]


def ref_vicreg(z1, z2, lam=25.0, mu=25.0, nu=1.0, eps=1e-4):
    n, d = z1.shape
    inv = sum((z1[i, j] - z2[i, j]) ** 2 for i in range(n) for j in range(d)) / (n * d)
    var = 0.0
    cov = 0.0
    for z in (z1, z2):
        c = _cov(z)
        var += 0.5 * sum(max(0.0, 1 - math.sqrt(c[j][j] + eps)) for j in range(d)) / d
        cov += sum(c[a][b] ** 2 for a in range(d) for b in range(d) if a != b) / d
    return lam * inv + mu * var + nu * cov, (inv, var, cov)


def _normalise(z):
    return [[z[i, j] / math.sqrt(sum(z[i, k] ** 2 for k in range(z.shape[1]))) for j in range(z.shape[1])]
            for i in range(z.shape[0])]


def ref_tico_cov(z, C):
    d = len(C)
    return sum(sum(z[i][a] * C[a][b] * z[i][b] for a in range(d) for b in range(d)) for i in range(len(z))) / len(z)


def ref_second_moment(z, beta, C_prev):
    n, d = len(z), len(z[0])
    B = [[sum(z[i][a] * z[i][b] for i in range(n)) / n for b in range(d)] for a in range(d)]
    return [[beta * C_prev[a][b] + (1 - beta) * B[a][b] for b in range(d)] for a in range(d)]


def ref_tico(z1, z2, beta=0.9, rho=8.0, C_prev=None):
    a, b = _normalise(z1), _normalise(z2)
    d = len(a[0])
    C = ref_second_moment(a, beta, C_prev or [[0.0] * d for _ in range(d)])
    inv = 1 - sum(sum(x * y for x, y in zip(a[i], b[i])) for i in range(len(a))) / len(a)
    cov = ref_tico_cov(a, C)
    return inv + rho * cov, C


def ref_barlow(z1, z2, lambda_bt=5e-3):
    n, d = z1.shape

    def bn(z):
        out = z.clone()
        for j in range(d):
            m = sum(z[i, j] for i in range(n)) / n
            v = sum((z[i, j] - m) ** 2 for i in range(n)) / n
            for i in range(n):
                out[i, j] = (z[i, j] - m) / math.sqrt(v + 1e-5)
        return out

    a, b = bn(z1), bn(z2)
    c = [[sum(a[i, p] * b[i, q] for i in range(n)) / n for q in range(d)] for p in range(d)]
    on = sum((1 - c[p][p]) ** 2 for p in range(d))
    off = sum(c[p][q] ** 2 for p in range(d) for q in range(d) if p != q)
    return on + lambda_bt * off


def test_vicreg_matches_reference_with_every_term():
    z1, z2 = _z()
    out = build_loss("vicreg", {"lam": 2.0, "mu": 3.0, "nu": 0.5}, dim=6)(z1, z2)
    total, (inv, var, cov) = ref_vicreg(z1, z2, 2.0, 3.0, 0.5)
    assert out.total.item() == pytest.approx(float(total), rel=1e-9)
    assert [out.terms[k].item() for k in ("inv", "var", "cov")] == pytest.approx([float(inv), float(var), float(cov)])


def test_vicreg_variance_term_is_active_for_small_std():
    z1, z2 = _z()
    out = build_loss("vicreg", {}, dim=6)(0.1 * z1, 0.1 * z2)
    assert out.terms["var"].item() > 0.5  # std ~0.1 -> hinge ~0.9 per dim


def test_tico_matches_reference_over_two_steps_and_keeps_C():
    z1, z2 = _z(seed=1)
    z3, z4 = _z(seed=2)
    loss = build_loss("tico", {"beta": 0.7, "rho": 3.0}, dim=6).double()
    r1, C1 = ref_tico(z1, z2, 0.7, 3.0)
    assert loss(z1, z2).total.item() == pytest.approx(float(r1), rel=1e-9)
    r2, C2 = ref_tico(z3, z4, 0.7, 3.0, C_prev=C1)
    assert loss(z3, z4).total.item() == pytest.approx(float(r2), rel=1e-9)
    assert torch.allclose(loss.C, torch.tensor(C2, dtype=torch.float64))


def test_vicreg_tico_matches_reference():
    z1, z2 = _z(seed=3)
    loss = build_loss("vicreg_tico", {"lam": 2.0, "mu": 3.0, "nu": 0.5, "beta": 0.6}, dim=6).double()
    _, (inv, var, _) = ref_vicreg(z1, z2)
    rows = [[float(x) for x in r] for r in z1]
    C = ref_second_moment(rows, 0.6, [[0.0] * 6 for _ in range(6)])
    cov = ref_tico_cov(rows, C)
    out = loss(z1, z2)
    assert out.total.item() == pytest.approx(2.0 * float(inv) + 3.0 * float(var) + 0.5 * cov, rel=1e-9)
    assert out.terms["cov"].item() == pytest.approx(cov, rel=1e-9)


def test_barlow_matches_reference():
    z1, z2 = _z(seed=4)
    assert build_loss("barlow", {"lambda_bt": 0.1}, dim=6)(z1, z2).total.item() == pytest.approx(
        float(ref_barlow(z1, z2, 0.1)), rel=1e-6)


@pytest.mark.parametrize("name", ["vicreg", "barlow"])
def test_symmetric_losses_are_symmetric(name):
    z1, z2 = _z(seed=5)
    loss = build_loss(name, {}, dim=6)
    assert loss(z1, z2).total.item() == pytest.approx(loss(z2, z1).total.item(), rel=1e-12)


@pytest.mark.parametrize("name", loss_methods())
def test_loss_decreases_under_gradient_steps(name):
    torch.manual_seed(0)
    x1 = torch.randn(64, 16)
    x2 = x1 + 0.3 * torch.randn(64, 16)
    proj = torch.nn.Linear(16, 8)
    # beta = 0 makes the running covariance the current batch's: a stationary objective to descend
    loss = build_loss(name, {**NEEDS.get(name, {}), **({"beta": 0.0} if "beta" in loss_params(name) else {})}, dim=8)
    opt = torch.optim.SGD(proj.parameters(), lr=0.01 if name in ("vicreg", "vicreg_tico") else 0.1)
    losses = []
    for _ in range(30):
        out = loss(proj(x1), proj(x2))
        opt.zero_grad()
        out.total.backward()
        opt.step()
        losses.append(out.total.item())
    assert losses[-1] < losses[0] and all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize("name", loss_methods())
def test_bad_shapes_and_batch_of_one_raise(name):
    loss = build_loss(name, NEEDS.get(name, {}), dim=8)
    with pytest.raises(ValueError, match="2-D"):
        loss(torch.randn(4, 8, 1), torch.randn(4, 8, 1))
    with pytest.raises(ValueError, match="differ in shape"):
        loss(torch.randn(4, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match="at least 2"):
        loss(torch.randn(1, 8), torch.randn(1, 8))


@pytest.mark.parametrize("name", loss_methods())
def test_collapsed_input_gives_finite_gradients(name):
    z = torch.ones(8, 8, requires_grad=True)
    out = build_loss(name, NEEDS.get(name, {}), dim=8)(z, z)
    out.total.backward()
    assert math.isfinite(out.total.item()) and torch.isfinite(z.grad).all()


def test_build_loss_errors_name_parameter_and_allowed_values():
    with pytest.raises(ValueError, match=r"beta: 1.0 is out of range; allowed: \[0, 1\)"):
        build_loss("tico", {"beta": 1.0}, dim=4)
    with pytest.raises(ValueError, match="nu: -1 is out of range; allowed: >= 0"):
        build_loss("vicreg", {"nu": -1}, dim=4)
    with pytest.raises(ValueError, match="unknown parameter.*gamma.*allowed: lam, mu, nu, eps"):
        build_loss("vicreg", {"gamma": 1}, dim=4)
    with pytest.raises(ValueError, match="unknown loss 'simclr'; allowed: vicreg, tico"):
        build_loss("simclr", {}, dim=4)
    assert loss_params("tico") == {"beta": 0.9, "rho": 8.0}
    assert loss_params("vicreg") == {"lam": 25.0, "mu": 25.0, "nu": 1.0, "eps": 1e-4}
    assert loss_params("barlow") == {"lambda_bt": 5e-3}
    assert loss_params("vicreg_tico") == {"lam": 25.0, "mu": 25.0, "nu": None, "beta": 0.9, "eps": 1e-4,
                                          "center": False, "offdiag": False, "symmetric": False,
                                          "bias_correction": False}


@pytest.mark.parametrize("name", ["tico", "vicreg_tico"])
def test_running_covariance_is_a_buffer_updated_only_in_training(name):
    z1, z2 = _z(seed=6)
    z1, z2 = z1.float(), z2.float()
    loss = build_loss(name, {**NEEDS.get(name, {}), "beta": 0.9}, dim=6)
    assert "C" in loss.state_dict() and torch.count_nonzero(loss.C) == 0
    loss(z1, z2)
    zn = torch.nn.functional.normalize(z1, dim=1) if name == "tico" else z1
    torch.testing.assert_close(loss.C, 0.1 * zn.T @ zn / zn.shape[0])  # first step: C = (1 - beta) B
    after_train = loss.C.clone()
    loss.eval()
    loss(z2, z1)
    assert torch.equal(loss.C, after_train)  # eval: used, not updated
    fresh = build_loss(name, {**NEEDS.get(name, {}), "beta": 0.9}, dim=6)
    fresh.load_state_dict(loss.state_dict())
    assert torch.equal(fresh.C, after_train)


@pytest.mark.parametrize("name", ["tico", "vicreg_tico"])
def test_eval_mode_uses_the_stored_C(name):
    z1, z2 = _z(seed=7)
    loss = build_loss(name, NEEDS.get(name, {}), dim=6).double()
    loss(z1, z2)
    loss.eval()
    z3, z4 = _z(seed=8)
    rows = _normalise(z3) if name == "tico" else [[float(x) for x in r] for r in z3]
    assert loss(z3, z4).terms["cov"].item() == pytest.approx(float(ref_tico_cov(rows, loss.C.tolist())), rel=1e-9)


@pytest.mark.parametrize("name", ["tico", "vicreg_tico"])
def test_running_covariance_is_detached(name):
    """With beta = 0, C = B(z1); were B not detached, d cov / d z1 would gain a second term through C."""
    torch.manual_seed(0)
    z = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    loss = build_loss(name, {**NEEDS.get(name, {}), "beta": 0.0}, dim=4).double()
    loss(z, torch.randn(8, 4, dtype=torch.float64)).terms["cov"].backward()
    assert not loss.C.requires_grad and torch.count_nonzero(loss.C) > 0
    # expected: the gradient with C frozen as a constant, computed by hand
    x = z.detach()
    C = loss.C.clone()
    if name == "vicreg_tico":  # d/dz mean_i z_i C z_i^T = 2 z C / n
        expected = 2 * x @ C / x.shape[0]
    else:  # through the L2 normalisation u = z / |z|: (I - u u^T) g / |z| with g = 2 C u / n
        norm = x.norm(dim=1, keepdim=True)
        u = x / norm
        g = 2 * u @ C / x.shape[0]
        expected = (g - (g * u).sum(dim=1, keepdim=True) * u) / norm
    torch.testing.assert_close(z.grad, expected)
    # and the non-detached gradient really differs (the test would catch a missing detach)
    z2 = x.clone().requires_grad_(True)
    u2 = z2 / z2.norm(dim=1, keepdim=True) if name == "tico" else z2
    B = u2.T @ u2 / u2.shape[0]
    ((u2 @ B) * u2).sum(dim=1).mean().backward()
    assert not torch.allclose(z2.grad, expected)


@pytest.mark.parametrize("name", ["tico", "vicreg_tico"])
def test_running_covariance_needs_matching_width(name):
    loss = build_loss(name, NEEDS.get(name, {}), dim=8)
    with pytest.raises(ValueError, match="width 6 does not match the loss's dim 8"):
        loss(torch.randn(4, 6), torch.randn(4, 6))


def test_embeddings_must_be_floating_point():
    with pytest.raises(ValueError, match="floating point"):
        build_loss("vicreg", {})(torch.ones(4, 3, dtype=torch.long), torch.ones(4, 3, dtype=torch.long))


@pytest.mark.parametrize("params", [{"lam": float("nan")}, {"mu": float("inf")}, {"eps": 0.0}, {"beta": -0.1}])
def test_non_finite_and_boundary_values_are_rejected(params):
    (k, v), = params.items()
    with pytest.raises(ValueError, match=f"^{k}: .* is out of range; allowed: "):
        build_loss("vicreg_tico", params, dim=4)


def test_dim_must_be_positive():
    with pytest.raises(ValueError, match="dim: 0 is out of range"):
        build_loss("tico", {}, dim=0)


# ------------------------------------------------------- VICReg-TiCo's parts: center, offdiag, symmetric, bias_correction

def ref_hybrid(batches, beta, center=False, offdiag=False, symmetric=False, bias_correction=False):
    """Per step (cov term, C, M): the module docstring's formulas in plain numpy, one process."""
    d = batches[0][0].shape[1]
    C = np.zeros((d, d))
    out = []
    for t, (z1, z2) in enumerate(batches, start=1):
        views = [z1, z2] if symmetric else [z1]
        if center:
            views = [v - v.mean(axis=0) for v in views]
        B = sum(v.T @ v / v.shape[0] for v in views) / len(views)
        C = beta * C + (1 - beta) * B
        M = C / (1 - beta ** t) if bias_correction else C.copy()
        if offdiag:
            M = M - np.diag(np.diag(M))
        cov = np.mean([np.mean([v[i] @ M @ v[i] for i in range(v.shape[0])]) for v in views])
        out.append((float(cov), C.copy(), M))
    return out


def _batches(seeds=(51, 52, 53), shift=0.7):
    """Three steps of (z1, z2), float64, with a non-zero mean so that centring matters."""
    return [tuple(z + shift for z in _z(seed=s)) for s in seeds]


HYBRID_CASES = [{}, {"center": True}, {"offdiag": True}, {"symmetric": True}, {"bias_correction": True},
                {"center": True, "offdiag": True, "symmetric": True, "bias_correction": True}]


@pytest.mark.parametrize("beta", [0.6, 0.0])
@pytest.mark.parametrize("switches", HYBRID_CASES, ids=lambda s: "+".join(s) or "defaults")
def test_vicreg_tico_parts_match_reference_over_three_steps(switches, beta):
    batches = _batches()
    loss = build_loss("vicreg_tico", {"lam": 2.0, "mu": 3.0, "nu": 0.5, "beta": beta, **switches}, dim=6).double()
    ref = ref_hybrid([(a.numpy(), b.numpy()) for a, b in batches], beta, **switches)
    for step, ((z1, z2), (cov, C, _)) in enumerate(zip(batches, ref), start=1):
        out = loss(z1, z2)
        _, (inv, var, _) = ref_vicreg(z1, z2)
        assert out.terms["cov"].item() == pytest.approx(cov, rel=1e-10), f"step {step}"
        assert out.total.item() == pytest.approx(2.0 * float(inv) + 3.0 * float(var) + 0.5 * cov, rel=1e-10)
        np.testing.assert_allclose(loss.C.numpy(), C, rtol=1e-12, atol=1e-14)
        if switches.get("bias_correction"):
            assert loss.num_updates.item() == step
    # the switch is not a no-op on this data (else the comparison above proves nothing about it)
    default = ref_hybrid([(a.numpy(), b.numpy()) for a, b in batches], beta)
    if switches and not (beta == 0.0 and set(switches) == {"bias_correction"}):  # 1 - 0^t = 1
        assert abs(ref[-1][0] - default[-1][0]) > 1e-3 * abs(default[-1][0])


def test_vicreg_tico_defaults_are_the_original_formula_over_three_steps():
    """No switch: the loss and C of the original VICReg-TiCo (the loop references above), and no new state."""
    loss = build_loss("vicreg_tico", {"nu": 0.5, "beta": 0.7}, dim=6).double()
    C = [[0.0] * 6 for _ in range(6)]
    for z1, z2 in _batches():
        rows = [[float(x) for x in r] for r in z1]
        C = ref_second_moment(rows, 0.7, C)
        _, (inv, var, _) = ref_vicreg(z1, z2)
        out = loss(z1, z2)
        assert out.total.item() == pytest.approx(25 * float(inv) + 25 * float(var) + 0.5 * ref_tico_cov(rows, C),
                                                 rel=1e-12)
        torch.testing.assert_close(loss.C, torch.tensor(C, dtype=torch.float64), rtol=1e-13, atol=1e-15)
    assert list(loss.state_dict()) == ["C"]  # checkpoints of the defaults are what they were


def test_beta_zero_is_the_no_memory_control_and_with_center_offdiag_is_vicregs_term():
    """beta = 0: C = B of each batch, so cov = mean_i z_i B z_i^T = tr(B B) on one process; with center
    and offdiag, cov = sum_{j!=k} B_jk^2 = D ((N-1)/N)^2 x VICReg's covariance term of z1 (loop reference)."""
    plain = build_loss("vicreg_tico", {"nu": 1.0, "beta": 0.0}, dim=6).double()
    parts = build_loss("vicreg_tico", {"nu": 1.0, "beta": 0.0, "center": True, "offdiag": True}, dim=6).double()
    for z1, z2 in _batches():
        n, d = z1.shape
        B = z1.T @ z1 / n
        assert plain(z1, z2).terms["cov"].item() == pytest.approx(torch.trace(B @ B).item(), rel=1e-12)
        torch.testing.assert_close(plain.C, B)
        c = _cov(z1)  # unbiased, element by element
        vicreg_cov_z1 = sum(c[a][b] ** 2 for a in range(d) for b in range(d) if a != b) / d
        assert parts(z1, z2).terms["cov"].item() == pytest.approx(float(d * ((n - 1) / n) ** 2 * vicreg_cov_z1),
                                                                  rel=1e-10)


def test_centring_mean_is_detached_and_the_gradient_is_the_same_as_through_it():
    """The mean is computed without gradient; the gradient through it is exactly zero (module
    docstring), so the gradient equals autograd's through a non-detached mean."""
    (a, b), (z, z2) = _batches()[:2]
    loss = build_loss("vicreg_tico", {"nu": 1.0, "beta": 0.5, "center": True}, dim=6).double()
    loss(a, b)  # C from an earlier batch too
    z = z.clone().requires_grad_(True)
    loss(z, z2).terms["cov"].backward()
    M = loss.C.clone()
    x = z.detach().clone().requires_grad_(True)
    xc = x - x.mean(dim=0)  # the mean inside the graph, as VICReg's covariance has it
    ((xc @ M) * xc).sum(dim=1).mean().backward()
    torch.testing.assert_close(z.grad, x.grad, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(z.grad, 2 * z.detach() @ M / z.shape[0])  # centring did change the gradient


def _ref_M(C, t, beta, p):
    M = C / (1 - beta ** t) if p.get("bias_correction") else C
    return M - np.diag(np.diag(M)) if p.get("offdiag") else M


def _ref_total(name, a, b, M, p):
    """The loss of one call with its contrast matrix M as a constant, straightforward torch."""
    M = torch.as_tensor(M, dtype=torch.float64)
    if name == "tico":
        a, b = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
        return 1 - (a * b).sum(dim=1).mean() + p["rho"] * ((a @ M) * a).sum(dim=1).mean()
    inv = ((a - b) ** 2).mean()
    var = 0.5 * sum(torch.relu(1 - torch.sqrt(v.var(dim=0) + 1e-4)).mean() for v in (a, b))
    views = [a, b] if p.get("symmetric") else [a]
    if p.get("center"):
        views = [v - v.mean(dim=0) for v in views]
    cov = sum(((v @ M) * v).sum(dim=1).mean() for v in views) / len(views)
    return 25 * inv + 25 * var + p["nu"] * cov


@pytest.mark.parametrize("name, params", [
    ("tico", {"beta": 0.7, "rho": 3.0}),
    ("vicreg_tico", {"nu": 0.5, "beta": 0.7}),
    ("vicreg_tico", {"nu": 0.5, "beta": 0.7, "center": True, "symmetric": True}),
    ("vicreg_tico", {"nu": 0.5, "beta": 0.7, "offdiag": True, "bias_correction": True}),
], ids=["tico", "vicreg_tico", "vicreg_tico-center-symmetric", "vicreg_tico-offdiag-bias_correction"])
def test_two_forwards_then_one_backward(name, params):
    """Symmetrising by hand / gradient accumulation: before the fix the second call's in-place EMA
    update of C made backward fail ("modified by an inplace operation"). Each call's gradient must
    use the C of its own update."""
    z1, z2 = (z.requires_grad_(True) for z in _batches()[0])
    loss = build_loss(name, params, dim=6).double()
    buffer = loss.C.data_ptr()
    total = loss(z1, z2).total + loss(z2, z1).total
    total.backward()
    assert loss.C.data_ptr() == buffer  # C is still updated in place: the same tensor for DDP and state_dict
    # independent reference: C after each call from the numpy / loop formulas, then autograd with M constant
    pairs = [(z1.detach().numpy(), z2.detach().numpy()), (z2.detach().numpy(), z1.detach().numpy())]
    if name == "tico":
        C1 = np.array(ref_tico(z1.detach(), z2.detach(), 0.7)[1])
        C2 = np.array(ref_tico(z2.detach(), z1.detach(), 0.7, C_prev=C1.tolist())[1])
        Ms = [C1, C2]
    else:
        switches = {k: v for k, v in params.items() if k not in ("nu", "beta")}
        Ms = [M for _, _, M in ref_hybrid(pairs, 0.7, **switches)]
        assert all(np.allclose(M, _ref_M(C, t, 0.7, params)) for t, (_, C, M) in
                   enumerate(ref_hybrid(pairs, 0.7, **switches), start=1))
    x1, x2 = z1.detach().clone().requires_grad_(True), z2.detach().clone().requires_grad_(True)
    ref = _ref_total(name, x1, x2, Ms[0], params) + _ref_total(name, x2, x1, Ms[1], params)
    ref.backward()
    assert total.item() == pytest.approx(ref.item(), rel=1e-10)
    torch.testing.assert_close(z1.grad, x1.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(z2.grad, x2.grad, rtol=1e-9, atol=1e-12)


def test_no_graph_no_copy_of_C():
    """The copy that protects the graph is only made when a graph is built (cost: one D x D per call)."""
    from sslray.losses.tico import graph_constant

    C = torch.randn(4, 4)
    z = torch.randn(3, 4)
    assert graph_constant(C, z).data_ptr() == C.data_ptr()  # no gradient wanted: the buffer itself
    with torch.no_grad():
        assert graph_constant(C, z.requires_grad_(True)).data_ptr() == C.data_ptr()
    assert graph_constant(C, z).data_ptr() != C.data_ptr()
    torch.testing.assert_close(graph_constant(C, z), C)


def test_state_dict_round_trip_keeps_C_and_the_update_count():
    params = {"nu": 0.5, "beta": 0.8, "center": True, "symmetric": True, "bias_correction": True}
    batches = _batches()
    a = build_loss("vicreg_tico", params, dim=6).double()
    for z1, z2 in batches[:2]:
        a(z1, z2)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)  # as a checkpoint holds it
    buf.seek(0)
    b = build_loss("vicreg_tico", params, dim=6).double()
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert b.num_updates.dtype == torch.long and b.num_updates.item() == 2 and torch.equal(b.C, a.C)
    # the resumed loss continues the correction at t = 3, exactly as the uninterrupted one
    ref = ref_hybrid([(x.numpy(), y.numpy()) for x, y in batches], 0.8,
                     **{k: v for k, v in params.items() if k not in ("nu", "beta")})
    out_b = b(*batches[2])
    assert out_b.terms["cov"].item() == pytest.approx(ref[2][0], rel=1e-10)
    assert out_b.total.item() == a(*batches[2]).total.item() and torch.equal(b.C, a.C)
    b.eval()
    b(*batches[0])
    assert b.num_updates.item() == 3  # eval uses C and t, updates neither
    # a checkpoint without the counter cannot silently restart the correction at t = 0
    plain = build_loss("vicreg_tico", {**params, "bias_correction": False}, dim=6).double()
    with pytest.raises(RuntimeError, match="num_updates"):
        build_loss("vicreg_tico", params, dim=6).double().load_state_dict(plain.state_dict())


def test_bias_correction_before_any_update_uses_the_zero_C():
    loss = build_loss("vicreg_tico", {"nu": 1.0, "bias_correction": True}, dim=6).double().eval()
    out = loss(*_batches()[0])
    assert out.terms["cov"].item() == 0.0 and math.isfinite(out.total.item())


@pytest.mark.parametrize("params, message", [
    ({"nu": 0.1, "center": 1}, "center: 1 is not true or false; allowed: true, false"),
    ({"nu": 0.1, "offdiag": 0.0}, "offdiag: 0.0 is not true or false; allowed: true, false"),
    ({"nu": 0.1, "symmetric": "true"}, "symmetric: 'true' is not true or false; allowed: true, false"),
    ({"nu": 0.1, "bias_correction": None}, "bias_correction: None is not true or false; allowed: true, false"),
    ({"nu": True}, "nu: True is not a number; allowed: a number"),
    ({"nu": 0.1, "beta": False}, "beta: False is not a number; allowed: a number"),
    ({}, "nu: None (VICReg-TiCo has no default nu: its covariance term is ~dim = 8 times VICReg's, so VICReg's "
         "nu = 1 collapses the embeddings); allowed: a number >= 0, comparable to VICReg's nu = 1 near 1/dim = 0.125"),
])
def test_build_loss_checks_switches_are_booleans_and_weights_numbers(params, message):
    with pytest.raises(ValueError) as err:
        build_loss("vicreg_tico", params, dim=8)
    assert str(err.value) == message
    if "not true or false" in message or not params:  # constructing the class directly: the same message
        with pytest.raises(ValueError) as err:
            VICRegTiCoLoss(**params, dim=8)
        assert str(err.value) == message
    assert build_loss("vicreg_tico", {"nu": 0.1, "center": True, "offdiag": False}, dim=8).center is True
