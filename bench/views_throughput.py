"""Two-view augmentation throughput: sslray's batched pipeline vs torchvision v2 per image.

    python bench/views_throughput.py [--data ../shared/data/cifar10/train.parquet] [--n 4096] [--batch 512]

Both produce the same augmentation (the symmetric CIFAR preset: random resized crop, flip, colour
jitter with p=0.8, grayscale p=0.2, solarize p=0.1, normalise) for two views of every image, on
real CIFAR-10 images decoded once to uint8 tensors. Timed after a warm-up; median of repeats.
Target: >= 5x on a 2-core CPU.
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
from sslray.views import Crops

ROOT = Path(__file__).resolve().parents[1]


def torchvision_pipeline(vc, size, mean, std):
    return T.Compose([
        T.RandomResizedCrop(size, scale=vc.crop_scale, ratio=vc.crop_ratio, antialias=True),
        T.RandomHorizontalFlip(vc.hflip_p),
        T.RandomApply([T.ColorJitter(vc.brightness, vc.contrast, vc.saturation, vc.hue)], p=vc.jitter_p),
        T.RandomGrayscale(vc.grayscale_p),
        T.RandomApply([T.GaussianBlur(3, vc.blur_sigma)], p=vc.blur_p),
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
    args = ap.parse_args()

    blobs, _, names, _ = read_parquet(args.data, "image", "label")
    images = torch.from_numpy(decode_images(blobs[: args.n], names[: args.n], None, args.data)).permute(0, 3, 1, 2).contiguous()
    cfg = load_config(None).views
    ours = Crops(cfg)
    gen = torch.Generator().manual_seed(0)

    def run_ours():
        for s in range(0, len(images), args.batch):
            ours(images[s:s + args.batch], gen)

    tv = [torchvision_pipeline(vc, cfg.size, cfg.mean, cfg.std) for vc in cfg.crops]
    subset = images[: args.n_torchvision]

    def run_tv():
        for img in subset:
            tv[0](img), tv[1](img)

    t_ours = timed(run_ours, args.repeats)
    t_tv = timed(run_tv, args.repeats)
    ours_ips, tv_ips = len(images) / t_ours, len(subset) / t_tv
    print(f"CPU cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"{'pipeline':<34}{'img/s (two views)':>20}")
    print(f"{'sslray Crops (batch ' + str(args.batch) + ')':<34}{ours_ips:>20,.0f}")
    print(f"{'torchvision v2, per image':<34}{tv_ips:>20,.0f}")
    print(f"ratio: {ours_ips / tv_ips:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
