"""Procedurally generated images with class structure -- for tests and smoke runs, never results.

Each class is a texture family (stripes, checkerboard, rings, dots, grid, smooth or fine noise,
ramps, ...) whose identity survives the SSL augmentations (crops, flips, colour jitter, grayscale);
every image draws its own frequency, phase, pair of colours and pixel noise. Raw pixels separate
the classes only partly -- colour carries no class information -- while a small CNN trained with
an SSL loss learns the textures, so "pretraining helps" is a meaningful check on this data.
More classes than families reuse the families at another frequency band.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sslray.data.base import ImageData

FAMILIES = 10


def _pattern(family: int, u: torch.Tensor, v: torch.Tensor, r: torch.Tensor, noise_lo: torch.Tensor,
             noise_hi: torch.Tensor) -> torch.Tensor:
    """A texture in [-1, 1] for every image of a family; u, v, r: [n, H, W] phase-shifted coordinates."""
    if family == 0:
        return torch.sin(v)  # horizontal stripes
    if family == 1:
        return torch.sin(u)  # vertical stripes
    if family == 2:
        return torch.tanh(3 * torch.sin(u) * torch.sin(v))  # checkerboard
    if family == 3:
        return 0.5 * (torch.sin(u + v) + torch.sin(u - v))  # both diagonals: flip-invariant
    if family == 4:
        return torch.sin(r)  # concentric rings
    if family == 5:
        return torch.tanh(4 * (torch.cos(u) + torch.cos(v) - 1))  # dots
    if family == 6:
        return torch.tanh(4 * (torch.maximum(torch.cos(u), torch.cos(v)) - 0.8))  # grid lines
    if family == 7:
        return noise_lo  # smooth blobs
    if family == 8:
        return noise_hi  # fine grain
    return torch.tanh(torch.sin(0.25 * r))  # soft radial ramp


def synthetic_split(n: int, num_classes: int, size: int, seed: int, split: str) -> ImageData:
    g = torch.Generator().manual_seed(seed * 7 + (0 if split == "train" else 1_000_003))
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    lin = torch.linspace(0, 2 * math.pi, size)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    band = (labels // FAMILIES).float()
    freq = (2.0 + 1.5 * band + torch.rand(n, generator=g)).view(-1, 1, 1)  # per image, within the class's band
    u = xx * freq + torch.rand(n, 1, 1, generator=g) * 2 * math.pi
    v = yy * freq + torch.rand(n, 1, 1, generator=g) * 2 * math.pi
    centre = torch.rand(n, 2, 1, 1, generator=g) * 2 * math.pi
    r = torch.sqrt((xx - centre[:, 0]) ** 2 + (yy - centre[:, 1]) ** 2) * freq
    noise_lo = F.interpolate(torch.randn(n, 1, 4, 4, generator=g), size=size, mode="bicubic").squeeze(1).tanh()
    noise_hi = F.interpolate(torch.randn(n, 1, max(2, size // 2), max(2, size // 2), generator=g), size=size,
                             mode="nearest").squeeze(1).tanh()
    pattern = torch.zeros(n, size, size)
    for fam in range(FAMILIES):
        m = labels % FAMILIES == fam
        if m.any():
            pattern[m] = _pattern(fam, u[m], v[m], r[m], noise_lo[m], noise_hi[m])
    a, b = torch.rand(n, 3, 1, 1, generator=g), torch.rand(n, 3, 1, 1, generator=g)  # colours: no class signal
    w = (pattern.unsqueeze(1) + 1) / 2
    img = a * w + b * (1 - w) + 0.08 * torch.randn(n, 3, size, size, generator=g)
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
    return ImageData(images, labels, [f"class_{c}" for c in range(num_classes)])
