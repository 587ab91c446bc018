"""``python -m sslray.report``: a search's and a comparison's report, run as a user runs it."""
import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_search import _space

PNG = b"\x89PNG\r\n\x1a\n"


def _env():
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)  # the search's own mlflow.db, as a user's shell has it
    return env


def _report(folder, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "sslray.report", str(folder), *args], capture_output=True,
                          text=True, timeout=timeout, env=_env())


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """A tiny finished search (4 trials, 4 epochs) and its report, both made by the command lines.
    The second trial (lr 1.0) reaches RankMe ~1.3 at epoch 1 (the others ~6): it is stopped as
    collapsed, so the collapse map has a collapsed trial to mark."""
    tmp = tmp_path_factory.mktemp("report")
    path, doc = _space(tmp)
    doc["search"]["stop"] = {"rankme_below": 3.0, "emb_std_ratio_below": None}
    path.write_text(yaml.safe_dump(doc))
    # 8 logical CPUs for one trial at a time: when other local Ray instances run on the machine, Train V2's
    # PlacementGroupCleaner cannot tell which is ours and never frees a stopped trial's placement group; with
    # --num-cpus 4 the fourth trial then waits for a CPU for ever (seen with other test runs alongside)
    proc = subprocess.run([sys.executable, "-m", "sslray.tune", str(path), "--output", str(tmp / "exp"),
                           "--name", "rep", "--num-cpus", "8"], capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = tmp / "exp" / "rep"
    rep = _report(exp)
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-3000:]
    return exp, rep


def _client(exp):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{exp / 'mlflow.db'}")


def _section(md: str, title: str) -> str:
    return md.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def _table(text: str) -> list[dict[str, str]]:
    """The first Markdown table in text, as rows keyed by header."""
    lines = [x for x in text.splitlines() if x.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in x.strip("|").split("|")))) for x in lines[2:]]


def _check_png(path: Path) -> None:
    import matplotlib.image

    assert path.is_file() and path.stat().st_size > 1000, path
    assert path.read_bytes()[:8] == PNG, path
    pixels = matplotlib.image.imread(path)
    assert pixels.std() > 0.02, f"{path} is blank"


def _figures(report: Path) -> list[Path]:
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text())
    return [report.parent / link for link in links]


@pytest.mark.slow
def test_search_report_writes_markdown_and_non_blank_figures(search):
    exp, rep = search
    report = exp / "report" / "report.md"
    assert f"report: {report}" in rep.stdout and "logged to MLflow run" in rep.stdout
    md = report.read_text()
    summary = json.loads((exp / "summary.json").read_text())
    head = md.split("## ", 1)[0]
    for expected in ("`rep`", "knn_top1", "4 of 4", "status | finished", f"python -m sslray.report {exp}",
                     str(exp.parent.parent / "space.yaml")):
        assert expected in head, expected
    assert ", ".join(f"{k} {v}" for k, v in sorted(summary["outcomes"].items())) in head
    figures = _figures(report)
    assert {f.name for f in figures} >= {"curves.png", "collapse_map.png", "rankme.png", "importance_rung.png"}
    for f in figures:
        _check_png(f)


@pytest.mark.slow
def test_trial_table_equals_the_mlflow_records(search):
    exp, _ = search
    client = _client(exp)
    summary = json.loads((exp / "summary.json").read_text())
    parent = client.get_run(summary["mlflow_parent_run_id"])
    children = {r.info.run_id: r for r in client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")}
    rows = _table(_section((exp / "report" / "report.md").read_text(), "Trials"))
    assert len(rows) == len(children) == 4
    assert "collapsed" in {r["outcome"] for r in rows}, rows  # marked as such, and why it stopped
    full = {r["mlflow_run_id"]: r for r in csv.DictReader(open(exp / "report" / "trials.csv"))}
    for row in rows:
        run = children[row["MLflow run"].strip("`")]
        history = [m.value for m in client.get_metric_history(run.info.run_id, "knn_top1")]
        last, best = run.data.metrics["knn_top1"], max(history)
        assert row["outcome"] == run.data.tags["sslray.outcome"]
        assert row["epochs"] == str(int(run.data.metrics["epoch"]))
        assert row["last knn_top1"] == f"{last:.4f}" and row["best knn_top1"] == f"{best:.4f}"
        assert row["final RankMe"] == f"{run.data.metrics['rankme']:.2f}"
        for p in ("loss.params.nu", "optim.lr"):
            assert row[p] == f"{float(run.data.params[p]):.4g}"
        exact = full[run.info.run_id]  # trials.csv: the same numbers at full precision
        assert float(exact["last"]) == last and float(exact["best"]) == best
        assert exact["outcome"] == run.data.tags["sslray.outcome"]
        assert exact["reason"] == run.data.tags["sslray.stop_reason"]


@pytest.mark.slow
def test_importance_says_it_cannot_be_trusted_with_four_trials(search):
    import optuna

    exp, _ = search
    section = _section((exp / "report" / "report.md").read_text(), "Parameter importance")
    final, rung = section.split("### ")[1:3]
    assert final.startswith("Final score") and rung.startswith("Score at ASHA's first rung, epoch 1")
    study = optuna.load_study(study_name="rep", storage=f"sqlite:///{exp / 'optuna.db'}")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(complete) >= 2:
        assert f"Warning: only {len(complete)} trials: too few to trust" in final
    else:
        assert f"No importance: {len(complete)} usable trial" in final
    # every trial reached epoch 1: the first-rung estimate uses all four, with the warning beside it
    assert "Warning: only 4 trials: too few to trust" in rung and "4 trials used" in rung
    rows = _table(rung)
    assert {r["parameter"] for r in rows} == {"`loss.params.nu`", "`optim.lr`"}
    assert sum(float(r["PED-ANOVA"]) for r in rows) == pytest.approx(1.0, abs=2e-3)


@pytest.mark.slow
def test_report_is_logged_to_the_parent_run(search):
    exp, _ = search
    client = _client(exp)
    parent = json.loads((exp / "summary.json").read_text())["mlflow_parent_run_id"]
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/report.md", "report/figures", "report/eval.json", "report/trials.csv"} <= logged
    figures = {a.path for a in client.list_artifacts(parent, "report/figures")}
    assert {f"report/figures/{f.name}" for f in _figures(exp / "report" / "report.md")} <= figures


@pytest.mark.slow
def test_best_trial_against_untrained_is_cached_and_skippable(search):
    exp, _ = search
    summary = json.loads((exp / "summary.json").read_text())
    ev = json.loads((exp / "report" / "eval.json").read_text())
    assert ev["key"]["checkpoint"] == summary["best"]["checkpoint"] and ev["untrained"]["untrained"]
    assert ev["best"]["knn_top1"] != ev["untrained"]["knn_top1"]
    # the search scored every epoch on the same full test set: the best epoch's kNN comes back
    assert ev["best"]["knn_top1"] == pytest.approx(summary["best"]["knn_top1"], abs=1e-6)
    rows = _table(_section((exp / "report" / "report.md").read_text(), "Best trial vs the untrained encoder"))
    knn = next(r for r in rows if r[""] == "kNN top-1")
    assert list(knn.values())[1:] == [f"{ev['best']['knn_top1']:.4f}", f"{ev['untrained']['knn_top1']:.4f}"]
    stamp = (exp / "report" / "eval.json").stat().st_mtime_ns
    again = _report(exp)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "(cached: the best trial has not changed)" in (exp / "report" / "report.md").read_text()
    assert (exp / "report" / "eval.json").stat().st_mtime_ns == stamp  # not recomputed
    skipped = _report(exp, "--no-eval")
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    md = (exp / "report" / "report.md").read_text()
    assert "Not evaluated: skipped with --no-eval" in md and f"python -m sslray.report {exp} --no-eval" in md
    assert _report(exp).returncode == 0  # leave the full report for the tests after this one


def _compare_doc(exp: Path, folder: Path, parent_run_id: str) -> dict:
    finals = {"vicreg": [0.21, 0.2334, 0.2252], "vicreg_tico": [0.2412, 0.2501, 0.23875]}
    arms = []
    for i, (name, scores) in enumerate(finals.items()):
        mean = sum(scores) / len(scores)
        arms.append({
            "name": name, "space": f"search_spaces/{name}.yaml", "search_dir": str(exp),
            "best_params": {"loss.params.nu": 0.0123 * (i + 1), "optim.lr": 0.000987},
            "search_wall_s": 812.5 + i, "search_trial_epochs": 10 + i, "outcomes": {"finished": 3, "collapsed": 1},
            "collapse_rate": 0.25,
            "finals": [{"seed": s, "knn_top1": v, "probe_top1": v + 0.05, "wall_s": 60.0 + s,
                        "mlflow_run_id": f"run{i}{s}"} for s, v in enumerate(scores)],
            "finals_wall_s": 190.0,
            "summary": {m: {"mean": mean + off, "ci_low": mean + off - 0.0311, "ci_high": mean + off + 0.0297,
                            "method": "t", "n": 3} for m, off in (("knn_top1", 0.0), ("probe_top1", 0.05))}})
    return {"kind": "compare", "name": folder.name, "status": "finished",
            "command": f"python -m sslray.compare a.yaml b.yaml --output {folder.parent}",
            "budget": {"trials": 4, "epochs": 4, "trial_epochs": 11}, "seeds": [0, 1, 2],
            "metrics": ["knn_top1", "probe_top1"], "arms": arms,
            "differences": [{"a": "vicreg_tico", "b": "vicreg", "metric": m, "diff": 0.01593 + off,
                             "ci_low": -0.0157, "ci_high": 0.04756, "ci_method": "welch t", "welch_p": 0.2147,
                             "permutation_p": 0.3001} for m, off in (("knn_top1", 0.0), ("probe_top1", 0.0001))],
            "wall_time_s": 1900.2, "mlflow_parent_run_id": parent_run_id,
            "machine": {"cpu": "2 cores", "gpu": None}, "versions": {"torch": "2.15.0", "ray": "2.60.0"}}


@pytest.mark.slow
def test_compare_report_shows_compare_json_and_links_each_arm(search, tmp_path):
    from mlflow.tracking import MlflowClient

    exp, _ = search
    folder = tmp_path / "cmp"
    folder.mkdir()
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp_id = client.create_experiment("cmp", artifact_location=(folder / "mlartifacts").as_uri())
    parent = client.create_run(exp_id, run_name="compare-cmp").info.run_id
    doc = _compare_doc(exp, folder, parent)
    (folder / "compare.json").write_text(json.dumps(doc))
    proc = _report(folder)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = folder / "report" / "report.md"
    md = report.read_text()
    answer = _table(_section(md, "Answer"))
    expected = [(a["name"], m, a["summary"][m]) for a in doc["arms"] for m in doc["metrics"]]
    assert [(r["arm"], r["metric"]) for r in answer] == [(a, m) for a, m, _ in expected]
    for r, (_, _, s) in zip(answer, expected):
        assert r["mean"] == f"{s['mean']:.4f}" and r["95 % interval"] == f"[{s['ci_low']:.4f}, {s['ci_high']:.4f}]"
        assert r["method"] == s["method"] and r["n"] == str(s["n"])
    diffs = _table(_section(md, "Differences"))
    for r, d in zip(diffs, doc["differences"]):
        assert r["a − b"] == f"{d['a']} − {d['b']}" and r["difference"] == f"{d['diff']:.4f}"
        assert r["95 % interval"] == f"[{d['ci_low']:.4f}, {d['ci_high']:.4f}]"
        assert r["Welch p"] == f"{d['welch_p']:.4f}" and r["permutation p"] == f"{d['permutation_p']:.4f}"
    seeds = _table(_section(md, "Scores per seed"))
    assert [r["knn_top1"] for r in seeds] == [f"{f['knn_top1']:.4f}" for a in doc["arms"] for f in a["finals"]]
    costs = _table(_section(md, "What each arm's search cost"))
    assert [r["collapse rate"] for r in costs] == ["0.250", "0.250"]
    assert [r["search trial-epochs"] for r in costs] == ["10", "11"]
    links = {re.search(r"\(([^)]+)\)", r["search report"]).group(1) for r in costs}
    assert [(report.parent / link).resolve() for link in links] == [(exp / "report" / "report.md").resolve()]
    best = _table(_section(md, "Best parameters per arm"))
    assert [r["vicreg_tico"] for r in best] == ["0.0246", "0.000987"]
    for expected_text in ("2.15.0", "2 cores", doc["command"], f"python -m sslray.report {folder}"):
        assert expected_text in md
    for f in _figures(report):
        _check_png(f)
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/report.md", "report/figures"} <= logged and f"logged to MLflow run {parent}" in proc.stdout


@pytest.mark.parametrize("make", ["missing", "empty", "other files", "summary only"])
def test_bad_folder_is_one_line_exit_2_and_nothing_written(tmp_path, make):
    folder = tmp_path / "x"
    if make != "missing":
        folder.mkdir()
    if make == "other files":
        (folder / "notes.txt").write_text("not a search")
    if make == "summary only":  # looks like a search, but its space.json and MLflow store are gone
        (folder / "summary.json").write_text(json.dumps({"status": "finished"}))
    before = sorted(tmp_path.rglob("*"))
    proc = _report(folder, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: EXPERIMENT: ")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "allowed:" in proc.stderr and proc.stdout == ""
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_collapse_map_draws_categorical_and_single_parameter_spaces(tmp_path):
    """Figures straight from trial records: a categorical axis (loss.name) beside a log axis, a
    collapsed and a diverged trial without a score, and the one-parameter version."""
    from sslray.report import figures
    from sslray.report.collect import Trial

    specs = [{"path": "loss.name", "dist": "choice", "values": ["vicreg", "vicreg_tico"]},
             {"path": "optim.lr", "dist": "loguniform", "low": 1e-4, "high": 1.0},
             {"path": "train.batch_size", "dist": "int", "low": 16, "high": 64}]
    outcomes = ["finished", "asha", "collapsed", "diverged", "finished", "failed"]
    trials = [Trial(trial_id=str(i), run_id=f"r{i}", outcome=o, reason="",
                    params={"loss.name": ["vicreg", "vicreg_tico"][i % 2], "optim.lr": 10 ** -(i % 4 + 0.5),
                            "train.batch_size": 16 + 8 * i},
                    epochs=4, best=None if o in ("diverged", "failed") else 0.1 + 0.03 * i, last=None,
                    rankme=None if o == "failed" else 1.2 + 3 * i, curve=[(1, 0.1), (2, 0.1 + 0.01 * i)])
              for i, o in enumerate(outcomes)]
    paths = [figures.collapse_map(trials, specs, "knn_top1", tmp_path / "map3.png"),
             figures.rankme_panels(trials, specs, 2.0, tmp_path / "rankme3.png"),
             figures.collapse_map(trials, specs[:1], "knn_top1", tmp_path / "map1.png"),
             figures.learning_curves(trials, "knn_top1", [1, 2], tmp_path / "curves.png")]
    for p in paths:
        _check_png(p)


def test_importance_explains_why_there_is_none(tmp_path):
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from sslray.report.importance import _evaluate, quiet, rung_study

    dists = {"a": FloatDistribution(1e-3, 1.0, log=True), "b": FloatDistribution(0.0, 1.0)}
    with quiet():
        study = optuna.create_study(direction="maximize")
    for i in range(6):
        study.add_trial(create_trial(params={"a": 10 ** -(i % 3), "b": i / 6}, distributions=dists,
                                     intermediate_values={1: 0.1 * i, 2: 0.2 * i}, state=optuna.trial.TrialState.PRUNED))
    study.add_trial(create_trial(params={"a": 0.5, "b": 0.5}, distributions=dists, value=0.9,
                                 intermediate_values={1: 0.45, 2: 0.9}))
    one = _evaluate("complete", "final", study, 1, ["a", "b"])
    assert one.missing.startswith("1 usable trial: importance needs at least 2") and not one.ped_anova
    single = _evaluate("complete", "final", study, 1, ["a"])
    assert single.missing.startswith("only one parameter is searched (a)")
    with quiet():
        rung = rung_study(study, 1)
    assert len(rung.trials) == 7 and sorted(t.value for t in rung.trials)[-1] == pytest.approx(0.5)
    imp = _evaluate("rung", "rung", rung, len(rung.trials), ["a", "b"])
    assert imp.missing is None and set(imp.ped_anova) == {"a", "b"} and "only 7 trials" in imp.warning
    assert math.isclose(sum(imp.fanova.values()), 1.0, abs_tol=1e-6)
