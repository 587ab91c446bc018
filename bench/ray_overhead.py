"""Ray Train overhead: one Ray Train worker vs the bare single-process loop, same model, data, batch.

    python bench/ray_overhead.py [--root ../shared/data] [--limit 10000] [--epochs 3]

Prints training throughput (img/s, the mean of epochs after the first, which holds warm-up) of
each side by side with their ratio, and Ray's fixed start-up cost (whole-run wall time
difference). Target: ratio >= 0.97. The worker is given all the machine's CPUs
(scale.cpus_per_worker), so torch runs the same number of threads in both.
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


def measure(cfg, run_dir: Path, ray: bool) -> tuple[float, float]:
    from sslray.rundir import RunDir

    t0 = time.perf_counter()
    if ray:
        from sslray.ray_train import train_ray

        train_ray(cfg, run_dir)
    else:
        from sslray.train import train_local

        train_local(cfg, run_dir, echo=False)
    wall = time.perf_counter() - t0
    rows = [r for r in RunDir(cfg, run_dir).metrics() if "img_per_s" in r]
    return statistics.mean(r["img_per_s"] for r in rows[1:]), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    cpus = os.cpu_count() or 1
    out = Path(tempfile.mkdtemp(prefix="sslray-bench-"))
    base = [f"data.root={args.root}", f"data.limit={args.limit}", "data.test_limit=1000", f"train.epochs={args.epochs}",
            "eval.every=0", "eval.knn_k=20", f"train.output_dir={out}", "train.checkpoint_every=0",
            f"train.num_threads={cpus}", f"scale.cpus_per_worker={cpus}"]
    recipe = ROOT / "sslray/recipes/cifar10_cpu_vicreg.yaml"
    bare = load_config(recipe, base + ["scale.workers=0", "train.run_name=bare"])
    ray = load_config(recipe, base + ["scale.workers=1", "train.run_name=ray"])
    bare_ips, bare_wall = measure(bare, out / "bare", ray=False)
    ray_ips, ray_wall = measure(ray, out / "ray", ray=True)
    print(f"CPU cores: {cpus}; CIFAR-10 subset {args.limit} images, {args.epochs} epochs, batch {bare.train.batch_size}")
    print(f"{'':<28}{'img/s (epochs 2+)':>18}{'wall s':>10}")
    print(f"{'bare loop (1 process)':<28}{bare_ips:>18,.0f}{bare_wall:>10.1f}")
    print(f"{'Ray Train, 1 worker':<28}{ray_ips:>18,.0f}{ray_wall:>10.1f}")
    print(f"throughput ratio Ray/bare: {ray_ips / bare_ips:.3f} (target >= 0.97)")
    print(f"fixed start-up cost of Ray: {ray_wall - bare_wall:.1f} s")


if __name__ == "__main__":
    main()
