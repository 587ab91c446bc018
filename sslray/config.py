"""The one typed configuration schema of sslray.

A run is described by :class:`Config` (data, views, model, loss, optim, train, eval). It is loaded
from YAML, overridden from the command line as ``key.sub=value`` and validated *before any data is
read*: unknown keys, wrong types and out-of-range values raise one :class:`ConfigError` naming the
field and what is allowed.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml


class ConfigError(ValueError):
    """Bad configuration: the message names the field and the allowed values."""


# --------------------------------------------------------------------------------------- schema
def knob(default: Any = dataclasses.MISSING, *, doc: str, lo: float | None = None, hi: float | None = None,
         lo_open: bool = False, hi_open: bool = False, choices: tuple | None = None, unit: str | None = None,
         path: bool = False, ordered: bool = False, factory: Any = None) -> Any:
    """A config field with everything about it in one place: its default, its one-line doc, its
    unit, and what :func:`validate` allows -- an interval (``lo``/``hi``, open or closed; for a
    tuple, each element; ``ordered``: the second element at least the first), or ``choices``.
    ``path``: a local path that is made absolute when the config is loaded (Ray workers and Tune
    trials run in other folders)."""
    meta = {"doc": doc, "lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "choices": choices,
            "unit": unit, "path": path, "ordered": ordered}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    source: str = knob("cifar10", doc="cifar10 | cifar100 | stl10 | imagefolder | parquet | synthetic")
    root: str = knob("./data", path=True, doc="torchvision files or <root>/<name>/{train,test}.parquet")
    train_path: str | None = knob(None, path=True, doc="imagefolder / parquet: file, folder of shards or URI")
    test_path: str | None = knob(None, path=True, doc="imagefolder / parquet: the test split's")
    image_column: str = knob("image", doc="parquet: the column of encoded image bytes")
    label_column: str = knob("label", doc="parquet: the column of integer labels")
    num_classes: int | None = knob(None, lo=1, doc="known class count; labels outside [0, n) are errors")
    image_size: int | None = knob(None, lo=8, unit="px", doc="resize decoded images to this square size (None: keep)")
    download: bool = knob(True, doc="torchvision download when no local copy exists")
    limit: int | None = knob(None, lo=1, unit="images", doc="class-stratified subset of the training split")
    fraction: float | None = knob(None, lo=0, hi=1, lo_open=True, doc="... or this fraction of it")
    test_limit: int | None = knob(None, lo=1, unit="images", doc="class-stratified subset of the test split")
    cache_dir: str | None = knob(None, path=True, doc="decoded uint8 arrays are cached here (None: no cache)")
    # synthetic source (tests and smoke runs only)
    synthetic_classes: int = knob(10, lo=2, doc="synthetic source: classes")
    synthetic_train_size: int = knob(512, lo=2, unit="images", doc="synthetic source: training images")
    synthetic_test_size: int = knob(256, lo=1, unit="images", doc="synthetic source: test images")
    synthetic_image_size: int = knob(32, lo=8, unit="px", doc="synthetic source: image side")


@dataclass
class ViewConfig:
    """The augmentation of one view; semantics as torchvision's transforms."""

    crop_scale: tuple[float, float] = knob((0.2, 1.0), lo=0, hi=1, lo_open=True, ordered=True,
                                           doc="RandomResizedCrop's area fraction range")
    crop_ratio: tuple[float, float] = knob((3 / 4, 4 / 3), lo=0, lo_open=True, ordered=True,
                                           doc="RandomResizedCrop's aspect-ratio range")
    hflip_p: float = knob(0.5, lo=0, hi=1, doc="probability of a horizontal flip")
    jitter_p: float = knob(0.8, lo=0, hi=1, doc="probability of colour jitter")
    brightness: float = knob(0.4, lo=0, doc="colour jitter's brightness strength")
    contrast: float = knob(0.4, lo=0, doc="colour jitter's contrast strength")
    saturation: float = knob(0.2, lo=0, doc="colour jitter's saturation strength")
    hue: float = knob(0.1, lo=0, hi=0.5, doc="colour jitter's hue strength")
    grayscale_p: float = knob(0.2, lo=0, hi=1, doc="probability of grayscale")
    blur_p: float = knob(0.0, lo=0, hi=1, doc="probability of Gaussian blur")
    blur_sigma: tuple[float, float] = knob((0.1, 2.0), lo=0, lo_open=True, ordered=True, unit="px",
                                           doc="Gaussian blur's sigma range")
    solarize_p: float = knob(0.0, lo=0, hi=1, doc="probability of solarization")
    solarize_threshold: float = knob(0.5, lo=0, hi=1, doc="on the [0, 1] scale (torchvision's 128 for uint8)")


@dataclass
class CropGroup(ViewConfig):
    """``count`` crops of side ``size`` (None: ``views.size``), each drawn with this augmentation."""

    count: int = knob(1, lo=1, doc="crops of this group per image")
    size: int | None = knob(None, lo=8, unit="px", doc="side of these crops (None: views.size)")


def _two_crops() -> list[CropGroup]:
    return [CropGroup(), CropGroup()]


PRESETS = ("symmetric", "asymmetric", "custom")


@dataclass
class ViewsConfig:
    """The crops of each image, as groups: the default is two 32 px views (two groups of one, so
    an asymmetric preset can augment them differently); SwAV's multi-crop adds a group such as
    ``{count: 6, size: 16, crop_scale: [0.14, 0.5]}``. Crops are ordered group by group; the
    encoder runs once per crop size. Override one group's field as ``views.crops.1.solarize_p=0.3``."""

    preset: str = knob("symmetric", choices=PRESETS, doc="per-group augmentation defaults (see view_preset)")
    size: int = knob(32, lo=8, unit="px", doc="the side of the crops (unless a group sets its own) and of eval images")
    crops: list[CropGroup] = knob(factory=_two_crops, doc="the crop groups, in order")
    mean: tuple[float, float, float] = knob((0.4914, 0.4822, 0.4465), doc="per-channel normalisation mean")
    std: tuple[float, float, float] = knob((0.2470, 0.2435, 0.2616), lo=0, lo_open=True,
                                           doc="per-channel normalisation std")


@dataclass
class ModelConfig:
    encoder: str = knob("resnet18", doc="resnet18 | resnet50 | small_cnn")
    stem: str = knob("auto", choices=("auto", "cifar", "imagenet"), doc="auto: cifar for images <= 64 px")
    projector: str = knob("2048-2048-2048", doc="hidden-...-output widths: Linear-BN-ReLU, plain last Linear")
    width: int = knob(32, lo=1, doc="small_cnn base width (representation = 8 x width)")
    sync_batchnorm: bool = knob(True, doc="BatchNorm over the global batch; only used with more than one worker")


@dataclass
class UotaConfig:
    """UOTA view weighting (sslray.methods.uota) for methods whose loss is a mean over views."""

    enabled: bool = knob(False, doc="weight each view's loss term by UOTA")
    tau: float = knob(350.0, lo=0, lo_open=True, doc="distances are divided by tau: larger = weights closer to 1")
    eps: float = knob(1e-8, lo=0, lo_open=True, doc="added to the pooled covariance's diagonal")
    start_epoch: int = knob(0, lo=0, doc="0-based; weights are 1 before it")


@dataclass
class LossConfig:
    name: str = knob("vicreg", doc="the method (sslray.methods): its loss, networks and state")
    params: dict[str, float | bool] = knob(factory=dict, doc="the method's paper-named parameters; see sslray.methods")
    uota: UotaConfig = knob(factory=UotaConfig, doc="UOTA view weighting")


@dataclass
class OptimConfig:
    name: str = knob("lars", choices=("sgd", "adamw", "lars"), doc="the optimizer")
    lr: float = knob(0.3, lo=0, lo_open=True, doc="base lr for a batch of lr_batch_size; scaled linearly by the batch")
    lr_batch_size: int = knob(256, lo=1, unit="images", doc="the batch the base lr is stated for")
    weight_decay: float = knob(1e-4, lo=0, doc="decoupled for adamw; L2 for sgd and lars")
    momentum: float = knob(0.9, lo=0, hi=1, hi_open=True, doc="sgd / lars momentum")
    betas: tuple[float, float] = knob((0.9, 0.999), lo=0, hi=1, hi_open=True, doc="adamw betas")
    eta: float = knob(0.02, lo=0, lo_open=True, doc="LARS trust coefficient")
    warmup_epochs: float = knob(10.0, lo=0, unit="epochs", doc="linear warm-up")
    min_lr_ratio: float = knob(0.0, lo=0, hi=1, doc="cosine decays to lr * min_lr_ratio")
    probe_lr: float = knob(1e-3, lo=0, lo_open=True, doc="online linear probe (AdamW on detached features)")
    grad_clip: float | None = knob(None, lo=0, lo_open=True, doc="max gradient norm (None: no clipping)")


COMPILE_MODES = ("false", "true", "max-autotune")


@dataclass
class TrainConfig:
    epochs: int = knob(100, lo=1, unit="epochs", doc="passes over the training split")
    batch_size: int = knob(256, lo=2, unit="images", doc="per-process batch")
    seed: int = knob(0, doc="weights, data order and augmentation all follow from it")
    device: str = knob("auto", choices=("auto", "cpu", "cuda"), doc="where the loop runs")
    precision: str = knob("auto", choices=("auto", "fp32", "bf16"), doc="auto: bf16 on CUDA, fp32 on CPU")
    channels_last: str = knob("auto", choices=("auto", "true", "false"), doc="auto: on CUDA")
    # Costs a compile on the first step (~25 s for a tiny CNN on 2 CPU cores, more for ResNet-18;
    # max-autotune also benchmarks kernels and adds CUDA graphs) and another on every recompile.
    compile: str = knob("false", choices=COMPILE_MODES, doc="torch.compile of the training forward and backward")
    num_threads: int | None = knob(None, lo=1, doc="torch CPU threads (None: torch's default)")
    output_dir: str = knob("runs", path=True, doc="run directories go here")
    run_name: str | None = knob(None, doc="default: <loss>-<encoder>-<timestamp>")
    checkpoint_every: int = knob(10, lo=0, unit="epochs", doc="a checkpoint is always written at the end")
    keep_checkpoints: int = knob(2, lo=1, doc="the newest checkpoints kept")
    resume: str | None = knob(None, path=True, doc="checkpoint path, or 'auto' for the run dir's latest")
    log_every: int = knob(50, lo=1, unit="steps", doc="between progress-line refreshes")


@dataclass
class EvalConfig:
    every: int = knob(1, lo=0, unit="epochs", doc="between kNN / probe / collapse evaluations (0: only at the end)")
    knn_k: int = knob(200, lo=1, doc="neighbours of the weighted kNN")
    knn_t: float = knob(0.1, lo=0, lo_open=True, doc="kNN temperature")
    knn_chunk: int = knob(1024, lo=1, doc="test rows scored at a time (memory: chunk x train rows)")
    # An evaluation costs a forward pass over bank + test images: a search scoring every epoch can
    # afford 10,000, not 50,000 (small_cnn on 2 CPU cores: ~2 s instead of ~10 s, against a ~26 s
    # epoch). In-training evaluation only: `python -m sslray.eval` always uses the whole training split.
    knn_train_limit: int | None = knob(None, lo=1, unit="images",
                                       doc="kNN bank: a class-stratified subset of the training split (None: all)")
    probe_epochs: int = knob(100, lo=0, unit="epochs", doc="offline linear probe on frozen features")
    probe_lr: float = knob(1e-2, lo=0, lo_open=True, doc="offline linear probe's lr")
    probe_batch_size: int = knob(256, lo=1, unit="images", doc="offline linear probe's batch")
    feature_batch_size: int = knob(512, lo=1, unit="images", doc="batch of feature extraction")


@dataclass
class ScaleConfig:
    """Where the loop runs. workers=0: in this process, no Ray. workers=N: N Ray Train workers
    (DDP; gloo on CPU, NCCL on GPU), train.batch_size each, so the global batch is N x batch_size."""

    workers: int = knob(1, lo=0, doc="Ray Train workers (0: this process, no Ray)")
    use_gpu: bool = knob(False, doc="one GPU (gpus_per_worker) per worker")
    cpus_per_worker: float = knob(1.0, lo=0, lo_open=True, doc="also torch's thread count in the worker")
    gpus_per_worker: float = knob(1.0, lo=0, lo_open=True, doc="with use_gpu")
    placement_strategy: str = knob("PACK", choices=("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"),
                                   doc="Ray placement of the workers")
    address: str | None = knob(None, doc="Ray cluster address; None: $RAY_ADDRESS, else a local Ray")
    storage_path: str | None = knob(None, path=True, doc="checkpoints: local folder or pyarrow URI (s3://, gs://); "
                                                         "None: train.output_dir")
    max_failures: int = knob(0, lo=-1, doc="worker-group restarts from the latest checkpoint (-1: forever)")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def updated(self, changes: dict[str, Any]) -> Config:
        """A new validated Config with typed values at dotted paths (``{"train.seed": 3,
        "train.output_dir": "/tmp/exp #1"}``) -- how code edits a config. No value goes through
        text, so a path keeps every character it has."""
        return load_config(self.to_dict(), changes)


# ------------------------------------------------------------------------------- view presets
def view_preset(name: str, group: int) -> dict:
    """The augmentation defaults of crop group ``group`` (0-based) under a preset, as a dict of
    :class:`ViewConfig` fields.

    symmetric  -- every group alike (the usual CIFAR recipe: no blur, light solarization).
    asymmetric -- BYOL / VICReg ImageNet augmentation: group 0 blur 1.0, no solarize; group 1 blur
                  0.1, solarize 0.2; further groups (multi-crop) blur 0.5, no solarize (SwAV's).
    custom     -- ViewConfig defaults; set every field yourself.
    """
    if name == "symmetric":
        return {"blur_p": 0.0, "solarize_p": 0.1}
    if name == "asymmetric":
        return [{"blur_p": 1.0, "solarize_p": 0.0}, {"blur_p": 0.1, "solarize_p": 0.2}][group] if group < 2 \
            else {"blur_p": 0.5, "solarize_p": 0.0}
    if name == "custom":
        return {}
    raise ConfigError(f"views.preset: unknown preset {name!r}; allowed: {', '.join(PRESETS)}")


# ------------------------------------------------------------------------------------ loading
def load_config(source: str | Path | dict | None = None,
                overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Load a YAML file (or dict), apply overrides, validate, return Config.

    ``overrides`` are either command-line text, ``["key.sub=value", ...]`` (read by
    :func:`parse_overrides`), or typed values at dotted paths, ``{"key.sub": value}`` (what code
    passes: never text to be parsed again)."""
    if source is None:
        raw: dict = {}
    elif isinstance(source, dict):
        raw = copy.deepcopy(source)
    else:
        raw = read_yaml(Path(source))
    changes = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    for key, value in changes.items():
        _set_path(raw, key.split("."), value)
    cfg = from_dict(raw)
    validate(cfg)
    return _absolute_paths(cfg)


SECTIONS = "a mapping of sections data, views, model, loss, optim, train, eval, scale"


def read_yaml(path: Path, what: str = "config file", mapping: str = SECTIONS) -> dict:
    """A YAML file's top-level mapping; anything else is one ConfigError naming the file."""
    where = f"{what} {path}"
    if path.is_dir():
        raise ConfigError(f"{where}: is a folder; allowed: a YAML file")
    if not path.exists():
        raise ConfigError(f"{where}: not found; allowed: a YAML file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML ({yaml_problem(e)}); allowed: {mapping}") from None
    except UnicodeDecodeError:  # e.g. a checkpoint passed where the config goes
        raise ConfigError(f"{where}: not a text file; allowed: a YAML file") from None
    except OSError as e:
        raise ConfigError(f"{where}: cannot be read ({e.strerror}); allowed: a readable YAML file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the top level is a {type(raw).__name__}; allowed: {mapping}")
    return raw


SPACE_KEYS = ("base", "config", "search")  # the top level of a search-space file


def compose(path: Path, raw: dict) -> dict:
    """The config a search-space file (``base:`` file, relative to it, + its ``config:`` section)
    describes, as a raw mapping (validated by whoever loads it). ``raw`` is the file's mapping."""
    base: dict = {}
    if raw.get("base"):
        base = read_yaml((path.parent / str(raw["base"])).resolve(), "base:")
    return deep_merge(base, raw.get("config") or {})


def read_composed(path: Path) -> dict:
    """A run config file as a raw mapping; a search-space file (it has a ``search:`` section) as the
    base config every trial starts from (:func:`compose`)."""
    raw = read_yaml(path)
    return compose(path, raw) if "search" in raw else raw


def deep_merge(a: dict, b: dict) -> dict:
    """``a`` with ``b``'s values, mappings merged key by key (copies: neither input changes)."""
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one phrase: what is wrong and where (line, column from 1)."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


OVERRIDE = "key.sub=value, e.g. train.epochs=5"
NULLS = ("", "~", "null", "Null", "NULL")  # YAML's spellings of null


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """Command-line ``key.sub=value`` items as typed values at dotted paths, read once, here.

    A string field takes the text exactly as written (a path with spaces, ``#``, ``: ``, ``[``, ``=``
    or any letters is that path; YAML would cut ``/data/set #1`` at the comment); a nullable one
    takes YAML's null spellings (empty, ``null``, ``~``) as null. Every other value is read as YAML
    (``5`` an int, ``[0.2, 1]`` a list, ``true`` a boolean, empty: null)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: no key=value; allowed: {OVERRIDE}")
        out[key] = _override_value(key, text, item)
    return out


def _override_value(key: str, text: str, item: str) -> Any:
    if key in SWITCHES:  # words; YAML's boolean spellings (True, yes, on) mean "true" / "false"
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            return text
        return str(value).lower() if isinstance(value, bool) else value
    tp = field_type(key)
    if tp is not None:
        args = typing.get_args(tp)
        if tp is str or (set(args) == {str, type(None)}):
            return None if type(None) in args and text in NULLS else text
    try:
        return yaml.safe_load(text) if text else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({yaml_problem(e)}); "
                          f"allowed: {OVERRIDE}") from None


def field_type(path: str) -> Any:
    """The declared type of the config field at a dotted path (``views.crops.1.size``,
    ``loss.params.mu``), or None where the path names no field (validation then says so)."""
    tp: Any = Config
    for key in path.split("."):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(inner) == 1:
            tp = inner[0]
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            if key not in hints:
                return None
            tp = hints[key]
        elif typing.get_origin(tp) is list and key.isdigit():
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
    return tp


def schema_fields(cls: type | None = None, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    """Every leaf field of the schema as (dotted path, Field), crop-group fields as ``views.crops.N.*``
    with N written ``N`` -- the table the knobs' declarations make."""
    out = []
    for f in dataclasses.fields(cls or Config):
        tp = typing.get_type_hints(cls or Config)[f.name]
        inner = typing.get_args(tp)[0] if typing.get_origin(tp) is list else None
        if dataclasses.is_dataclass(tp):
            out += schema_fields(tp, f"{prefix}{f.name}.")
        elif inner is not None and dataclasses.is_dataclass(inner):
            out += schema_fields(inner, f"{prefix}{f.name}.N.")
        else:
            out.append((prefix + f.name, f))
    return out


# Local paths a config carries to Ray workers and Tune trials, which run in other working
# directories: made absolute against the directory the config is loaded in.
PATH_FIELDS = tuple(p for p, f in schema_fields() if f.metadata.get("path"))


def absolute_path(value: Any) -> Any:
    """A relative local path made absolute; URIs (``s3://``, ``file://``), ``auto`` and None as they are."""
    if not isinstance(value, str) or not value or "://" in value or value == "auto":
        return value
    return os.path.abspath(os.path.expanduser(value))


def absolute_overrides(overrides: list[str] | None) -> list[str]:
    """``key=value`` overrides with relative local paths (``data.root=../data``) made absolute, as
    text: what a search or comparison records and re-applies in its trials (other folders)."""
    out = []
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if sep and key.strip() in PATH_FIELDS and value not in NULLS:
            item = f"{key}={absolute_path(value)}"
        out.append(item)
    return out


def _absolute_paths(cfg: Config) -> Config:
    for dotted in PATH_FIELDS:
        section, key = dotted.split(".")
        node = getattr(cfg, section)
        setattr(node, key, absolute_path(getattr(node, key)))
    return cfg


def from_dict(raw: dict) -> Config:
    raw = copy.deepcopy(raw)
    views = raw.setdefault("views", {})
    if isinstance(views, dict):  # a preset provides per-group defaults that explicit fields override
        preset = views.get("preset", ViewsConfig.preset)
        if "crops" not in views and ("view1" in views or "view2" in views):
            # a config saved before crop groups (view1/view2): the same two views, as two groups
            views["crops"] = [views.pop("view1", {}), views.pop("view2", {})]
        crops = views.get("crops")
        if crops is None:
            crops = [{} for _ in ViewsConfig().crops]
        if isinstance(crops, list) and isinstance(preset, str):  # anything else: _build names the problem
            views["crops"] = [{**view_preset(preset, i), **g} if isinstance(g, dict) else g for i, g in enumerate(crops)]
    return _build(Config, raw, "")


def _set_path(raw: dict, keys: list[str], value: Any) -> None:
    """Set ``raw[k0][k1]...`` to value; a numeric key indexes a list (``views.crops.1.size``), which
    grows by empty groups up to it, so ``views.crops.1.x=...`` edits the second default group."""
    node: Any = raw
    for i, k in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not k.isdigit():
                raise ConfigError(f"override {'.'.join(keys)}: {'.'.join(keys[:i])} is a list; "
                                  f"allowed: an index, e.g. {'.'.join(keys[:i])}.0")
            k = int(k)
            node.extend({} for _ in range(k + 1 - len(node)))
        elif not isinstance(node, dict):
            raise ConfigError(f"override {'.'.join(keys)}: {keys[i - 1]} is not a section; allowed: {OVERRIDE}")
        if last:
            node[k] = value
            return
        nxt = node.get(k) if isinstance(node, dict) else node[k]
        if nxt is None:  # an absent list of crop groups starts as the default groups, not as none
            nxt = [{} for _ in ViewsConfig().crops] if k == "crops" else [] if keys[i + 1].isdigit() else {}
            node[k] = nxt
        node = nxt


def _build(cls: type, raw: Any, prefix: str) -> Any:
    names = sorted(f.name for f in dataclasses.fields(cls))
    where = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {raw!r} is not a mapping; allowed: a mapping of {', '.join(names)}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(map(str, set(raw) - set(names)))  # str: YAML keys may be numbers
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(names)}")
    kwargs = {name: _coerce(hints[name], value, prefix + name) for name, value in raw.items()}
    return cls(**kwargs)


def _wrong(name: str, value: Any, kind: str, nullable: bool) -> ConfigError:
    return ConfigError(f"{name}: {value!r} is not {kind}; allowed: {kind}{' or null' if nullable else ''}")


def _coerce(tp: Any, value: Any, name: str, nullable: bool = False) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, name + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 2 and bool in inner:  # float | bool (loss parameters): the loss checks which each is
            if isinstance(value, bool):
                return value
            try:
                return _coerce(inner[0], value, name)
            except ConfigError:
                raise _wrong(name, value, "a number or true/false", nullable) from None
        return _coerce(inner[0], value, name, nullable=type(None) in args)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            kinds = "numbers" if set(args) <= {int, float} else "values"
            raise ConfigError(f"{name}: {value!r} is not a list of {len(args)}; allowed: a list of {len(args)} {kinds}")
        return tuple(_coerce(a, v, f"{name}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is list:
        if not isinstance(value, list) or not value:
            raise _wrong(name, value, "a non-empty list", nullable)
        return [_coerce(args[0], v, f"{name}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            kind = {float: "a mapping of name: number", float | bool: "a mapping of name: number or true/false"}
            raise _wrong(name, value, kind.get(args[1], "a mapping"), nullable)
        return {str(k): _coerce(args[1], v, f"{name}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: {value!r} is not true or false; allowed: true, false{', null' if nullable else ''}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _wrong(name, value, "an integer", nullable)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise _wrong(name, value, "a number", nullable)
    if tp is str:
        if isinstance(value, str):
            return value
        if name in SWITCHES:  # YAML reads true/false as booleans; a number is neither
            if isinstance(value, bool):
                return str(value).lower()
            raise ConfigError(f"{name}: {value!r} is not allowed; allowed: {', '.join(SWITCHES[name])}")
        raise _wrong(name, value, "a string", nullable)
    return value


# String fields that YAML may also give as true / false (read as booleans): their allowed values.
SWITCHES = {p: f.metadata["choices"] for p, f in schema_fields()
            if f.metadata.get("choices") and {"true", "false"} <= set(f.metadata["choices"])}


# --------------------------------------------------------------------------------- validation
def _choice(name: str, value: Any, allowed: list) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: {value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")


def _range(name: str, value: float | None, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, hi_open: bool = False) -> None:
    if value is None:
        return
    bad = (lo is not None and (value < lo or (lo_open and value == lo))) or \
          (hi is not None and (value > hi or (hi_open and value == hi)))
    if bad:
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        interval = f"{'(' if lo_open or lo is None else '['}{lo_s}, {hi_s}{')' if hi_open or hi is None else ']'}"
        raise ConfigError(f"{name}: {value!r} is out of range; allowed: {interval}")


def load_knobs(cls: type, raw: dict, where: str) -> Any:
    """A dataclass of knobs (:func:`knob`) from a mapping, checked against the declarations; an
    error names ``<where>: <field>``. Absent fields take their declared defaults."""
    obj = _build(cls, raw, f"{where}: ")
    _check_declared(obj, f"{where}: ")
    return obj


def settings_from(cls: type, raw: Any, where: str) -> Any:
    """A small settings dataclass (a search's ``optuna``, ``stop``, a scheduler's settings) from a
    YAML mapping: unknown keys and wrong types are one ConfigError naming ``<where>.<key>``; absent
    keys take the dataclass's defaults."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping; allowed: keys {', '.join(f.name for f in dataclasses.fields(cls))}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
    hints = typing.get_type_hints(cls)
    for k, v in raw.items():
        want = hints[k]
        ok = (v is None and type(None) in typing.get_args(want)) or isinstance(v, typing.get_origin(want) or want) \
            or (want in (float, float | None) and isinstance(v, (int, float)) and not isinstance(v, bool))
        if isinstance(v, bool) and want in (int, float, float | None):
            ok = False
        if not ok:
            kind = {int: "an integer", float: "a number", float | None: "a number or null"}.get(want, "a list")
            raise ConfigError(f"{where}.{k}: {v!r} has the wrong type; allowed: {kind}")
    return cls(**raw)


def _check_declared(node: Any, prefix: str) -> None:
    """Each field's declared choices and bounds (see :func:`knob`), in declaration order."""
    for f in dataclasses.fields(node):
        name, value, m = prefix + f.name, getattr(node, f.name), f.metadata
        if dataclasses.is_dataclass(value):
            _check_declared(value, name + ".")
            continue
        if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            for i, item in enumerate(value):
                _check_declared(item, f"{name}.{i}.")
            continue
        if m.get("choices") is not None:
            _choice(name, value, list(m["choices"]))
        if m.get("lo") is None and m.get("hi") is None:
            continue
        if isinstance(value, tuple):
            for i, v in enumerate(value):
                after = m["ordered"] and i > 0  # at least the element before it
                _range(f"{name}[{i}]", v, value[i - 1] if after else m["lo"], m["hi"],
                       lo_open=m["lo_open"] and not after, hi_open=m["hi_open"])
        else:
            _range(name, value, m["lo"], m["hi"], lo_open=m["lo_open"], hi_open=m["hi_open"])


# Rules that need a registry (data sources, encoders, methods) live with the registries, which sit
# above this module; each registers here (sslray.rules, imported by the sslray package itself, so
# they are in place before any config is loaded) and validate() runs them after the field checks.
RULES: list[Callable[[Config], None]] = []


def rule(check: Callable[[Config], None]) -> Callable[[Config], None]:
    """Register a validation rule: ``check(cfg)`` raises ConfigError naming the field."""
    RULES.append(check)
    return check


def validate(cfg: Config) -> None:
    """Check every value; raise ConfigError naming the first bad field. Reads no data.

    Every field's own choices and bounds come from its declaration (:func:`knob`); then the rules
    between fields of the schema, then the registered :data:`RULES` (data sources, encoders, the
    method's parameters, crops and batch)."""
    assert RULES, "no validation rules registered: sslray.rules was not imported"
    _check_declared(cfg, "")
    d, t = cfg.data, cfg.train
    if d.source in ("imagefolder", "parquet") and not d.train_path:
        raise ConfigError(f"data.train_path: required for data.source={d.source}; allowed: a file, a folder of "
                          "shards or a URI")
    if d.limit is not None and d.fraction is not None:
        raise ConfigError("data.limit / data.fraction: both are set; allowed: at most one of them")
    _range("loss.uota.start_epoch", cfg.loss.uota.start_epoch, 0, t.epochs - 1)
    if t.resume == "auto" and not t.run_name:  # else a fresh run would start under a new timestamp name
        raise ConfigError("train.resume: 'auto' needs train.run_name (the run to continue); "
                          "allowed: train.run_name=NAME with train.resume=auto, or a checkpoint path")
    if cfg.scale.use_gpu and t.device == "cpu":
        raise ConfigError("scale.use_gpu: true contradicts train.device=cpu; allowed: use_gpu=false, or device auto/cuda")
    for check in RULES:
        check(cfg)


def _plain(obj: Any) -> Any:
    """Tuples to lists, recursively, so the dict round-trips through YAML and JSON."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def dump_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
