"""Batched image operations with per-sample parameters (the building blocks of ``sslray.views``).

Images are float [B, 3, H, W] in [0, 1]; factors are [B] tensors. Each function follows the
definition of the torchvision v2 functional of the same name, vectorised over the batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601-2, as torchvision's rgb_to_grayscale


def _b(f: torch.Tensor) -> torch.Tensor:
    return f.view(-1, 1, 1, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """[B,1,H,W] luma."""
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * _b(f)).clamp_(0, 1)


def contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return (_b(f) * x + (1 - _b(f)) * mean).clamp_(0, 1)


def saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (_b(f) * x + (1 - _b(f)) * grayscale(x)).clamp_(0, 1)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    eqc = maxc == minc
    cr = maxc - minc
    s = cr / torch.where(eqc, torch.ones_like(maxc), maxc)
    crd = torch.where(eqc, torch.ones_like(cr), cr)
    rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    mask = i.unsqueeze(1) == torch.arange(6, device=x.device).view(1, -1, 1, 1)  # [B,6,H,W]
    table = torch.stack((torch.stack((v, q, p, p, t, v), 1), torch.stack((t, v, v, q, p, p), 1),
                         torch.stack((p, p, t, v, v, q), 1)), 1)  # [B,3,6,H,W]
    return (table * mask.unsqueeze(1)).sum(2)


def hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Shift hue by f in [-0.5, 0.5] (fraction of the colour wheel)."""
    hsv = _rgb_to_hsv(x)
    hsv[:, 0] = torch.remainder(hsv[:, 0] + f.view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(hsv)


JITTER_OPS = (brightness, contrast, saturation, hue)


def solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    return torch.where(x >= threshold, 1.0 - x, x)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Per-sample Gaussian blur: a separable kernel per image, as one grouped conv per axis.

    Reflect padding and the kernel definition of torchvision's gaussian_blur."""
    b, c, h, w = x.shape
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, kernel_size, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1)).pow(2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # [B*C, K]
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, kernel_size), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, kernel_size, 1), groups=b * c)
    return y.view(b, c, h, w)


def crop_resize_flip(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Crop boxes (i, j, h, w) per image, resize to size x size (bilinear) and flip where asked --
    one ``affine_grid`` + ``grid_sample`` for the whole batch.

    Output pixel u samples source x = j + (u + 0.5) * w / size - 0.5 (half-pixel centres, as
    torchvision's bilinear resize without antialiasing), clamped to the crop's edge pixels -- as
    if the crop had been cut out first, so no pixel outside the box leaks in. Crops larger than ``size`` are
    downscaled without antialiasing (torchvision antialiases): for CIFAR views (crop <= 32 px ->
    32 px) this never happens.
    """
    b, _, H, W = x.shape
    i, j, h, w = boxes.to(x.dtype).unbind(1)
    sx = w / W * torch.where(flip, -1.0, 1.0).to(x.dtype)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * j + w) / W - 1
    theta[:, 1, 1] = h / H
    theta[:, 1, 2] = (2 * i + h) / H - 1
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    # clamp to the centres of the box's first and last pixels (normalised coordinates)
    lo = torch.stack(((2 * j + 1) / W - 1, (2 * i + 1) / H - 1), dim=1).view(b, 1, 1, 2)
    hi = torch.stack(((2 * (j + w) - 1) / W - 1, (2 * (i + h) - 1) / H - 1), dim=1).view(b, 1, 1, 2)
    grid = torch.maximum(torch.minimum(grid, hi), lo)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
