"""Search benchmarks, side by side in one run.

    python bench/search_overhead.py tune   [--root ../shared/data] [--epochs 3]   # (a) what a trial costs
    python bench/search_overhead.py asha   [--root ../shared/data] [--space F]    # (b) ASHA vs every trial to the end

(a) Four identical ``search_spaces/quickstart.yaml`` trials (on 20,000 images, one core each), two
    at a time, through ``sslray.tune``
    (one worker per trial: the loop runs in the Tune trial itself) vs the same four runs as bare
    ``python -m sslray.train --workers 0`` processes, two side by side, on the same warm local Ray
    machine and the same decoded-data cache. Prints both wall times and their ratio (target
    <= 1.05), and each trial's start-up: Tune starting the trial -> its first training step,
    measured on the driver as (first result's arrival - trial start - that epoch's training and
    evaluation time); target < 3 s.
(b) A search space (default ``search_spaces/cpu_vicreg.yaml``) on real CIFAR-10 with its ASHA
    settings vs with ASHA disabled (grace period = max epochs): trial-epochs spent, best score and
    wall time of each.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ray.tune import Callback

ROOT = Path(__file__).resolve().parents[1]


class StartupTimer(Callback):
    """Trial start (Tune schedules it) -> its first training step, seen from the driver."""

    def __init__(self):
        self.started: dict[str, float] = {}
        self.startup: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        tid = trial.trial_id
        if tid in self.started and tid not in self.startup and "epoch_time_s" in result:
            # what the first epoch itself took is not start-up; checkpoint + report stay in (an upper bound)
            self.startup[tid] = time.time() - self.started[tid] - result["epoch_time_s"] - result.get("eval_time_s", 0.0)


def _search(space, out: Path, name: str, **kwargs) -> tuple[dict, float]:
    from sslray.search.run import run_search

    t0 = time.perf_counter()
    summary = run_search(space, str(out), name, **kwargs)
    return summary, time.perf_counter() - t0


def tune_overhead(root: str, epochs: int) -> None:
    from sslray.resources import connect

    from sslray.config import dump_config
    from sslray.search.space import ParamSpec, load_search_space
    from sslray.search.trainable import trial_config, warm_data_cache

    out = Path(tempfile.mkdtemp(prefix="sslray-bench-"))
    space = load_search_space(ROOT / "search_spaces/quickstart.yaml",  # 2 at a time: one core each
                              [f"data.root={os.path.abspath(root)}", f"train.epochs={epochs}", "data.limit=20000",
                               "scale.cpus_per_worker=1"])
    space.params = [ParamSpec("optim.lr", "choice", values=[0.3])]  # four identical trials
    space.num_trials, space.max_concurrent = 4, 2
    space.asha = dataclasses.replace(space.asha, grace_period=space.max_epochs)  # nobody stopped early
    space.optuna = dataclasses.replace(space.optuna, points_to_evaluate=[])
    cores = os.cpu_count() or 1
    connect([], "local", cores)  # as run_search starts it: warm before both
    trials_dir = out / "tune4" / "trials"
    warm_data_cache(trial_config(space, {}, str(trials_dir), "warm"))  # both sides read the decoded cache

    # the same work as bare runs: 4 processes, 2 side by side, each with the trial's one thread
    configs = []
    for k in range(4):
        cfg = trial_config(space, {"optim.lr": 0.3}, str(out / "bare"), f"bare{k}")
        cfg.train.num_threads, cfg.scale.workers = int(cfg.scale.cpus_per_worker), 0
        dump_config(cfg, out / f"bare{k}.yaml")
        configs.append(out / f"bare{k}.yaml")
    t0 = time.perf_counter()
    for pair in (configs[:2], configs[2:]):
        procs = [subprocess.Popen([sys.executable, "-m", "sslray.train", str(c)], stdout=subprocess.DEVNULL) for c in pair]
        assert all(p.wait() == 0 for p in procs)
    bare = time.perf_counter() - t0

    timer = StartupTimer()
    summary, tuned = _search(space, out, "tune4", callbacks=[timer])
    startups = sorted(timer.startup.values())
    print(f"CPU cores: {cores}; quickstart config on 20,000 images, {epochs} epochs per run, 4 runs 2 at a time, "
          "1 CPU each")
    print(f"{'':<52}{'wall s':>10}")
    print(f"{'bare `python -m sslray.train --workers 0`, 2 side by side':<52}{bare:>10.1f}")
    print(f"{'sslray.tune, 4 trials, 2 at a time (in-trial loop)':<52}{tuned:>10.1f}   outcomes {summary['outcomes']}")
    print(f"ratio search / bare: {tuned / bare:.3f} (target <= 1.05)")
    print(f"per-trial start-up (trial start -> first step), s: median {statistics.median(startups):.2f}, "
          f"max {max(startups):.2f} over {len(startups)} trials (target < 3)")


def asha_vs_full(root: str, space_file: str) -> None:
    from sslray.search.space import load_search_space

    out = Path(tempfile.mkdtemp(prefix="sslray-bench-"))
    space = load_search_space(ROOT / space_file, [f"data.root={os.path.abspath(root)}"])
    full = copy.deepcopy(space)
    full.asha = dataclasses.replace(full.asha, grace_period=full.max_epochs)
    rows = []
    for label, sp, name in (("ASHA", space, "asha"), ("every trial to the end", full, "full")):
        summary, wall = _search(sp, out, name)
        epochs = sum(r["epochs"] or 0 for r in summary["table"])
        best = summary["best"][space.metric] if summary["best"] else float("nan")
        rows.append((label, epochs, best, wall, summary["outcomes"]))
    print(f"{'':<26}{'trial-epochs':>14}{'best ' + space.metric:>16}{'wall s':>10}  outcomes")
    for label, epochs, best, wall, outcomes in rows:
        print(f"{label:<26}{epochs:>14}{best:>16.4f}{wall:>10.1f}  {outcomes}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("which", choices=["tune", "asha"])
    ap.add_argument("--root", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--epochs", type=int, default=3, help="(tune) epochs of each of the four runs")
    ap.add_argument("--space", default="search_spaces/cpu_vicreg.yaml", help="(asha) the search space")
    args = ap.parse_args()
    if args.which == "tune":
        tune_overhead(args.root, args.epochs)
    else:
        asha_vs_full(args.root, args.space)


if __name__ == "__main__":
    main()
