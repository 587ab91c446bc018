"""The SSL crops (two views, or multi-crop), as batched tensor operations on the training device.

torchvision's v2 transforms applied to a batched tensor draw *one* set of random parameters for
the whole batch -- useless for SSL, where every image needs its own crop, flip and colours in each
view. Here every parameter is drawn as a tensor with one entry per image (per view), and applied
in a few batched ops: crop + resize + flip is a single ``grid_sample``; colour ops take [B]
factors. There is no Python loop over images: the loops below run over the 4 jitter positions x
4 ops.

Pipeline per view (BYOL / VICReg order): random resized crop -> horizontal flip -> colour jitter
(applied with probability ``jitter_p``, its four ops in a random order per image) -> grayscale ->
Gaussian blur -> solarize -> normalise. Parameter semantics follow torchvision's
``RandomResizedCrop``, ``RandomHorizontalFlip``, ``RandomApply(ColorJitter)``, ``RandomGrayscale``,
``RandomApply(GaussianBlur)``, ``RandomSolarize``.

Cost: on the CPU the colour ops and the blur run only on the images they apply to (a boolean
index, free on the CPU); on CUDA, where such an index would be a host sync, they run on the whole
batch and ``torch.where`` keeps the selected results -- ~4x the arithmetic, no sync.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sslray import views_ops as ops
from sslray.config import ViewConfig, ViewsConfig

_TRIES = 10  # RandomResizedCrop's attempts before its central-crop fallback


def _uniform(lo: float, hi: float, n: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g, device=g.device) * (hi - lo) + lo


def sample_crop_boxes(cfg: ViewConfig, n: int, height: int, width: int, g: torch.Generator) -> torch.Tensor:
    """[n, 4] boxes (i, j, h, w) with RandomResizedCrop.get_params' distribution, all tries at once."""
    area = float(height * width)
    dev = g.device
    target = area * (torch.rand(n, _TRIES, generator=g, device=dev) * (cfg.crop_scale[1] - cfg.crop_scale[0]) + cfg.crop_scale[0])
    log_r = (math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]))
    aspect = torch.exp(torch.rand(n, _TRIES, generator=g, device=dev) * (log_r[1] - log_r[0]) + log_r[0])
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1, device=dev))
    # central-crop fallback (torchvision's, for when no try fits)
    in_ratio = width / height
    if in_ratio < cfg.crop_ratio[0]:
        fw, fh = width, round(width / cfg.crop_ratio[0])
    elif in_ratio > cfg.crop_ratio[1]:
        fh, fw = height, round(height * cfg.crop_ratio[1])
    else:
        fw, fh = width, height
    pick = first.clamp(min=0).unsqueeze(1)
    w = torch.where(first >= 0, w.gather(1, pick).squeeze(1), torch.full((n,), float(fw), device=dev))
    h = torch.where(first >= 0, h.gather(1, pick).squeeze(1), torch.full((n,), float(fh), device=dev))
    i = torch.floor(torch.rand(n, generator=g, device=dev) * (height - h + 1))
    j = torch.floor(torch.rand(n, generator=g, device=dev) * (width - w + 1))
    i = torch.where(first >= 0, i, (height - h).div(2, rounding_mode="floor"))
    j = torch.where(first >= 0, j, (width - w).div(2, rounding_mode="floor"))
    return torch.stack((i, j, h, w), dim=1)


def sample_view_params(cfg: ViewConfig, batch: int, height: int, width: int, generator: torch.Generator) -> dict:
    """Every random parameter of one view, one entry per image."""
    g, n = generator, batch

    def coin(p: float) -> torch.Tensor:
        return torch.rand(n, generator=g, device=g.device) < p

    def factor(x: float) -> torch.Tensor:
        return _uniform(max(0.0, 1 - x), 1 + x, n, g)

    return {
        "boxes": sample_crop_boxes(cfg, n, height, width, g),
        "flip": coin(cfg.hflip_p),
        "jitter": coin(cfg.jitter_p),
        "factors": torch.stack((factor(cfg.brightness), factor(cfg.contrast), factor(cfg.saturation),
                                _uniform(-cfg.hue, cfg.hue, n, g)), dim=1),  # [n, 4]
        "order": torch.rand(n, 4, generator=g, device=g.device).argsort(dim=1),  # a random permutation per image
        "gray": coin(cfg.grayscale_p),
        "blur": coin(cfg.blur_p),
        "sigma": _uniform(cfg.blur_sigma[0], cfg.blur_sigma[1], n, g),
        "solarize": coin(cfg.solarize_p),
    }


def blur_kernel_size(size: int) -> int:
    """Odd kernel of ~10 % of the view side (23 px at 224 as in BYOL), at least 3."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def _masked(x: torch.Tensor, mask: torch.Tensor, fn, *args: torch.Tensor) -> torch.Tensor:
    """x with fn applied to the rows where mask holds (see the module docstring for the cost)."""
    if x.is_cuda:
        return torch.where(mask.view(-1, 1, 1, 1), fn(x, *args), x)
    idx = mask.nonzero().squeeze(1)
    if idx.numel():
        x = x.clone()
        x[idx] = fn(x[idx], *(a[idx] for a in args))
    return x


def apply_view(images: torch.Tensor, params: dict, cfg: ViewConfig, size: int) -> torch.Tensor:
    """Apply sampled parameters to float images in [0, 1]; returns [B, 3, size, size] in [0, 1]."""
    x = ops.crop_resize_flip(images, params["boxes"], params["flip"], size)
    if cfg.jitter_p > 0:
        for pos in range(4):
            for op_id, op in enumerate(ops.JITTER_OPS):
                mask = params["jitter"] & (params["order"][:, pos] == op_id)
                x = _masked(x, mask, op, params["factors"][:, op_id])
    if cfg.grayscale_p > 0:
        x = torch.where(params["gray"].view(-1, 1, 1, 1), ops.grayscale(x).expand_as(x), x)
    if cfg.blur_p > 0:
        k = blur_kernel_size(size)
        x = _masked(x, params["blur"], lambda t, s: ops.gaussian_blur(t, s, k), params["sigma"])
    if cfg.solarize_p > 0:
        x = torch.where(params["solarize"].view(-1, 1, 1, 1), ops.solarize(x, cfg.solarize_threshold), x)
    return x


def _normalise(x: torch.Tensor, cfg: ViewsConfig) -> torch.Tensor:
    mean = torch.tensor(cfg.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


class Crops:
    """uint8 [B,3,H,W] -> every crop of ``views.crops``, normalised float32 [B,3,s,s], on the
    images' device, in group order (two views by default; multi-crop adds groups of small crops)."""

    def __init__(self, cfg: ViewsConfig):
        self.cfg = cfg
        self.groups = [(g, g.size or cfg.size) for g in cfg.crops for _ in range(g.count)]

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        x = images.float().div_(255)
        b, _, h, w = x.shape
        out = []
        for vc, size in self.groups:
            params = sample_view_params(vc, b, h, w, generator)
            out.append(_normalise(apply_view(x, params, vc, size), self.cfg))
        return out


def eval_view(images: torch.Tensor, cfg: ViewsConfig) -> torch.Tensor:
    """Deterministic evaluation transform: resize the shorter side to ``size``, centre crop, normalise."""
    x = images.float().div_(255)
    h, w = x.shape[-2:]
    if (h, w) != (cfg.size, cfg.size):
        scale = cfg.size / min(h, w)
        nh, nw = max(cfg.size, round(h * scale)), max(cfg.size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        top, left = (nh - cfg.size) // 2, (nw - cfg.size) // 2
        x = x[..., top:top + cfg.size, left:left + cfg.size]
    return _normalise(x, cfg)
