"""Search benchmarks, side by side in one run.

    python bench/search_overhead.py tune   [--root ../shared/data]   # (a) Tune overhead
    python bench/search_overhead.py asha   [--root ../shared/data]   # (b) ASHA vs every trial to the end

(a) Four identical trials, two at a time, through ``sslray.tune`` vs two plain Ray Train runs of the
    same config one after the other: the same work per slot, so the wall-time ratio is Tune's
    overhead (target <= 1.10).
(b) ``search_spaces/quickstart.yaml`` on real CIFAR-10 with its ASHA settings vs with ASHA
    disabled (grace period = max epochs): trial-epochs spent, best score and wall time of each.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _search(space, out: Path, name: str, overrides: list[str]) -> tuple[dict, float]:
    from sslray.search.run import run_search

    t0 = time.perf_counter()
    summary = run_search(space, str(out), name, overrides=overrides, num_cpus=4)
    return summary, time.perf_counter() - t0


def tune_overhead(root: str) -> None:
    import ray

    from sslray.config import load_config
    from sslray.ray_train import train_ray
    from sslray.search.space import ParamSpec, load_search_space

    out = Path(tempfile.mkdtemp(prefix="sslray-bench-"))
    space = load_search_space(ROOT / "search_spaces/quickstart.yaml")
    space.params = [ParamSpec("optim.lr", "choice", values=[0.3])]  # four identical trials
    space.num_trials, space.max_concurrent = 4, 2
    space.asha = dataclasses.replace(space.asha, grace_period=space.max_epochs)  # nobody stopped early
    space.optuna = dataclasses.replace(space.optuna, points_to_evaluate=[])
    overrides = [f"data.root={root}"]
    ray.init(address="local", num_cpus=4)
    plain = []
    for k in range(2):
        cfg = space.trial_config({"optim.lr": 0.3}, overrides + [f"train.output_dir={out}", f"train.run_name=plain{k}",
                                                                 "eval.every=1", "train.checkpoint_every=1"])
        t0 = time.perf_counter()
        train_ray(cfg, out / f"plain{k}")
        plain.append(time.perf_counter() - t0)
    summary, tuned = _search(space, out, "tune4", overrides)
    print(f"{'':<40}{'wall s':>10}")
    print(f"{'2 plain Ray Train runs, one after the other':<40}{sum(plain):>10.1f}")
    print(f"{'sslray.tune, 4 trials, 2 at a time':<40}{tuned:>10.1f}   outcomes {summary['outcomes']}")
    print(f"ratio: {tuned / sum(plain):.2f} (target <= 1.10)")


def asha_vs_full(root: str) -> None:
    from sslray.search.space import load_search_space

    out = Path(tempfile.mkdtemp(prefix="sslray-bench-"))
    space = load_search_space(ROOT / "search_spaces/quickstart.yaml")
    full = copy.deepcopy(space)
    full.asha = dataclasses.replace(full.asha, grace_period=full.max_epochs)
    rows = []
    for label, sp, name in (("ASHA", space, "asha"), ("every trial to the end", full, "full")):
        summary, wall = _search(sp, out, name, [f"data.root={root}"])
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
