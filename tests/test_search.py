"""Search-space files and the search itself (Optuna + ASHA over Ray Train trials, MLflow)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from sslray.config import ConfigError
from sslray.search.space import load_search_space

REPO = Path(__file__).resolve().parents[1]
SPACES = sorted((REPO / "search_spaces").glob("*.yaml"))


def test_shipped_search_spaces_exist():
    from sslray.methods import METHODS

    names = {p.stem for p in SPACES}
    assert {"tico", "tico_pure", "quickstart", "family_cpu"} <= names
    assert set(METHODS) - {"tico", "vicreg_tico"} <= names  # a space per method (VICReg-TiCo's is tico.yaml)


def test_the_family_search_samples_each_methods_own_parameters_only_when_chosen():
    """One search over the method itself: every method is a choice, its first trials are the
    methods' defaults, and a trial samples exactly the parameters of the method it chose."""
    from sslray.methods import METHODS, method_params

    space = load_search_space(REPO / "search_spaces" / "family_cpu.yaml")
    choice = next(p for p in space.params if p.path == "loss.name")
    assert set(choice.values) == set(METHODS)
    points = space.optuna.points_to_evaluate
    assert [pt["loss.name"] for pt in points[:len(METHODS)]] == list(choice.values)  # then UOTA on for simclr
    assert [(pt["loss.name"], pt.get("loss.uota.enabled")) for pt in points[len(METHODS):]] == [("simclr", True)]
    assert space.trial_config(points[-1]).loss.uota.enabled is True
    for name in METHODS:
        active = space.active_params({"loss.name": name})
        own = {p.split(".")[-1] for p in active if p.startswith("loss.params.")}
        assert own and own <= set(method_params(name)), (name, own)
        others = {p.path for p in space.params if p.when and name not in p.when["loss.name"]}
        assert not others & set(active)
        point = next(pt for pt in space.optuna.points_to_evaluate if pt["loss.name"] == name)
        assert set(point) == set(active)  # each default point sets exactly what the method samples
        cfg = space.trial_config(point)
        assert cfg.loss.name == name and own <= set(cfg.loss.params) <= set(method_params(name))


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_search_space_loads_and_validates(path):
    space = load_search_space(path)
    assert space.params and space.metric in ("knn_top1", "probe_top1", "rankme")
    for point in space.optuna.points_to_evaluate:
        cfg = space.trial_config(point)
        for k, v in point.items():
            section, *rest = k.split(".")
            node = getattr(cfg, section)
            for r in rest[:-1]:
                node = node[int(r)] if isinstance(node, list) else getattr(node, r)  # views.crops.2.count
            assert (node[rest[-1]] if isinstance(node, dict) else getattr(node, rest[-1])) == v


def _study(exp: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{exp / 'optuna.db'}")


def _epochs(run_dir: Path) -> list[int]:
    """The epochs a trial's run directory recorded, in order."""
    p = run_dir / "metrics.jsonl"
    return [json.loads(x)["epoch"] for x in p.read_text().splitlines()] if p.exists() else []


def _space(tmp_path, search=None, config=None):
    doc = {
        "config": config or {
            "data": {"source": "synthetic", "synthetic_train_size": 512, "synthetic_test_size": 128,
                     "synthetic_image_size": 32},
            "views": {"size": 32}, "model": {"encoder": "small_cnn", "width": 8, "projector": "32-32"},
            "loss": {"name": "vicreg_tico", "params": {"nu": 0.01}},  # nu: no default
            "optim": {"name": "adamw", "lr": 1e-3, "warmup_epochs": 0},
            "train": {"epochs": 4, "batch_size": 32}, "eval": {"knn_k": 10},
            "scale": {"workers": 1, "cpus_per_worker": 1},
        },
        "search": search or {
            # sequential trials, a sane first point and a wrecked second one (lr 1.0: kNN ~11 % vs
            # ~19 % after an epoch) so ASHA's first rung must stop the second: deterministic.
            "metric": "knn_top1", "mode": "max", "num_trials": 4, "max_concurrent": 1,
            "params": {"loss.params.nu": {"dist": "loguniform", "low": 1e-3, "high": 1.0},
                       "optim.lr": {"dist": "loguniform", "low": 1e-4, "high": 1.0}},
            "asha": {"grace_period": 1, "reduction_factor": 2},
            "optuna": {"seed": 0, "n_startup_trials": 2,
                       "points_to_evaluate": [{"loss.params.nu": 0.01, "optim.lr": 1e-3},
                                              {"loss.params.nu": 0.01, "optim.lr": 1.0}]},
            "stop": {"rankme_below": None, "emb_std_ratio_below": None},  # let ASHA decide here
        },
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, doc


@pytest.mark.parametrize("mutate, field, allowed", [
    (lambda s: s["params"].update({"loss.params.gamma": {"dist": "uniform", "low": 0, "high": 1}}),
     "search.params.loss.params.gamma", "lam, mu, nu, beta, eps"),
    (lambda s: s["params"].update({"optim.lrr": {"dist": "uniform", "low": 0.1, "high": 1}}),
     "search.params.optim.lrr", "lr"),
    (lambda s: s["params"].update({"optim.lr": {"dist": "loguniform", "low": 0.1, "high": 0.1}}),
     "search.params.optim.lr", "empty range"),
    (lambda s: s["params"].update({"optim.lr": {"dist": "normal", "low": 0.1, "high": 1}}),
     "search.params.optim.lr.dist", "loguniform, uniform, int, choice"),
    (lambda s: s["params"].update({"loss.params.beta": {"dist": "uniform", "low": 0.5, "high": 1.0}}),
     "search.params.loss.params.beta", "[0, 1)"),
    (lambda s: s["params"].update({"loss.params.center": {"dist": "uniform", "low": 0, "high": 1}}),
     "search.params.loss.params.center", "allowed: true, false"),
    (lambda s: s["params"].update({"loss.params.lam": {"dist": "choice", "values": [False, True]}}),
     "search.params.loss.params.lam", "allowed: a number"),
    (lambda s: s.update(metric="accuracy"), "search.metric", "knn_top1, probe_top1, rankme"),
    (lambda s: s.update(mode="up"), "search.mode", "max, min"),
    (lambda s: s["asha"].update(grace_period=10), "search.asha.grace_period", "[1, train.epochs=4]"),
    (lambda s: s["optuna"].update(points_to_evaluate=[{"optim.lr": 1e-3}]),
     "search.optuna.points_to_evaluate[0]", "loss.params.nu, optim.lr"),
])
def test_bad_search_space_fails_with_one_clear_message(tmp_path, mutate, field, allowed):
    path, doc = _space(tmp_path)
    mutate(doc["search"])
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        load_search_space(path)
    assert field in str(err.value) and allowed in str(err.value), str(err.value)
    proc = subprocess.run([sys.executable, "-m", "sslray.tune", str(path), "--output", str(tmp_path / "exp")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and field in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("switch", ["center", "offdiag", "symmetric", "bias_correction"])
def test_boolean_loss_switches_are_searched_as_choices_and_recorded_as_run(tmp_path, switch):
    """{dist: choice, values: [false, true]} under loss.params.<switch>: the file loads, each trial's
    config holds the boolean, the MLflow record (flattened config) shows it, and the loss built from
    that config -- what the trial runs -- has it."""
    from sslray.methods import build_loss
    from sslray.search.trainable import trial_config
    from sslray.search.tracking import flatten
    from sslray.tracking import mlflow_param

    path, doc = _space(tmp_path)
    doc["search"]["params"][f"loss.params.{switch}"] = {"dist": "choice", "values": [False, True]}
    doc["search"]["optuna"]["points_to_evaluate"] = [{**p, f"loss.params.{switch}": True}
                                                     for p in doc["search"]["optuna"]["points_to_evaluate"]]
    path.write_text(yaml.safe_dump(doc))
    space = load_search_space(path)
    assert {p.path: p.values for p in space.params}[f"loss.params.{switch}"] == [False, True]
    for value in (False, True):
        sampled = {"loss.params.nu": 0.01, "optim.lr": 1e-3, f"loss.params.{switch}": value}
        cfg = trial_config(space, sampled, str(tmp_path / "trials"), "t0")  # the trainable's and MLflow's config
        assert cfg.loss.params[switch] is value
        recorded = flatten(cfg.to_dict())[f"loss.params.{switch}"]
        assert recorded is value and mlflow_param(f"loss.params.{switch}", recorded).value == str(value)
        assert getattr(build_loss(cfg.loss.name, cfg.loss.params, dim=32), switch) is value
        # the run directory's config.yaml reads back the same
        assert yaml.safe_load(yaml.safe_dump(cfg.to_dict()))["loss"]["params"][switch] is value


def test_a_search_that_can_switch_to_vicreg_tico_must_give_nu(tmp_path):
    """nu has no default: from a vicreg base, choosing vicreg_tico without nu is refused at load, naming
    nu and its scale; sampled under a `when`, the file loads (the range ends are checked with it)."""
    path, doc = _space(tmp_path)
    doc["config"]["loss"] = {"name": "vicreg"}
    doc["search"]["params"] = {"loss.name": {"dist": "choice", "values": ["vicreg", "vicreg_tico"]},
                               "optim.lr": {"dist": "loguniform", "low": 1e-4, "high": 1.0}}
    doc["search"]["optuna"]["points_to_evaluate"] = []
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        load_search_space(path)
    assert "search.params.loss.name: value 'vicreg_tico'" in str(err.value) and "nu: None" in str(err.value)
    assert "1/dim = 0.0312" in str(err.value) and "\n" not in str(err.value)
    doc["search"]["params"]["loss.params.nu"] = {"dist": "loguniform", "low": 1e-4, "high": 0.1,
                                                 "when": {"loss.name": "vicreg_tico"}}
    doc["search"]["params"]["loss.params.center"] = {"dist": "choice", "values": [False, True],
                                                     "when": {"loss.name": "vicreg_tico"}}
    path.write_text(yaml.safe_dump(doc))
    space = load_search_space(path)
    cfg = space.trial_config({"loss.name": "vicreg_tico", "optim.lr": 0.1, "loss.params.nu": 0.02,
                              "loss.params.center": True})
    assert cfg.loss.params == {"nu": 0.02, "center": True}


# Both ways a trial trains: the loop in the Tune trial itself (one worker) and a Ray Train run of
# two DDP workers. Same run directories, metrics, MLflow records, checkpoints and resume.
RUNNERS = {"in-trial": {"workers": 1, "cpus_per_worker": 1}, "ray-train": {"workers": 2, "cpus_per_worker": 1}}


def _runner(doc: dict, path: Path, runner: str) -> None:
    doc["config"]["scale"] = dict(RUNNERS[runner])
    path.write_text(yaml.safe_dump(doc))


@pytest.mark.slow
@pytest.mark.parametrize("runner", RUNNERS)
def test_search_end_to_end_asha_mlflow_best_checkpoint(tmp_path, monkeypatch, runner):
    import mlflow
    import torch
    from mlflow.tracking import MlflowClient

    import sslray

    path, doc = _space(tmp_path)
    _runner(doc, path, runner)
    proc = subprocess.run([sys.executable, "-m", "sslray.tune", str(path), "--output", str(tmp_path / "exp"),
                           "--name", "e2e", "--num-cpus", "4"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    exp = tmp_path / "exp" / "e2e"
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["trials"] == 4
    assert summary["outcomes"].get("asha", 0) >= 1, summary["outcomes"]  # ASHA stopped at least one trial
    assert "best knn_top1" in proc.stdout
    # what the user sees: one line per trial-epoch and per trial end, Ray's and Tune's own output in ray.log
    lines = proc.stdout.splitlines()
    epochs = [json.loads(x)["epoch"] for d in (exp / "trials").glob("train-*") for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert len([x for x in lines if re.match(r"trial \S+ epoch ", x)]) == len(epochs)
    assert len([x for x in lines if re.match(r"trial \S+ end ", x)]) == 4
    assert sum("stopped by ASHA at epoch 1" in x for x in lines) == summary["outcomes"].get("asha", 0)
    for noise in ("Trial status", "Configuration for experiment", "Started a local Ray instance", "pid="):
        assert noise not in proc.stdout + proc.stderr, noise
    assert "Started a local Ray instance" in (exp / "ray.log").read_text()

    client = MlflowClient(f"sqlite:///{exp / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "e2e"]
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sslray.role") == "search"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 4
    for child in children:
        epochs = child.data.metrics["epoch"]
        for key in ("knn_top1", "loss", "loss_inv", "loss_var", "loss_cov", "rankme", "img_per_s"):
            history = client.get_metric_history(child.info.run_id, key)
            assert sorted(m.step for m in history) == list(range(1, int(epochs) + 1)), key  # every epoch
        assert child.data.params["loss.name"] == "vicreg_tico" and "loss.params.nu" in child.data.params
        assert child.data.tags["sslray.outcome"] in ("finished", "asha", "collapsed", "diverged")
    # the Optuna study tells the same story as MLflow: finished -> COMPLETE with the final score,
    # ASHA-stopped -> PRUNED (never COMPLETE with a rung's score); per-epoch scores as intermediate values
    study = _study(exp, "e2e")
    assert len(study.trials) == 4
    by_tune_id = {t.user_attrs["tune_trial_id"]: t for t in study.trials}
    state = {"finished": "COMPLETE", "asha": "PRUNED", "collapsed": "PRUNED", "diverged": "PRUNED", "failed": "FAIL"}
    for child in children:
        t = by_tune_id[child.data.tags["sslray.trial_id"]]
        outcome = child.data.tags["sslray.outcome"]
        assert t.state.name == state[outcome] and t.user_attrs["outcome"] == outcome
        knn = {m.step: m.value for m in client.get_metric_history(child.info.run_id, "knn_top1")}
        assert t.intermediate_values == pytest.approx(knn, abs=1e-9)
        if outcome == "finished":
            assert t.value == pytest.approx(knn[4], abs=1e-9)
        assert {k: float(v) for k, v in t.params.items()} == pytest.approx(
            {k: float(child.data.params[k]) for k in t.params})
    assert sum(t.state.name == "PRUNED" for t in study.trials) == summary["outcomes"].get("asha", 0)
    best = summary["best"]
    assert best["epochs"] == 4 and best["checkpoint"]
    enc = sslray.load_encoder(Path(best["checkpoint"]) / "checkpoint.pt")
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI to child processes: scope it to this test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{exp / 'mlflow.db'}")
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", f"sqlite:///{exp / 'mlflow.db'}")
    model = mlflow.pytorch.load_model("models:/sslray-e2e@best")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), enc(x))
    # the same encoder through sslray.load_encoder and `python -m sslray.eval` with the MLflow URI
    torch.testing.assert_close(sslray.load_encoder("models:/sslray-e2e@best")(x), enc(x))
    ev = subprocess.run([sys.executable, "-m", "sslray.eval", "models:/sslray-e2e@best", "eval.probe_epochs=3",
                         "--tracking-uri", f"sqlite:///{exp / 'mlflow.db'}"], capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr[-3000:]
    res = json.loads(ev.stdout)
    assert res["epoch"] == 4 and res["knn_top1"] == pytest.approx(best["knn_top1"], abs=1e-6)
    if runner != "in-trial":
        return
    # the search's best, by its MLflow name, turned into a student (SimCLRv2-style distillation)
    out = tmp_path / "student"
    dis = subprocess.run([sys.executable, "-m", "sslray.distill", "models:/sslray-e2e@best", "--tracking-uri",
                          f"sqlite:///{exp / 'mlflow.db'}", "--output", str(out), "--label-fraction", "0.25",
                          "--finetune-epochs", "1", "--distill-epochs", "1", "--batch-size", "32",
                          "train.num_threads=1", "eval.probe_epochs=3"], capture_output=True, text=True, timeout=300)
    assert dis.returncode == 0, dis.stderr[-3000:]
    student = json.loads((out / "summary.json").read_text())
    assert student["params"]["teacher"] == "models:/sslray-e2e@best" and student["params"]["teacher_epoch"] == 4
    assert 0 < student["metrics"]["student_probe_top1"] <= 1 and 0 < student["metrics"]["student_knn_top1"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("runner", RUNNERS)
def test_killed_driver_resumes_without_rerunning_or_duplicating(tmp_path, runner):
    import os
    import signal
    import time

    from mlflow.tracking import MlflowClient

    path, doc = _space(tmp_path)
    doc["search"].update(max_concurrent=1, num_trials=3)
    doc["config"]["train"]["epochs"] = 3
    doc["search"]["asha"]["grace_period"] = 3  # no ASHA stops: every trial runs to the end
    _runner(doc, path, runner)
    cmd = [sys.executable, "-m", "sslray.tune", str(path), "--output", str(tmp_path / "exp"), "--name", "r",
           "--num-cpus", "4"]
    exp = tmp_path / "exp" / "r"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 400
        finished = []
        while time.time() < deadline and len(finished) < 1:  # one trial done, the next one started
            time.sleep(1)
            finished = [d for d in (exp / "trials").glob("train-*") if _epochs(d) == [1, 2, 3]]
        assert finished, "no trial finished before the deadline"
        time.sleep(3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
    first_done = {d.name for d in finished}
    proc = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["trials"] == 3 and summary["best"] is not None
    # the trial finished before the kill was not trained again: one line per epoch in its run
    for name in first_done:
        assert _epochs(exp / "trials" / name) == [1, 2, 3], name
    client = MlflowClient(f"sqlite:///{exp / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "r"]
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sslray.role") == "search"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    # a trial started after Tune's last state snapshot is lost with the driver (Tune starts a new one
    # on resume): its run is closed as orphaned, never left RUNNING
    orphans = [r for r in children if r.data.tags.get("sslray.stop_reason", "").startswith("orphaned")]
    assert all(r.info.status == "KILLED" and r.data.tags["sslray.outcome"] == "failed" for r in orphans)
    assert len(orphans) <= 1 and not [r for r in children if r.info.status == "RUNNING"]
    children = [r for r in children if r not in orphans]
    assert len(parents) == 1 and len(children) == 3  # no duplicate runs
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "knn_top1")]
        assert sorted(steps) == sorted(set(steps)) == [1, 2, 3]  # no epoch logged twice
    # the same Optuna study went on: three COMPLETE trials, each with its three epochs, none RUNNING
    trials = _study(exp, "r").trials
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3 and all(sorted(t.intermediate_values) == [1, 2, 3] for t in complete)
    assert not [t for t in trials if t.state.name == "RUNNING"]
    assert {t.user_attrs["tune_trial_id"] for t in complete} == {c.data.tags["sslray.trial_id"] for c in children}


def test_collapse_stopper_and_outcomes_record_why():
    from sslray.search.outcome import trial_outcome
    from sslray.search.run import CollapseStopper

    space = load_search_space(REPO / "search_spaces" / "quickstart.yaml", ["train.epochs=8"])
    stop = CollapseStopper(space)
    results = {"a": {"epoch": 1, "rankme": 40.0, "emb_std_ratio": 0.9},
               "b": {"epoch": 2, "rankme": 1.3, "emb_std_ratio": 0.9},
               "c": {"epoch": 1, "status": "diverged", "reason": "non-finite loss at epoch 1, step 3"},
               "d": {"epoch": 3, "rankme": 40.0, "emb_std_ratio": 0.01},
               "e": {"epoch": 8, "rankme": 40.0, "emb_std_ratio": 0.9}}
    assert [stop(k, r) for k, r in results.items()] == [False, True, True, True, False]
    outcomes = {k: trial_outcome(space, r) for k, r in results.items()}
    assert outcomes["a"] == ("asha", "stopped by ASHA at epoch 1")
    assert outcomes["b"] == ("collapsed", "collapse: RankMe 1.30 < 2.0 at epoch 2")
    assert outcomes["c"] == ("diverged", "non-finite loss at epoch 1, step 3")
    assert outcomes["d"][0] == "collapsed" and "std ratio" in outcomes["d"][1]
    assert outcomes["e"] == ("finished", "ran all 8 epochs")
    assert trial_outcome(space, results["e"], error=True)[0] == "failed"


@pytest.mark.slow
def test_search_logs_to_a_real_mlflow_server(tmp_path):
    import os
    import signal
    import socket
    import time
    import urllib.request

    from mlflow.tracking import MlflowClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("mlflow server did not come up in 90 s")
        path, doc = _space(tmp_path)
        # two one-CPU trials at once on the default local Ray (no --num-cpus): on a 2-core machine
        # they must still run side by side, not one waiting for the other's CPU
        doc["search"].update(num_trials=2, max_concurrent=2)
        doc["search"]["asha"]["grace_period"] = 4
        path.write_text(yaml.safe_dump(doc))
        proc = subprocess.run([sys.executable, "-m", "sslray.tune", str(path), "--output", str(tmp_path / "exp"),
                               "--name", "srv", "--tracking-uri", uri],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        spans = []
        for trial in (tmp_path / "exp" / "srv" / "trials").glob("train-*"):
            stamps = [time.mktime(time.strptime(x[:19], "%Y-%m-%d %H:%M:%S"))
                      for x in (trial / "log.txt").read_text().splitlines() if " epoch " in x]
            first = json.loads((trial / "metrics.jsonl").read_text().splitlines()[0])
            spans.append((stamps[0] - first["epoch_time_s"], stamps[-1]))
        (a0, a1), (b0, b1) = spans
        assert a0 < b1 and b0 < a1, spans  # the two trials' training overlapped in time
        assert not (tmp_path / "exp" / "srv" / "mlflow.db").exists()  # everything went to the server
        client = MlflowClient(uri)
        (experiment,) = [e for e in client.search_experiments() if e.name == "srv"]
        runs = client.search_runs([experiment.experiment_id])
        parents = [r for r in runs if r.data.tags.get("sslray.role") == "search"]
        assert len(parents) == 1 and len(runs) == 3
        version = client.get_model_version_by_alias("sslray-srv", "best")
        assert version.run_id in {r.info.run_id for r in runs}
        assert any(a.path == "search_space.yaml" for a in client.list_artifacts(parents[0].info.run_id))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_eval_of_a_search_space_is_the_untrained_base_config(tiny_cfg, tmp_path):
    """`python -m sslray.eval SPACE.yaml`: the untrained encoder every trial starts from."""
    from sslray.eval.__main__ import main as eval_main

    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(tiny_cfg))
    space = tmp_path / "s.yaml"
    space.write_text(yaml.safe_dump({"base": "base.yaml", "config": {"model": {"width": 6}},
                                     "search": {"metric": "knn_top1", "mode": "max", "num_trials": 2, "asha": {"grace_period": 1},
                                                "params": {"optim.lr": {"dist": "loguniform", "low": 1e-4, "high": 1e-2}}}}))
    cfg_out, space_out = tmp_path / "cfg.json", tmp_path / "space.json"
    assert eval_main([str(base), "model.width=6", "eval.probe_epochs=2", "--output", str(cfg_out)]) == 0
    assert eval_main([str(space), "eval.probe_epochs=2", "--output", str(space_out)]) == 0
    a, b = json.loads(cfg_out.read_text()), json.loads(space_out.read_text())
    assert b["untrained"] and b["knn_top1"] == a["knn_top1"] and b["probe_test_top1"] == a["probe_test_top1"]


def _write_parquet_copy(config: dict, folder: Path) -> None:
    """The synthetic train/test splits of ``config`` as PNG-in-parquet files (the user-data path)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from sslray.config import load_config
    from sslray.data import load_split

    folder.mkdir(parents=True)
    data_cfg = load_config(config).data
    for split in ("train", "test"):
        d = load_split(data_cfg, split)
        pngs = []
        for img in d.images.permute(0, 2, 3, 1).numpy():
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            pngs.append(buf.getvalue())
        pq.write_table(pa.table({"image": pa.array(pngs, pa.binary()), "label": d.labels.numpy()}),
                       folder / f"{split}.parquet")


@pytest.mark.slow
@pytest.mark.parametrize("runner", RUNNERS)
def test_search_on_a_running_multi_node_cluster_with_uri_storage(tmp_path, runner):
    """The same command against a cluster by address: trials (in-trial loops or their Train workers)
    run on the worker nodes (the head, like cluster/*.yaml's, gives them no CPU), Tune state and
    checkpoints land in the --storage URI, and the best checkpoint loads back from there."""
    from ray.cluster_utils import Cluster

    import sslray
    from sslray.checkpoint import resolve_checkpoint

    path, doc = _space(tmp_path)
    # the data as parquet files under a *relative* path: trials load it in other working directories
    _write_parquet_copy(doc["config"], tmp_path / "data")
    doc["config"]["data"] = {"source": "parquet", "train_path": "data/train.parquet", "test_path": "data/test.parquet"}
    doc["search"].update(num_trials=2, max_concurrent=2)
    doc["search"]["optuna"]["points_to_evaluate"] = [{"loss.params.nu": 0.01, "optim.lr": 1e-3},
                                                     {"loss.params.nu": 0.1, "optim.lr": 3e-3}]
    doc["config"]["train"]["epochs"] = 2
    doc["search"]["asha"]["grace_period"] = 2
    _runner(doc, path, runner)
    if runner == "ray-train":  # 2 trials x 2 workers + the trials' 0.1 CPU on two 2-CPU nodes
        doc["config"]["scale"]["cpus_per_worker"] = 0.5
        path.write_text(yaml.safe_dump(doc))
    mem = {"object_store_memory": 100 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, **mem})
    try:
        workers = [cluster.add_node(num_cpus=2, **mem) for _ in range(2)]
        cluster.wait_for_nodes()
        storage = (tmp_path / "bucket").as_uri()  # file:///...: the pyarrow URI path, as s3:// takes
        proc = subprocess.run([sys.executable, "-m", "sslray.tune", str(path), "--address", cluster.address,
                               "--storage", storage, "--output", "exp", "--name", "c"],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    finally:
        cluster.shutdown()
    summary = json.loads((tmp_path / "exp" / "c" / "summary.json").read_text())
    assert summary["trials"] == 2 and summary["outcomes"] == {"finished": 2}, proc.stdout[-3000:]
    # every Train worker of every trial ran on a worker node
    worker_ids = {w.node_id for w in workers}
    rows = [json.loads(x) for f in (tmp_path / "exp" / "c" / "trials").glob("train-*/metrics.jsonl")
            for x in f.read_text().splitlines()]
    assert len(rows) == 4 and all(set(r["worker_nodes"]) <= worker_ids for r in rows)
    # Tune state and both trials' checkpoints are in the storage, not in the local experiment folder
    bucket = tmp_path / "bucket" / "c"
    last = "trials/train-*/epoch_0002" if runner == "ray-train" else "tune/*/checkpoint_000001"  # Tune counts from 0
    assert (bucket / "tune").is_dir() and len(list(bucket.glob(f"{last}/checkpoint.pt"))) == 2
    assert not list((tmp_path / "exp" / "c" / "trials").rglob("checkpoint.pt"))
    # the dataset was decoded once, by the driver, into the experiment's cache every trial read
    assert len(list((tmp_path / "exp" / "c" / "data_cache").glob("*.pt"))) == 2
    ran = yaml.safe_load(next((tmp_path / "exp" / "c" / "trials").glob("train-*/config.yaml")).read_text())
    assert ran["data"]["cache_dir"] == str(tmp_path / "exp" / "c" / "data_cache")
    best = summary["best"]
    assert best["checkpoint"].startswith(storage + ("/c/trials/train-" if runner == "ray-train" else "/c/tune/"))
    local = resolve_checkpoint(best["checkpoint"])  # the checkpoint file, copied from the storage URI
    assert torch.load(local / "checkpoint.pt" if local.is_dir() else local, weights_only=True)["epoch"] == 2
    enc = sslray.load_encoder(best["checkpoint"])  # copied back from the storage URI
    assert enc(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    # a second search of the same name on the same storage is refused before anything starts
    again = subprocess.run([sys.executable, "-m", "sslray.tune", str(path), "--storage", storage,
                            "--output", str(tmp_path / "exp2"), "--name", "c"], capture_output=True, text=True)
    assert again.returncode == 2 and "already holds a search" in again.stderr and not (tmp_path / "exp2").exists()


@pytest.mark.parametrize("max_t, grace, eta", [(100, 10, 3), (8, 2, 3), (9, 1, 3), (50, 5, 2), (4, 1, 2)])
def test_plan_rungs_are_ray_asha_rungs(tmp_path, max_t, grace, eta):
    from ray.tune.schedulers import ASHAScheduler

    from sslray.search.plan import rungs

    path, doc = _space(tmp_path)
    doc["config"]["train"]["epochs"] = max_t
    doc["search"]["asha"] = {"grace_period": grace, "reduction_factor": eta}
    path.write_text(yaml.safe_dump(doc))
    ray_asha = ASHAScheduler(time_attr="epoch", max_t=max_t, grace_period=grace, reduction_factor=eta,
                             metric="knn_top1", mode="max")
    assert rungs(load_search_space(path)) == sorted(r for r, _ in ray_asha._brackets[0]._rungs if r < max_t)


def test_plan_prints_the_budget_and_runs_nothing(tmp_path):
    from sslray.search.plan import budget

    b = budget(load_search_space(REPO / "search_spaces" / "tico.yaml"), epoch_seconds=9.0)
    # 64 trials, rungs 10/30/90 of 100 epochs, eta 3: 64*10 + 22*20 + 8*60 + 3*10 trial-epochs
    assert b["rungs"] == [10, 30, 90] and b["trials_reaching"] == {10: 64, 30: 22, 90: 8, 100: 3}
    assert b["trial_epochs_asha"] == 1590 and b["trial_epochs_all"] == 6400
    assert b["gpu_hours_asha"] == pytest.approx(1590 * 9 / 3600, abs=0.05) and b["gpus_at_once"] == 8
    proc = subprocess.run([sys.executable, "-m", "sslray.tune", str(REPO / "search_spaces" / "quickstart.yaml"),
                           "--plan", "--epoch-seconds", "20", "train.epochs=12", "--output", str(tmp_path / "exp")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "up to 12 epochs" in proc.stdout and "ASHA rungs at epochs 2, 6" in proc.stdout
    assert not (tmp_path / "exp").exists()


def test_unusable_storage_fails_before_anything_starts(tmp_path):
    path, _ = _space(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "sslray.tune", str(path), "--storage", "nosuchfs://b/x",
                           "--output", str(tmp_path / "exp")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --storage: nosuchfs://b/x is not usable")
    assert "Traceback" not in proc.stderr and not (tmp_path / "exp").exists()


def test_searcher_restored_from_before_a_trial_was_told_does_not_tell_it_again(tmp_path):
    """The crash window of a killed driver: Optuna heard a trial's end, Tune's experiment checkpoint
    (the searcher's pickled state) did not. On resume, Tune completes that trial again; the searcher
    must keep the first verdict and not raise UpdateFinishedTrialError (which Tune turns into a
    failed search)."""
    import pickle

    from sslray.search.study import optuna_storage
    from sslray.search.study import TruthfulOptunaSearch

    path, _ = _space(tmp_path)
    space = load_search_space(path)
    searcher = TruthfulOptunaSearch(space, storage=optuna_storage(tmp_path, "s", fresh=True), study_name="s")
    searcher.set_search_properties(space.metric, space.mode, {})
    assert searcher.suggest("t1") is not None
    for epoch, score in ((1, 0.2), (2, 0.3)):
        searcher.on_trial_result("t1", {"epoch": epoch, space.metric: score})
    saved = pickle.dumps(searcher)  # Tune's last experiment checkpoint before the crash
    final = {"epoch": 3, space.metric: 0.35, "rankme": 10.0, "emb_std_ratio": 0.9}
    searcher.on_trial_result("t1", final)
    final = {"epoch": 4, space.metric: 0.4, "rankme": 10.0, "emb_std_ratio": 0.9}
    searcher.on_trial_complete("t1", result=final)

    restored = pickle.loads(saved)  # what Tuner.restore hands back
    restored.on_trial_result("t1", final)  # a resumed trial re-reports its last epoch
    restored.on_trial_complete("t1", result=final)
    restored.on_trial_complete("t1", error=True)  # and Tune may end it once more
    (trial,) = [t for t in _study(tmp_path, "s").trials if t.state.name != "WAITING"]  # others: points_to_evaluate
    assert trial.state.name == "COMPLETE" and trial.value == pytest.approx(0.4)
    assert trial.intermediate_values == {1: 0.2, 2: 0.3, 3: 0.35, 4: 0.4}
    assert trial.user_attrs["outcome"] == "finished"


def test_a_trial_that_diverged_or_collapsed_no_longer_sets_ashas_bar():
    """Measured on the quickstart: a high-lr trial led at ASHA's first rung, diverged later, and
    its early score stopped the paper's weights. A diverged or collapsed trial leaves the rungs."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from sslray.search.schedulers.asha import SoundASHA

    space = load_search_space(REPO / "search_spaces" / "quickstart.yaml", ["train.epochs=18"])  # rungs 2, 6
    asha = SoundASHA(space.stop, time_attr="epoch", metric="knn_top1", mode="max", max_t=18, grace_period=2,
                     reduction_factor=3)
    fast, steady, third = (SimpleNamespace(trial_id=k) for k in ("fast", "steady", "third"))
    for t in (fast, steady, third):
        asha.on_trial_add(None, t)
    ok = {"rankme": 50.0, "emb_std_ratio": 0.9}
    assert asha.on_trial_result(None, fast, {"epoch": 2, "knn_top1": 0.49, **ok}) == TrialScheduler.CONTINUE
    # while the fast trial is sound, its score is the bar
    assert asha.on_trial_result(None, steady, {"epoch": 2, "knn_top1": 0.44, **ok}) == TrialScheduler.STOP
    diverged = {"epoch": 8, "status": "diverged", "reason": "non-finite loss at epoch 8, step 195"}
    assert asha.on_trial_result(None, fast, diverged) == TrialScheduler.STOP
    asha.on_trial_complete(None, fast, diverged)
    rung2 = next(recorded for milestone, recorded in asha._brackets[0]._rungs if milestone == 2)
    assert "fast" not in rung2 and rung2 == {"steady": 0.44}
    # a later trial is judged against the sound ones only
    assert asha.on_trial_result(None, third, {"epoch": 2, "knn_top1": 0.45, **ok}) == TrialScheduler.CONTINUE
    collapsed = {"epoch": 3, "knn_top1": 0.5, "rankme": 1.2, "emb_std_ratio": 0.9}
    assert asha.on_trial_result(None, third, collapsed) == TrialScheduler.STOP and "third" not in rung2


def test_uota_and_crop_group_fields_are_searched_and_recorded_as_run(tmp_path):
    """loss.uota.tau / start_epoch and a crop group's count (UOTA's M) are searchable paths: each
    trial's config holds the sampled values, the MLflow record names them by the same dotted path,
    and the method built from that config -- what the trial runs -- has them."""
    from sslray.methods import build_method
    from sslray.search.trainable import trial_config
    from sslray.search.tracking import flatten

    path, doc = _space(tmp_path)
    doc["config"] = {**doc.get("config", {}), "loss": {"name": "byol", "params": {}, "uota": {"enabled": True}}}
    doc["search"]["params"] = {"loss.uota.tau": {"dist": "loguniform", "low": 1.0, "high": 1000.0},
                               "loss.uota.start_epoch": {"dist": "int", "low": 0, "high": 2},
                               "views.crops.1.count": {"dist": "choice", "values": [1]}}
    doc["search"]["optuna"]["points_to_evaluate"] = [{"loss.uota.tau": 350.0, "loss.uota.start_epoch": 0,
                                                      "views.crops.1.count": 1}]
    path.write_text(yaml.safe_dump(doc))
    space = load_search_space(path)
    sampled = {"loss.uota.tau": 12.5, "loss.uota.start_epoch": 2, "views.crops.1.count": 1}
    cfg = trial_config(space, sampled, str(tmp_path / "trials"), "t0")
    recorded = flatten(cfg.to_dict())
    assert {k: recorded[k] for k in sampled} == sampled and recorded["loss.uota.enabled"] is True
    assert build_method(cfg, 10).uota.tau == 12.5 and build_method(cfg, 10).uota.start_epoch == 2
    doc["search"]["params"]["views.crops.7.count"] = {"dist": "choice", "values": [1]}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"search\.params\.views\.crops\.7\.count: views\.crops is a list of 2; "
                                          r"allowed: an index 0\.\.1"):
        load_search_space(path)
