"""Batched colour and blur operations with per-sample parameters (the building blocks of ``sslray.views``).

Images are float [B, 3, H, W] in [0, 1]; factors are [B] tensors. Each function follows the
definition of the torchvision v2 functional of the same name, vectorised over the batch (tests
compare them image by image).

Cost notes (2-core CPU, torch 2.x): a vectorised elementwise op costs ~0.1 ns per element, but
``torch.where`` and comparisons producing bool masks run 5-25x slower per element, so the hot ops
below select with arithmetic instead (``sign`` -> 0/1 weights, ``lerp``, ``min``/``max``): a
``lerp`` with weight exactly 0 or 1 returns its start or end exactly, so the result is the same.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601-2, as torchvision's rgb_to_grayscale
_TINY = torch.finfo(torch.float32).tiny


def _b(f: torch.Tensor) -> torch.Tensor:
    return f.view(-1, 1, 1, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """[B,1,H,W] luma (three ops, as torchvision's: each ``*`` or ``+`` is a pass over a plane)."""
    r, g, b = x.unbind(1)
    return r.mul(_LUMA[0]).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2]).unsqueeze(1)


def brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * _b(f)).clamp_(0, 1)


def contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return (_b(f) * x + (1 - _b(f)) * mean).clamp_(0, 1)


def saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (_b(f) * x + (1 - _b(f)) * grayscale(x)).clamp_(0, 1)


def _first_max(channel: torch.Tensor, maxc: torch.Tensor) -> torch.Tensor:
    """1.0 where ``channel`` is the maximum, else 0.0 (channel - max is <= 0; its sign is 0 or -1)."""
    return (channel - maxc).sign_().add_(1.0)


def hue(x: torch.Tensor, f: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Shift hue by f in [-0.5, 0.5] (fraction of the colour wheel), as torchvision's HSV round trip.

    The shift keeps value (max) and chroma (max - min); only the hexagonal hue moves. So instead
    of converting to HSV and back (a 6-way sector table, ~25x the cost), compute the hue in
    sixths of a turn, h in [0, 6), and rebuild each channel from the trapezoid it follows around
    the hexagon: R = min + c * clamp(|h - 3| - 1, 0, 1), G = max - c * clamp(|h - 2| - 1, 0, 1),
    B = max - c * clamp(|h - 4| - 1, 0, 1) -- the same piecewise-linear functions torchvision's
    ``_hsv_to_rgb`` tabulates, so results agree to float rounding (~1e-6). ``out`` may be ``x``
    (x is no longer read when the channels are written)."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    c = maxc - minc
    # hue numerator in units of the chroma; the first maximal channel (R, then G, then B) picks
    # the sector, as in torchvision's rgb_to_hsv. Grey pixels (c == 0) get 0 / tiny = 0.
    num = torch.lerp(torch.add(r - g, c, alpha=4.0), torch.add(b - r, c, alpha=2.0), _first_max(g, maxc))
    num.lerp_(g - b, _first_max(r, maxc))
    h = num.div_(c.clamp(min=_TINY)).add_(6.0 * f.view(-1, 1, 1))  # in [-4, 8)
    h.sub_(h.div(6.0).floor_().mul_(6.0))  # mod 6 (floor-based: ~3x cheaper than torch.remainder)
    out = torch.empty_like(x) if out is None else out
    for ch, (centre, base, sign) in enumerate(((3.0, minc, 1.0), (2.0, maxc, -1.0), (4.0, maxc, -1.0))):
        q = (h - centre).abs_().sub_(1.0).clamp_(0.0, 1.0)
        torch.addcmul(base, q, c, value=sign, out=out[:, ch])
    return out


JITTER_OPS = (brightness, contrast, saturation, hue)


def blend_jitter(x: torch.Tensor, scale: torch.Tensor, mean_w: torch.Tensor, gray_w: torch.Tensor) -> torch.Tensor:
    """clamp(scale * x + mean_w * mean(gray(x)) + gray_w * gray(x), 0, 1), per image, in place.

    Brightness (scale=f), contrast (scale=f, mean_w=1-f), saturation (scale=f, gray_w=1-f),
    grayscale (scale=0, gray_w=1) and the identity (scale=1) are all this one blend, so one pass
    per jitter position covers whichever of them each image draws there -- no per-op masks. The
    zero terms add exact zeros and x in [0, 1] survives the clamp, so each image gets exactly
    its op (up to float rounding in the order of the sum)."""
    gray = grayscale(x)
    t = torch.addcmul(_b(mean_w) * gray.mean(dim=(2, 3), keepdim=True), _b(gray_w), gray)
    return torch.addcmul(t, x, _b(scale), out=x).clamp_(0, 1)


def solarize(x: torch.Tensor, threshold: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """1 - x where x >= threshold: sign(x - t) + 1, clamped to 1, is the exact 0/1 step (x >= t)
    used as a lerp weight. ``out`` may be ``x``."""
    step = (x - threshold).sign_().add_(1.0).clamp_(max=1.0)
    return torch.lerp(x, 1.0 - x, step, out=out) if out is not None else torch.lerp(x, 1.0 - x, step)


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """[B, K] normalised 1-D Gaussians, torchvision's ``_get_gaussian_kernel1d`` per sigma."""
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, kernel_size, device=sigma.device, dtype=sigma.dtype)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1)).pow(2))
    return k / k.sum(1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample Gaussian blur with reflect padding, as torchvision's gaussian_blur.

    Separable: per axis, pad once and sum K shifted slices weighted by each image's tap -- K
    vectorised multiply-adds. (A grouped conv, one group per image and channel, measured on one
    CPU core: ~1.25x slower at K = 3 (CIFAR), about even at K = 7-9, ~1.4x faster at K = 23
    (224 px views).) ``out`` may be ``x`` (read only by the first pass)."""
    k = gaussian_kernels(sigma.to(x.dtype), kernel_size).view(-1, 1, 1, 1, kernel_size)
    pad = kernel_size // 2
    h, w = x.shape[-2:]
    xp = F.pad(x, (pad, pad, 0, 0), mode="reflect")
    y = xp[..., :w] * k[..., 0]
    for i in range(1, kernel_size):
        y.addcmul_(xp[..., i:i + w], k[..., i])
    yp = F.pad(y, (0, 0, pad, pad), mode="reflect")
    z = torch.mul(yp[..., :h, :], k[..., 0], out=out) if out is not None else yp[..., :h, :] * k[..., 0]
    for i in range(1, kernel_size):
        z.addcmul_(yp[..., i:i + h, :], k[..., i])
    return z
