"""Two-view augmentation throughput: sslray's batched pipeline vs torchvision v2 per image.

    python bench/views_throughput.py [--data ../shared/data/cifar10/train.parquet] [--n 4096]
                                     [--n-torchvision 1024] [--batch 512] [--repeats 5] [--preset asymmetric]

Both sides produce the same augmentation for two views of every image, on real CIFAR-10 images
decoded once to uint8 tensors: by default the asymmetric (BYOL-style) preset -- random resized
crop with antialiasing, flip, colour jitter p=0.8, grayscale p=0.2, then view 1 Gaussian blur
p=1.0 / solarize p=0 and view 2 blur p=0.1 / solarize p=0.2 (blur kernel as sslray's:
``blur_kernel_size(size)``), normalise. Both run in the same process one after the other, timed
after a warm-up (median of repeats), with torch's default thread count; the ratio of per-image
throughputs is printed next to the target. Target: >= 15x on a 2-core CPU (issue 12).

Run it on an otherwise idle machine: with other processes on the cores, torch's intra-op threads
wait for each other at every op, and the batched side (hundreds of ops per batch, each split over
the threads) slows down many times more than the per-image side (single-threaded tiny ops).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torchvision.transforms.v2 as T

from sslray.config import load_config
from sslray.data.decode import decode_images, read_parquet
from sslray.views import Crops, blur_kernel_size

ROOT = Path(__file__).resolve().parents[1]
TARGET = 15.0


def torchvision_pipeline(vc, size, mean, std):
    k = blur_kernel_size(size)
    return T.Compose([
        T.RandomResizedCrop(size, scale=vc.crop_scale, ratio=vc.crop_ratio, antialias=True),
        T.RandomHorizontalFlip(vc.hflip_p),
        T.RandomApply([T.ColorJitter(vc.brightness, vc.contrast, vc.saturation, vc.hue)], p=vc.jitter_p),
        T.RandomGrayscale(vc.grayscale_p),
        T.RandomApply([T.GaussianBlur(k, vc.blur_sigma)], p=vc.blur_p),
        T.RandomSolarize(int(vc.solarize_threshold * 255), p=vc.solarize_p),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean, std),
    ])


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/cifar10/train.parquet"))
    ap.add_argument("--n", type=int, default=4096, help="images per timed pass (batched pipeline)")
    ap.add_argument("--n-torchvision", type=int, default=1024, help="images per timed pass (per-image pipeline)")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--preset", default="asymmetric", help="views.preset (symmetric | asymmetric)")
    args = ap.parse_args()

    blobs, _, names, _ = read_parquet(args.data, "image", "label")
    images = torch.from_numpy(decode_images(blobs[: args.n], names[: args.n], None, args.data)).permute(0, 3, 1, 2).contiguous()
    cfg = load_config({"views": {"preset": args.preset}}).views
    ours = Crops(cfg)
    gen = torch.Generator().manual_seed(0)

    def run_ours():
        for s in range(0, len(images), args.batch):
            ours(images[s:s + args.batch], gen)

    tv = [torchvision_pipeline(vc, vc.size or cfg.size, cfg.mean, cfg.std) for vc in cfg.crops]
    subset = images[: args.n_torchvision]

    def run_tv():
        for img in subset:
            tv[0](img), tv[1](img)

    t_ours = timed(run_ours, args.repeats)
    t_tv = timed(run_tv, args.repeats)
    ours_ips, tv_ips = len(images) / t_ours, len(subset) / t_tv
    print(f"CPU cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"preset: {args.preset} -- " + "; ".join(f"view {i + 1}: blur p={vc.blur_p:g}, solarize p={vc.solarize_p:g}"
                                                  for i, vc in enumerate(cfg.crops)))
    print(f"{'pipeline':<34}{'img/s (two views)':>20}")
    print(f"{'sslray Crops (batch ' + str(args.batch) + ')':<34}{ours_ips:>20,.0f}")
    print(f"{'torchvision v2, per image':<34}{tv_ips:>20,.0f}")
    ratio = ours_ips / tv_ips
    print(f"ratio: {ratio:.1f}x (target >= {TARGET:g}x: {'met' if ratio >= TARGET else 'NOT met'})")


if __name__ == "__main__":
    main()
