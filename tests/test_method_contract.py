"""What every registered method promises, checked for each entry of ``sslray.methods.METHODS``.

A new method is tested here by being registered: its parameter table (defaults, bounds, which
parameters size its state), its one-line errors, the loop's five calls, its ``state_dict`` round
trip, 2 gloo workers against 1, a descent check, and its recipe and search space. The per-method
test files keep what is particular to a method: parity with the paper's or official code's numbers.

``TINY`` makes a step small (a short queue, few prototypes); nothing else here names a method.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

import method_parallel as mp_check
from conftest import run_gloo_workers
from sslray.config import ConfigError, load_config
from sslray.losses.params import Param, resolve
from sslray.methods import METHODS, build_method, check_method, method_params

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices (conftest.one_thread)

REPO = Path(__file__).resolve().parents[1]
NAMES = list(METHODS)
B, DIM = 16, 16  # batch, embedding width (projector 32-16)
TINY = {"moco": {"queue_size": 64.0}, "swav": {"num_prototypes": 10.0, "queue_size": 16.0, "epoch_queue_starts": 0.0},
        "wmse": {"w_size": 8.0}, "byol": {"pred_hidden": 8.0}, "simsiam": {"pred_hidden": 8.0}}
PROJECTOR = {"wmse": "32-4"}  # W-MSE whitens sub-batches of w_size rows: wider than the embedding


# ---------------------------------------------------------------- helpers
def _valid(p: Param):
    """A value the table accepts: the default, or for a required parameter one inside its bounds."""
    if p.default is not None:
        return p.default
    return p.lo + 1.0 if p.hi is None else (p.lo + p.hi) / 2


def _other(p: Param):
    """A value the table accepts that differs from :func:`_valid`."""
    v = _valid(p)
    if p.flag:
        return not v
    if p.whole:
        return v + 1.0
    if p.hi is not None:
        return (p.lo + p.hi) / 2 if v != (p.lo + p.hi) / 2 else (p.lo + v) / 2
    return 2 * v if v else p.lo + 1.0


def _required(name: str) -> dict:
    return {k: _valid(p) for k, p in METHODS[name].PARAMS.items() if p.default is None}


def _params(name: str) -> dict:
    return {**_required(name), **TINY.get(name, {})}


def _views(name: str) -> int:
    return METHODS[name].crops or 4


def _cfg(name: str, params: dict | None = None, **raw):
    return load_config({"model": {"encoder": "small_cnn", "width": 4, "projector": PROJECTOR.get(name, "32-16")},
                        "views": {"size": 16, "crops": [{"count": _views(name)}]},
                        "loss": {"name": name, "params": _params(name) if params is None else params},
                        "data": {"source": "synthetic"}, "scale": {"workers": 0}, **raw})


def _crops(name: str, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, 3, 16, 16, generator=g) for _ in range(_views(name))]


def _build(name: str, seed: int = 0, params: dict | None = None):
    torch.manual_seed(seed)
    return build_method(_cfg(name, params), 10)


def _shapes(model) -> dict:
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- the parameter table
@pytest.mark.parametrize("name", NAMES)
def test_defaults_are_the_table_and_pass_its_bounds(name):
    cls = METHODS[name]
    assert cls.PARAMS and all(isinstance(p, Param) for p in cls.PARAMS.values())
    assert method_params(name) == {k: p.default for k, p in cls.PARAMS.items()}
    assert cls.shape_params == tuple(k for k, p in cls.PARAMS.items() if p.sizes_state)
    for k, p in cls.PARAMS.items():
        if p.default is not None and not p.flag:
            p.check(k, p.default)
    values = resolve(repr(name), cls.PARAMS, _required(name), DIM)
    assert values == {**method_params(name), **_required(name)}
    build_method(_cfg(name, _required(name)), 10)  # the defaults build (TINY aside: the paper's sizes)


@pytest.mark.parametrize("name", NAMES)
def test_the_bounds_themselves_are_allowed(name):
    table = METHODS[name].PARAMS
    for k, p in table.items():
        if p.flag:
            for v in (False, True):
                resolve(repr(name), table, {**_required(name), k: v}, DIM)
            continue
        for v, open_ in ((p.lo, p.lo_open), (p.hi, p.hi_open)):
            if v is not None and not open_:
                resolve(repr(name), table, {**_required(name), k: v}, DIM)


def _bad_values(p: Param) -> list[tuple[object, str]]:
    """(value, the error's pattern) for values outside the parameter's bounds or of the wrong type."""
    if p.flag:
        return [(1, "is not true or false; allowed: true, false"), ("yes", "is not true or false")]
    out = [(True, "is not a number; allowed: a number"), ("x", "is not a number; allowed: a number"),
           (float("nan"), "is out of range; allowed: "), (float("inf"), "is out of range; allowed: ")]
    out.append((p.lo if p.lo_open else p.lo - 1.0, "is out of range; allowed: "))
    if p.hi is not None:
        out.append((p.hi if p.hi_open else p.hi + 1.0, "is out of range; allowed: "))
    if p.whole:
        out.append((p.lo + 1.5, "is not a whole number; allowed: "))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_bad_values_are_one_line_errors_naming_the_parameter(name):
    for k, p in METHODS[name].PARAMS.items():
        for value, pattern in _bad_values(p):
            with pytest.raises(ValueError) as err:
                check_method(name, {**_required(name), k: value}, DIM)
            message = str(err.value)
            assert message.startswith(f"{k}: {value!r} ") and pattern in message and "\n" not in message, message
            with pytest.raises(ConfigError) as err:
                _cfg(name, {**_required(name), k: value})
            said = str(err.value)  # the config reports it under loss.params (its loader may judge a type first)
            assert said.startswith("loss.params") and k in said and "; allowed: " in said and "\n" not in said, said


@pytest.mark.parametrize("name", NAMES)
def test_unknown_and_missing_parameters_are_one_line_errors(name):
    allowed = ", ".join(METHODS[name].PARAMS)
    with pytest.raises(ValueError, match=re.escape(f"unknown parameter(s) bogus for {name!r}; allowed: {allowed}")):
        check_method(name, {**_required(name), "bogus": 1.0}, DIM)
    for k in _required(name):
        with pytest.raises(ValueError, match=f"^{k}: None .*; allowed: ") as err:
            check_method(name, {}, DIM)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_sizes_state_says_which_parameters_shape_the_state_dict(name):
    """A parameter marked ``sizes_state`` changes a weight's or buffer's shape (or the keys): a
    checkpoint loads only with the same value (sslray.checkpoint.architecture). The others don't."""
    base = _params(name)
    shapes = _shapes(_build(name, params=base))
    for k, p in METHODS[name].PARAMS.items():
        other = {**base, k: _other(p) if k not in base else 2 * base[k] if base[k] else 1.0}
        changed = _shapes(_build(name, params=other)) != shapes
        assert changed == p.sizes_state, (k, other[k])


# ---------------------------------------------------------------- the loop's calls
def _step(model, crops, epoch=0, step=0, lr=0.05):
    model.train()
    model.start_epoch(epoch)
    out = model(crops)
    opt = torch.optim.SGD([dict(g) for g in model.param_groups()], lr=lr)
    opt.zero_grad(set_to_none=True)
    out.total.backward()
    model.after_backward()
    opt.step()
    model.after_step(step, 10)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_after_step(name):
    model = _build(name)
    trained = [p for g in model.param_groups() for p in g["params"]]
    ids = {id(p) for p in trained}
    assert not ids & {id(p) for p in model.probe.parameters()}  # the probe has its own optimiser
    assert all(p.requires_grad for p in trained) and len(ids) == len(trained)
    assert ids >= {id(p) for p in model.encoder.parameters()} | {id(p) for p in model.projector.parameters()}
    model.train()
    model.start_epoch(0)
    out = model(_crops(name))
    assert out.total.ndim == 0 and math.isfinite(out.total.item())
    assert out.terms and all(t.ndim == 0 and math.isfinite(t.item()) for t in out.terms.values())
    assert out.rep.shape == (B, model.encoder.out_dim)
    out.total.backward()
    model.after_backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    for n, p in model.named_parameters():  # target networks and the probe: no gradient from the method
        if id(p) not in ids:
            assert p.grad is None, n
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.after_step(0, 10)
    assert model.state_dict().keys() == before.keys()


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_is_bit_identical(name):
    """A checkpoint is the method's state_dict: loaded into a method built under another seed, it
    gives the same tensors, and the next step gives the same loss and state bit for bit (host-side
    copies of buffers, as SwAV's queue flags, follow the loaded state)."""
    crops = _crops(name)
    a = _build(name, seed=0)
    for s in range(2):
        _step(a, crops, step=s)
    b = _build(name, seed=1)
    b.load_state_dict(a.state_dict())
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v), k
    torch.manual_seed(5)
    out_a = _step(a, _crops(name, seed=1), step=2)
    torch.manual_seed(5)
    out_b = _step(b, _crops(name, seed=1), step=2)
    assert torch.equal(out_a.total, out_b.total)
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v), k


# ---------------------------------------------------------------- 2 workers = 1 worker
def _settings(name: str) -> dict:
    return dict(projector=PROJECTOR.get(name, "32-16"), views=_views(name))


def _all_methods_worker(rank, world):
    return {name: mp_check.step(name, _params(name), rank, world, **_settings(name)) for name in NAMES}


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    return run_gloo_workers(_all_methods_worker, tmp_path_factory.mktemp("contract_ddp"))


@pytest.mark.parametrize("name", NAMES)
def test_two_workers_equal_one_worker(two_workers, name):
    """A step on each of 2 gloo workers' halves of a batch (DDP, global BatchNorm) gives one
    worker's loss, gradients and state on the whole batch -- queues, EMA targets, C included."""
    ref = mp_check.step(name, _params(name), **_settings(name))
    for rank in range(2):
        mp_check.assert_same(two_workers[rank][name], ref, f"{name}, rank {rank}")


# ---------------------------------------------------------------- descent
@pytest.mark.parametrize("name", NAMES)
def test_the_loss_goes_down_on_a_fixed_batch(name):
    model = _build(name)
    crops = _crops(name)
    losses = [_step(model, crops, epoch=5, step=s, lr=0.02).total.item() for s in range(12)]
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < losses[0], losses


# ---------------------------------------------------------------- recipe and search space
@pytest.fixture(scope="module")
def spaces():
    from sslray.search.space import load_search_space

    return {p.stem: load_search_space(p) for p in sorted((REPO / "search_spaces").glob("*.yaml"))}


@pytest.mark.parametrize("name", NAMES)
def test_a_recipe_and_a_search_space(name, spaces):
    recipe = REPO / "sslray" / "recipes" / f"cifar10_resnet18_{name}.yaml"
    assert recipe.is_file(), f"no recipe {recipe.name}"
    cfg = load_config(recipe)
    assert cfg.loss.name == name and set(cfg.loss.params) <= set(method_params(name))
    own = [s for s, space in spaces.items()
           if space.base["loss"]["name"] == name and all(p.path != "loss.name" for p in space.params)]
    assert own, f"no search space whose base is {name} (search_spaces/*.yaml)"
    for s in own:
        searched = {p.path.split(".")[2] for p in spaces[s].params if p.path.startswith("loss.params.")}
        assert searched <= set(method_params(name)), (s, searched)
