"""The search does what its command line says: overrides resolved once, conditional parameters,
MLflow params equal to what ran, bad input refused before anything is written, interruption
recorded and resumed into the same Optuna study."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sslray.config import ConfigError
from sslray.search.space import load_search_space
from test_search import _space, _study

REPO = Path(__file__).resolve().parents[1]


def _tune(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "sslray.tune", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def _one_line_error(proc, *needles):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "; allowed: " in lines[0], proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_overrides_are_resolved_once_into_the_space(tmp_path):
    path, doc = _space(tmp_path)  # train.epochs: 4 in the file
    space = load_search_space(path, ["train.epochs=8", "data.synthetic_train_size=384"])
    assert space.max_epochs == 8 and space.base["data"]["synthetic_train_size"] == 384
    assert space.trial_config({"loss.params.nu": 0.1, "optim.lr": 1e-3}).train.epochs == 8
    from sslray.search.plan import rungs

    assert rungs(space) == [1, 2, 4]  # ASHA's max_t is the overridden 8, not the file's 4
    doc["search"]["asha"]["grace_period"] = 3
    path.write_text(yaml.safe_dump(doc))
    assert load_search_space(path).max_epochs == 4
    with pytest.raises(ConfigError, match=r"search.asha.grace_period: 3 .*allowed: \[1, train.epochs=2\]"):
        load_search_space(path, ["train.epochs=2"])


def test_plan_uses_the_overrides_and_refuses_a_grace_period_beyond_them(tmp_path):
    path, doc = _space(tmp_path)
    doc["search"]["asha"]["grace_period"] = 3
    path.write_text(yaml.safe_dump(doc))
    ok = _tune(path, "--plan", "train.epochs=12")
    assert ok.returncode == 0 and "up to 12 epochs" in ok.stdout and "rungs at epochs 3, 6" in ok.stdout
    _one_line_error(_tune(path, "--plan", "train.epochs=2"), "search.asha.grace_period: 3", "train.epochs=2")


@pytest.mark.parametrize("case", ["resume-nothing", "output-file", "folder-space", "loss-choice-without-when",
                                  "override-searched", "bad-name", "bad-num-cpus", "when-unknown", "point-inactive",
                                  "unknown-flag", "num-cpus-not-a-number", "bad-yaml"])
def test_bad_search_input_is_one_line_and_writes_nothing(tmp_path, case):
    path, doc = _space(tmp_path)
    out = tmp_path / "exp"
    args, needles = [path, "--output", out], []
    search = doc["search"]
    if case == "resume-nothing":
        args += ["--resume"]
        needles = ["--resume:", "holds no search"]
    elif case == "output-file":
        out.write_text("not a folder")
        needles = ["--output:", "is a file"]
    elif case == "folder-space":
        args[0] = tmp_path
        needles = ["is a folder", "allowed: a YAML file"]
    elif case == "loss-choice-without-when":
        search["params"] = {"loss.name": {"dist": "choice", "values": ["vicreg_tico", "tico"]},
                            "loss.params.mu": {"dist": "loguniform", "low": 1, "high": 50}}
        search["optuna"]["points_to_evaluate"] = []
        needles = ["search.params.loss.params.mu: loss 'tico' has no parameter 'mu'", "when: {loss.name: [vicreg_tico]}"]
    elif case == "override-searched":
        args += ["optim.lr=0.1"]
        needles = ["override optim.lr: it is a searched parameter"]
    elif case == "bad-name":
        args += ["--name", "../up"]
        needles = ["--name: '../up'"]
    elif case == "bad-num-cpus":
        args += ["--num-cpus", "0"]
        needles = ["--num-cpus: 0"]
    elif case == "when-unknown":
        search["params"]["optim.lr"]["when"] = {"loss.name": "vicreg"}
        needles = ["search.params.optim.lr.when: 'loss.name' is not a choice parameter"]
    elif case == "point-inactive":
        search["params"] = {"loss.name": {"dist": "choice", "values": ["vicreg", "vicreg_tico"]},
                            "loss.params.beta": {"dist": "uniform", "low": 0.5, "high": 0.99,
                                                 "when": {"loss.name": "vicreg_tico"}}}
        search["optuna"]["points_to_evaluate"] = [{"loss.name": "vicreg", "loss.params.beta": 0.9}]
        needles = ["points_to_evaluate[0]: must set exactly", "allowed: loss.name"]
    elif case == "unknown-flag":
        args += ["--gpus", "2"]
        needles = ["--gpus 2: unknown argument(s)"]
    elif case == "num-cpus-not-a-number":
        args += ["--num-cpus", "many"]
        needles = ["--num-cpus: 'many' is not a number"]
    path.write_text(yaml.safe_dump(doc) + ("search: [unclosed\n" if case == "bad-yaml" else ""))
    if case == "bad-yaml":
        needles = ["not valid YAML"]
    proc = _tune(*args)
    _one_line_error(proc, *needles)
    assert not out.exists() or out.is_file()


@pytest.mark.parametrize("override, field", [("scale.use_gpu=true", "scale.use_gpu"),
                                             ("scale.cpus_per_worker=64", "scale.cpus_per_worker")])
def test_a_search_the_local_cluster_can_never_run_fails_before_the_first_trial(tmp_path, override, field):
    path, _ = _space(tmp_path)
    proc = _tune(path, "--output", tmp_path / "exp", override, timeout=180)
    _one_line_error(proc, f"{field}:", "node(s)")
    assert not (tmp_path / "exp").exists()


def test_a_ray_train_run_the_local_cluster_can_never_run_fails_at_once(tmp_path, tiny_cfg):
    tiny_cfg["scale"] = {"workers": 1, "use_gpu": True}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_cfg))
    proc = subprocess.run([sys.executable, "-m", "sslray.train", str(cfg)], capture_output=True, text=True, timeout=180)
    _one_line_error(proc, "scale.use_gpu:", "no GPU")
    assert not (tmp_path / "runs").exists()


def test_cluster_shortfall_by_placement_strategy():
    from sslray.config import ScaleConfig
    from sslray.resources import shortfall

    nodes = [{"CPU": 4.0}, {"CPU": 4.0}]
    assert shortfall(ScaleConfig(workers=8, cpus_per_worker=1), nodes) is None
    assert "room for 8" in shortfall(ScaleConfig(workers=9, cpus_per_worker=1), nodes)
    assert "on one node" in shortfall(ScaleConfig(workers=5, placement_strategy="STRICT_PACK"), nodes)
    assert shortfall(ScaleConfig(workers=2, placement_strategy="STRICT_SPREAD"), nodes) is None
    assert "distinct nodes" in shortfall(ScaleConfig(workers=3, placement_strategy="STRICT_SPREAD"), nodes)
    assert shortfall(ScaleConfig(workers=1, cpus_per_worker=6), nodes).startswith("scale.cpus_per_worker: 6")
    gpu = [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0}]
    assert shortfall(ScaleConfig(workers=1, use_gpu=True), gpu) is None
    assert shortfall(ScaleConfig(workers=1, use_gpu=True, gpus_per_worker=2), gpu).startswith("scale.gpus_per_worker")
    assert "room for 1" in shortfall(ScaleConfig(workers=2, use_gpu=True), gpu)
    assert shortfall(ScaleConfig(workers=0, use_gpu=True), nodes) is None  # in-process: no Ray


@pytest.mark.slow
def test_method_search_overrides_and_mlflow_record_what_ran(tmp_path):
    """One search over the loss itself: beta sampled only for vicreg_tico; train.epochs from the
    command line reaches ASHA (max_t) and every trial; MLflow params equal each trial's config.yaml."""
    from mlflow.tracking import MlflowClient

    from sslray.search.tracking import flatten

    path, doc = _space(tmp_path)
    doc["config"]["train"]["epochs"] = 2  # the file says 2; the command line says 3
    doc["search"] = {
        "metric": "knn_top1", "mode": "max", "num_trials": 3, "max_concurrent": 1,
        "params": {"loss.name": {"dist": "choice", "values": ["vicreg", "vicreg_tico"]},
                   "loss.params.mu": {"dist": "loguniform", "low": 5.0, "high": 50.0},
                   "loss.params.beta": {"dist": "uniform", "low": 0.5, "high": 0.99, "when": {"loss.name": "vicreg_tico"}}},
        "asha": {"grace_period": 2, "reduction_factor": 100},  # nobody is cut: every trial must run 3 epochs
        "optuna": {"seed": 0, "n_startup_trials": 1, "points_to_evaluate": [
            {"loss.name": "vicreg", "loss.params.mu": 25.0},
            {"loss.name": "vicreg_tico", "loss.params.mu": 25.0, "loss.params.beta": 0.9}]},
        "stop": {"rankme_below": None, "emb_std_ratio_below": None}}
    doc["config"]["loss"] = {"name": "vicreg_tico", "params": {"nu": 0.01}}
    path.write_text(yaml.safe_dump(doc))
    proc = _tune(path, "--output", tmp_path / "exp", "--name", "m", "--num-cpus", "4", "-v",
                 "train.epochs=3", "data.synthetic_train_size=384")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Started a local Ray instance" in proc.stdout + proc.stderr  # -v: Ray's own messages on the terminal
    exp = tmp_path / "exp" / "m"
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["outcomes"] == {"finished": 3} and all(row["epochs"] == 3 for row in summary["table"])
    client = MlflowClient(f"sqlite:///{exp / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("m").experiment_id])
    children = [r for r in runs if "sslray.trial_id" in r.data.tags]
    assert len(children) == 3
    # where a user looks first in the MLflow UI: the experiment opens on its training runs (not on
    # MLflow 3's GenAI traces view), the parent run shows the outcome counts and what won
    assert client.get_experiment_by_name("m").tags["mlflow.experimentKind"] == "custom_model_development"
    parent = next(r for r in runs if "sslray.trial_id" not in r.data.tags)
    assert parent.data.metrics["trials_finished"] == 3
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("**3 trials**: 3 finished.") and f"**Best knn_top1: {summary['best']['knn_top1']:.4f}**" in note
    assert f"`loss.name` = {summary['best']['params']['loss.name']}" in note
    study = {t.user_attrs["tune_trial_id"]: t for t in _study(exp, "m").trials}
    for child in children:
        trial_id = child.data.tags["sslray.trial_id"]
        ran = yaml.safe_load((exp / "trials" / f"train-{trial_id}" / "config.yaml").read_text())
        assert ran["train"]["epochs"] == 3 and ran["data"]["synthetic_train_size"] == 384
        assert child.data.params == {k: str(v)[:6000] for k, v in flatten(ran).items()}  # what MLflow shows = what ran
        params = study[trial_id].params
        if ran["loss"]["name"] == "vicreg_tico":
            assert set(params) == {"loss.name", "loss.params.mu", "loss.params.beta"}
            assert ran["loss"]["params"] == {"nu": 0.01, "mu": pytest.approx(params["loss.params.mu"]),
                                             "beta": pytest.approx(params["loss.params.beta"])}
        else:  # vicreg starts from its own defaults: the base's nu belongs to vicreg_tico
            assert set(params) == {"loss.name", "loss.params.mu"}
            assert ran["loss"]["params"] == {"mu": pytest.approx(params["loss.params.mu"])}
        assert [json.loads(x)["epoch"] for x in (exp / "trials" / f"train-{trial_id}" / "metrics.jsonl")
                .read_text().splitlines()] == [1, 2, 3]
    assert {t.params["loss.name"] for t in study.values()} == {"vicreg", "vicreg_tico"}


@pytest.mark.slow
def test_sigterm_marks_runs_killed_and_resume_continues_the_same_study(tmp_path):
    from mlflow.tracking import MlflowClient

    path, doc = _space(tmp_path)
    doc["config"]["train"]["epochs"] = 3
    doc["search"].update(num_trials=2, max_concurrent=1)
    doc["search"]["asha"]["grace_period"] = 3
    path.write_text(yaml.safe_dump(doc))
    exp = tmp_path / "exp" / "k"
    cmd = [sys.executable, "-m", "sslray.tune", str(path), "--output", str(tmp_path / "exp"), "--name", "k",
           "--num-cpus", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not list((exp / "trials").glob("train-*/metrics.jsonl")):
            time.sleep(1)
        assert list((exp / "trials").glob("train-*/metrics.jsonl")), "no trial reported an epoch in time"
        proc.send_signal(signal.SIGTERM)  # to the driver alone, as `kill PID` or a scheduler does
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143, err[-3000:]
    assert "interrupted" in err and "--resume" in err
    client = MlflowClient(f"sqlite:///{exp / 'mlflow.db'}")
    exp_id = client.get_experiment_by_name("k").experiment_id

    def states():
        runs = client.search_runs([exp_id])
        return ([r.info.status for r in runs if r.data.tags.get("sslray.role") == "search"],
                sorted(r.info.status for r in runs if "sslray.trial_id" in r.data.tags))

    parent, children = states()
    assert parent == ["KILLED"] and "RUNNING" not in children and "KILLED" in children, (parent, children)
    assert json.loads((exp / "summary.json").read_text())["status"] == "interrupted"

    again = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert states() == (["FINISHED"], ["FINISHED", "FINISHED"])
    study = _study(exp, "k")
    assert len(study.trials) == 2 and all(t.state.name == "COMPLETE" for t in study.trials)  # no duplicates
    for t in study.trials:
        assert sorted(t.intermediate_values) == [1, 2, 3]
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["outcomes"] == {"finished": 2}


def test_an_autoscaling_cluster_is_waited_for_unless_it_can_never_add_the_resource(monkeypatch):
    """On a cluster whose autoscaler can add GPU nodes, a GPU run waits (and says so); where even
    the autoscaler has no GPU node type, it fails like a fixed cluster."""
    import ray

    from sslray import resources
    from sslray.config import ScaleConfig

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 8.0}}])  # a CPU head only
    said = []
    monkeypatch.setattr(resources, "autoscaler_max", lambda: {"CPU": 72.0, "GPU": 8.0})
    resources.check_cluster(ScaleConfig(workers=1, use_gpu=True), log=said.append)
    assert said and said[0].startswith("waiting for the autoscaler to add nodes: scale.use_gpu:")
    monkeypatch.setattr(resources, "autoscaler_max", lambda: {"CPU": 72.0})
    with pytest.raises(ConfigError, match="no GPU node type either"):
        resources.check_cluster(ScaleConfig(workers=1, use_gpu=True), log=said.append)
    monkeypatch.setattr(resources, "autoscaler_max", lambda: None)  # no autoscaler: final
    with pytest.raises(ConfigError, match=r"^scale.use_gpu: .*allowed: scale.use_gpu=false"):
        resources.check_cluster(ScaleConfig(workers=1, use_gpu=True))


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2], ids=["in-trial", "ray-train-2-workers"])
def test_the_family_search_runs_every_method_through_tune(tmp_path, workers):
    """"Which family, with which weights" as one command: the shipped family search's space (its
    choice of every method, their conditional parameters and default points, UOTA on for one) on
    tiny synthetic data, with one-worker trials (in the Tune trial) and with 2 Ray Train workers
    (DDP over gloo). Every method trains, and each trial's MLflow run holds its own method, only that
    method's searched parameters, whether UOTA was on, and that method's own loss terms."""
    from mlflow.tracking import MlflowClient

    from sslray.methods import METHODS, method_params

    family = yaml.safe_load((Path(__file__).resolve().parents[1] / "search_spaces" / "family_cpu.yaml").read_text())
    path, doc = _space(tmp_path)
    doc["config"]["model"]["width"] = 4
    doc["config"]["loss"] = {"name": "vicreg", "params": {}}
    doc["config"]["train"]["epochs"] = 1
    doc["config"]["train"]["batch_size"] = 128  # a multiple of W-MSE's sub-batch (128 rows for its 64-dim head)
    doc["config"]["scale"] = {"workers": workers, "cpus_per_worker": 1}
    points = family["search"]["optuna"]["points_to_evaluate"]
    doc["search"] = {**family["search"], "num_trials": len(points), "max_concurrent": 2,
                     "asha": {"grace_period": 1, "reduction_factor": 2},
                     "stop": {"rankme_below": None, "emb_std_ratio_below": None}}
    path.write_text(yaml.safe_dump(doc))
    proc = _tune(path, "--output", tmp_path / "exp", "--name", "f", "--num-cpus", str(2 * workers), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = tmp_path / "exp" / "f"
    client = MlflowClient(f"sqlite:///{exp / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("f").experiment_id])
    trials = [r for r in runs if "sslray.trial_id" in r.data.tags]
    assert len(trials) == len(points)
    with_uota = [r.data.params["loss.name"] for r in trials if r.data.params.get("loss.uota.enabled") == "True"]
    assert with_uota == ["simclr"]  # the eleventh default point
    assert all(r.data.params["scale.workers"] == str(workers) and r.info.status == "FINISHED" for r in trials)
    children = {r.data.params["loss.name"]: r for r in trials if r.data.params.get("loss.uota.enabled") != "True"}
    assert set(children) == set(METHODS)  # the default points: one trial per method
    terms = {"vicreg": {"inv", "var", "cov"}, "tico": {"inv", "cov"}, "vicreg_tico": {"inv", "var", "cov"},
             "barlow": {"on_diag", "off_diag"}, "simclr": {"nt_xent"}, "moco": {"infonce"}, "byol": {"regression"},
             "simsiam": {"neg_cos"}, "wmse": {"wmse"}, "swav": {"swav"}}
    assert set(terms) == set(METHODS)
    for name, run in children.items():
        assert run.info.status == "FINISHED", name
        searched = {k.split(".")[-1] for k in run.data.params if k.startswith("loss.params.")}
        assert searched <= set(method_params(name)), (name, searched)  # no other method's parameter
        logged = {k[len("loss_"):] for k in run.data.metrics if k.startswith("loss_")}
        assert terms[name] <= logged, (name, logged)
        assert 0 < run.data.metrics["knn_top1"] <= 1


def test_an_experiment_made_before_the_kind_tag_gets_it_on_the_next_search(tmp_path):
    """MLflow 3's UI opens an experiment without ``mlflow.experimentKind`` on its GenAI traces view:
    a search that reuses an older experiment marks it as model training."""
    from mlflow.tracking import MlflowClient

    from sslray.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    old = client.create_experiment("old", artifact_location=(tmp_path / "a").as_uri())
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    assert Tracker(uri).experiment("old", tmp_path) == old
    new = Tracker(uri).experiment("new", tmp_path)
    for exp_id in (old, new):
        assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_undecodable_images_are_refused_before_the_first_trial(tmp_path):
    """The search decodes the dataset once before its trials (into the experiment's data cache):
    images that do not decode are bad input -- one line naming the rows, exit 2, no experiment
    left behind -- not a failure of every trial."""
    import pyarrow.parquet as pq

    from test_data import _table

    pq.write_table(_table(n=64, bad_rows=(5,)), tmp_path / "train.parquet")
    pq.write_table(_table(n=32), tmp_path / "test.parquet")
    path, doc = _space(tmp_path)
    doc["config"]["data"] = {"source": "parquet", "train_path": str(tmp_path / "train.parquet"),
                             "test_path": str(tmp_path / "test.parquet")}
    doc["config"]["views"] = {"size": 16}
    path.write_text(yaml.safe_dump(doc))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-m", "sslray.tune", str(path), "--output", str(tmp_path / "exp"),
                           "--name", "bad", "--num-cpus", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "1 image(s) could not be decoded: row 5 (split/5.jpg)" in lines[0], proc.stderr
    assert not (tmp_path / "exp" / "bad").exists()
