"""Does searching pay on a CPU? The quickstart search vs the CPU recipe, side by side in one run.

    python bench/quickstart_vs_recipe.py [--root ../shared/data] [--output DIR]

Runs, one after the other, exactly what a user types:
    python -m sslray.train sslray/recipes/cifar10_cpu_vicreg.yaml data.root=ROOT      (the recipe)
    python -m sslray.tune search_spaces/quickstart.yaml data.root=ROOT                (the search)
then scores both final encoders the same way, ``python -m sslray.eval`` on the whole training set
(kNN bank and probe) and the whole test set. Prints each one's wall time (start to exit of the
command, data decoding included), kNN and linear-probe top-1, and the two targets: the search's
best kNN above the recipe's, in at most 1.5x the recipe's wall time.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], log: Path) -> float:
    """Wall seconds of ``cmd``; what it printed is kept in ``log``."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, cwd=ROOT)
    return time.perf_counter() - t0


def evaluate(checkpoint: str) -> dict:
    # the whole test set whatever the run scored during training (the quickstart: 2,000 images)
    out = subprocess.run([sys.executable, "-m", "sslray.eval", checkpoint, "data.test_limit=null"], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out[out.index("{"):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--output", help="where both leave their runs (default: a new temporary folder)")
    args = ap.parse_args()
    out = Path(args.output or tempfile.mkdtemp(prefix="sslray-bench-")).absolute()
    out.mkdir(parents=True, exist_ok=True)
    root = f"data.root={Path(args.root).absolute()}"

    recipe_s = timed([sys.executable, "-m", "sslray.train", "sslray/recipes/cifar10_cpu_vicreg.yaml", root,
                      f"train.output_dir={out}", "train.run_name=recipe"], out / "recipe.out")
    recipe = json.loads((out / "recipe" / "summary.json").read_text())
    search_s = timed([sys.executable, "-m", "sslray.tune", "search_spaces/quickstart.yaml", root,
                      "--output", str(out), "--name", "quickstart"], out / "quickstart.out")
    search = json.loads((out / "quickstart" / "summary.json").read_text())
    best = search["best"]
    r, q = evaluate(recipe["checkpoint"]), evaluate(best["checkpoint"])

    print(f"CIFAR-10: {r['train_images']} train / {r['test_images']} test images; scores by `python -m sslray.eval`")
    print(f"{'':<44}{'wall s':>9}{'kNN top-1':>11}{'probe top-1':>13}")
    print(f"{'CPU recipe (cifar10_cpu_vicreg.yaml, 30 ep)':<44}{recipe_s:>9.0f}{100 * r['knn_top1']:>10.2f}%"
          f"{100 * r['probe_test_top1']:>12.2f}%")
    print(f"{'quickstart search, best trial':<44}{search_s:>9.0f}{100 * q['knn_top1']:>10.2f}%"
          f"{100 * q['probe_test_top1']:>12.2f}%")
    print(f"  trials: {search['outcomes']}; best: epoch {best['epochs']}, {json.dumps(best['params'])}")
    print(f"wall time search / recipe: {search_s / recipe_s:.2f} (target <= 1.5)")
    print(f"kNN search - recipe: {100 * (q['knn_top1'] - r['knn_top1']):+.2f} points (target > 0)")
    print(f"printed by each: {out / 'recipe.out'}, {out / 'quickstart.out'}")


if __name__ == "__main__":
    main()
