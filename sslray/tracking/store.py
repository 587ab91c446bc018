"""One MLflow tracking store, as sslray uses it: experiments, runs nested under a parent run,
params, batched metrics, tags, artifacts, and runs read back as plain :class:`Run` records.

Every call logs at once, so a crash keeps what was logged. Nothing here knows what a search or a
comparison is; the run layouts are in ``sslray.search.tracking``, ``sslray.compare.finals`` and
``sslray.distill.tracking``, the tag names in :mod:`sslray.tracking.tags`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: the UI nests a run under the run it names
NOTE_TAG = "mlflow.note.content"  # the top of the run's page, Markdown
KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"  # values: the MLflow 3.17 UI's enum
MAX_PARAM = 6000  # characters of a param value MLflow keeps
MAX_RESULTS = 50000  # the most runs one search returns (MLflow's limit for one page)


class TrackingError(Exception):
    """The store cannot do what was asked (no such run, model, alias or artifact; store unreachable).
    The message is one line."""


@dataclass(frozen=True)
class Run:
    """A run as the store holds it."""
    id: str
    experiment_id: str
    name: str
    status: str  # RUNNING | FINISHED | FAILED | KILLED | SCHEDULED
    started: float  # seconds since the epoch
    ended: float | None
    tags: dict[str, str]
    params: dict[str, str]  # MLflow keeps params as strings
    metrics: dict[str, float]  # each metric's latest value

    @property
    def parent_id(self) -> str | None:
        return self.tags.get(PARENT_TAG)


def env_uri() -> str | None:
    """The tracking URI of ``$MLFLOW_TRACKING_URI``, None when unset."""
    return os.environ.get("MLFLOW_TRACKING_URI") or None


def store_uri(given: str | None, folder: str | Path) -> str:
    """The store to log to: the one given, else ``$MLFLOW_TRACKING_URI``, else ``folder/mlflow.db``."""
    return given or env_uri() or f"sqlite:///{Path(folder).absolute() / 'mlflow.db'}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, None for any other store."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def use_by_default(uri: str) -> None:
    """Make ``uri`` the process's store (and ``$MLFLOW_TRACKING_URI``, so subprocesses inherit it):
    where ``models:/`` and ``runs:/`` URIs are looked up."""
    import mlflow

    mlflow.set_tracking_uri(uri)


def mlflow_param(key: str, value: Any):
    """A param as MLflow records it: ``str(value)``, cut at MAX_PARAM characters."""
    from mlflow.entities import Param

    return Param(key, str(value)[:MAX_PARAM])


class Tracker:
    """The store at ``uri``. Cheap to make; not shared between processes (make one per process)."""

    def __init__(self, uri: str):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(uri)  # underneath; the rest of sslray uses the methods below

    # ------------------------------------------------------------------ experiments
    def experiment(self, name: str, folder: str | Path) -> str:
        """The experiment's id, created if missing (with a SQLite store its artifacts go to
        ``folder/mlartifacts``), marked as model training: MLflow 3's UI otherwise opens an
        experiment on its (empty) GenAI traces view."""
        found = self.client.get_experiment_by_name(name)
        if found:
            if KIND_TAG not in found.tags:  # created by an older sslray or by hand
                self.client.set_experiment_tag(found.experiment_id, KIND_TAG, TRAINING_KIND)
            return found.experiment_id
        return self.client.create_experiment(
            name, artifact_location=(Path(folder) / "mlartifacts").as_uri() if self.uri.startswith("sqlite") else None,
            tags={KIND_TAG: TRAINING_KIND})

    def experiment_id(self, name: str) -> str | None:
        """The id of an existing experiment, None when there is none of that name."""
        found = self.client.get_experiment_by_name(name)
        return found.experiment_id if found else None

    # ------------------------------------------------------------------ runs
    def start_run(self, experiment_id: str, name: str, tags: dict[str, str] | None = None,
                  parent: str | None = None) -> str:
        """A new RUNNING run (nested under ``parent`` when given); its id."""
        nested = {PARENT_TAG: parent} if parent else {}
        return self.client.create_run(experiment_id, run_name=name, tags={**nested, **(tags or {})}).info.run_id

    def reopen(self, run_id: str) -> None:
        """An ended run RUNNING again (a resumed search or comparison continues it)."""
        self.client.update_run(run_id, status="RUNNING")

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """End the run: FINISHED, FAILED or KILLED."""
        self.client.set_terminated(run_id, status)

    def get_run(self, run_id: str) -> Run | None:
        """The run, None when the store holds no run of that id."""
        from mlflow.exceptions import MlflowException

        try:
            return _run(self.client.get_run(run_id))
        except MlflowException:
            return None

    def find_runs(self, experiment_ids: list[str] | None = None, *, tags: dict[str, str] | None = None,
                  parent: str | None = None, status: str | None = None, tagged: str | None = None,
                  oldest_first: bool = False) -> list[Run]:
        """Runs of these experiments (None: all) that carry every tag value in ``tags``, are nested
        under ``parent``, have ``status``, and carry a non-empty tag ``tagged``; newest first
        unless ``oldest_first``."""
        if experiment_ids is None:
            experiment_ids = [e.experiment_id for e in self.client.search_experiments()]
        where = [f"tags.`{k}` = '{v}'" for k, v in ({PARENT_TAG: parent} if parent else {}).items()]
        where += [f"tags.`{k}` = '{v}'" for k, v in (tags or {}).items()]
        where += [f"tags.`{tagged}` != ''"] if tagged else []
        where += [f"attributes.status = '{status}'"] if status else []
        runs = self.client.search_runs(experiment_ids, filter_string=" and ".join(where), max_results=MAX_RESULTS,
                                       order_by=["attributes.start_time ASC"] if oldest_first else None)
        return [_run(r) for r in runs]

    # ------------------------------------------------------------------ what a run records
    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Params as :func:`mlflow_param` records them (one batch)."""
        if params:
            self.client.log_batch(run_id, params=[mlflow_param(k, v) for k, v in params.items()])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0,
                    timestamp: float | None = None) -> None:
        """Metrics at one step, in one batch; ``timestamp`` in seconds (default: now)."""
        from mlflow.entities import Metric

        ts = int((time.time() if timestamp is None else timestamp) * 1000)
        if metrics:
            self.client.log_batch(run_id, metrics=[Metric(k, float(v), ts, step) for k, v in metrics.items()])

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """Every (step, value) of the run's metric ``key``, by step."""
        return sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, v)

    def set_note(self, run_id: str, markdown: str) -> None:
        """The description at the top of the run's page."""
        self.client.set_tag(run_id, NOTE_TAG, markdown)

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self.client.log_text(run_id, text, path)

    def log_dict(self, run_id: str, data: dict, path: str) -> None:
        self.client.log_dict(run_id, data, path)

    def log_file(self, run_id: str, file: str | Path, folder: str | None = None) -> None:
        """The file as the artifact ``folder/<its name>``."""
        self.client.log_artifact(run_id, str(file), artifact_path=folder)

    def log_folder(self, run_id: str, local: str | Path, folder: str) -> None:
        """Every file under ``local`` as the artifacts ``folder/...``; TrackingError when the store
        refuses them."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.log_artifacts(run_id, str(local), artifact_path=folder)
        except (MlflowException, OSError) as e:
            raise TrackingError(" ".join(str(e).split())) from None


def one_line(error: Any) -> str:
    return " ".join(str(getattr(error, "message", error)).split())


def _run(r) -> Run:
    info, data = r.info, r.data
    return Run(id=info.run_id, experiment_id=info.experiment_id, name=info.run_name or "", status=info.status,
               started=info.start_time / 1000, ended=info.end_time / 1000 if info.end_time else None,
               tags=dict(data.tags), params=dict(data.params), metrics=dict(data.metrics))
