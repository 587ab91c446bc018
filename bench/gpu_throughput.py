"""GPU training throughput of the CIFAR-10 ResNet-18 recipe: img/s, MFU and the cost of evaluation.

    python bench/gpu_throughput.py [--compile [true|max-autotune]] [--epochs 3] [--batch 512]
    python bench/gpu_throughput.py --compile --epochs 20      # + VICReg's kNN after a short schedule
    python bench/gpu_throughput.py --device cpu --limit 64 --batch 32 --epochs 2   # CPU smoke run of the script

It drives the real loop (``sslray.train.train_local``: in this process, no Ray) on
``sslray/recipes/cifar10_resnet18_vicreg.yaml`` with batch 512 per step, bf16 autocast and
channels_last on CUDA (fp32 on the CPU), optionally under ``train.compile``. The decoded uint8
images are kept on the training device and both views are cut there (``sslray.views.Crops`` with a
generator on that device), so no host-side loader is part of what is timed. Every epoch is
evaluated (eval.every=1: kNN over 50k train features + 10k test) so that each has an evaluation
time. From the run's metrics.jsonl it prints, next to the targets:

- training img/s (an image = its two 32 px views): median over the epochs after the first, which
  also holds cuDNN's autotuning and, with --compile, the compile itself (printed separately);
- MFU: img/s x 2 views x 3.3 GFLOPs (ResNet-18 CIFAR training, REFERENCE §7) / the GPU's dense
  bf16 peak, looked up by device name (--peak-tflops for another GPU; n/a when unknown);
- evaluation time over one epoch's training time, per evaluation and amortised over the recipe's
  eval.every (the search runs evaluate at the recipe's interval, not every epoch);
- VICReg's kNN top-1 after the run and the run's wall time (with --epochs 20 or so: the warm-up is
  shortened to a tenth of the run, the recipe's 10 epochs being meant for 200).

Targets: >= 20,000 img/s on an H100 / H200; evaluation < 10 % of an epoch's training time.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from sslray.config import COMPILE_MODES, load_config
from sslray.local_run import train_local

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "sslray/recipes/cifar10_resnet18_vicreg.yaml"
TRAIN_GFLOPS_PER_VIEW = 3.3  # ResNet-18 CIFAR stem, 32 px: forward 1.11 GFLOPs, x3 with the backward
VIEWS = 2
TARGET_IMG_S = 20_000
TARGET_EVAL = 0.10
# Dense bf16 tensor-core peaks in TFLOP/s (datasheet figures without sparsity), matched in this
# order against torch.cuda.get_device_name(): the PCIe and NVL H100s before the SXM one.
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("A100", 312.0))


def peak_tflops(device_name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def mfu(img_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: the training FLOPs the model needs per second over the peak."""
    return img_per_s * VIEWS * TRAIN_GFLOPS_PER_VIEW * 1e9 / (peak * 1e12) if peak else None


def bench_config(args, out_dir: Path):
    changes = {
        "data.root": args.data_root, "train.device": args.device, "train.batch_size": args.batch,
        "train.epochs": args.epochs, "train.compile": args.compile, "train.output_dir": str(out_dir),
        "train.run_name": "bench", "train.checkpoint_every": 0, "train.log_every": 1000000,
        "optim.warmup_epochs": min(10.0, max(1.0, args.epochs / 10)),
        "eval.every": 1, "eval.feature_batch_size": args.eval_batch, "scale.workers": 0,
        "scale.use_gpu": args.device == "cuda",
    }
    if args.cache_dir:
        changes["data.cache_dir"] = args.cache_dir
    if args.limit:  # class-stratified subsets; the test split a fifth of the train subset, as in CIFAR
        changes.update({"data.limit": args.limit, "data.test_limit": max(10, args.limit // 5)})
    return load_config(RECIPE, changes)


def figures(rows: list[dict], wall_s: float, peak: float | None, recipe_eval_every: int) -> dict:
    """The printed figures from metrics.jsonl rows (epochs after the first when there are any)."""
    done = [r for r in rows if "status" not in r]
    steady = done[1:] or done
    img_s = statistics.median(r["img_per_s"] for r in steady)
    epoch_s = statistics.median(r["epoch_time_s"] for r in steady)
    eval_s = statistics.median(r["eval_time_s"] for r in steady if "eval_time_s" in r)
    last = done[-1] if done else {}
    return {
        "img_per_s": img_s, "mfu": mfu(img_s, peak), "peak_tflops": peak, "epoch_time_s": epoch_s,
        "eval_time_s": eval_s, "eval_fraction": eval_s / epoch_s,
        "eval_fraction_amortised": eval_s / epoch_s / max(1, recipe_eval_every), "recipe_eval_every": recipe_eval_every,
        "first_epoch_s": done[0]["epoch_time_s"] if done else None, "epochs_timed": [r["epoch"] for r in steady],
        "knn_top1": last.get("knn_top1"), "epochs_completed": len(done), "wall_s": wall_s,
        "train_eval_s": sum(r["epoch_time_s"] + r.get("eval_time_s", 0.0) for r in done),
        "status": rows[-1].get("status", "finished") if rows else "failed",
    }


def report(f: dict, header: list[str], compiled: bool) -> str:
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f} %"  # noqa: E731
    img_s = f"{f['img_per_s']:,.0f}" if f["img_per_s"] >= 100 else f"{f['img_per_s']:.3g}"  # CPU smoke: a few img/s
    peak = f"peak {f['peak_tflops']:g} TFLOP/s" if f["peak_tflops"] else "peak unknown"
    first = f["first_epoch_s"]
    rows = [
        ("figure", "measured", "target"),
        ("training img/s (2 views per image)", img_s, f">= {TARGET_IMG_S:,} (H100/H200)"),
        (f"MFU ({VIEWS * TRAIN_GFLOPS_PER_VIEW:g} GFLOPs/img, {peak})", pct(f["mfu"]), ""),
        ("evaluation / epoch's training time", f"{f['eval_time_s']:.2f} s / {f['epoch_time_s']:.2f} s = "
         f"{pct(f['eval_fraction'])}", f"< {100 * TARGET_EVAL:.0f} %"),
        (f"  amortised over eval.every={f['recipe_eval_every']}", pct(f["eval_fraction_amortised"]), ""),
        (f"epoch 1 (warm-up{', compile' if compiled else ''})", f"{first:.2f} s" if first else "n/a", ""),
        (f"kNN top-1 after {f['epochs_completed']} epoch(s)",
         f"{pct(f['knn_top1'])} ({f['status']}; training + evaluation {f['train_eval_s']:.1f} s, "
         f"wall {f['wall_s']:.1f} s with data decoding)", ""),
    ]
    width = [max(len(r[0]) for r in rows) + 3, max(len(r[1]) for r in rows if r[2]) + 3]  # long untargeted rows run on
    lines = header + [f"{a:<{width[0]}}{b:<{width[1]}}{c}".rstrip() for a, b, c in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compile", nargs="?", const="true", default="false", choices=COMPILE_MODES,
                    help="train.compile (bare --compile: true)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs (throughput from epoch 2 on)")
    ap.add_argument("--batch", type=int, default=512, help="images per step (each two views)")
    ap.add_argument("--eval-batch", type=int, default=512, help="eval.feature_batch_size")
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared/data"), help="holds cifar10/{train,test}.parquet")
    ap.add_argument("--cache-dir", help="data.cache_dir: decoded arrays kept between runs")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a smoke run of this script")
    ap.add_argument("--limit", type=int, help="train on this many images (test on a fifth): smoke runs")
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak for a GPU not in the table")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_throughput: needs a CUDA GPU and torch.cuda.is_available() is False "
              "(for a CPU smoke run of this script: --device cpu --limit 64 --batch 32)", file=sys.stderr)
        return 2

    on_gpu = args.device == "cuda"
    name = torch.cuda.get_device_name() if on_gpu else "cpu"
    peak = args.peak_tflops or (peak_tflops(name) if on_gpu else None)
    out_dir = Path(tempfile.mkdtemp(prefix="gpu_throughput-"))
    try:
        cfg = bench_config(args, out_dir)
        t0 = time.perf_counter()
        summary = train_local(cfg, out_dir / "bench", echo=False)
        wall = time.perf_counter() - t0
        rows = [json.loads(x) for x in (out_dir / "bench/metrics.jsonl").read_text().splitlines()]
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    if not any("status" not in r for r in rows):
        print(f"gpu_throughput: the run stopped in epoch 1 ({summary['reason']})", file=sys.stderr)
        return 1
    f = figures(rows, wall, peak, load_config(RECIPE).eval.every)
    precision = "bf16" if on_gpu else "fp32"  # the loop's train.precision=auto
    header = [
        f"VICReg, ResNet-18 (CIFAR stem), 2 x 32 px views | batch {args.batch} | {precision}"
        f"{', channels_last' if on_gpu else ''} | train.compile={args.compile}",
        f"{name} | torch {torch.__version__} | CIFAR-10, {cfg.data.limit or 50_000:,} train images | "
        f"{args.epochs} epoch(s), "
        f"img/s and evaluation from epoch(s) {', '.join(map(str, f['epochs_timed']))}",
    ]
    print(report(f, header, args.compile != "false"))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "args": vars(args), **f}, indent=2))
    return 0 if f["status"] == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
