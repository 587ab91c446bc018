"""Search benchmarks, side by side in one run.

    python bench/search_overhead.py tune   [--root ../shared/data]   # (a) Tune overhead
    python bench/search_overhead.py asha   [--root ../shared/data]   # (b) ASHA vs every trial to the end

(a) Four identical trials, two at a time, through ``sslray.tune`` vs two plain Ray Train runs of the
    same config one after the other: the same work per slot, so the wall-time ratio is Tune's
    overhead (target <= 1.10). A third row runs the two plain runs *at the same time* (two
    ``python -m sslray.train`` processes on the same Ray): the CPU contention of two concurrent
    runs without Tune, which separates Tune's own cost from the machine's.
(b) ``search_spaces/quickstart.yaml`` on real CIFAR-10 with its ASHA settings vs with ASHA
    disabled (grace period = max epochs): trial-epochs spent, best score and wall time of each.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _search(space, out: Path, name: str) -> tuple[dict, float]:
    from sslray.search.run import run_search

    t0 = time.perf_counter()
    summary = run_search(space, str(out), name)  # local Ray: cores + 1 logical CPUs
    return summary, time.perf_counter() - t0


def tune_overhead(root: str) -> None:
    import ray

    from sslray.config import load_config
    from sslray.ray_train import train_ray
    from sslray.search.space import ParamSpec, load_search_space

    out = Path(tempfile.mkdtemp(prefix="sslray-bench-"))
    space = load_search_space(ROOT / "search_spaces/quickstart.yaml", [f"data.root={os.path.abspath(root)}"])
    space.params = [ParamSpec("optim.lr", "choice", values=[0.3])]  # four identical trials
    space.num_trials, space.max_concurrent = 4, 2
    space.asha = dataclasses.replace(space.asha, grace_period=space.max_epochs)  # nobody stopped early
    space.optuna = dataclasses.replace(space.optuna, points_to_evaluate=[])
    overrides: list[str] = []  # data.root is in the resolved space
    ray.init(address="local", num_cpus=(os.cpu_count() or 1) + 1)  # as run_search starts it
    plain = []
    for k in range(2):
        cfg = space.trial_config({"optim.lr": 0.3}, overrides + [f"train.output_dir={out}", f"train.run_name=plain{k}",
                                                                 "eval.every=1", "train.checkpoint_every=1"])
        t0 = time.perf_counter()
        train_ray(cfg, out / f"plain{k}")
        plain.append(time.perf_counter() - t0)
    # the same two runs side by side, each a `python -m sslray.train` driver on this Ray
    from sslray.config import dump_config

    procs, t0 = [], time.perf_counter()
    for k in range(2):
        cfg = space.trial_config({"optim.lr": 0.3}, overrides + [f"train.output_dir={out}", f"train.run_name=side{k}",
                                                                 "eval.every=1", "train.checkpoint_every=1"])
        dump_config(cfg, out / f"side{k}.yaml")
        procs.append(subprocess.Popen([sys.executable, "-m", "sslray.train", str(out / f"side{k}.yaml"), "--address",
                                       ray.get_runtime_context().gcs_address], stdout=subprocess.DEVNULL))
    assert all(p.wait() == 0 for p in procs)
    side = time.perf_counter() - t0
    summary, tuned = _search(space, out, "tune4")
    print(f"{'':<48}{'wall s':>10}")
    print(f"{'2 plain Ray Train runs, one after the other':<48}{sum(plain):>10.1f}")
    print(f"{'2 plain Ray Train runs at the same time':<48}{side:>10.1f}   (x2 = the 4 runs' work: {2 * side:.1f})")
    print(f"{'sslray.tune, 4 trials, 2 at a time':<48}{tuned:>10.1f}   outcomes {summary['outcomes']}")
    print(f"ratio vs one after the other: {tuned / sum(plain):.2f} (target <= 1.10)")
    print(f"ratio vs two at the same time (x2): {tuned / (2 * side):.2f} (Tune's own cost on this machine)")


def asha_vs_full(root: str) -> None:
    from sslray.search.space import load_search_space

    out = Path(tempfile.mkdtemp(prefix="sslray-bench-"))
    space = load_search_space(ROOT / "search_spaces/quickstart.yaml", [f"data.root={os.path.abspath(root)}"])
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
    args = ap.parse_args()
    (tune_overhead if args.which == "tune" else asha_vs_full)(args.root)


if __name__ == "__main__":
    main()
