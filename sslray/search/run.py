"""Run a search: Optuna TPE proposes, the scheduler plug-in (FIFO, ASHA, PBT: search.schedulers)
stops or perturbs, every trial trains (in its own process for one
worker, through Ray Train for more: see search.trainable), MLflow records.

Layout of one experiment, ``--output``/``<name>`` on the driver's machine:

    tune/       Tune's experiment state (``--resume`` continues from it); in-trial  } in --storage/<name>
                runs' checkpoints: <trial>/checkpoint_NNNNNN/checkpoint.pt          } instead, when
    trials/     one run directory per trial: train-<trial id>/ (metrics.jsonl,     } given
                log.txt, config.yaml); Ray Train runs' checkpoints: epoch_NNNN/
    data_cache/ the dataset decoded once (unless data.cache_dir is set)
    mlflow.db   the MLflow tracking store (SQLite) unless a tracking URI is given; artifacts in mlartifacts/
    optuna.db   the Optuna study (SQLite): states, values and per-epoch scores of every trial
    space.json  the resolved search space (file + overrides) a --resume must match
    ray.log     Ray's and Tune's own messages (``-v`` shows them on the terminal)
    summary.json

``--storage`` (a local path or a pyarrow URI: ``s3://``, ``gs://``, NFS) is where the Ray parts go
on a cluster: neither Tune nor Ray Train V2 copies a trial's checkpoints to the head node, so every
node must reach it.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from ray.tune import Stopper

from sslray.config import ConfigError, load_config
from sslray.search.outcome import collapse_reason
from sslray.search.space import SearchSpace
from sslray.tracking import Tracker, log_model, set_up_logging, store_uri, tags, use_by_default


class CollapseStopper(Stopper):
    """Stops a trial whose loss went non-finite or whose embeddings collapsed (see search.outcome)."""

    def __init__(self, space: SearchSpace):
        self.space = space

    def __call__(self, trial_id: str, result: dict) -> bool:
        return collapse_reason(self.space.stop, result) is not None

    def stop_all(self) -> bool:
        return False


class Interrupted:
    """SIGTERM ends a search the way Ctrl-C does: Tune stops the trials, saves its state, and we
    mark what was running KILLED in MLflow (``--resume`` continues it). Ray's driver would
    otherwise exit at once on SIGTERM and leave every run RUNNING for ever."""

    def __init__(self):
        import signal

        self.signal: int | None = None
        self._previous = signal.signal(signal.SIGTERM, self._on_term)
        self._int_before = signal.getsignal(signal.SIGINT)

    def _on_term(self, signum, frame) -> None:
        import signal

        self.signal = signum
        handler = signal.getsignal(signal.SIGINT)  # Tune's graceful-stop handler while fit() runs
        if callable(handler) and handler is not self._int_before:
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    def restore(self) -> None:
        import signal

        signal.signal(signal.SIGTERM, self._previous)


def run_search(space: SearchSpace, output: str, name: str, resume: bool = False, verbose: bool = False,
               **kwargs: Any) -> dict[str, Any]:
    """Run (or continue) the search; returns the summary also written to summary.json. Raises
    ConfigError before anything is written if the cluster can never run a trial, or if a resumed
    search's resolved space differs from the one it started with. It prints one line per
    trial-epoch and trial end (search.progress); Ray's and Tune's own messages go to
    ``<experiment>/ray.log``, and with ``verbose`` to the terminal as well."""
    set_up_logging()  # MLflow first: each sets up its console logging on import
    import optuna
    import ray.tune  # noqa: F401

    from sslray.search.progress import routed_logs

    optuna.logging.get_logger("optuna")  # optuna adds its console handler on first use
    with routed_logs(Path(output).absolute() / name / "ray.log", verbose):
        return _run_search(space, output, name, resume, verbose, **kwargs)


def _run_search(space: SearchSpace, output: str, name: str, resume: bool, verbose: bool,
                tracking_uri: str | None = None, registered_model: str | None = None, address: str | None = None,
                num_cpus: float | None = None, trial_cpus: float = 0.1, storage: str | None = None,
                experiment: str | None = None, parent_run_id: str | None = None,
                callbacks: list | None = None) -> dict[str, Any]:
    """``experiment`` and ``parent_run_id`` nest the search's MLflow run under another (an arm of a
    comparison); by default it is the parent run of its own experiment ``name``. ``callbacks``: more
    Tune callbacks (benchmarks' timers)."""
    import os

    from ray import tune

    from sslray.data import DataError
    from sslray.resources import connect
    from sslray.search.progress import SearchProgress
    from sslray.search.schedulers import SchedulerState
    from sslray.search.trainable import in_trial, make_trainable, trial_config, trial_resources, warm_data_cache
    from sslray.search.tracking import MLflowTrials

    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # a diverged trial's last result has no score
    t0 = time.time()
    exp_dir = Path(output).absolute() / name
    ray_root = ray_storage(output, name, storage)
    check_resumable(exp_dir, space, resume)
    base = load_config(space.base)
    scale = base.scale
    # before anything is written: Ray Train trials' drivers sleep on their workers holding trial_cpus
    address = connect([scale], address, num_cpus, driver_cpus=0 if in_trial(scale.workers) else
                      space.max_concurrent * trial_cpus, log_to_driver=verbose)  # trials' own output: their log.txt

    fresh = not exp_dir.exists()
    exp_dir.mkdir(parents=True, exist_ok=True)
    trials_dir = str(exp_dir / "trials")
    try:
        warm_data_cache(trial_config(space, {}, trials_dir, "warm"))
    except DataError:
        # on a local Ray the trials would read the same broken files: bad input, and nothing left
        # behind; a cluster's driver may not hold the data at all (each node decodes its own)
        if address == "local":
            if fresh:
                shutil.rmtree(exp_dir, ignore_errors=True)
            raise
    (exp_dir / "space.json").write_text(json.dumps(space.to_record(), indent=2, default=str))
    tracking_uri = store_uri(tracking_uri, exp_dir)
    use_by_default(tracking_uri)
    tracker = Tracker(tracking_uri)
    exp_id = tracker.experiment(experiment or name, exp_dir)
    parents = tracker.find_runs([exp_id], tags={tags.ROLE: "search", tags.SEARCH: name})
    if resume and parents:
        parent_id = parents[0].id
        tracker.reopen(parent_id)
    else:
        parent_id = tracker.start_run(exp_id, f"search-{name}", {
            tags.ROLE: "search", tags.SEARCH: name, tags.OVERRIDES: " ".join(space.overrides),
            tags.SPACE_FILE: str(Path(space.source).absolute()) if space.source else ""}, parent=parent_run_id)
        tracker.log_text(parent_id, space.text, "search_space.yaml")
        tracker.log_dict(parent_id, space.base, "base_config.json")

    trainable = tune.with_resources(make_trainable(space, f"{ray_root}/trials", trials_dir, scale.workers),
                                    trial_resources(base, trial_cpus))
    interrupted = Interrupted()
    try:
        if resume and tune.Tuner.can_restore(f"{ray_root}/tune"):
            tuner = tune.Tuner.restore(f"{ray_root}/tune", trainable, resume_errored=True)
        else:
            plugin = space.scheduler
            keep = tune.CheckpointConfig(num_to_keep=plugin.num_to_keep(base.train.keep_checkpoints))  # in-trial runs
            searcher, param_space, recorders = plugin.searcher(space, exp_dir, name)
            scheduler = plugin.make(space)
            # SchedulerState: the scheduler's state saved with Tune's and put back by --resume (REFERENCE §12a)
            run_config = tune.RunConfig(name="tune", storage_path=ray_root, stop=CollapseStopper(space), checkpoint_config=keep,
                                        callbacks=[MLflowTrials(tracking_uri, exp_id, parent_id, space, trials_dir),
                                                   SearchProgress(space), SchedulerState(plugin, scheduler), *recorders,
                                                   *(callbacks or [])],
                                        verbose=None if verbose else 0)  # Tune's tables: ours replace them
            tuner = tune.Tuner(trainable, run_config=run_config, param_space=param_space,
                               tune_config=tune.TuneConfig(metric=space.metric, mode=space.mode, search_alg=searcher,
                                                           scheduler=scheduler, num_samples=space.num_trials,
                                                           max_concurrent_trials=space.max_concurrent
                                                           if plugin.limits_concurrency else None))
        results = tuner.fit()
    except KeyboardInterrupt:  # stopped before Tune took over the signal
        results = None
    finally:
        interrupted.restore()
    ended = tracker.find_runs([exp_id], parent=parent_id, tagged=tags.OUTCOME)
    if results is None or len(ended) < space.num_trials:
        return _interrupted(tracker, exp_id, parent_id, exp_dir, space, len(ended), interrupted.signal, time.time() - t0)
    return _finish(space, results, exp_dir, ray_root, tracker, parent_id, registered_model, time.time() - t0)


def check_resumable(exp_dir: Path, space: SearchSpace, resume: bool) -> None:
    """A resumed search must run the space (file + overrides) it started with: its trials would
    otherwise train on another config than the one MLflow recorded for them."""
    record = exp_dir / "space.json"
    if not resume or not record.exists():
        return
    from sslray.search.space import normalized_record

    before = _flat(normalized_record(json.loads(record.read_text())))
    now = _flat(json.loads(json.dumps(space.to_record(), default=str)))
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        k = changed[0]
        raise ConfigError(f"--resume: the search space differs from the one this search started with "
                          f"({k}: {before.get(k)!r} -> {now.get(k)!r}{f' and {len(changed) - 1} more' if len(changed) > 1 else ''}); "
                          "allowed: the same file and overrides, or a new --name")


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        return {k: v for key, val in d.items() for k, v in _flat(val, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): d}


ORPHANED = "orphaned: the search driver was killed before Tune saved this trial (Tune starts a new one instead)"


def close_orphans(exp_dir: Path, name: str) -> None:
    """At the end of a search no Optuna trial may stay RUNNING. One can only be left by a driver
    killed (SIGKILL) after Optuna created a trial and before Tune saved it: Tune never resumes it,
    so it is told FAIL, with the reason, instead of staying RUNNING for ever."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(f"sqlite:///{exp_dir / 'optuna.db'}"))
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "outcome", "failed")
        study._storage.set_trial_user_attr(t._trial_id, "reason", ORPHANED)
        study.tell(t.number, state=TrialState.FAIL)


def _interrupted(tracker, exp_id: str, parent_id: str, exp_dir: Path, space: SearchSpace, ended: int,
                 signum: int | None, wall_s: float) -> dict[str, Any]:
    """Mark the search and its unfinished trials KILLED in MLflow; ``--resume`` continues them."""
    for run in tracker.find_runs([exp_id], parent=parent_id, status="RUNNING"):
        tracker.end_run(run.id, "KILLED")
    tracker.end_run(parent_id, "KILLED")
    summary = {"experiment": str(exp_dir), "status": "interrupted", "signal": signum, "trials": space.num_trials,
               "trials_ended": ended, "wall_time_s": round(wall_s, 1), "mlflow_parent_run_id": parent_id}
    (exp_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def ray_storage(output: str, name: str, storage: str | None) -> str:
    """Where Tune's state and the trials' checkpoints go: ``<storage>/<name>``, else the local
    experiment folder."""
    if storage:
        return f"{storage.rstrip('/')}/{name}" if "://" in storage else str(Path(storage).absolute() / name)
    return str(Path(output).absolute() / name)


def search_exists(output: str, name: str, storage: str | None) -> bool:
    """Whether Tune state of this experiment is already there (local folder or storage URI)."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(ray_storage(output, name, storage))  # ray_storage is absolute or a URI
    return fs.get_file_info(f"{path}/tune").type != pafs.FileType.NotFound


def _finish(space, results, exp_dir: Path, ray_root: str, tracker, parent_id: str,
            registered_model: str | None, wall_s: float) -> dict[str, Any]:
    """Summary table, best trial, its encoder logged and registered in MLflow."""
    from sslray.checkpoint import storage_uri
    from sslray.search.tracking import TRIAL_TAG, search_description

    rows, outcomes = [], {}
    children = {r.tags.get(TRIAL_TAG): r for r in tracker.find_runs([tracker.get_run(parent_id).experiment_id],
                                                                    parent=parent_id)}
    for r in results:
        m = r.metrics or {}
        trial_id = m.get("trial_id")  # Tune adds it to every result
        child = children.get(trial_id)
        outcome = child.tags.get(tags.OUTCOME, "failed" if r.error else "unknown") if child else (
            "failed" if r.error else "unknown")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        # a path inside the storage's filesystem: Ray Train's (in the result) or Tune's own (in-trial)
        ckpt = m.get("checkpoint_path") or (r.checkpoint.path if r.checkpoint else None)
        rows.append({"trial_id": trial_id, "outcome": outcome, "epochs": m.get("epoch"), space.metric: m.get(space.metric),
                     "params": r.config, "checkpoint": ckpt and storage_uri(ray_root, ckpt),
                     "mlflow_run_id": child.id if child else None})
    ok = [row for row in rows if isinstance(row[space.metric], (int, float)) and row["checkpoint"]]
    best = (max if space.mode == "max" else min)(ok, key=lambda row: row[space.metric]) if ok else None
    summary = {"experiment": str(exp_dir), "status": "finished", "metric": space.metric, "mode": space.mode, "trials": len(rows),
               "outcomes": outcomes, "wall_time_s": round(wall_s, 1), "best": best, "table": rows,
               "mlflow_parent_run_id": parent_id}
    inherited = space.scheduler.inheritance(exp_dir, Path(exp_dir).name)
    if inherited:  # PBT: which trial went on from which trial's checkpoint, with which values
        summary["lineage"] = inherited
    for outcome, n in outcomes.items():  # the parent run's columns in the runs table
        tracker.log_metrics(parent_id, {f"trials_{outcome}": n})
    tracker.set_note(parent_id, search_description(space, rows, outcomes, best))  # the run page's top
    if best is not None:
        # tags, not params: a resumed search may find a new best
        tracker.set_tags(parent_id, {f"best.{k}": str(v) for k, v in best["params"].items()})
        tracker.log_metrics(parent_id, {f"best_{space.metric}": float(best[space.metric])})
        summary["best"]["model_uri"] = log_best_encoder(tracker, parent_id, best, registered_model)
    tracker.log_dict(parent_id, summary, "summary.json")
    close_orphans(exp_dir, Path(exp_dir).name)
    for child in children.values():  # every trial Tune knows has ended: a run still RUNNING is an orphan
        if child.status == "RUNNING":
            tracker.set_tags(child.id, {tags.OUTCOME: "failed", tags.STOP_REASON: ORPHANED})
            tracker.end_run(child.id, "KILLED")
    tracker.end_run(parent_id, "FINISHED")
    (exp_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def log_best_encoder(tracker, parent_id: str, best: dict, registered_model: str | None) -> str:
    """The best trial's encoder as an MLflow PyTorch model (pickled module: loads back as the class)."""
    from sslray.checkpoint import RAY_CKPT_FILE, load_encoder, resolve_checkpoint

    ckpt = resolve_checkpoint(best["checkpoint"])  # copied from storage when it is a URI
    ckpt = ckpt / RAY_CKPT_FILE if ckpt.is_dir() else ckpt
    encoder = load_encoder(ckpt)
    return log_model(tracker, best["mlflow_run_id"] or parent_id, encoder, "encoder", ckpt, registered_model, "best")
