"""Every method at one CPU budget on the real CIFAR-10: the README's methods table.

    python bench/methods_table.py [--root ../shared/data] [--limit 20000] [--epochs 10] [--methods a,b+uota]

Each method pretrains the same 5-conv CNN (sslray/recipes/cifar10_cpu_vicreg.yaml: width 16, a
512-512-512 projector, LARS lr 0.3, batch 256) for the same epochs on the same class-stratified
subset, with its paper defaults (``loss.params``) except the few settings listed in CPU_SETTINGS
(a width or a queue scaled to this projector and subset, VICReg-TiCo's nu, which has no default)
and the projectors in CPU_PROJECTOR (W-MSE's 64-dim head).
Nothing is tuned per method: this is the same-budget starting point a family search
(search_spaces/family_cpu.yaml) improves on. Every trained encoder -- and the untrained one -- is
then scored on all 10,000 test images: kNN (k=200, T=0.1) and an offline linear probe (50 epochs)
on frozen representations. ``NAME+uota`` is method NAME with UOTA view weighting on
(``loss.uota``: the official tau = 350, from epoch 0).

Results go to OUT/results.json (one entry per method, rerunning skips methods already there) and
the table is printed as Markdown. One seed per method: differences of a point or two are within
seed noise (docs/study_cpu.md measured a seed spread of ~0.5 points for one method); use
``python -m sslray.compare`` for claims.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "sslray/recipes/cifar10_cpu_vicreg.yaml"
# Per-method settings for this recipe (everything else: the method's paper defaults, sslray.methods)
CPU_SETTINGS = {
    "vicreg_tico": {"nu": 1 / 512},  # no default: ~1/D keeps the term at VICReg's scale (sslray.losses.vicreg_tico)
    "moco": {"queue_size": 4096},  # 32768 on 50k images; a queue above the 20k subset would hold stale copies of a batch's images
    "byol": {"pred_hidden": 512},  # the predictor as wide as this projector (4096 for 4096-256 in the paper)
    "simsiam": {"pred_hidden": 128},  # the paper's bottleneck: 1/4 of the projector width (512 of 2048)
    "wmse": {"w_size": 128},  # the paper's 2 x the 64-dim head (the default; two sub-batches per batch of 256)
    # swav: its defaults, two crops like every row. The prototypes live in the projector's output
    # space (512-d here), so K = 3000 needs no scaling with the width; the queue (from epoch 50)
    # never joins a 10-epoch run -- as well: in 10-epoch multi-crop runs on 10k images a queue from
    # epoch 0 collapsed the embeddings (kNN 25 % vs 35 % untrained) and K = 512 learned no faster
    # than K = 3000 (kNN 34 % vs 37 %).
}
# Per-method projectors (everything else: the recipe's 512-512-512). W-MSE whitens sub-batches of
# w_size rows, which must exceed the embedding width: 512 would need sub-batches larger than the
# batch; 64 is the paper's output width (1024-64), the hidden layers stay the recipe's.
CPU_PROJECTOR = {"wmse": "512-512-64"}


def run_method(row_name: str, args, out: Path) -> dict:
    from sslray.config import load_config
    from sslray.eval.offline import evaluate_checkpoint
    from sslray.methods import method_params
    from sslray.local_run import train_local

    name, uota = row_name.removesuffix("+uota"), row_name.endswith("+uota")
    params = {**{k: v for k, v in method_params(name).items() if v is not None}, **CPU_SETTINGS.get(name, {})}
    import yaml

    raw = yaml.safe_load(RECIPE.read_text())
    raw["loss"] = {"name": name, "params": params, "uota": {"enabled": uota}}  # the recipe's VICReg weights belong to VICReg
    changes = {"data.root": args.root, "data.limit": args.limit, "data.test_limit": 2000,
               "train.epochs": args.epochs, "train.output_dir": str(out), "train.run_name": row_name.replace('+', '_'),
               "train.checkpoint_every": 0, "eval.every": 0}
    if name in CPU_PROJECTOR:
        changes["model.projector"] = CPU_PROJECTOR[name]
    cfg = load_config(raw, changes)
    t0 = time.perf_counter()
    summary = train_local(cfg, out / row_name.replace('+', '_'), echo=False)
    wall = time.perf_counter() - t0
    row = {"method": row_name, "params": {**params, **({"uota_tau": 350.0} if uota else {})},
           "status": summary["status"], "reason": summary["reason"], "train_wall_s": round(wall, 1),
           **({"projector": CPU_PROJECTOR[name]} if name in CPU_PROJECTOR else {})}
    if summary["checkpoint"] is None:  # diverged before its first checkpoint: a row that says so
        return {**row, "knn_top1": float("nan"), "probe_top1": float("nan"), "rankme": float("nan")}
    scores = evaluate_checkpoint(summary["checkpoint"], {"data.test_limit": None, "eval.probe_epochs": 50})
    return {**row, "knn_top1": scores["knn_top1"], "probe_top1": scores["probe_test_top1"], "rankme": scores["rankme"]}


def untrained(args) -> dict:
    from sslray.eval.offline import evaluate_checkpoint

    scores = evaluate_checkpoint(str(RECIPE), {"data.root": args.root, "data.limit": args.limit, "data.test_limit": None,
                                               "eval.probe_epochs": 50})  # the same kNN bank / probe data as the trained
    return {"method": "untrained", "params": {}, "status": "-", "reason": None, "train_wall_s": 0.0,
            "knn_top1": scores["knn_top1"], "probe_top1": scores["probe_test_top1"], "rankme": scores["rankme"]}


def table(results: dict, args) -> str:
    rows = [f"CIFAR-10, {args.limit} training images, {args.epochs} epochs, small_cnn width 16, projector "
            "512-512-512, LARS lr 0.3, batch 256, one seed; scores on the 10,000 test images", "",
            "| method | parameters | kNN top-1 (vs untrained) | linear probe top-1 |", "|---|---|---|---|"]
    base = results.get("untrained")
    for name, r in results.items():
        shown = {k: v for k, v in r["params"].items() if v is not False and k != "eps"}  # switches off, eps: defaults
        params = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()) or "-"
        if r.get("projector"):
            params += f"; projector {r['projector']}"
        gain = f" ({100 * (r['knn_top1'] - base['knn_top1']):+.1f})" if base and name != "untrained" else ""
        if r["status"] not in ("finished", "-"):
            params += f" ({r['status']}: {r['reason']})"
        rows.append(f"| {name} | {params} | {100 * r['knn_top1']:.1f} %{gain} | {100 * r['probe_top1']:.1f} % |")
    return "\n".join(rows)


def main() -> None:
    from sslray.methods import METHODS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=str(ROOT.parent / "shared/data"))
    ap.add_argument("--limit", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=10)
    weighted = [f"{n}+uota" for n, m in METHODS.items() if m.view_weighting]
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join([*METHODS, *weighted])}")
    ap.add_argument("--out", default=str(ROOT / "experiments/methods_table"))
    args = ap.parse_args()
    names = [m for m in args.methods.split(",") if m]
    unknown = [m for m in names if m not in METHODS and m not in weighted]
    if unknown:
        ap.error(f"--methods: unknown {', '.join(unknown)}; allowed: {', '.join([*METHODS, *weighted])}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for name in ["untrained"] + names:
        if name in results:
            continue
        results[name] = untrained(args) if name == "untrained" else run_method(name, args, out)
        path.write_text(json.dumps(results, indent=1))  # after every method: an interrupted table keeps its rows
        print(f"{name}: kNN {100 * results[name]['knn_top1']:.1f} %", flush=True)
    order = ["untrained"] + [m for n in METHODS for m in (n, f"{n}+uota") if m in results]
    print(table({m: results[m] for m in order}, args))


if __name__ == "__main__":
    main()
