"""Run (or continue) a comparison: equal-budget searches, then seeded finals, then the statistics.

Layout of ``--output``/``<name>``:

    arms/<arm>/    each arm's search, exactly as ``sslray.tune`` lays it out (summary.json, optuna.db, ...)
    finals/        Tune's state of the finals grid and each final's Train run
    spec.json      what was asked (arms, overrides, budget, seeds): a --resume must ask the same
    compare.json   the answer (see ``sslray.compare``), rewritten as each stage ends
    mlflow.db      one parent run; each arm's search nested under it, each final too
"""
from __future__ import annotations

import itertools
import json
import platform
import time
from pathlib import Path
from typing import Any

from sslray.compare.finals import FINAL_DRIVER_CPUS, FINAL_TAG, FinalRuns, FinalTrainable, final_config
from sslray.config import ConfigError, load_config
from sslray.search.space import SearchSpace
from sslray.stats import bootstrap_interval, compare_arms, mean_interval
from sslray.tracking import Tracker, store_uri, tags, use_by_default

METRICS = ("knn_top1", "probe_top1")


def check_arms(arms: dict[str, SearchSpace]) -> dict[str, int]:
    """The equal-budget rule: every arm gets the same trials x epochs on the same data and evaluation."""
    first, *rest = arms.items()
    budget = {"trials": first[1].num_trials, "epochs": first[1].max_epochs}
    for arm, space in rest:
        mine = {"trials": space.num_trials, "epochs": space.max_epochs}
        if mine != budget:
            raise ConfigError(f"budget: arm {arm} has {mine['trials']} trials x {mine['epochs']} epochs, arm {first[0]} "
                              f"{budget['trials']} x {budget['epochs']}; allowed: the same search.num_trials and "
                              "train.epochs in every arm, or --trials N --epochs E to set both")
        for section in ("data", "eval"):
            if space.base.get(section) != first[1].base.get(section):
                raise ConfigError(f"{section}: arm {arm} differs from arm {first[0]}; allowed: the same {section} "
                                  "section in every arm (an override applies to all)")
    budget["trial_epochs"] = budget["trials"] * budget["epochs"]
    return budget


def run_compare(arms: dict[str, SearchSpace], exp_dir: Path, seeds: list[int], spec: dict, resume: bool,
                tracking_uri: str | None = None, address: str | None = None, num_cpus: float | None = None,
                storage: str | None = None, finals_concurrent: int = 2) -> dict[str, Any]:
    from sslray.resources import connect
    from sslray.search.run import run_search, search_exists

    t0 = time.time()
    scales = [load_config(s.base).scale for s in arms.values()]
    # each final is a Ray Train run whose Tune trial sleeps on its workers holding FINAL_DRIVER_CPUS
    connect(scales, address, num_cpus, driver_cpus=finals_concurrent * FINAL_DRIVER_CPUS)

    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / "spec.json").write_text(json.dumps(spec, indent=2, default=str))
    tracking_uri = store_uri(tracking_uri, exp_dir)
    use_by_default(tracking_uri)
    tracker = Tracker(tracking_uri)
    exp_id = tracker.experiment(exp_dir.name, exp_dir)
    parents = tracker.find_runs([exp_id], tags={tags.ROLE: "compare"})
    if resume and parents:
        parent_id = parents[0].id
        tracker.reopen(parent_id)
    else:
        parent_id = tracker.start_run(exp_id, f"compare-{exp_dir.name}", {tags.ROLE: "compare", tags.ARMS: ", ".join(arms)})
        tracker.log_dict(parent_id, spec, "spec.json")
        tracker.log_params(parent_id, {"seeds": seeds, "arms": list(arms),
                                      **{f"budget.{k}": v for k, v in spec["budget"].items()}})
    result = {"kind": "compare", "name": exp_dir.name, "status": "running", "command": spec["command"],
              "budget": spec["budget"], "seeds": seeds, "metrics": list(METRICS), "arms": [],
              "differences": [], "mlflow_parent_run_id": parent_id, "machine": machine(), "versions": versions()}

    # 1. equal-budget searches, one arm after the other (each spreads its trials over the cluster)
    arms_out = str(exp_dir / "arms")
    arms_storage = f"{storage.rstrip('/')}/{exp_dir.name}/arms" if storage else None
    for arm, space in arms.items():
        summary_file = exp_dir / "arms" / arm / "summary.json"
        done = summary_file.exists() and json.loads(summary_file.read_text()).get("status") == "finished"
        if not done:
            print(f"== arm {arm}: search, {space.num_trials} trials x {space.max_epochs} epochs", flush=True)
            summary = run_search(space, arms_out, arm, resume=resume and search_exists(arms_out, arm, arms_storage),
                                 tracking_uri=tracking_uri, storage=arms_storage, experiment=exp_dir.name,
                                 parent_run_id=parent_id)
            if summary["status"] != "finished":
                return _stop(result, exp_dir, tracker, parent_id, summary.get("signal"), t0)
        summary = json.loads(summary_file.read_text())
        if summary["best"] is None:  # every trial diverged or failed: recorded, and nothing to retrain
            result["error"] = f"arm {arm}: no trial of its search has a finite {space.metric} and a checkpoint"
            result.update(status="failed", wall_time_s=round(time.time() - t0, 1))
            _write(result, exp_dir)
            tracker.end_run(parent_id, "FAILED")
            return result
        result["arms"].append(arm_record(arm, space, summary, spec["arms"][arm]))
    _write(result, exp_dir)

    # 2. finals: every arm's best config, retrained from scratch with each seed, as one Tune grid
    finals_root = f"{storage.rstrip('/')}/{exp_dir.name}" if storage else str(exp_dir)
    configs = {f"{a['name']}/{seed}": final_config(arms[a["name"]], a["best_params"], seed, str(exp_dir / "finals"),
                                                   a["name"]).to_dict()
               for a in result["arms"] for seed in seeds}
    grid = run_finals(configs, list(arms), seeds, finals_root, resume, tracker, exp_id, parent_id, tracking_uri,
                      finals_concurrent)
    if grid is None:
        return _stop(result, exp_dir, tracker, parent_id, 15, t0)
    add_finals(result, grid, tracker, exp_id, parent_id)
    short = [a["name"] for a in result["arms"] if not a["summary"]]
    # fewer than 2 good finals in an arm: no interval, so no answer; --resume retrains the failed ones
    result["status"] = "failed" if short else "finished"
    if short:
        result["error"] = (f"arm(s) {', '.join(short)}: fewer than 2 finals trained and evaluated; the errors are "
                           f"in compare.json (arms[].finals[].error) and the MLflow runs tagged {tags.ROLE}=final")
    result["wall_time_s"] = round(time.time() - t0, 1)
    _log_answer(tracker, parent_id, result)
    _write(result, exp_dir)
    tracker.log_dict(parent_id, result, "compare.json")
    tracker.end_run(parent_id, "FAILED" if short else "FINISHED")
    return result


def arm_record(arm: str, space: SearchSpace, summary: dict, space_file: str) -> dict[str, Any]:
    outcomes = summary.get("outcomes", {})
    trial_epochs = sum(int(row.get("epochs") or 0) for row in summary["table"])
    collapsed = outcomes.get("collapsed", 0) + outcomes.get("diverged", 0)
    return {"name": arm, "space": space_file, "search_dir": str(Path(summary["experiment"])),
            "best_params": summary["best"]["params"], "best_search_score": summary["best"][space.metric],
            "search_metric": space.metric, "search_wall_s": summary["wall_time_s"],
            "search_trial_epochs": trial_epochs, "outcomes": outcomes,
            "collapse_rate": collapsed / max(1, summary["trials"]), "finals": []}


def run_finals(configs, arms, seeds, root, resume, tracker, exp_id, parent_id, tracking_uri, concurrent):
    """The (arm, seed) grid on Tune; None when it was interrupted (``--resume`` continues it)."""
    from ray import tune

    from sslray.search.run import Interrupted

    trainable = tune.with_resources(FinalTrainable(configs, f"{root}/finals"), {"cpu": FINAL_DRIVER_CPUS})
    interrupted = Interrupted()
    try:
        if resume and tune.Tuner.can_restore(f"{root}/finals/tune"):
            tuner = tune.Tuner.restore(f"{root}/finals/tune", trainable, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable, param_space={"arm": tune.grid_search(arms), "seed": tune.grid_search(seeds)},
                tune_config=tune.TuneConfig(max_concurrent_trials=concurrent),
                run_config=tune.RunConfig(name="tune", storage_path=f"{root}/finals",
                                          callbacks=[FinalRuns(tracking_uri, exp_id, parent_id, configs)]))
        grid = tuner.fit()
    except KeyboardInterrupt:
        return None
    finally:
        interrupted.restore()
    if interrupted.signal is not None:
        return None
    return grid


def add_finals(result: dict, grid, tracker, exp_id: str, parent_id: str) -> None:
    """Each arm's per-seed finals, its interval per metric, and every pair's difference."""
    runs = {r.tags.get(FINAL_TAG): r.id for r in tracker.find_runs([exp_id], parent=parent_id, tags={tags.ROLE: "final"})}
    by_arm = {a["name"]: a for a in result["arms"]}
    for r in grid:
        m, arm, seed = r.metrics or {}, r.config["arm"], r.config["seed"]
        entry = {"seed": seed, "mlflow_run_id": runs.get(f"{arm}/seed{seed}")}
        if r.error or not m.get("final"):
            entry["error"] = str(r.error or "no final evaluation")[:500]
        else:
            entry.update(knn_top1=m["final_knn_top1"], probe_top1=m["final_probe_top1"], rankme=m.get("final_rankme"),
                         wall_s=m["wall_s"], test_images=m["test_images"])
        by_arm[arm]["finals"].append(entry)
    for a in result["arms"]:
        a["finals"].sort(key=lambda f: f["seed"])
        ok = [f for f in a["finals"] if "error" not in f]
        a["finals_wall_s"] = round(sum(f["wall_s"] for f in ok), 1)
        a["failed_finals"] = len(a["finals"]) - len(ok)
        a["summary"] = {}
        if len(ok) >= 2:
            for metric in METRICS:
                scores = [f[metric] for f in ok]
                a["summary"][metric] = {**mean_interval(scores).to_dict(),
                                        "bootstrap": bootstrap_interval(scores).to_dict()}
    for a, b in itertools.combinations(result["arms"], 2):
        for metric in METRICS:
            xa = [f[metric] for f in a["finals"] if "error" not in f]
            xb = [f[metric] for f in b["finals"] if "error" not in f]
            if len(xa) >= 2 and len(xb) >= 2:
                d = compare_arms(xa, xb).to_dict()
                result["differences"].append({"a": a["name"], "b": b["name"], "metric": metric, **d})


def _log_answer(tracker, parent_id: str, result: dict) -> None:
    metrics = {}
    for a in result["arms"]:
        for metric, s in a["summary"].items():
            metrics.update({f"{a['name']}.{metric}.{k}": float(s[k]) for k in ("mean", "ci_low", "ci_high")})
        metrics[f"{a['name']}.collapse_rate"] = float(a["collapse_rate"])
    for d in result["differences"]:
        metrics.update({f"diff.{d['a']}-{d['b']}.{d['metric']}.{k}": float(d[k])
                        for k in ("diff", "ci_low", "ci_high", "welch_p", "permutation_p")})
    tracker.log_metrics(parent_id, metrics)


def _stop(result: dict, exp_dir: Path, tracker, parent_id: str, signum: int | None, t0: float) -> dict:
    result.update(status="interrupted", signal=signum, wall_time_s=round(time.time() - t0, 1))
    _write(result, exp_dir)
    tracker.end_run(parent_id, "KILLED")
    return result


def _write(result: dict, exp_dir: Path) -> None:
    tmp = exp_dir / "compare.json.tmp"  # never a half-written answer
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.replace(exp_dir / "compare.json")


def machine() -> dict[str, Any]:
    import os

    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "torchvision", "ray", "optuna", "mlflow", "numpy", "scipy")}
