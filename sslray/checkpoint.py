"""Checkpoints: written atomically, read with ``weights_only=True``, reusable downstream.

A checkpoint is one ``torch.save`` dict holding only tensors and plain Python values, so it loads
with ``torch.load(weights_only=True)`` (no pickled code runs on load): ``{"format": 1}`` plus a
:class:`TrainingState`, whose every entry a resume reads back.

Writes go to a temporary file in the same folder and are moved into place with ``os.replace``, so
a crash mid-write never leaves a truncated checkpoint under the final name.

Reading anything else -- a missing path, a text file, a truncated copy, another program's torch
file -- raises :class:`CheckpointError`, one line naming the file, never a raw torch or pickle error.
"""
from __future__ import annotations

import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, TypedDict

import torch

from sslray.config import ConfigError

FORMAT = 1
RAY_CKPT_FILE = "checkpoint.pt"  # the file inside a Ray Train checkpoint folder (epoch_NNNN/)
_NAME = re.compile(r"^epoch_(\d+)\.pt$")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive; a file without this start is something else
ALLOWED = ("a checkpoint written by sslray (epoch_NNNN.pt, checkpoint.pt), a run directory, a Ray checkpoint "
           "folder, or an MLflow URI models:/NAME@ALIAS")


class TrainingState(TypedDict):
    """What a training checkpoint holds, written by the loop at the end of an epoch and read back,
    all of it, when a run resumes (sslray.loop.run)."""

    epoch: int  # completed epochs
    config: dict  # Config.to_dict() of the run
    num_classes: int  # the online probe's width: the training data's class count
    model: dict  # Method.state_dict(): encoder.*, projector.*, probe.*, and what the method owns (loss.C, target_*, queue)
    optimizer: dict
    probe_optimizer: dict
    rng: dict  # rng_state(): torch's CPU generator, and every CUDA device's where CUDA was in use
    metrics: dict  # the epoch's metrics line
    best: dict  # the best per-epoch kNN so far: {"knn_top1", "epoch"}


def rng_state() -> dict[str, Any]:
    """The global generators' state. Each epoch's data order and augmentation come from generators
    seeded by (seed, epoch, rank), and methods draw from their own; these are for anything else
    that draws from torch's global generators (an init, a dropout), so a resume continues them too."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(rng: dict[str, Any]) -> None:
    """Put back what :func:`rng_state` saved (a CUDA state only where this process has that device)."""
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available():
        for i, s in enumerate(rng["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


class CheckpointError(ConfigError):
    """A path given as a checkpoint that is not a usable sslray checkpoint. The message is one line,
    ``<path>: <what is wrong>; allowed: ...``; :meth:`named` puts the argument's name in front."""

    def __init__(self, message: str, field: str | None = None):
        self.message, self.field = message, field
        super().__init__(f"{field}: {message}" if field else message)

    def __reduce__(self):  # Ray ships a worker's exception by pickle: rebuild it from both parts
        return type(self), (self.message, self.field)

    def named(self, field: str) -> CheckpointError:
        """The same error, reported as a problem of the argument ``field`` (``train.resume``)."""
        return CheckpointError(self.message, field)


def not_a_checkpoint(path: str | Path, problem: str) -> CheckpointError:
    return CheckpointError(f"{path}: {problem}; allowed: {ALLOWED}")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def resolve_checkpoint(source: str | Path) -> Path:
    """A local checkpoint path for a file, a run directory, a Ray Train checkpoint folder, a
    checkpoint in cluster storage (any pyarrow URI: ``s3://…/epoch_0100``, ``gs://…``,
    ``file://…``; copied to a temporary folder), or an MLflow model URI (``models:/NAME@best``,
    ``models:/NAME/3``, ``runs:/RUN_ID/encoder``) logged by ``sslray.tune``, whose run holds the
    checkpoint as the artifact ``checkpoint/checkpoint.pt``."""
    from sslray.tracking import TrackingError, checkpoint_file, is_model_uri

    text = str(source)
    if not is_model_uri(text):
        return _download(text) if "://" in text else Path(source)
    try:
        return checkpoint_file(text)
    except TrackingError as e:  # no such model, alias, run or artifact (or no tracking server)
        raise not_a_checkpoint(text, str(e)) from None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def storage_uri(storage: str, path: str) -> str:
    """Where a Ray checkpoint lives, as a path or URI someone can pass back to ``load_encoder``:
    Ray reports paths inside the storage filesystem (``bucket/…`` for ``s3://bucket/…``)."""
    if "://" not in storage:
        return path
    return f"{storage.split('://', 1)[0]}://{path}"


def _download(uri: str) -> Path:
    """A checkpoint file (or Ray Train checkpoint folder) in a pyarrow filesystem, copied locally."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            path = f"{path.rstrip('/')}/{RAY_CKPT_FILE}"
            info = fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            raise not_a_checkpoint(uri, "not found")
        local = Path(tempfile.mkdtemp(prefix="sslray-ckpt-")) / RAY_CKPT_FILE
        pafs.copy_files(path, str(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    except (pa.ArrowException, OSError) as e:  # unknown scheme, unreachable bucket, no credentials
        raise not_a_checkpoint(uri, f"cannot be read ({_one_line(e)})") from None
    return local


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state dict of a checkpoint (see :func:`resolve_checkpoint` for what ``path`` may be);
    :class:`CheckpointError` when there is none or it is not an sslray checkpoint."""
    source = str(path)
    path = resolve_checkpoint(path)
    if path.is_dir() and (path / RAY_CKPT_FILE).is_file():  # a Ray Train checkpoint folder
        path = path / RAY_CKPT_FILE
    if path.is_dir():  # a run directory or a checkpoints folder: take the latest
        found = latest_checkpoint(path)
        if found is None:
            raise not_a_checkpoint(path, f"a folder without epoch_NNNN.pt or {RAY_CKPT_FILE}")
        path = found
    if not path.exists():
        raise not_a_checkpoint(path, "not found")
    if not path.is_file():
        raise not_a_checkpoint(path, "not a regular file")
    # a checkpoint copied from storage or MLflow is named as the user gave it, not as the temporary copy
    name = source if source.startswith(("models:/", "runs:/")) or "://" in source else path
    state = _read(path, name, map_location)
    _check_state(name, state)
    return state


def _read(path: Path, name: str | Path, map_location: str | torch.device) -> Any:
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if head != _ZIP_MAGIC:
        raise not_a_checkpoint(name, "not an sslray checkpoint (not a torch zip file)")
    if not zipfile.is_zipfile(path):  # the archive's directory sits at its end: gone when cut short
        raise not_a_checkpoint(name, "not an sslray checkpoint (truncated or corrupt file)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 -- torch.load reports damaged archives and foreign pickles as
        # UnpicklingError, RuntimeError, KeyError, EOFError, ...: for the user all mean one thing
        raise not_a_checkpoint(name, f"not an sslray checkpoint (unreadable: {type(e).__name__})") from None


def _check_state(path: str | Path, state: Any) -> None:
    if not isinstance(state, dict) or "format" not in state:
        raise not_a_checkpoint(path, "a torch file, but not an sslray checkpoint (no 'format' key)")
    if state["format"] != FORMAT:
        raise not_a_checkpoint(path, f"sslray checkpoint format {state['format']!r}; this version reads "
                                     f"format {FORMAT}")
    missing = [k for k in ("epoch", "config", "model") if k not in state]
    if missing:
        raise not_a_checkpoint(path, f"not an sslray checkpoint (no {', '.join(map(repr, missing))})")


def saved_config(state: dict[str, Any], path: str | Path):
    """The :class:`sslray.config.Config` a checkpoint was trained with; CheckpointError when this
    version of sslray cannot read it (a key added or renamed since)."""
    from sslray.config import from_dict

    try:
        return from_dict(state["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: its saved config does not load in this sslray: {e}") from None


def architecture(cfg) -> dict[str, object]:
    """The settings of a :class:`sslray.config.Config` that shape the method's weights and state:
    two configs with the same architecture load each other's state dicts (the probe aside: its
    width is the dataset's class count)."""
    from sslray.methods import METHODS, method_params
    from sslray.models import projector_dims, resolve_stem

    m = cfg.model
    stem = resolve_stem(m.encoder, m.stem, cfg.views.size)
    shape = {"model.encoder": m.encoder}
    if stem is None:
        shape["model.width"] = m.width  # only SmallCNN has a width setting
    else:
        shape["model.stem"] = stem  # auto resolved: the same auto at another views.size may differ
    shape["model.projector"] = "-".join(map(str, projector_dims(m.projector)))
    # the method owns more weights and state (a predictor, a target network, a queue): its name and
    # the parameters that size them (declared in its parameter table) shape the state dict too
    shape["loss.name"] = cfg.loss.name
    defaults = method_params(cfg.loss.name)
    for k in METHODS[cfg.loss.name].shape_params:
        shape[f"loss.params.{k}"] = cfg.loss.params.get(k, defaults[k])
    return shape


def incompatibility(saved, cfg, also: tuple[str, ...] = ()) -> tuple[str, object, object] | None:
    """The first setting in which ``cfg`` cannot take the weights of a checkpoint trained with
    ``saved`` -- ``(name, saved value, cfg's value)`` -- or None when it can: a setting of
    :func:`architecture`, then the dotted config fields ``also`` (a resume adds ``optim.name``:
    the optimizer state must fit too)."""
    was = {**architecture(saved), **{k: _field(saved, k) for k in also}}
    now = {**architecture(cfg), **{k: _field(cfg, k) for k in also}}
    for name, value in was.items():
        if now.get(name) != value:
            return name, value, now.get(name)
    return None


def _field(cfg, dotted: str) -> object:
    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def checkpoint_path(ckpt_dir: Path, epoch: int) -> Path:
    return Path(ckpt_dir) / f"epoch_{epoch:04d}.pt"


def list_checkpoints(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if (folder / "checkpoints").is_dir():
        folder = folder / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: str | Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def prune_checkpoints(folder: Path, keep: int) -> None:
    for p in list_checkpoints(folder)[:-keep]:
        p.unlink(missing_ok=True)


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The trained encoder of a checkpoint (file, run directory or MLflow model URI), in eval mode.

    The returned module maps normalised images to representations. Its ``sslray_config``
    attribute holds the run's config; preprocess uint8 images with
    ``sslray.views.eval_view(images, cfg.views)``.
    """
    from sslray.models import build_encoder

    state = load_checkpoint(path)
    cfg = saved_config(state, path)
    enc = build_encoder(cfg.model.encoder, cfg.model.stem, cfg.views.size, cfg.model.width)
    prefix = "encoder."
    enc.load_state_dict({k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)})
    enc.sslray_config = cfg
    return enc.to(device).eval()


def method_state(checkpoint: dict) -> dict:
    """The method's state_dict from a checkpoint; one written before methods owned their loss kept
    the loss's state (TiCo's C) under "loss", which is now the method's submodule ``loss``."""
    state = dict(checkpoint["model"])
    state.update({f"loss.{k}": v for k, v in checkpoint.get("loss", {}).items()})
    return state


def check_same_model(saved, cfg) -> None:
    """Overrides may change the evaluation (data, eval.*, views), not the model the checkpoint's
    weights belong to: that would fail in load_state_dict after the data is read."""
    differs = incompatibility(saved, cfg)
    if differs:
        name, value, now = differs
        raise ConfigError(f"{name}: {now} differs from the checkpoint's {value}; allowed: overrides "
                          f"that keep the checkpoint's model ({name}={value})")
