"""The config rules that need a registry: the data sources, the encoders, the methods and their
parameters, crops and batch. They live here, above the registries, and register with
:func:`sslray.config.rule`; the sslray package imports this module, so every config loaded anywhere
is checked by them (sslray.config itself imports nothing from sslray)."""
from __future__ import annotations

from sslray import data as data_mod
from sslray import methods, models
from sslray.config import Config, ConfigError, _choice, rule


@rule
def data_source(cfg: Config) -> None:
    _choice("data.source", cfg.data.source, list(data_mod.SOURCES))


@rule
def encoder_and_views(cfg: Config) -> None:
    v, m = cfg.views, cfg.model
    _choice("model.encoder", m.encoder, list(models.ENCODERS))
    try:
        models.projector_dims(m.projector)
    except ValueError as e:
        raise ConfigError(f"model.projector: {e}") from None
    # here, where the encoder is known: too small a view would fail (small_cnn) or degenerate (ResNets)
    # at the first step, after the run directory exists
    smallest = models.min_input_size(m.encoder, m.stem, v.size)  # the stem is chosen for views.size
    stem = "" if m.encoder == "small_cnn" else f" with model.stem={m.stem}"
    for where, size in [("views.size", v.size)] + [(f"views.crops.{i}.size", g.size) for i, g in enumerate(v.crops)]:
        if size is not None and size < smallest:
            raise ConfigError(f"{where}: {size} is too small for model.encoder={m.encoder}{stem}; "
                              f"allowed: >= {smallest}")


@rule
def method(cfg: Config) -> None:
    name, v = cfg.loss.name, cfg.views
    _choice("loss.name", name, list(methods.METHODS))
    try:
        methods.check_method(name, cfg.loss.params, dim=models.projector_dims(cfg.model.projector)[-1])
    except (TypeError, ValueError) as e:
        raise ConfigError(f"loss.params: {e}") from None
    weighted = [n for n, m in methods.METHODS.items() if m.view_weighting]
    if cfg.loss.uota.enabled and name not in weighted:
        raise ConfigError(f"loss.uota.enabled: {name}'s loss is not a mean over views; allowed: true only "
                          f"with loss.name {', '.join(weighted)}")
    crops = [g.count for g in v.crops]
    wanted = methods.METHODS[name].crops
    if wanted is not None and sum(crops) != wanted:
        raise ConfigError(f"views.crops: {name} takes {wanted} crops per image, these groups give "
                          f"{sum(crops)} ({' + '.join(map(str, crops))}); allowed: counts summing to {wanted}")
    if wanted is None and sum(crops) < 2:
        raise ConfigError(f"views.crops: {name} takes 2 or more crops per image, these groups give "
                          f"{sum(crops)}; allowed: counts summing to 2 or more")
    try:
        methods.METHODS[name].check_batch(cfg.loss.params, cfg.train.batch_size)
    except ValueError as e:
        raise ConfigError(f"train.batch_size: {e}") from None
