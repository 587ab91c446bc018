"""A run in this process, without Ray: its reporter (checkpoints and metrics in the run directory),
the checks of a ``train.resume`` checkpoint before anything starts, and :func:`train_local`.
``python -m sslray.train`` with ``scale.workers=0`` runs this; tests and benchmarks call it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sslray.checkpoint import (CheckpointError, checkpoint_path, incompatibility, latest_checkpoint, load_checkpoint,
                               prune_checkpoints, save_checkpoint, saved_config)
from sslray.config import Config, ConfigError
from sslray.rundir import RunDir


class LocalReporter:
    """Reporter of a single-process run: checkpoints and metrics in its run directory.
    ``resume_state`` may hold the checkpoint already loaded from ``resume_from`` (main checks it
    before the run starts; this way it is read once)."""

    def __init__(self, cfg: Config, run_dir: Path, resume_from: Path | str | None, echo: bool = True,
                 resume_state: dict | None = None):
        self.cfg, self.resume_from = cfg, resume_from
        self.dir = RunDir(cfg, run_dir, echo)
        self.ckpt_dir = Path(run_dir) / "checkpoints"
        self.last_checkpoint: Path | str | None = resume_from
        self._loaded = resume_state

    def resume_state(self) -> dict | None:
        state, self._loaded = self._loaded, None  # handed over, not kept in memory for the whole run
        if state is None and self.resume_from:
            state = load_checkpoint(self.resume_from)
        return state

    def log(self, line: str) -> None:
        self.dir.log(line)

    def report(self, metrics: dict[str, Any], checkpoint: dict | None) -> None:
        if checkpoint is not None:
            self.last_checkpoint = save_checkpoint(checkpoint, checkpoint_path(self.ckpt_dir, checkpoint["epoch"]))
            prune_checkpoints(self.ckpt_dir, self.cfg.train.keep_checkpoints)
        self.dir.add_metrics(metrics)


RESUMABLE = "a checkpoint of the same model, loss and optimizer"


def resume_checkpoint(cfg: Config, run_dir: Path) -> tuple[Path | str | None, dict | None]:
    """The checkpoint a run resumes from and its state, read and checked against ``cfg`` before the
    run starts: a missing, broken or foreign checkpoint is one ConfigError, not a traceback after
    the run directory exists. (None, None): start fresh."""
    t = cfg.train
    if t.resume is None:
        return None, None
    source = t.resume
    if t.resume == "auto":  # validate() made sure train.run_name names the run to continue
        source = latest_checkpoint(run_dir) if cfg.scale.workers == 0 else _latest_ray_checkpoint(cfg)
        if source is None:
            return None, None  # nothing to continue yet
    try:
        state = load_checkpoint(source)
        check_resumable(state, cfg, source)
    except CheckpointError as e:
        raise e.named("train.resume") from None
    return source, state


def _latest_ray_checkpoint(cfg: Config) -> Path | None:
    """The checkpoint Ray Train resumes a run from: the latest ``<storage>/<run name>/epoch_NNNN/``
    (see sslray.ray_train). None in remote storage: Ray reads that one itself."""
    storage = cfg.scale.storage_path or cfg.train.output_dir
    if "://" in storage:
        return None
    found = sorted((Path(storage) / cfg.train.run_name).glob("epoch_*/checkpoint.pt"))
    return found[-1] if found else None


def check_resumable(state: dict, cfg: Config, source: Path | str) -> None:
    """A checkpoint resumes a run only with the model, loss and optimizer it was trained with:
    otherwise loading its weights or optimizer state fails deep in the loop."""
    missing = [k for k in ("optimizer", "probe_optimizer", "metrics") if k not in state]
    if missing:
        raise CheckpointError(f"{source}: holds no training state ({', '.join(missing)}); allowed: {RESUMABLE} "
                              "written by sslray.train")
    saved = saved_config(state, source)
    differs = incompatibility(saved, cfg, also=("optim.name",))
    if differs:
        name, value, now = differs
        raise CheckpointError(f"{source} was trained with {name}={value}; this config has {now}; "
                              f"allowed: {RESUMABLE}")


def check_device(cfg: Config) -> None:
    """train.device=cuda without CUDA fails here, before data is read, not at the first step. Ray
    workers (scale.workers >= 1) may run on other machines: they are not judged by this one."""
    if cfg.scale.workers == 0 and cfg.train.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda is not available on this machine; allowed: cpu, auto")


def train_local(cfg: Config, run_dir: Path, echo: bool = True, resume_from: Path | str | None = None,
                resume_state: dict | None = None) -> dict[str, Any]:
    from sslray.loop import run

    reporter = LocalReporter(cfg, run_dir, resume_from, echo, resume_state)
    run(cfg, reporter)
    return reporter.dir.summary(str(reporter.last_checkpoint) if reporter.last_checkpoint else None)
