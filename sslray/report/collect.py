"""What a search report shows, read from where the search wrote it.

Every number about a trial comes from its MLflow child run (tags, params, metric histories), so the
report equals what MLflow holds; the search's settings come from ``space.json``, its end from
``summary.json`` (absent while it runs) and the parent run's status; importance reads the Optuna
study in ``optuna.db`` (see :mod:`sslray.report.importance`).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslray.config import ConfigError
from sslray.tracking import Tracker, env_uri, tags

# how a search's parent run status reads in a report
STATUS = {"RUNNING": "running", "FINISHED": "finished", "KILLED": "interrupted", "FAILED": "failed",
          "SCHEDULED": "running"}

# a trial run without an outcome tag: still going, or stopped with the search (``--resume`` continues it)
UNENDED = {"RUNNING": "running", "SCHEDULED": "running", "KILLED": "interrupted"}


@dataclass
class Trial:
    """One trial as MLflow recorded it."""
    trial_id: str  # Tune's trial id (tag sslray.trial_id), the key Optuna's user attr tune_trial_id joins on
    run_id: str
    params: dict[str, Any]  # the searched parameters this trial sampled (typed by the space)
    outcome: str  # finished | asha (a scheduler's name) | collapsed | diverged | failed; running | interrupted (no outcome yet)
    reason: str
    epochs: int | None  # the last epoch it logged
    best: float | None  # best score over its epochs (by the search's mode)
    last: float | None  # score at its last logged epoch (MLflow's latest value)
    rankme: float | None  # RankMe at its last logged epoch
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, score)


@dataclass
class Search:
    folder: Path
    name: str
    tracking_uri: str
    parent_run_id: str
    space: dict[str, Any]  # space.json: base, params, metric, mode, num_trials, scheduler, optuna, stop
    summary: dict[str, Any] | None  # summary.json, when the search ended (finished or interrupted)
    status: str  # finished | running | interrupted | failed
    space_file: str  # the search-space file the search was started with
    overrides: str
    started: float  # unix seconds
    ended: float | None
    trials: list[Trial]

    @property
    def metric(self) -> str:
        return self.space["metric"]

    @property
    def mode(self) -> str:
        return self.space["mode"]

    @property
    def params(self) -> list[dict[str, Any]]:
        """The searched parameters' specs (path, dist, low, high, values, when), in sampling order."""
        return self.space["params"]

    @property
    def scheduler(self):
        """The search's scheduler plug-in (search.schedulers), from space.json."""
        from sslray.search.schedulers import scheduler_from_record

        return scheduler_from_record(self.space)

    @property
    def grace_period(self) -> int:
        """The scheduler's first milestone (ASHA's first rung), else the last epoch."""
        return (self.scheduler.milestones(self.max_epochs) or [self.max_epochs])[0]

    @property
    def max_epochs(self) -> int:
        return int(self.space["base"]["train"]["epochs"])

    @property
    def wall_s(self) -> float:
        return (self.ended or time.time()) - self.started

    def outcome_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.outcome] = out.get(t.outcome, 0) + 1
        return out

    def search_space(self):
        """The resolved :class:`SearchSpace` the search ran (rebuilt from space.json)."""
        from sslray.search.space import SearchSpace

        return SearchSpace.from_record(self.space, source=self.space_file)


def is_search(folder: Path) -> bool:
    return (folder / "summary.json").is_file() or (folder / "optuna.db").is_file()


def is_compare(folder: Path) -> bool:
    return (folder / "compare.json").is_file()


def tracking_uri_for(folder: Path, given: str | None, fallback: str | None = None) -> str:
    """The MLflow store a search logged to: the one given, else its own mlflow.db (``sslray.tune``'s
    default), else ``fallback`` (a comparison's store), else $MLFLOW_TRACKING_URI."""
    if given:
        return given
    if (folder / "mlflow.db").is_file():
        return f"sqlite:///{folder.absolute() / 'mlflow.db'}"
    compare = folder.absolute().parent.parent  # an arm of a comparison: <compare>/arms/<arm>
    if folder.absolute().parent.name == "arms" and (compare / "spec.json").is_file() and (compare / "mlflow.db").is_file():
        return f"sqlite:///{compare / 'mlflow.db'}"
    uri = fallback or env_uri()
    if not uri:
        raise ConfigError(f"--tracking-uri: {folder} has no mlflow.db and none was given; allowed: the tracking URI "
                          "the search logged to (its --tracking-uri or $MLFLOW_TRACKING_URI)")
    return uri


def load_search(folder: str | Path, tracking_uri: str | None = None, fallback_uri: str | None = None) -> Search:
    """Read a search folder (finished, interrupted or still running) and its MLflow records.
    ConfigError when it is not a search folder or its MLflow records cannot be found."""
    folder = Path(folder).absolute()
    if not is_search(folder):
        raise ConfigError(f"EXPERIMENT: {folder} is not a search folder; allowed: a folder written by "
                          "python -m sslray.tune (with summary.json or optuna.db)")
    if not (folder / "space.json").is_file():
        raise ConfigError(f"EXPERIMENT: {folder} has no space.json; allowed: a folder written by python -m sslray.tune")
    space = json.loads((folder / "space.json").read_text())
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else None
    uri = tracking_uri_for(folder, tracking_uri, fallback_uri)
    tracker = Tracker(uri)
    parent = _parent_run(tracker, folder.name, summary, uri)
    return Search(folder=folder, name=folder.name, tracking_uri=uri, parent_run_id=parent.id, space=space,
                  summary=summary, status=STATUS.get(parent.status, parent.status.lower()),
                  space_file=parent.tags.get(tags.SPACE_FILE) or "not recorded (search_space.yaml in the "
                  "parent run's artifacts holds its text)",
                  overrides=parent.tags.get(tags.OVERRIDES, ""), started=parent.started,
                  ended=parent.ended if parent.ended and parent.status != "RUNNING" else None,
                  trials=_trials(tracker, parent, space))


def _parent_run(tracker: Tracker, name: str, summary: dict | None, uri: str):
    run_id = (summary or {}).get("mlflow_parent_run_id")
    run = tracker.get_run(run_id) if run_id else None
    if run is not None:
        return run  # else a summary from another store: look it up by name below
    experiment_id = tracker.experiment_id(name)
    runs = tracker.find_runs([experiment_id], tags={tags.ROLE: "search"}) if experiment_id else []
    if not runs:  # an arm of a comparison logs into the comparison's experiment, tagged with its name
        runs = tracker.find_runs(None, tags={tags.ROLE: "search", tags.SEARCH: name})
    if not runs:
        raise ConfigError(f"--tracking-uri: {uri} holds no search run of experiment {name!r}; allowed: the tracking "
                          "URI the search logged to")
    return runs[0]


def _trials(tracker: Tracker, parent, space: dict) -> list[Trial]:
    metric, better = space["metric"], max if space["mode"] == "max" else min
    specs = {p["path"]: p for p in space["params"]}
    runs = tracker.find_runs([parent.experiment_id], parent=parent.id, oldest_first=True)
    trials = []
    for run in runs:
        tagged, metrics = run.tags, run.metrics
        searched = [k.strip() for k in tagged.get(tags.SEARCHED, "").split(",") if k.strip()] or list(specs)
        curve = tracker.metric_history(run.id, metric)
        epoch = metrics.get("epoch")
        outcome = tagged.get(tags.OUTCOME) or UNENDED.get(run.status, "unknown")
        trials.append(Trial(
            trial_id=tagged.get(tags.TRIAL_ID, ""), run_id=run.id,
            params={k: typed(run.params[k], specs.get(k)) for k in searched if k in run.params},
            outcome=outcome, reason=tagged.get(tags.STOP_REASON, ""),
            epochs=int(epoch) if epoch is not None else None,
            best=better(v for _, v in curve) if curve else None, last=metrics.get(metric),
            rankme=metrics.get("rankme"), curve=curve))
    return trials


def typed(text: str, spec: dict | None) -> Any:
    """A parameter's value as its distribution samples it (MLflow keeps params as strings)."""
    if spec is None:
        return text
    if spec["dist"] == "choice":
        return next((v for v in spec["values"] if str(v) == text), text)
    try:
        return int(text) if spec["dist"] == "int" else float(text)
    except ValueError:
        return text
