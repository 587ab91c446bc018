"""Schedulers as plug-ins (search.schedulers): settings, milestones, --plan, collapse-awareness and
state across a restore for every registered scheduler; fifo and pbt end to end; a killed and
resumed ASHA search cuts as the uninterrupted one would."""
import copy
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from test_search import _epochs, _space, _study

from sslray.config import ConfigError
from sslray.search.schedulers import SCHEDULERS
from sslray.search.space import load_search_space

# One row per registered scheduler: settings for the 4-epoch, 4-trial space of test_search._space,
# a bad setting (field, allowed), the milestones at 4 epochs, and --plan's expected trial-epochs.
ROWS = {
    "fifo": {"settings": {}, "bad": ({"grace_period": 1}, "search.scheduler", "{name: fifo}"),
             "milestones": [], "expected": 16},
    "asha": {"settings": {"grace_period": 1, "reduction_factor": 2},
             "bad": ({"grace_period": 9}, "search.scheduler.grace_period", "[1, train.epochs=4]"),
             "milestones": [1, 2], "expected": 4 * 1 + 2 * 1 + 1 * 2},  # 4 reach 1, 2 reach 2, 1 runs to 4
    "pbt": {"settings": {"perturbation_interval": 2, "quantile_fraction": 0.25},
            "bad": ({"quantile_fraction": 0.7}, "search.scheduler.quantile_fraction", "(0, 0.5]"),
            "milestones": [2], "expected": 16},
}


class _Trial:
    """What the schedulers read of a Tune trial (hashable, as PBT keys its state by trial)."""

    def __init__(self, trial_id):
        self.trial_id, self.experiment_tag, self.config, self.evaluated_params = trial_id, trial_id, {}, {}
        self.run_metadata = SimpleNamespace(checkpoint_manager=SimpleNamespace(
            checkpoint_config=SimpleNamespace(num_to_keep=3)))


def _with_scheduler(tmp_path, name: str, settings: dict):
    path, doc = _space(tmp_path)
    del doc["search"]["asha"]
    doc["search"]["scheduler"] = {"name": name, **settings}
    path.write_text(yaml.safe_dump(doc))
    return path, doc


def test_every_registered_scheduler_has_a_row():
    assert set(ROWS) == set(SCHEDULERS)


@pytest.mark.parametrize("name", ROWS)
def test_scheduler_plugin_settings_milestones_plan_and_collapse(tmp_path, name):
    from ray.tune.schedulers import TrialScheduler

    from sslray.search.plan import budget, format_budget, rungs

    row = ROWS[name]
    path, doc = _with_scheduler(tmp_path, name, row["settings"])
    space = load_search_space(path)
    plugin = space.scheduler
    assert isinstance(plugin, SCHEDULERS[name]) and plugin.name == name
    for k, v in row["settings"].items():
        assert getattr(plugin.settings, k) == v
    assert plugin.milestones(space.max_epochs) == rungs(space) == row["milestones"]
    b = budget(space, epoch_seconds=10)
    assert b[f"trial_epochs_{name}"] == row["expected"] and b["trial_epochs_all"] == 16
    assert b["rungs"] == row["milestones"] and plugin.label in format_budget(b)
    # the record a --resume compares and a report rebuilds the space from
    record = json.loads(json.dumps(space.to_record(), default=str))
    assert record["scheduler"] == {"name": name, **plugin.record()} | {"name": name}
    from sslray.search.space import SearchSpace

    assert SearchSpace.from_record(record).scheduler.settings == plugin.settings
    # its Tune scheduler stops a diverged or collapsed trial (collapse-awareness is shared)
    scheduler = plugin.make(space)
    assert isinstance(scheduler, TrialScheduler)
    trial = _Trial("t")
    assert scheduler.on_trial_result(None, trial, {"epoch": 1, "status": "diverged", "reason": "nan"}) == "STOP"
    # an early stop is "stopped by <scheduler>"
    from sslray.search.outcome import trial_outcome

    assert trial_outcome(space, {"epoch": 1}) == (name, f"stopped by {plugin.label} at epoch 1")
    # a bad setting: one line naming the field, exit 2 from the command, nothing written
    bad, field, allowed = row["bad"]
    _with_scheduler(tmp_path, name, {**row["settings"], **bad})
    with pytest.raises(ConfigError) as err:
        load_search_space(path)
    assert field in str(err.value) and allowed in str(err.value) and "\n" not in str(err.value), str(err.value)
    proc = subprocess.run([sys.executable, "-m", "sslray.tune", str(path), "--output", str(tmp_path / "exp")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {field}") and "Traceback" not in proc.stderr
    assert not (tmp_path / "exp").exists()


def test_scheduler_name_and_the_older_asha_key(tmp_path):
    from sslray.search.run import check_resumable

    path, doc = _space(tmp_path)  # the older key: search.asha
    space = load_search_space(path)
    assert space.scheduler.name == "asha" and space.asha.grace_period == 1 and space.asha.reduction_factor == 2
    doc["search"]["scheduler"] = {"name": "asha"}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="search.asha: given beside search.scheduler"):
        load_search_space(path)
    del doc["search"]["asha"]
    doc["search"]["scheduler"] = {"name": "hyperband"}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"search.scheduler.name: 'hyperband' .*allowed: fifo, asha, pbt"):
        load_search_space(path)
    # a search stored before plug-ins (space.json with only `asha`) resumes with the same file
    old = {k: v for k, v in json.loads(json.dumps(space.to_record(), default=str)).items() if k != "scheduler"}
    (tmp_path / "space.json").write_text(json.dumps(old))
    check_resumable(tmp_path, space, resume=True)
    from sslray.search.space import SearchSpace

    assert SearchSpace.from_record(old).asha == space.asha


def test_pbt_refuses_ray_train_trials_and_architecture_or_choice_parameters(tmp_path):
    path, doc = _with_scheduler(tmp_path, "pbt", {})
    doc["config"]["scale"] = {"workers": 2, "cpus_per_worker": 1}
    path.write_text(yaml.safe_dump(doc))
    proc = subprocess.run([sys.executable, "-m", "sslray.tune", str(path), "--output", str(tmp_path / "exp")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("error: search.scheduler.name: pbt") and "scale.workers=1" in proc.stderr
    doc["config"]["scale"] = {"workers": 1, "cpus_per_worker": 1}
    doc["search"]["params"]["model.width"] = {"dist": "int", "low": 4, "high": 8}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"search.params.model.width: pbt changes every searched value"):
        load_search_space(path)
    del doc["search"]["params"]["model.width"]
    doc["search"]["params"]["optim.name"] = {"dist": "choice", "values": ["adamw", "sgd"]}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"search.params.optim.name: pbt"):
        load_search_space(path)


def _asha_decisions(scheduler, trials, results):
    return [scheduler.on_trial_result(None, trials[t], {"epoch": e, "knn_top1": v, "rankme": 50.0,
                                                        "emb_std_ratio": 0.9}) for t, e, v in results]


def test_asha_state_saved_and_restored_cuts_as_the_uninterrupted_scheduler(tmp_path):
    """Tune pickles the scheduler when the search starts and never saves it (REFERENCE §12a): the
    plug-in's state, saved with Tune's callbacks, puts the rungs back; without it the next trial
    at a rung passes whatever its score."""
    path, _ = _space(tmp_path)
    space = load_search_space(path)  # ASHA, grace 1, eta 2, 4 epochs: rungs 1, 2
    plugin = space.scheduler
    trials = {k: SimpleNamespace(trial_id=k) for k in "abcd"}

    def fresh():
        s = plugin.make(space)
        s.set_search_properties("knn_top1", "max")
        return s

    before = fresh()
    for t in trials.values():
        before.on_trial_add(None, t)
    assert _asha_decisions(before, trials, [("a", 1, 0.5), ("b", 1, 0.3), ("a", 2, 0.6)]) == ["CONTINUE", "STOP", "CONTINUE"]
    pristine = pickle.dumps(fresh())  # what tuner.pkl holds
    saved = pickle.loads(pickle.dumps(plugin.get_state(before)))  # what Tune's callback state holds
    restored, forgetful = pickle.loads(pristine), pickle.loads(pristine)
    plugin.set_state(restored, saved)  # before Tune adds the trials back
    for s in (restored, forgetful):
        for t in trials.values():
            s.on_trial_add(None, t)
    rung1 = {m: r for m, r in restored._brackets[0]._rungs}[1]
    assert rung1 == {"a": 0.5, "b": 0.3}
    later = [("c", 1, 0.35), ("d", 1, 0.45), ("d", 2, 0.55)]
    expected = _asha_decisions(before, trials, later)
    assert _asha_decisions(restored, trials, later) == expected == ["STOP", "CONTINUE", "STOP"]
    assert _asha_decisions(forgetful, trials, later) != expected  # the empty rungs of a plain restore


def test_pbt_state_saved_and_restored(tmp_path):
    path, _ = _with_scheduler(tmp_path, "pbt", {"perturbation_interval": 2})
    space = load_search_space(path)
    plugin = space.scheduler

    controller = SimpleNamespace(search_alg=None)
    before = plugin.make(space)
    before.set_search_properties("knn_top1", "max")
    a = _Trial("a")
    before.on_trial_add(controller, a)
    state = before._trial_state[a]
    state.last_score, state.last_perturbation_time, state.last_train_time = 0.4, 2, 2
    before._next_perturbation_sync = 4
    saved = pickle.loads(pickle.dumps(plugin.get_state(before)))
    after = plugin.make(space)
    after.set_search_properties("knn_top1", "max")
    plugin.set_state(after, saved)
    a2 = _Trial("a")
    after.on_trial_add(controller, a2)
    got = after._trial_state[a2]
    assert (got.last_score, got.last_perturbation_time, got.last_train_time) == (0.4, 2, 2)
    assert after._next_perturbation_sync == 4


def test_synchronous_pbt_ranks_the_waiting_trials_when_a_straggler_ends_early(tmp_path):
    """Two trials wait at the boundary (epoch 2); the third collapses at epoch 1 and never reports
    there. Ray's synchronous PBT only ranks on a report at the boundary, so without release_waiting
    the two would stay paused for ever (seen: a real CIFAR search hung). They are ranked when the
    straggler ends: the better one checkpoints, the worse one exploits it, the next boundary is 4."""
    path, _ = _with_scheduler(tmp_path, "pbt", {"perturbation_interval": 2, "synch": True})
    space = load_search_space(path)
    pbt = space.scheduler.make(space)
    pbt.set_search_properties("knn_top1", "max")

    class Trial(_Trial):
        status = "PAUSED"

        def is_finished(self):
            return False

    a, b, c = Trial("a"), Trial("b"), Trial("c")
    controller = SimpleNamespace(search_alg=None, get_live_trials=lambda: [a, b, c])
    for t in (a, b, c):
        pbt.on_trial_add(controller, t)
    for t, score in ((a, 0.5), (b, 0.3)):
        st = pbt._trial_state[t]
        st.last_score, st.last_train_time = score, 2
    pbt._next_perturbation_sync = 2
    pbt._trial_state[c].last_train_time = 1
    calls = []
    pbt._checkpoint_or_exploit = lambda t, ctl, upper, lower: calls.append(
        (t.trial_id, [u.trial_id for u in upper], [w.trial_id for w in lower]))
    pbt.forget(c)  # the collapse: never ranked, never cloned
    pbt.on_trial_complete(controller, c, {"epoch": 1})
    assert calls == [("a", ["a"], ["b"]), ("b", ["a"], ["b"])]
    assert pbt._next_perturbation_sync == 4
    calls.clear()
    pbt._trial_state[b].last_train_time = 1  # a trial still behind the boundary: nothing to rank yet
    pbt.on_trial_complete(controller, c, {"epoch": 1})
    assert calls == []


def test_a_resume_with_changed_values_trains_with_the_new_ones(tiny_cfg, tmp_path):
    """PBT's exploit: the clone's checkpoint, the perturbed lr, weight decay and loss weight. The
    loop keeps the optimiser's state and takes every setting from the new config."""
    from sslray.config import load_config
    from sslray.loop import run
    from sslray.optim import lr_factor, scaled_lr

    class Reporter:
        def __init__(self, resume=None):
            self.resume, self.reports = resume, []

        def resume_state(self):
            return self.resume

        def report(self, metrics, checkpoint):
            self.reports.append((metrics, checkpoint))

        def log(self, line):
            """The loop's log lines are not what this test checks."""

    tiny_cfg["optim"]["warmup_epochs"] = 0
    first = Reporter()
    cfg = load_config(tiny_cfg, ["train.epochs=2", "optim.weight_decay=0.01"])
    run(cfg, first)
    ckpt = copy.deepcopy(first.reports[0][1])  # epoch 1 (its tensors are the live ones: copied)
    new = load_config(tiny_cfg, ["train.epochs=2", "optim.lr=0.003", "optim.weight_decay=0.2", "loss.params.lam=5.0"])
    second = Reporter(ckpt)
    run(new, second)
    (replayed, _), (metrics, last) = second.reports
    assert replayed["epoch"] == 1 and metrics["epoch"] == 2
    steps = 256 // 32
    expected = scaled_lr(new.optim, 32) * lr_factor(2 * steps - 1, 2 * steps, 0, new.optim.min_lr_ratio)
    assert metrics["lr"] == pytest.approx(expected)
    assert {g["weight_decay"] for g in last["optimizer"]["param_groups"]} >= {0.2}
    assert 0.01 not in {g["weight_decay"] for g in last["optimizer"]["param_groups"]}
    assert last["config"]["loss"]["params"]["lam"] == 5.0
    # the same architecture is required
    from sslray.checkpoint import CheckpointError
    from sslray.local_run import check_resumable

    with pytest.raises(CheckpointError, match="model.width"):
        check_resumable(ckpt, load_config(tiny_cfg, ["model.width=8"]), "clone")


def test_lineage_of_a_resumed_trial():
    from sslray.search.trainable import inherit

    mine = {"trial": "a", "from_epoch": 0, "parent": None, "values": {"optim.lr": 0.1}}
    assert inherit(None, mine, 3) == [mine]  # its own checkpoint, before any lineage
    own = [mine]
    assert inherit(own, mine, 3) == own  # a restored search: the same segment goes on
    b = [{"trial": "b", "from_epoch": 0, "parent": None, "values": {"optim.lr": 0.2}}]
    assert inherit(b, mine, 2) == [*b, {**mine, "from_epoch": 2, "parent": "b"}]  # PBT cloned b into a
    assert inherit(own, {**mine, "values": {"optim.lr": 0.05}}, 4)[-1]["parent"] == "a"  # own weights, new values


def _mlflow_children(exp: Path, name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{exp / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == name]
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sslray.role") == "search"]
    return client, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


@pytest.mark.slow
def test_fifo_search_runs_every_trial_to_the_end(tmp_path):
    path, doc = _with_scheduler(tmp_path, "fifo", {})
    doc["search"].update(num_trials=2)
    doc["config"]["train"]["epochs"] = 2
    path.write_text(yaml.safe_dump(doc))
    proc = subprocess.run([sys.executable, "-m", "sslray.tune", str(path), "--output", str(tmp_path / "exp"),
                           "--name", "f", "--num-cpus", "4"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "FIFO: no early stopping" in proc.stdout
    exp = tmp_path / "exp" / "f"
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["outcomes"] == {"finished": 2}  # lr 1.0 is weak, and no scheduler stops it
    client, children = _mlflow_children(exp, "f")
    study = _study(exp, "f")
    assert len(children) == 2 and all(t.state.name == "COMPLETE" for t in study.trials)
    by_id = {t.user_attrs["tune_trial_id"]: t for t in study.trials}
    for child in children:
        t = by_id[child.data.tags["sslray.trial_id"]]
        knn = {m.step: m.value for m in client.get_metric_history(child.info.run_id, "knn_top1")}
        assert t.intermediate_values == pytest.approx(knn) and t.value == pytest.approx(knn[2])
        assert child.data.tags["sslray.outcome"] == "finished"
        assert {k: float(v) for k, v in t.params.items()} == pytest.approx(
            {k: float(child.data.params[k]) for k in t.params})


@pytest.mark.slow
def test_pbt_search_exploits_and_records_each_segment_truthfully(tmp_path):
    """Three one-worker trials, 4 epochs, PBT ranks at epoch 2 (synchronously): the bottom trial
    goes on from the top trial's checkpoint with perturbed values. Its run directory, MLflow run,
    Optuna segments and the summary's lineage all say so, and it trained with the new values."""
    from sslray.config import load_config
    from sslray.optim import lr_factor, scaled_lr

    path, doc = _with_scheduler(tmp_path, "pbt", {"perturbation_interval": 2, "quantile_fraction": 0.34,
                                                  "resample_probability": 0.0})
    doc["search"].update(num_trials=3, max_concurrent=3)
    doc["search"]["optuna"]["points_to_evaluate"].append({"loss.params.nu": 0.05, "optim.lr": 3e-3})
    path.write_text(yaml.safe_dump(doc))
    proc = subprocess.run([sys.executable, "-m", "sslray.tune", str(path), "--output", str(tmp_path / "exp"),
                           "--name", "p", "--num-cpus", "4"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    exp = tmp_path / "exp" / "p"
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["outcomes"] == {"finished": 3}
    lineage = summary["lineage"]
    assert lineage and all(row["from_epoch"] == 2 and row["parent"] != row["trial"] for row in lineage)
    assert (exp / "tune" / "pbt_global.txt").read_text().count("\n") == len(lineage)  # Ray's own log agrees
    space = load_search_space(path)
    client, children = _mlflow_children(exp, "p")
    runs = {c.data.tags["sslray.trial_id"]: c for c in children}
    study = _study(exp, "p")
    by_trial: dict[str, list] = {}
    for t in study.trials:
        by_trial.setdefault(t.user_attrs["tune_trial_id"], []).append(t)
    assert len(study.trials) == 3 + len(lineage) and set(by_trial) == set(runs)
    for row in lineage:
        trial = row["trial"]
        first, second = sorted(by_trial[trial], key=lambda t: t.user_attrs["segment"])
        # Optuna: the first segment PRUNED at the exploit with its own epochs, the second from epoch 2 on
        assert first.state.name == "PRUNED" and first.user_attrs["outcome"] == "exploited"
        assert sorted(first.intermediate_values) == [1, 2] and sorted(second.intermediate_values) == [3, 4]
        assert second.state.name == "COMPLETE" and second.user_attrs["parent_trial"] == row["parent"]
        assert second.params == pytest.approx(row["values"])
        # the parent's values perturbed by 1.2 or 0.8, inside the searched range
        parent_values = sorted(by_trial[row["parent"]], key=lambda t: t.user_attrs["segment"])[0].params
        for k, v in row["values"].items():
            p = next(p for p in space.params if p.path == k)
            assert p.low <= v <= p.high
            assert v == pytest.approx(min(max(parent_values[k] * 1.2, p.low), p.high)) or \
                v == pytest.approx(min(max(parent_values[k] * 0.8, p.low), p.high))
        # MLflow: params of the first segment, a tag per later segment, every epoch once
        run = runs[trial]
        assert float(run.data.params["optim.lr"]) == pytest.approx(first.params["optim.lr"])
        tag = json.loads(run.data.tags["sslray.segment.2"])
        assert tag["parent"] == row["parent"] and tag["values"] == pytest.approx(row["values"])
        knn = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "knn_top1")}
        assert sorted(knn) == [1, 2, 3, 4] and second.value == pytest.approx(knn[4])
        # the run directory: epochs 3 and 4 trained with the new lr from the parent's epoch-2 checkpoint
        rows = [json.loads(x) for x in (exp / "trials" / f"train-{trial}" / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
        assert [r.get("segment_parent") for r in rows] == [None, None, row["parent"], row["parent"]]
        cfg = load_config(space.base, [f"optim.lr={row['values']['optim.lr']}"])
        steps = cfg.data.synthetic_train_size // cfg.train.batch_size
        for r in rows[2:]:
            want = scaled_lr(cfg.optim, 32) * lr_factor(r["epoch"] * steps - 1, 4 * steps, 0, cfg.optim.min_lr_ratio)
            assert r["lr"] == pytest.approx(want)
        ckpt = torch.load(next((exp / "tune").glob(f"*{trial}*/checkpoint_000003/checkpoint.pt")), weights_only=False)
        assert [s["trial"] for s in ckpt["lineage"]][-2:] == [row["parent"], trial]
    assert f"goes on from trial {lineage[0]['parent']}'s epoch 2" in proc.stdout
    # the report says which trial inherited from which, and names the scheduler
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    rep = subprocess.run([sys.executable, "-m", "sslray.report", str(exp), "--no-eval"], capture_output=True,
                         text=True, timeout=600, env=env)
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-3000:]
    md = (exp / "report" / "report.md").read_text()
    assert "| scheduler | PBT (perturbation interval 2" in md
    inherited = md.split("## Inheritance", 1)[1].split("\n## ", 1)[0]
    for row in lineage:
        assert f"| `{row['trial']}` | `{row['parent']}` | 2 |" in inherited


def _saved_rungs(tune_dir: Path) -> dict | None:
    """The ASHA rungs in Tune's latest saved callback state (SchedulerState), or None."""
    files = sorted(tune_dir.glob("callback-states-*.pkl"))  # named by session start: the last is the newest
    if not files:
        return None
    try:
        states = pickle.loads(files[-1].read_bytes())
    except Exception:  # being written
        return None
    for state in states.values():
        if isinstance(state, dict) and "rungs" in state:
            return {m: dict(r) for m, r in state["rungs"][0]}
    return None


@pytest.mark.slow
def test_killed_asha_search_resumes_with_its_rungs_and_cuts_the_same_way(tmp_path):
    """The sane first trial runs to its end; the driver is killed (SIGKILL, with its local Ray) once
    Tune's saved state holds its scores and before the wrecked second trial (lr 1.0) reaches rung 1. Resumed, the second trial must be cut at rung 1 by the first trial's pre-kill score, as
    in the uninterrupted search (test_search's e2e) -- with rungs emptied by the restore it would pass."""
    path, doc = _space(tmp_path)
    doc["search"].update(num_trials=2, max_concurrent=1)
    doc["config"]["train"]["epochs"] = 4
    path.write_text(yaml.safe_dump(doc))
    cmd = [sys.executable, "-m", "sslray.tune", str(path), "--output", str(tmp_path / "exp"), "--name", "k",
           "--num-cpus", "4"]
    exp = tmp_path / "exp" / "k"
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"}  # Tune saves its state every second, not every 10
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    try:
        deadline, rungs = time.time() + 400, None
        while time.time() < deadline:
            time.sleep(0.2)
            rungs = _saved_rungs(exp / "tune")
            if rungs and rungs.get(4):
                break
        # the first trial reached its last epoch (rung 4): resumed, it reports epoch 4 at most, which a
        # plain restore would record at rung 4 only -- rung 1 holds its score only if the state came back
        assert rungs and rungs.get(4), "the first trial's last epoch was not saved before the deadline"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    ran = {d.name: _epochs(d) for d in (exp / "trials").glob("train-*") if _epochs(d)}
    assert len(ran) == 1, ran  # only the first trial had reported: the second trial meets the rung after resume
    (first,) = ran
    first_id = first.removeprefix("train-")
    assert set(rungs[1]) == {first_id}
    proc = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((exp / "summary.json").read_text())
    rows = {r["trial_id"]: r for r in summary["table"]}
    second = next(r for t, r in rows.items() if t != first_id)
    # the first trial's pre-kill rung-1 score is the one the restored scheduler held
    first_epoch1 = json.loads((exp / "trials" / first / "metrics.jsonl").read_text().splitlines()[0])
    assert rungs[1][first_id] == pytest.approx(first_epoch1["knn_top1"])
    final = _saved_rungs(exp / "tune")
    assert final[1][first_id] == pytest.approx(first_epoch1["knn_top1"]) and second["trial_id"] in final[1]
    # ASHA with reduction factor 2 cuts at rung 1 exactly when the second trial's epoch-1 score is below
    # the first's: a restore with empty rungs would compare it only with itself and never cut it.
    second_epoch1 = json.loads((exp / "trials" / f"train-{second['trial_id']}" / "metrics.jsonl")
                               .read_text().splitlines()[0])["knn_top1"]
    cut = second_epoch1 < first_epoch1["knn_top1"]
    trials = {t.user_attrs["tune_trial_id"]: t for t in _study(exp, "k").trials if "tune_trial_id" in t.user_attrs}
    if second["params"]["optim.lr"] == 1.0:  # the wrecked point (the usual case): it must be cut
        assert cut, (second_epoch1, first_epoch1["knn_top1"])
    # (a kill between Tune taking the second point and saving the trial makes TPE draw another one)
    assert ((second["outcome"], second["epochs"]) == ("asha", 1)) == cut, summary["table"]
    assert (trials[second["trial_id"]].state.name == "PRUNED") == cut
