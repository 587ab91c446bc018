"""Run a search: Optuna TPE proposes, ASHA stops, every trial is a Ray Train run, MLflow records.

Layout of one experiment, ``--output``/``<name>`` on the driver's machine:

    tune/       Tune's experiment state (``--resume`` continues from it)       } in --storage/<name>
    trials/     one Ray Train run per trial: train-<trial id>/epoch_NNNN/      } instead, when given
                checkpoints (+ metrics.jsonl, log.txt written on the trial's node)
    mlflow.db   the MLflow tracking store (SQLite) unless a tracking URI is given; artifacts in mlartifacts/
    summary.json

``--storage`` (a local path or a pyarrow URI: ``s3://``, ``gs://``, NFS) is where the Ray parts go
on a cluster: Ray Train V2 does not copy a worker's checkpoints to the head node, so every node
must reach it.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from ray.tune import Stopper

from sslray.search.space import SearchSpace


def _tune_space(space: SearchSpace) -> dict[str, Any]:
    from ray import tune

    out = {}
    for p in space.params:
        out[p.path] = {"loguniform": lambda: tune.loguniform(p.low, p.high), "uniform": lambda: tune.uniform(p.low, p.high),
                       "int": lambda: tune.randint(p.low, p.high + 1), "choice": lambda: tune.choice(p.values)}[p.dist]()
    return out


class CollapseStopper(Stopper):
    """Stops a trial whose loss went non-finite or whose embeddings collapsed; remembers why."""

    def __init__(self, space: SearchSpace, reasons: dict[str, str]):
        self.space, self.reasons = space, reasons

    def __call__(self, trial_id: str, result: dict) -> bool:
        s = self.space.stop
        if result.get("status") == "diverged":
            self.reasons[trial_id] = result.get("reason") or "non-finite loss"
        elif s.rankme_below is not None and result.get("rankme", math.inf) < s.rankme_below:
            self.reasons[trial_id] = f"collapse: RankMe {result['rankme']:.2f} < {s.rankme_below} at epoch {result.get('epoch')}"
        elif s.emb_std_ratio_below is not None and result.get("emb_std_ratio", math.inf) < s.emb_std_ratio_below:
            self.reasons[trial_id] = (f"collapse: embedding std ratio {result['emb_std_ratio']:.3f} < "
                                      f"{s.emb_std_ratio_below} at epoch {result.get('epoch')}")
        else:
            return False
        return True

    def stop_all(self) -> bool:
        return False


def make_trainable(space: SearchSpace, trials_storage: str, trials_dir: str, overrides: list[str]):
    """The Tune function trainable: one Ray Train TorchTrainer per trial (the Train V2 pattern).
    Checkpoints go to ``trials_storage`` (path or URI), the run directory's files to ``trials_dir``."""

    def trial(params: dict[str, Any]) -> None:
        import ray.tune
        from ray.tune.integration.ray_train import TuneReportCallback

        from sslray.ray_train import build_trainer

        trial_id = ray.tune.get_context().get_trial_id()
        cfg = space.trial_config(params, overrides + [
            "eval.every=1",  # ASHA compares trials at its rungs: a score every epoch
            "train.checkpoint_every=1", f"train.output_dir={trials_dir}",
            f"train.run_name=train-{trial_id}",  # stable: a restored trial resumes its Train run
        ])
        build_trainer(cfg, trials_storage, extra_callbacks=[TuneReportCallback()]).fit()

    return trial



def run_search(space: SearchSpace, output: str, name: str, resume: bool = False, overrides: list[str] | None = None,
               tracking_uri: str | None = None, registered_model: str | None = None, address: str | None = None,
               num_cpus: float | None = None, trial_cpus: float = 0.1, storage: str | None = None) -> dict[str, Any]:
    """Run (or continue) the search; returns the summary also written to summary.json."""
    import os

    import mlflow
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch
    from optuna.samplers import TPESampler

    from sslray.config import absolute_overrides

    overrides = absolute_overrides(overrides)  # trials load their config in other working directories
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # a diverged trial's last result has no score
    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    t0 = time.time()
    exp_dir = Path(output).absolute() / name
    ray_root = ray_storage(output, name, storage)
    exp_dir.mkdir(parents=True, exist_ok=True)
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{exp_dir / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.tracking.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    exp_id = experiment.experiment_id if experiment else client.create_experiment(
        name, artifact_location=(exp_dir / "mlartifacts").as_uri() if tracking_uri.startswith("sqlite") else None)
    parents = client.search_runs([exp_id], filter_string="tags.`sslray.role` = 'search'")
    if resume and parents:
        parent_id = parents[0].info.run_id
    else:
        parent = client.create_run(exp_id, run_name=f"search-{name}", tags={"sslray.role": "search"})
        parent_id = parent.info.run_id
        client.log_text(parent_id, space.text, "search_space.yaml")
        client.log_dict(parent_id, space.base, "base_config.json")

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        if address == "local" and num_cpus is None:
            # Every trial's driver actor holds trial_cpus while it waits on its Train workers: with
            # exactly one logical CPU per core, max_concurrent one-CPU trials would not fit and
            # run one after another. One extra logical CPU covers the (sleeping) trial drivers.
            num_cpus = (os.cpu_count() or 1) + max(1, math.ceil(space.max_concurrent * trial_cpus))
        ray.init(address=address, num_cpus=num_cpus)
    reasons: dict[str, str] = {}
    from sslray.search.tracking import MLflowTrials

    trainable = tune.with_resources(make_trainable(space, f"{ray_root}/trials", str(exp_dir / "trials"), overrides or []),
                                    {"cpu": trial_cpus})
    mlflow_cb = MLflowTrials(tracking_uri, exp_id, parent_id, space, reasons)
    run_config = tune.RunConfig(name="tune", storage_path=ray_root, stop=CollapseStopper(space, reasons),
                                callbacks=[mlflow_cb])
    if resume and tune.Tuner.can_restore(f"{ray_root}/tune"):
        tuner = tune.Tuner.restore(f"{ray_root}/tune", trainable, resume_errored=True)
    else:
        searcher = OptunaSearch(metric=space.metric, mode=space.mode,
                                points_to_evaluate=space.optuna.points_to_evaluate or None,
                                sampler=TPESampler(seed=space.optuna.seed, n_startup_trials=space.optuna.n_startup_trials))
        scheduler = ASHAScheduler(time_attr="epoch", max_t=space.max_epochs, grace_period=space.asha.grace_period,
                                  reduction_factor=space.asha.reduction_factor)
        tuner = tune.Tuner(trainable, param_space=_tune_space(space), run_config=run_config,
                           tune_config=tune.TuneConfig(metric=space.metric, mode=space.mode, search_alg=searcher,
                                                       scheduler=scheduler, num_samples=space.num_trials,
                                                       max_concurrent_trials=space.max_concurrent))
    results = tuner.fit()
    return _finish(space, results, exp_dir, ray_root, client, parent_id, reasons, registered_model, time.time() - t0)


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


def _finish(space, results, exp_dir: Path, ray_root: str, client, parent_id: str, reasons: dict,
            registered_model: str | None, wall_s: float) -> dict[str, Any]:
    """Summary table, best trial, its encoder logged and registered in MLflow."""
    from sslray.checkpoint import storage_uri
    from sslray.search.tracking import TRIAL_TAG

    rows, outcomes = [], {}
    children = {r.data.tags.get(TRIAL_TAG): r for r in client.search_runs(
        [client.get_run(parent_id).info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")}
    for r in results:
        m = r.metrics or {}
        trial_id = m.get("trial_id")  # Tune adds it to every result
        child = children.get(trial_id)
        outcome = child.data.tags.get("sslray.outcome", "failed" if r.error else "unknown") if child else (
            "failed" if r.error else "unknown")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        ckpt = m.get("checkpoint_path")  # a path inside the storage's filesystem
        rows.append({"trial_id": trial_id, "outcome": outcome, "epochs": m.get("epoch"), space.metric: m.get(space.metric),
                     "params": r.config, "checkpoint": ckpt and storage_uri(ray_root, ckpt),
                     "mlflow_run_id": child.info.run_id if child else None})
    ok = [row for row in rows if isinstance(row[space.metric], (int, float)) and row["checkpoint"]]
    best = (max if space.mode == "max" else min)(ok, key=lambda row: row[space.metric]) if ok else None
    summary = {"experiment": str(exp_dir), "metric": space.metric, "mode": space.mode, "trials": len(rows),
               "outcomes": outcomes, "wall_time_s": round(wall_s, 1), "best": best, "table": rows,
               "mlflow_parent_run_id": parent_id}
    if best is not None:
        for k, v in best["params"].items():  # tags, not params: a resumed search may find a new best
            client.set_tag(parent_id, f"best.{k}", str(v))
        client.log_metric(parent_id, f"best_{space.metric}", float(best[space.metric]))
        summary["best"]["model_uri"] = log_best_encoder(client, parent_id, best, registered_model)
    client.log_dict(parent_id, summary, "summary.json")
    client.set_terminated(parent_id, "FINISHED")
    (exp_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def log_best_encoder(client, parent_id: str, best: dict, registered_model: str | None) -> str:
    """The best trial's encoder as an MLflow PyTorch model (pickled module: loads back as the class)."""
    import mlflow
    import mlflow.pytorch

    from sslray.checkpoint import RAY_CKPT_FILE, load_encoder, resolve_checkpoint

    ckpt = resolve_checkpoint(best["checkpoint"])  # copied from storage when it is a URI
    ckpt = ckpt / RAY_CKPT_FILE if ckpt.is_dir() else ckpt
    encoder = load_encoder(ckpt)
    with mlflow.start_run(run_id=best["mlflow_run_id"] or parent_id):
        info = mlflow.pytorch.log_model(encoder, name="encoder", serialization_format="pickle",
                                        registered_model_name=registered_model)
        mlflow.log_artifact(str(ckpt), artifact_path="checkpoint")
    if registered_model:
        versions = client.search_model_versions(f"name='{registered_model}'")
        latest = max(versions, key=lambda v: int(v.version))
        client.set_registered_model_alias(registered_model, "best", latest.version)
        return f"models:/{registered_model}@best"
    return info.model_uri
