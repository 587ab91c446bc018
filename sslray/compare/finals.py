"""The finals of a comparison: each arm's best config retrained from scratch with N seeds.

One Tune trial per (arm, seed), a grid: every final trains the full schedule through Ray Train (as
a search trial does, so it scales out the same way), then its last checkpoint is evaluated offline
on the *full* test set — kNN and a linear probe trained afresh on frozen features (the numbers a
paper reports; the per-epoch online probe only steers a search). Each final is an MLflow run nested
under the comparison's run (next to the arms' search runs, tagged with its arm), with the exact
config it trained.
"""
from __future__ import annotations

import time
from typing import Any

from sslray.search.tracking import MLflowTrials
from sslray.tracking import tags

FINAL_DRIVER_CPUS = 0.1  # what a final's Tune trial holds while it sleeps on its Ray Train workers
FINAL_TAG = tags.FINAL  # "<arm>/seed<seed>": a resumed comparison finds its runs by it
# the offline evaluation runs on the full test set, whatever subset the search scored on
FULL_TEST = {"data.test_limit": None}


def final_config(space, best_params: dict[str, Any], seed: int, finals_dir: str, arm: str):
    """The config a final trains: the arm's resolved space, its best parameters, the seed."""
    return space.trial_config(best_params, {
        "train.seed": seed, "train.checkpoint_every": 1, "train.output_dir": str(finals_dir),
        "train.run_name": f"final-{arm}-seed{seed}",  # stable: a restored final resumes its Train run
    })


class FinalTrainable:
    """The Tune function trainable of one final (a class, so Tune can pickle it with its state)."""

    def __init__(self, configs: dict[str, dict], storage: str):
        self.configs, self.storage = configs, storage  # "<arm>/<seed>" -> config dict

    def __call__(self, params: dict[str, Any]) -> None:
        import ray.tune
        from ray.tune.integration.ray_train import TuneReportCallback

        from sslray.checkpoint import RAY_CKPT_FILE, resolve_checkpoint, storage_uri
        from sslray.config import load_config
        from sslray.eval.offline import evaluate_checkpoint
        from sslray.ray_train import build_trainer

        t0 = time.time()
        cfg = load_config(self.configs[f"{params['arm']}/{params['seed']}"])
        result = build_trainer(cfg, self.storage, extra_callbacks=[TuneReportCallback()]).fit()
        ckpt = resolve_checkpoint(storage_uri(self.storage, result.checkpoint.path))  # copied when remote
        ckpt = ckpt / RAY_CKPT_FILE if ckpt.is_dir() else ckpt
        train_s = time.time() - t0
        ev = evaluate_checkpoint(str(ckpt), FULL_TEST)
        ray.tune.report({"final": 1, "epoch": ev["epoch"], "final_knn_top1": ev["knn_top1"],
                         "final_probe_top1": ev["probe_test_top1"], "final_rankme": ev.get("rankme"),
                         "test_images": ev["test_images"], "train_s": train_s, "wall_s": time.time() - t0,
                         "final_checkpoint": str(ckpt)})


class FinalRuns(MLflowTrials):
    """One MLflow run per final, nested under the comparison's run; per-epoch metrics as a search
    trial's, then the offline kNN / linear-probe numbers."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, configs: dict[str, dict]):
        super().__init__(tracking_uri, experiment_id, parent_run_id, None, "")
        self.configs = configs

    def record(self, trial):
        from sslray.config import load_config

        arm, seed = trial.config["arm"], trial.config["seed"]
        return (f"final-{arm}-seed{seed}", self.parent_run_id, load_config(self.configs[f"{arm}/{seed}"]),
                {FINAL_TAG: f"{arm}/seed{seed}", tags.ROLE: "final", tags.ARM: arm})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not result.get("final"):
            return super().on_trial_result(iteration, trials, trial, result, **info)
        metrics = {k: float(result[k]) for k in ("final_knn_top1", "final_probe_top1", "final_rankme", "train_s", "wall_s")
                   if isinstance(result.get(k), (int, float))}
        self.tracker.log_metrics(self._run_id(trial), metrics, step=int(result.get("epoch") or 0),
                                 timestamp=result.get("timestamp", 0))

    def on_trial_complete(self, iteration, trials, trial, **info):
        done = bool((trial.last_result or {}).get("final"))
        self._end(trial, "finished" if done else "failed", "trained and evaluated" if done else "no final evaluation")
