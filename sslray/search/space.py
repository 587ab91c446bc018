"""Search-space files: a base pretraining config plus a ``search`` section.

    base: ../sslray/recipes/cifar10_resnet18_vicreg_tico.yaml   # optional; relative to this file
    config: {train: {epochs: 100}}                                # overrides of the base (any section)
    search:
      metric: knn_top1          # knn_top1 | probe_top1 | rankme (label-free)
      mode: max                 # max | min
      num_trials: 32
      max_concurrent: 4
      params:                   # dotted config paths -> distributions
        loss.params.lam:  {dist: loguniform, low: 1.0, high: 100.0}
        loss.params.beta: {dist: uniform, low: 0.5, high: 0.999}
        train.batch_size: {dist: int, low: 128, high: 512}
        optim.name:       {dist: choice, values: [lars, sgd]}
      asha: {grace_period: 10, reduction_factor: 3}   # time attribute: epoch; max_t: train.epochs
      optuna: {seed: 0, n_startup_trials: 8, points_to_evaluate: [{loss.params.lam: 25.0, ...}]}
      stop: {rankme_below: 2.0, emb_std_ratio_below: 0.05}   # collapse: stop the trial, record why

Every value is checked when the file is loaded -- parameter paths against the config schema (and a
loss's own parameters), bounds against the same validator a run uses (the low and the high end of
each range must both be valid configs), distributions, metric, ASHA and Optuna settings -- so a
bad file fails at once with one message naming the field.
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sslray.config import Config, ConfigError, load_config

METRICS = ("knn_top1", "probe_top1", "rankme")
DISTS = ("loguniform", "uniform", "int", "choice")


@dataclass
class ParamSpec:
    path: str
    dist: str
    low: float | None = None
    high: float | None = None
    values: list | None = None


@dataclass
class AshaConfig:
    grace_period: int = 10
    reduction_factor: float = 3.0


@dataclass
class OptunaConfig:
    seed: int = 0
    n_startup_trials: int = 8
    points_to_evaluate: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StopConfig:
    rankme_below: float | None = 2.0  # effective rank of the embeddings
    emb_std_ratio_below: float | None = 0.05  # normalised embedding std x sqrt(D)


@dataclass
class SearchSpace:
    base: dict[str, Any]  # the pretraining config (plain dict) every trial starts from
    params: list[ParamSpec]
    metric: str = "knn_top1"
    mode: str = "max"
    num_trials: int = 16
    max_concurrent: int = 1
    asha: AshaConfig = field(default_factory=AshaConfig)
    optuna: OptunaConfig = field(default_factory=OptunaConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    source: str | None = None  # the file it came from
    text: str = ""  # its text, logged to MLflow with the search

    @property
    def max_epochs(self) -> int:
        return int(self.base["train"]["epochs"])

    def trial_config(self, params: dict[str, Any], overrides: list[str] | None = None) -> Config:
        """The validated Config of one trial: base + sampled parameters (+ extra overrides)."""
        raw = copy.deepcopy(self.base)
        for path, value in params.items():
            _set(raw, path, value)
        return load_config(raw, overrides)


def _set(raw: dict, path: str, value: Any) -> None:
    keys = path.split(".")
    node = raw
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value


def _deep_merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _check_path(path: str, base: Config) -> None:
    """The dotted path names a config field (or a parameter of the configured loss)."""
    from sslray.losses import loss_params

    keys = path.split(".")
    if keys[:2] == ["loss", "params"] and len(keys) == 3:
        allowed = loss_params(base.loss.name)
        if keys[2] not in allowed:
            raise ConfigError(f"search.params.{path}: loss {base.loss.name!r} has no parameter {keys[2]!r}; "
                              f"allowed: {', '.join(allowed)}")
        return
    node: Any = base
    for i, k in enumerate(keys):
        if not dataclasses.is_dataclass(node):
            raise ConfigError(f"search.params.{path}: {'.'.join(keys[:i])} is not a section")
        names = [f.name for f in dataclasses.fields(node)]
        if k not in names:
            where = ".".join(keys[:i]) or "config"
            raise ConfigError(f"search.params.{path}: unknown parameter path; {where} has: {', '.join(names)}")
        node = getattr(node, k)


def _parse_param(path: str, spec: Any) -> ParamSpec:
    where = f"search.params.{path}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping like {{dist: loguniform, low: 1, high: 100}}")
    unknown = sorted(set(spec) - {"dist", "low", "high", "values"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: dist, low, high, values")
    dist = spec.get("dist")
    if dist not in DISTS:
        raise ConfigError(f"{where}.dist: {dist!r} is not allowed; allowed: {', '.join(DISTS)}")
    if dist == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.values: a non-empty list is required for dist=choice")
        return ParamSpec(path, dist, values=values)
    lo, hi = spec.get("low"), spec.get("high")
    for name, v in (("low", lo), ("high", hi)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}.{name}: a number is required for dist={dist}, got {v!r}")
    if not lo < hi:
        raise ConfigError(f"{where}: empty range [{lo}, {hi}]; low must be below high")
    if dist == "loguniform" and lo <= 0:
        raise ConfigError(f"{where}.low: {lo} is out of range for dist=loguniform; allowed: > 0")
    if dist == "int" and (int(lo) != lo or int(hi) != hi):
        raise ConfigError(f"{where}: dist=int needs integer low and high, got {lo} and {hi}")
    return ParamSpec(path, dist, float(lo) if dist != "int" else int(lo), float(hi) if dist != "int" else int(hi))


def _dataclass_from(cls, raw: Any, where: str):
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
    hints = typing.get_type_hints(cls)
    for k, v in raw.items():
        want = hints[k]
        ok = (v is None and type(None) in typing.get_args(want)) or isinstance(v, typing.get_origin(want) or want) \
            or (want in (float, float | None) and isinstance(v, (int, float)) and not isinstance(v, bool))
        if not ok:
            raise ConfigError(f"{where}.{k}: wrong type {type(v).__name__} ({v!r})")
    return cls(**raw)


def load_search_space(path: str | Path) -> SearchSpace:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search-space file not found: {path}")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    unknown = sorted(set(raw) - {"base", "config", "search"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; allowed: base, config, search")
    base: dict = {}
    if raw.get("base"):
        base_path = (path.parent / raw["base"]).resolve()
        if not base_path.is_file():
            raise ConfigError(f"base: {raw['base']} not found (resolved to {base_path})")
        base = yaml.safe_load(base_path.read_text()) or {}
    base = _deep_merge(base, raw.get("config") or {})
    base_cfg = load_config(base)  # the base itself must be a valid run
    base = base_cfg.to_dict()
    s = raw.get("search")
    if not isinstance(s, dict):
        raise ConfigError(f"{path}: a 'search' section is required")
    allowed = {"metric", "mode", "num_trials", "max_concurrent", "params", "asha", "optuna", "stop"}
    unknown = sorted(set(s) - allowed)
    if unknown:
        raise ConfigError(f"search: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    metric, mode = s.get("metric", "knn_top1"), s.get("mode", "max")
    if metric not in METRICS:
        raise ConfigError(f"search.metric: {metric!r} is not allowed; allowed: {', '.join(METRICS)}")
    if mode not in ("max", "min"):
        raise ConfigError(f"search.mode: {mode!r} is not allowed; allowed: max, min")
    params_raw = s.get("params")
    if not isinstance(params_raw, dict) or not params_raw:
        raise ConfigError("search.params: at least one parameter is required")
    params = []
    for p, spec in params_raw.items():
        _check_path(p, base_cfg)
        ps = _parse_param(p, spec)
        ends = ps.values if ps.dist == "choice" else [ps.low, ps.high]
        for v in ends:  # every end of the range must be a valid run
            try:
                space_probe = copy.deepcopy(base)
                _set(space_probe, p, v)
                load_config(space_probe)
            except ConfigError as e:
                raise ConfigError(f"search.params.{p}: value {v!r} is not a valid setting ({e})") from None
        params.append(ps)
    space = SearchSpace(
        base=base, params=params, metric=metric, mode=mode,
        num_trials=int(s.get("num_trials", 16)), max_concurrent=int(s.get("max_concurrent", 1)),
        asha=_dataclass_from(AshaConfig, s.get("asha"), "search.asha"),
        optuna=_dataclass_from(OptunaConfig, s.get("optuna"), "search.optuna"),
        stop=_dataclass_from(StopConfig, s.get("stop"), "search.stop"),
        source=str(path), text=text,
    )
    if space.num_trials < 1:
        raise ConfigError(f"search.num_trials: {space.num_trials} is out of range; allowed: >= 1")
    if space.max_concurrent < 1:
        raise ConfigError(f"search.max_concurrent: {space.max_concurrent} is out of range; allowed: >= 1")
    if not 1 <= space.asha.grace_period <= space.max_epochs:
        raise ConfigError(f"search.asha.grace_period: {space.asha.grace_period} is out of range; "
                          f"allowed: [1, train.epochs={space.max_epochs}]")
    if space.asha.reduction_factor <= 1:
        raise ConfigError(f"search.asha.reduction_factor: {space.asha.reduction_factor} is out of range; allowed: > 1")
    names = {p.path for p in params}
    for i, point in enumerate(space.optuna.points_to_evaluate):
        extra = sorted(set(point) - names)
        if extra or set(point) != names:
            raise ConfigError(f"search.optuna.points_to_evaluate[{i}]: must set exactly the searched parameters "
                              f"({', '.join(sorted(names))}); got {', '.join(sorted(point))}")
        space.trial_config(point)  # a valid run
    return space
