"""The random parameters of a view: one entry per image, drawn as batched tensors on the
generator's device (no host round trip), with the distributions of torchvision's transforms."""
from __future__ import annotations

import math

import torch

from sslray.config import ViewConfig

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
