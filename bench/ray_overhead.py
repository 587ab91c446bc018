"""Ray Train overhead: one Ray Train worker vs the bare single-process loop, same model, data, batch.

    python bench/ray_overhead.py [--root ../shared/data] [--limit 10000] [--epochs 4] [--rounds 2]

Three ways to run the same loop, each given all the machine's CPUs (torch runs the same number of
threads in all three), in ``--rounds`` interleaved rounds so that a slow minute of the machine
hits all of them alike:
    bare loop      ``sslray.train.train_local`` in this process
    Ray task       the same call in a plain Ray worker process (``ray.remote(num_cpus=N)``): what a
                   Ray worker process itself costs, and what an in-trial search trial runs in
    Ray Train      ``sslray.ray_train.train_ray`` with one worker: the Train controller, its polls
                   and the worker's training thread on top
Prints training throughput (img/s, the mean over rounds of the epochs after the first, which holds
warm-up) side by side with the ratios to the bare loop (target for Ray Train: >= 0.95), and each
one's fixed start-up (whole-run wall time minus its training and evaluation time).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from sslray.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def measure(cfg, run_dir: Path, how: str) -> tuple[float, float]:
    """(img/s of epochs 2+, start-up s) of one run."""
    import ray

    from sslray.rundir import RunDir

    t0 = time.perf_counter()
    if how == "ray_train":
        from sslray.ray_train import train_ray

        train_ray(cfg, run_dir)
    elif how == "ray_task":
        from sslray.local_run import train_local

        run = ray.remote(num_cpus=cfg.scale.cpus_per_worker)(train_local)
        ray.get(run.remote(cfg, run_dir, echo=False))
    else:
        from sslray.local_run import train_local

        train_local(cfg, run_dir, echo=False)
    wall = time.perf_counter() - t0
    rows = [r for r in RunDir(cfg, run_dir).metrics() if "img_per_s" in r]
    busy = sum(r["epoch_time_s"] + r.get("eval_time_s", 0.0) for r in rows)
    return statistics.mean(r["img_per_s"] for r in rows[1:]), wall - busy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    cpus = os.cpu_count() or 1
    out = Path(tempfile.mkdtemp(prefix="sslray-bench-"))
    base = {"data.root": args.root, "data.limit": args.limit, "data.test_limit": 1000, "train.epochs": args.epochs,
            "eval.every": 0, "eval.knn_k": 20, "train.output_dir": str(out), "train.checkpoint_every": 0,
            "train.num_threads": cpus, "scale.cpus_per_worker": cpus, "data.cache_dir": str(out / "cache")}
    recipe = ROOT / "sslray/recipes/cifar10_cpu_vicreg.yaml"
    from sslray.resources import connect

    connect([], "local", cpus)  # as sslray.train and sslray.tune start it (dashboard included)
    ways = {"bare": "bare loop (1 process)", "ray_task": "Ray task (plain worker)", "ray_train": "Ray Train, 1 worker"}
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in ways}
    for r in range(args.rounds):
        for how in ways:
            cfg = load_config(recipe, {**base, "scale.workers": 0 if how != "ray_train" else 1,
                                       "train.run_name": f"{how}{r}"})
            runs[how].append(measure(cfg, out / f"{how}{r}", how))
    ips = {k: statistics.mean(x[0] for x in v) for k, v in runs.items()}
    print(f"CPU cores: {cpus}; CIFAR-10 subset {args.limit} images, {args.epochs} epochs, batch {cfg.train.batch_size}, "
          f"{args.rounds} interleaved rounds")
    print(f"{'':<28}{'img/s (epochs 2+)':>18}{'vs bare':>9}{'start-up s':>12}   per round")
    for how, label in ways.items():
        rounds = ", ".join(f"{x[0]:,.0f}" for x in runs[how])
        print(f"{label:<28}{ips[how]:>18,.0f}{ips[how] / ips['bare']:>9.3f}"
              f"{statistics.mean(x[1] for x in runs[how]):>12.1f}   {rounds}")
    print(f"throughput ratio Ray Train/bare: {ips['ray_train'] / ips['bare']:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
