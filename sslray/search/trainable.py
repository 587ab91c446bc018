"""What runs inside one Tune trial: the pretraining loop itself, or a Ray Train run of N workers.

``scale.workers == 1`` (the quickstart, and most GPU searches: one GPU per trial) runs
:func:`sslray.loop.run` *in the trial's own process*: a plain Tune function trainable holding the
trial's resources (CPUs, GPU), reporting and checkpointing through ``ray.tune`` (REFERENCE §9).
No Train controller, worker group or process group: a trial starts training about as soon as its
process has imported torch, and runs as fast as a bare run (``bench/search_overhead.py``).

``scale.workers >= 2`` builds one Ray Train ``TorchTrainer`` per trial (the Train V2 pattern,
REFERENCE §2); the trial itself only waits on it, holding ``trial_cpus``.

Both paths leave the same run directory (``<trials>/train-<trial id>/``: config.yaml,
metrics.jsonl, log.txt), report the same metrics to Tune (so ASHA, the collapse stopper, MLflow and
Optuna see the same thing) and resume from their latest checkpoint after a driver is killed.
Checkpoints: Train runs keep theirs in ``<storage>/trials/train-<id>/epoch_NNNN/``; in-trial runs
in Tune's trial folder, ``<storage>/tune/<trial>/checkpoint_NNNNNN/`` -- both ``checkpoint.pt``.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from sslray.checkpoint import RAY_CKPT_FILE, load_checkpoint, save_checkpoint
from sslray.config import Config


def in_trial(workers: int) -> bool:
    """Whether a trial of ``workers`` workers runs the loop in its own process."""
    return workers == 1


def trial_config(space, params: dict[str, Any], trials_dir: str, trial_id: str) -> Config:
    """The exact config a trial runs: the resolved space, its sampled parameters and the search's own
    settings. The trial and its MLflow record both come from here, so what MLflow shows is what ran."""
    settings: dict[str, Any] = {
        "eval.every": 1,  # ASHA compares trials at its rungs: a score every epoch
        "train.checkpoint_every": 1, "train.output_dir": str(trials_dir),
        "train.run_name": f"train-{trial_id}",  # stable: a restored trial resumes its Train run
    }
    if not space.base.get("data", {}).get("cache_dir"):
        # decoded once (by the search's driver, see warm_data_cache), then ~0.1 s per trial instead
        # of ~7 s of PNG decoding for CIFAR-10: most of a short trial's start-up otherwise
        settings["data.cache_dir"] = str(Path(trials_dir).parent / "data_cache")
    return space.trial_config(params, settings)


def warm_data_cache(cfg: Config) -> None:
    """Decode the dataset once into ``data.cache_dir`` before the trials start (local Ray: the
    trials read the same disk), so no trial pays for decoding and two never decode at once."""
    if cfg.data.cache_dir and cfg.data.source != "synthetic":
        from sslray.data import load_split

        for split in ("train", "test"):
            load_split(cfg.data, split, seed=cfg.train.seed)


class TuneReporter:
    """The loop's reporter inside a one-worker Tune trial: metrics into the run directory, the
    epoch's result (and checkpoint) to Tune.

    Lineage (PBT): every checkpoint carries ``lineage``, the segments its weights went through:
    ``[{trial, from_epoch, parent, values}, ...]``. A trial that resumes from a checkpoint whose
    last segment is another trial's, or ran other values (PBT's exploit: the clone's checkpoint,
    the perturbed values in this trial's config), starts a new segment, and each report of it says
    so (``segment_parent``, ``segment_start``: the trial and epoch of the checkpoint it went on
    from): MLflow and the Optuna study record it from there."""

    def __init__(self, cfg: Config, trial_id: str | None = None, values: dict[str, Any] | None = None):
        from sslray.rundir import RunDir

        self.cfg = cfg
        # the driver prints one line per trial-epoch; the run directory keeps the trial's own log
        self.dir = RunDir(cfg, Path(cfg.train.output_dir) / cfg.train.run_name, echo=False)
        self.lineage = [{"trial": trial_id, "from_epoch": 0, "parent": None, "values": dict(values or {})}]

    def resume_state(self) -> dict | None:
        """Tune's latest checkpoint of this trial (a restored search, or the trial PBT cloned into
        this one), else train.resume, else None. A checkpoint of another architecture is refused."""
        import ray.tune

        from sslray.local_run import check_resumable

        ckpt = ray.tune.get_checkpoint()
        if ckpt is None:
            explicit = self.cfg.train.resume not in (None, "auto")
            return load_checkpoint(self.cfg.train.resume) if explicit else None
        with ckpt.as_directory() as d:  # downloads from remote storage if needed
            state = load_checkpoint(Path(d) / RAY_CKPT_FILE)
        check_resumable(state, self.cfg, ckpt.path)  # PBT perturbs values, never the network
        self.lineage = inherit(state.get("lineage"), self.lineage[0], state["epoch"])
        return state

    def log(self, line: str) -> None:
        self.dir.log(line)

    def report(self, metrics: dict[str, Any], checkpoint: dict | None) -> None:
        import ray
        import ray.tune

        last = self.lineage[-1]
        if last["parent"] is not None:  # this segment went on from a checkpoint of other values (PBT)
            metrics = {**metrics, "segment_parent": last["parent"], "segment_start": last["from_epoch"]}
        if checkpoint is not None:
            checkpoint = {**checkpoint, "lineage": self.lineage}
        # which node ran it, as a Ray Train run's rows say for each of its workers
        self.dir.add_metrics({**metrics, "worker_nodes": [ray.get_runtime_context().get_node_id()]})
        if checkpoint is None:
            ray.tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:  # Tune copies it to storage before report returns
            save_checkpoint(checkpoint, Path(d) / RAY_CKPT_FILE)
            ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(d))


def inherit(saved: list[dict] | None, mine: dict[str, Any], epoch: int) -> list[dict]:
    """The lineage of a trial resuming from a checkpoint of ``epoch`` with lineage ``saved``: the
    same segment when the checkpoint is its own with the same values (a restored search), else a
    new segment that went on from the checkpoint's last trial."""
    if not saved:  # written before lineage, or by this trial's first segment before a restore
        return [mine]
    last = saved[-1]
    if last["trial"] == mine["trial"] and last["values"] == mine["values"]:
        return list(saved)
    return [*saved, {**mine, "from_epoch": int(epoch), "parent": last["trial"]}]


def trial_resources(cfg: Config, trial_cpus: float) -> dict[str, float]:
    """What Tune reserves for one trial: the worker's own CPUs (and GPU) when it runs in the trial,
    else a fraction of a CPU for the trial that waits on its Ray Train workers (whose placement
    group Ray reserves separately)."""
    s = cfg.scale
    if not in_trial(s.workers):
        return {"cpu": trial_cpus}
    return {"cpu": s.cpus_per_worker, **({"gpu": s.gpus_per_worker} if s.use_gpu else {})}


def make_trainable(space, trials_storage: str, trials_dir: str, workers: int):
    """The Tune function trainable of every trial. Checkpoints of Ray Train runs go to
    ``trials_storage`` (path or URI), the run directory's files to ``trials_dir``."""

    def loop_trial(params: dict[str, Any]) -> None:
        import ray.tune
        import torch

        from sslray.loop import run

        cfg = trial_config(space, params, trials_dir, ray.tune.get_context().get_trial_id())
        # Tune logs every persisted checkpoint at INFO from the trial: the epoch line already says it
        logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
        # Ray sets OMP_NUM_THREADS to the trial's CPUs only where it is unset, and nothing sets
        # torch's pool (REFERENCE §9): size it to what Tune reserved, so trials never oversubscribe.
        torch.set_num_threads(max(1, int(cfg.scale.cpus_per_worker)))
        run(cfg, TuneReporter(cfg, ray.tune.get_context().get_trial_id(), params))

    def train_trial(params: dict[str, Any]) -> None:
        import ray.tune
        from ray.tune.integration.ray_train import TuneReportCallback

        from sslray.ray_train import build_trainer

        cfg = trial_config(space, params, trials_dir, ray.tune.get_context().get_trial_id())
        build_trainer(cfg, trials_storage, extra_callbacks=[TuneReportCallback()], echo=False).fit()

    return loop_trial if in_trial(workers) else train_trial
