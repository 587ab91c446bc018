"""Search-space files: a base pretraining config plus a ``search`` section.

    base: ../sslray/recipes/cifar10_resnet18_vicreg_tico.yaml   # optional; relative to this file
    config: {train: {epochs: 100}}                                # overrides of the base (any section)
    search:
      metric: knn_top1          # knn_top1 | probe_top1 | rankme (label-free)
      mode: max                 # max | min
      num_trials: 32
      max_concurrent: 4
      params:                   # dotted config paths -> distributions, sampled in this order
        loss.params.lam:  {dist: loguniform, low: 1.0, high: 100.0}
        loss.params.beta: {dist: uniform, low: 0.5, high: 0.999}
        train.batch_size: {dist: int, low: 128, high: 512}
        optim.name:       {dist: choice, values: [lars, sgd]}
      scheduler: {name: asha, grace_period: 10, reduction_factor: 3}   # fifo | asha | pbt (search.schedulers);
                                                # time attribute: epoch; max_t: train.epochs. The older
                                                # `asha: {grace_period: 10, reduction_factor: 3}` still loads
      optuna: {seed: 0, n_startup_trials: 8, points_to_evaluate: [{loss.params.lam: 25.0, ...}]}
      stop: {rankme_below: 2.0, emb_std_ratio_below: 0.05}   # collapse: stop the trial, record why

Conditional parameters: ``when: {PATH: VALUE or [VALUES]}`` samples a parameter only in trials
where the earlier ``choice`` parameter PATH took one of VALUES, so one search can ask "which
method, with which weights" -- each method's own weights are sampled only when it is chosen:

      params:
        loss.name:        {dist: choice, values: [vicreg, vicreg_tico]}
        loss.params.mu:   {dist: loguniform, low: 5, high: 50}                 # both losses have mu
        loss.params.beta: {dist: uniform, low: 0.5, high: 0.99, when: {loss.name: vicreg_tico}}

A trial whose loss differs from the base config's starts from that loss's paper defaults: the
base's ``loss.params`` belong to the base's loss. VICReg-TiCo's ``nu`` has no default, so a search
that can switch to it from another base loss must sample nu (``when: {loss.name: vicreg_tico}``).
Boolean loss switches are searched as ``{dist: choice, values: [false, true]}``.

Command-line overrides (``python -m sslray.tune SPACE.yaml train.epochs=8``) are applied to the
base config once, when the file is loaded: ASHA's max_t, the grace-period check, ``--plan``, every
trial and the MLflow record all see the same resolved config. Overriding a searched parameter is
an error (it would silently replace the sampled value).

Every value is checked when the file is loaded -- parameter paths against the config schema (and a
loss's own parameters), bounds against the same validator a run uses (the low and the high end of
each range must both be valid configs), distributions, metric, ASHA and Optuna settings -- so a
bad file fails at once with one message naming the field.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslray.config import (SPACE_KEYS, Config, ConfigError, _set_path, compose, load_config, parse_overrides,
                           read_yaml, settings_from)
from sslray.search.schedulers import Asha, AshaConfig, Scheduler, parse_scheduler, scheduler_from_record

__all__ = ["AshaConfig", "OptunaConfig", "ParamSpec", "SearchSpace", "StopConfig", "load_search_space"]

METRICS = ("knn_top1", "probe_top1", "rankme")
DISTS = ("loguniform", "uniform", "int", "choice")


@dataclass
class ParamSpec:
    path: str
    dist: str
    low: float | None = None
    high: float | None = None
    values: list | None = None
    when: dict[str, list] = field(default_factory=dict)  # condition path -> the values that activate it

    def active(self, chosen: dict[str, Any], base: dict) -> bool:
        """Whether this parameter is sampled, given the values chosen so far."""
        return all(chosen.get(path, _get(base, path)) in values for path, values in self.when.items())


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
    base: dict[str, Any]  # the resolved pretraining config (file + overrides) every trial starts from
    params: list[ParamSpec]
    metric: str = "knn_top1"
    mode: str = "max"
    num_trials: int = 16
    max_concurrent: int = 1
    scheduler: Scheduler = field(default_factory=Asha)  # the plug-in: search.scheduler (or the older search.asha)
    optuna: OptunaConfig = field(default_factory=OptunaConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    source: str | None = None  # the file it came from
    text: str = ""  # its text, logged to MLflow with the search
    overrides: list[str] = field(default_factory=list)  # the command line's key=value, already in base

    @property
    def max_epochs(self) -> int:
        return int(self.base["train"]["epochs"])

    @property
    def asha(self) -> AshaConfig:
        """ASHA's settings when the scheduler is ASHA (older code and files speak of ``space.asha``)."""
        if self.scheduler.name != "asha":
            raise AttributeError(f"this search's scheduler is {self.scheduler.name}, not asha")
        return self.scheduler.settings

    @asha.setter
    def asha(self, settings: AshaConfig) -> None:
        self.scheduler = Asha(settings, self.scheduler.where if self.scheduler.name == "asha" else "search.asha")

    @property
    def conditional(self) -> bool:
        return any(p.when for p in self.params)

    def active_params(self, chosen: dict[str, Any]) -> list[str]:
        """The parameters a trial with these choices samples (in sampling order)."""
        out: dict[str, Any] = {}
        for p in self.params:
            if p.active(out, self.base):
                out[p.path] = chosen.get(p.path)
        return list(out)

    def trial_config(self, params: dict[str, Any], settings: dict[str, Any] | None = None) -> Config:
        """The validated Config of one trial: base + sampled parameters (+ the search's own
        settings, typed values at dotted paths)."""
        raw = copy.deepcopy(self.base)
        if params.get("loss.name", raw["loss"]["name"]) != raw["loss"]["name"]:
            raw["loss"]["params"] = {}  # the base's weights belong to the base's loss
        for path, value in params.items():
            _set(raw, path, value)
        return load_config(raw, settings)

    def to_record(self) -> dict[str, Any]:
        """What a resumed search must agree with: the resolved base and the search settings."""
        return {"base": self.base, "params": [dataclasses.asdict(p) for p in self.params], "metric": self.metric,
                "mode": self.mode, "num_trials": self.num_trials, "max_concurrent": self.max_concurrent,
                "scheduler": self.scheduler.record(), "optuna": dataclasses.asdict(self.optuna),
                "stop": dataclasses.asdict(self.stop),
                **({"asha": dataclasses.asdict(self.asha)} if self.scheduler.name == "asha" else {})}

    @classmethod
    def from_record(cls, s: dict[str, Any], source: str | None = None) -> "SearchSpace":
        """The space a search ran, from its space.json (one written before scheduler plug-ins too)."""
        return cls(base=s["base"], params=[ParamSpec(**p) for p in s["params"]], metric=s["metric"], mode=s["mode"],
                   num_trials=s["num_trials"], max_concurrent=s["max_concurrent"],
                   scheduler=scheduler_from_record(s), optuna=OptunaConfig(**s["optuna"]),
                   stop=StopConfig(**s["stop"]), source=source)


def normalized_record(record: dict[str, Any]) -> dict[str, Any]:
    """A space.json in today's form: one written before scheduler plug-ins names its scheduler."""
    if "scheduler" in record or "asha" not in record:
        return record
    return {**record, "scheduler": {"name": "asha", **record["asha"]}}


def _get(raw: dict, path: str) -> Any:
    node: Any = raw
    for k in path.split("."):
        if isinstance(node, list):
            node = node[int(k)] if k.isdigit() and int(k) < len(node) else None
        else:
            node = node.get(k) if isinstance(node, dict) else None
    return node


def _set(raw: dict, path: str, value: Any) -> None:
    _set_path(raw, path.split("."), value)  # the config's own override rule (list indices included)


def _check_path(path: str, base: Config) -> None:
    """The dotted path names a config field (loss parameters are checked in _check_loss_params)."""
    keys = path.split(".")
    if keys[:2] == ["loss", "params"] and len(keys) == 3:
        return
    node: Any = base
    for i, k in enumerate(keys):
        if isinstance(node, list):  # crop groups: views.crops.1.count (M views for UOTA, SwAV's small crops)
            if not (k.isdigit() and int(k) < len(node)):
                raise ConfigError(f"search.params.{path}: {'.'.join(keys[:i])} is a list of {len(node)}; "
                                  f"allowed: an index 0..{len(node) - 1}")
            node = node[int(k)]
            continue
        if not dataclasses.is_dataclass(node):
            raise ConfigError(f"search.params.{path}: {'.'.join(keys[:i])} is not a section; allowed: a config field")
        names = [f.name for f in dataclasses.fields(node)]
        if k not in names:
            where = ".".join(keys[:i]) or "config"
            raise ConfigError(f"search.params.{path}: unknown parameter path; allowed: {where} has {', '.join(names)}")
        node = getattr(node, k)


def _check_loss_params(params: list[ParamSpec], base: dict) -> None:
    """Each searched ``loss.params.X`` exists in every loss it can be sampled with."""
    from sslray.methods import method_params as loss_params

    by_path = {p.path: p for p in params}
    names = by_path["loss.name"].values if "loss.name" in by_path else [base["loss"]["name"]]
    for p in params:
        keys = p.path.split(".")
        if keys[:2] != ["loss", "params"]:
            continue
        losses = [n for n in names if n in p.when.get("loss.name", names)]
        lacking = [n for n in losses if keys[2] not in loss_params(n)]
        if not lacking:
            continue
        if "loss.name" in by_path:
            having = [n for n in names if keys[2] in loss_params(n)]
            allowed = (f"when: {{loss.name: [{', '.join(having)}]}} (the losses that have it)" if having else
                       "a parameter of one of the searched losses")
            raise ConfigError(f"search.params.{p.path}: loss {lacking[0]!r} has no parameter {keys[2]!r}; allowed: {allowed}")
        raise ConfigError(f"search.params.{p.path}: loss {lacking[0]!r} has no parameter {keys[2]!r}; "
                          f"allowed: {', '.join(loss_params(lacking[0]))}")


def _parse_param(path: str, spec: Any, earlier: dict[str, ParamSpec]) -> ParamSpec:
    where = f"search.params.{path}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping; allowed: {{dist: loguniform, low: 1, high: 100}}")
    unknown = sorted(set(spec) - {"dist", "low", "high", "values", "when"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: dist, low, high, values, when")
    when = _parse_when(where, spec.get("when"), earlier)
    dist = spec.get("dist")
    if dist not in DISTS:
        raise ConfigError(f"{where}.dist: {dist!r} is not allowed; allowed: {', '.join(DISTS)}")
    if dist == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.values: a non-empty list is required for dist=choice; allowed: [a, b, ...]")
        bad = [v for v in values if not isinstance(v, (bool, int, float, str))]
        if bad:
            raise ConfigError(f"{where}.values: {bad[0]!r} cannot be a choice; allowed: numbers, strings, booleans")
        return ParamSpec(path, dist, values=values, when=when)
    lo, hi = spec.get("low"), spec.get("high")
    for name, v in (("low", lo), ("high", hi)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}.{name}: {v!r} is not a number; allowed: a number for dist={dist}")
    if not lo < hi:
        raise ConfigError(f"{where}: empty range [{lo}, {hi}]; allowed: low below high")
    if dist == "loguniform" and lo <= 0:
        raise ConfigError(f"{where}.low: {lo} is out of range for dist=loguniform; allowed: > 0")
    if dist == "int" and (int(lo) != lo or int(hi) != hi):
        raise ConfigError(f"{where}: dist=int needs integer low and high, got {lo} and {hi}; allowed: integers")
    return ParamSpec(path, dist, float(lo) if dist != "int" else int(lo), float(hi) if dist != "int" else int(hi),
                     when=when)


def _parse_when(where: str, raw: Any, earlier: dict[str, ParamSpec]) -> dict[str, list]:
    if raw is None:
        return {}
    choices = [p for p, s in earlier.items() if s.dist == "choice"]
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}.when: expected a mapping; allowed: {{PATH: VALUE or [VALUES]}} with PATH one of "
                          f"the choice parameters listed before it ({', '.join(choices) or 'none'})")
    out = {}
    for path, values in raw.items():
        if path not in choices:
            raise ConfigError(f"{where}.when: {path!r} is not a choice parameter listed before it; "
                              f"allowed: {', '.join(choices) or '(none: list the choice parameter first)'}")
        values = values if isinstance(values, list) else [values]
        bad = [v for v in values if v not in earlier[path].values]
        if bad or not values:
            raise ConfigError(f"{where}.when.{path}: {bad[0] if bad else values!r} is not one of its values; "
                              f"allowed: {', '.join(map(str, earlier[path].values))}")
        out[path] = values
    return out


def load_search_space(path: str | Path, overrides: list[str] | None = None) -> SearchSpace:
    """Load, resolve (base file + ``config`` + command-line ``overrides``) and validate a search space."""
    path = Path(path)
    raw = read_yaml(path, "search-space file", "a mapping with base, config and search")
    text = path.read_text()
    unknown = sorted(set(raw) - set(SPACE_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; allowed: {', '.join(SPACE_KEYS)}")
    base = compose(path, raw)
    changes = parse_overrides(overrides)  # the command line's text, read once into typed values
    base_cfg = load_config(base, changes)  # the resolved base must itself be a valid run
    base = base_cfg.to_dict()
    s = raw.get("search")
    if not isinstance(s, dict):
        raise ConfigError(f"{path}: a 'search' section is required; allowed: search: {{params: ..., ...}}")
    allowed = {"metric", "mode", "num_trials", "max_concurrent", "params", "scheduler", "asha", "optuna", "stop"}
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
        raise ConfigError("search.params: at least one parameter is required; allowed: PATH: {dist: ..., ...}")
    parsed: dict[str, ParamSpec] = {}
    for p, spec in params_raw.items():
        _check_path(str(p), base_cfg)
        parsed[str(p)] = _parse_param(str(p), spec, parsed)
    params = list(parsed.values())
    _check_loss_params(params, base)
    for key in changes:
        if key in parsed:
            raise ConfigError(f"override {key}: it is a searched parameter, so the override would replace every "
                              f"sampled value; allowed: change its range in {path.name}, or drop it from search.params")
    space = SearchSpace(
        base=base, params=params, metric=metric, mode=mode,
        num_trials=_int(s, "num_trials", 16), max_concurrent=_int(s, "max_concurrent", 1),
        scheduler=parse_scheduler(s.get("scheduler"), s.get("asha")),
        optuna=settings_from(OptunaConfig, s.get("optuna"), "search.optuna"),
        stop=settings_from(StopConfig, s.get("stop"), "search.stop"),
        source=str(path), text=text, overrides=list(overrides or []),
    )
    _check_ends(space)
    if space.num_trials < 1:
        raise ConfigError(f"search.num_trials: {space.num_trials} is out of range; allowed: >= 1")
    if space.max_concurrent < 1:
        raise ConfigError(f"search.max_concurrent: {space.max_concurrent} is out of range; allowed: >= 1")
    space.scheduler.check(space)
    if space.optuna.n_startup_trials < 0:
        raise ConfigError(f"search.optuna.n_startup_trials: {space.optuna.n_startup_trials} is out of range; allowed: >= 0")
    for i, point in enumerate(space.optuna.points_to_evaluate):
        _check_point(space, i, point)
    return space


def _int(s: dict, key: str, default: int) -> int:
    v = s.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"search.{key}: {v!r} is not an integer; allowed: an integer >= 1")
    return v


def _check_ends(space: SearchSpace) -> None:
    """Every end of every range (and every choice) is a valid run, under conditions that activate it."""
    from sslray.methods import method_params as loss_params

    by_path = {p.path: p for p in space.params}
    for p in space.params:
        ends = p.values if p.dist == "choice" else [p.low, p.high]
        condition = {path: values[0] for path, values in p.when.items()}
        if p.path.startswith("loss.params.") and "loss.name" in by_path and "loss.name" not in condition:
            condition["loss.name"] = next(n for n in by_path["loss.name"].values if n in p.when.get("loss.name", [n])
                                          and p.path.split(".")[2] in loss_params(n))
        for v in ends:
            chosen = {**condition, p.path: v}
            try:
                space.trial_config(chosen)
            except ConfigError as e:
                try:  # a trial also sets what its choices make active (vicreg_tico's nu under a `when`)
                    space.trial_config(_with_companions(space, chosen))
                except ConfigError:
                    raise ConfigError(f"search.params.{p.path}: value {v!r} is not a valid setting ({e})") from None


def _with_companions(space: SearchSpace, chosen: dict[str, Any]) -> dict[str, Any]:
    """``chosen`` plus every other parameter active under it, at its first value or low end."""
    out = dict(chosen)
    for q in space.params:
        if q.path not in out and q.active(out, space.base):
            out[q.path] = q.values[0] if q.dist == "choice" else q.low
    return out


def _check_point(space: SearchSpace, i: int, point: Any) -> None:
    where = f"search.optuna.points_to_evaluate[{i}]"
    if not isinstance(point, dict):
        raise ConfigError(f"{where}: expected a mapping; allowed: {{PATH: value, ...}} of the searched parameters")
    by_path = {p.path: p for p in space.params}
    for path, v in point.items():
        p = by_path.get(path)
        if p is not None and p.dist == "choice" and v not in p.values:
            raise ConfigError(f"{where}.{path}: {v!r} is not one of its values; allowed: {', '.join(map(str, p.values))}")
        if p is not None and p.dist != "choice" and not (p.low <= v <= p.high):
            raise ConfigError(f"{where}.{path}: {v!r} is outside its range; allowed: [{p.low:g}, {p.high:g}]")
    active = space.active_params(point)
    if set(point) != set(active):
        raise ConfigError(f"{where}: must set exactly the parameters its choices make active "
                          f"({', '.join(sorted(active))}); got {', '.join(sorted(point))}; "
                          f"allowed: {', '.join(sorted(active))}")
    try:
        space.trial_config(point)
    except ConfigError as e:
        raise ConfigError(f"{where}: not a valid setting ({e})") from None
