"""sslray.tracking: the one module that talks to MLflow. Its interface against a real SQLite store
(params, batched metrics, tags, parent and child runs, artifacts, a registered model's alias
resolved to the checkpoint its run holds), and the rule that nothing else imports mlflow or
spells a tag name."""
import ast
import re
from pathlib import Path

import pytest

from sslray.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint, save_checkpoint
from sslray.tracking import (Tracker, TrackingError, checkpoint_file, log_model, mlflow_param, store_uri, tags,
                             use_by_default)
from sslray.tracking.store import KIND_TAG, MAX_PARAM, NOTE_TAG, PARENT_TAG, TRAINING_KIND

REPO = Path(__file__).resolve().parents[1]
TRACKING = REPO / "sslray" / "tracking"


@pytest.fixture
def tracker(tmp_path):
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture
def default_store(tmp_path):
    """The process's store for models:/ and runs:/ URIs, reset afterwards (it sets an env variable)."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    use_by_default(uri)
    yield uri
    mlflow.set_tracking_uri(None)


def test_store_uri_given_else_environment_else_the_folder_db(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert store_uri("http://h:5000", tmp_path) == "http://h:5000"
    assert store_uri(None, tmp_path) == f"sqlite:///{tmp_path.absolute() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////x/y.db")
    assert store_uri(None, tmp_path) == "sqlite:////x/y.db"


def test_experiment_is_created_once_next_to_a_sqlite_store_and_marked_as_training(tracker, tmp_path):
    exp_id = tracker.experiment("e", tmp_path)
    assert tracker.experiment("e", tmp_path) == exp_id == tracker.experiment_id("e")
    assert tracker.experiment_id("none") is None
    made = tracker.client.get_experiment(exp_id)
    assert made.tags[KIND_TAG] == TRAINING_KIND
    assert made.artifact_location == (tmp_path / "mlartifacts").as_uri()
    old = tracker.client.create_experiment("old", artifact_location=(tmp_path / "a").as_uri())
    assert tracker.experiment("old", tmp_path) == old  # an older experiment gets the kind tag
    assert tracker.client.get_experiment(old).tags[KIND_TAG] == TRAINING_KIND


def test_params_metrics_tags_round_trip(tracker, tmp_path):
    exp_id = tracker.experiment("e", tmp_path)
    run_id = tracker.start_run(exp_id, "r", {tags.ROLE: "search"})
    long = "x" * (MAX_PARAM + 50)
    tracker.log_params(run_id, {"optim.lr": 0.001, "flag": True, "seeds": [0, 1], "long": long})
    tracker.log_metrics(run_id, {"knn_top1": 0.25, "loss": 1.5}, step=1, timestamp=100.0)
    tracker.log_metrics(run_id, {"knn_top1": 0.5}, step=2, timestamp=101.0)
    tracker.set_tags(run_id, {tags.OUTCOME: "finished", tags.STOP_REASON: "done"})
    tracker.set_note(run_id, "**note**")
    tracker.log_dict(run_id, {"a": 1}, "summary.json")
    tracker.log_text(run_id, "text", "space.yaml")
    tracker.end_run(run_id, "FINISHED")

    run = tracker.get_run(run_id)
    assert run.params == {"optim.lr": "0.001", "flag": "True", "seeds": "[0, 1]", "long": long[:MAX_PARAM]}
    assert mlflow_param("flag", True).value == "True"
    assert run.metrics == {"knn_top1": 0.5, "loss": 1.5}  # the latest value of each
    assert tracker.metric_history(run_id, "knn_top1") == [(1, 0.25), (2, 0.5)]
    assert [(m.step, m.timestamp) for m in tracker.client.get_metric_history(run_id, "loss")] == [(1, 100000)]
    assert run.tags[tags.ROLE] == "search" and run.tags[tags.OUTCOME] == "finished"
    assert run.tags[tags.STOP_REASON] == "done" and run.tags[NOTE_TAG] == "**note**"
    assert run.status == "FINISHED" and run.name == "r" and run.experiment_id == exp_id
    assert run.ended is not None and run.ended >= run.started > 0
    stored = {f.path for f in tracker.client.list_artifacts(run_id)}
    assert stored == {"summary.json", "space.yaml"}
    assert tracker.get_run("0" * 32) is None


def test_parent_and_children_found_by_tag_status_and_outcome(tracker, tmp_path):
    exp_id = tracker.experiment("e", tmp_path)
    parent = tracker.start_run(exp_id, "search-s", {tags.ROLE: "search", tags.SEARCH: "s"})
    first = tracker.start_run(exp_id, "trial-a", {tags.TRIAL_ID: "a"}, parent=parent)
    second = tracker.start_run(exp_id, "trial-b", {tags.TRIAL_ID: "b"}, parent=parent)
    other = tracker.start_run(exp_id, "search-t", {tags.ROLE: "search", tags.SEARCH: "t"})
    tracker.set_tags(first, {tags.OUTCOME: "asha"})
    tracker.end_run(first, "FINISHED")

    assert tracker.get_run(first).parent_id == parent and tracker.get_run(parent).parent_id is None
    assert tracker.get_run(first).tags[PARENT_TAG] == parent
    assert [r.id for r in tracker.find_runs([exp_id], parent=parent, oldest_first=True)] == [first, second]
    assert [r.id for r in tracker.find_runs([exp_id], parent=parent, tagged=tags.OUTCOME)] == [first]
    assert [r.id for r in tracker.find_runs([exp_id], parent=parent, status="RUNNING")] == [second]
    assert [r.id for r in tracker.find_runs([exp_id], tags={tags.TRIAL_ID: "b"})] == [second]
    assert [r.id for r in tracker.find_runs(None, tags={tags.ROLE: "search", tags.SEARCH: "t"})] == [other]
    tracker.end_run(second, "KILLED")
    tracker.reopen(second)
    assert tracker.get_run(second).status == "RUNNING"


def test_log_folder_as_artifacts_and_a_refusal_as_tracking_error(tracker, tmp_path):
    exp_id = tracker.experiment("e", tmp_path)
    run_id = tracker.start_run(exp_id, "r")
    (tmp_path / "report" / "figures").mkdir(parents=True)
    (tmp_path / "report" / "report.md").write_text("# r\n")
    (tmp_path / "report" / "figures" / "a.png").write_bytes(b"png")
    tracker.log_folder(run_id, tmp_path / "report", "report")
    assert {f.path for f in tracker.client.list_artifacts(run_id, "report")} == {"report/report.md", "report/figures"}
    assert [f.path for f in tracker.client.list_artifacts(run_id, "report/figures")] == ["report/figures/a.png"]
    assert list((tmp_path / "mlartifacts").rglob("a.png"))[0].read_bytes() == b"png"  # next to the SQLite store
    with pytest.raises(TrackingError):
        tracker.log_folder("0" * 32, tmp_path / "report", "report")  # no such run


def test_registered_model_alias_and_run_uri_resolve_to_the_checkpoint(tmp_path, default_store):
    import torch

    tracker = Tracker(default_store)
    exp_id = tracker.experiment("e", tmp_path)
    run_id = tracker.start_run(exp_id, "trial-a")
    ckpt = save_checkpoint({"epoch": 3, "config": {}, "model": {"w": torch.ones(2)}}, tmp_path / "ckpt" / "checkpoint.pt")
    uri = log_model(tracker, run_id, torch.nn.Linear(2, 2), "encoder", ckpt, registered_model="m", alias="best")
    assert uri == "models:/m@best"
    version = tracker.client.get_model_version_by_alias("m", "best")
    assert version.run_id == run_id and str(version.version) == "1"
    run_id_2 = tracker.start_run(exp_id, "trial-b")
    log_model(tracker, run_id_2, torch.nn.Linear(2, 2), "encoder", ckpt, registered_model="m", alias="best")
    assert tracker.client.get_model_version_by_alias("m", "best").run_id == run_id_2  # the alias moves

    for source in ("models:/m@best", "models:/m/2", f"runs:/{run_id_2}", f"runs:/{run_id}/encoder"):
        local = checkpoint_file(source)
        assert local.read_bytes() == ckpt.read_bytes(), source
    assert resolve_checkpoint("models:/m@best").read_bytes() == ckpt.read_bytes()
    assert load_checkpoint("models:/m/1")["epoch"] == 3
    with pytest.raises(CheckpointError, match="models:/m: a model URI needs a version or an alias"):
        resolve_checkpoint("models:/m")
    with pytest.raises(CheckpointError, match=r"models:/m@worst: MLflow cannot resolve it \(.*worst"):
        resolve_checkpoint("models:/m@worst")
    with pytest.raises(TrackingError, match="MLflow cannot resolve it"):
        checkpoint_file("runs:/" + "0" * 32)


# ------------------------------------------------------------------ the rule: one module talks to MLflow
def _sources():
    for root in ("sslray", "bench"):
        yield from sorted((REPO / root).rglob("*.py"))


def _docstrings(tree) -> set[int]:
    """ids of string statements (docstrings and the like): prose, where a tag may be named."""
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


def test_no_module_outside_sslray_tracking_imports_mlflow():
    offenders = []
    for path in _sources():
        if TRACKING in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} imports {n}" for n in names
                          if n == "mlflow" or n.startswith("mlflow.")]
    assert not offenders, "\n".join(offenders)


def test_tag_names_are_spelled_only_in_tags_py():
    from sslray.tracking.store import KIND_TAG, NOTE_TAG, PARENT_TAG

    assert len(set(tags.ALL)) == 13 and all(t.startswith("sslray.") for t in tags.ALL)
    assert {v for k, v in vars(tags).items() if k.isupper() and k not in ("ALL", "SEGMENT_PREFIX")} == set(tags.ALL)
    assert tags.segment(12) == "sslray.segment.12"
    ours = re.compile(r"(?<![\w.])(" + "|".join(re.escape(t) for t in tags.ALL) + r")(?![\w.])|sslray\.segment\.")
    mlflows = re.compile("|".join(re.escape(t) for t in (PARENT_TAG, NOTE_TAG, KIND_TAG)))
    offenders = []
    for path in _sources():
        tree = ast.parse(path.read_text(), str(path))
        prose = _docstrings(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in prose:
                continue
            if path != TRACKING / "tags.py" and ours.search(node.value):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} spells {ours.search(node.value)[0]!r}")
            if TRACKING not in path.parents and mlflows.search(node.value):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} spells {mlflows.search(node.value)[0]!r}")
    assert not offenders, "\n".join(offenders)
