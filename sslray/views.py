"""The SSL crops (two views, or multi-crop), as batched tensor operations on the training device.

torchvision's v2 transforms applied to a batched tensor draw *one* set of random parameters for
the whole batch -- useless for SSL, where every image needs its own crop, flip and colours in each
view. Here every parameter is drawn as a tensor with one entry per image (``views_params``), and
applied in a few batched ops: crop + resize (antialiased) + flip is two matmuls
(``views_resample``); the colour ops and the blur take [B] factors (``views_ops``). There is no
Python loop over images.

Pipeline per view (BYOL / VICReg order): random resized crop -> horizontal flip -> colour jitter
(applied with probability ``jitter_p``, its four ops in a random order per image) -> grayscale ->
Gaussian blur -> solarize -> normalise. Parameter semantics follow torchvision's
``RandomResizedCrop(antialias=True)``, ``RandomHorizontalFlip``, ``RandomApply(ColorJitter)``,
``RandomGrayscale``, ``RandomApply(GaussianBlur)``, ``RandomSolarize``.

Brightness, contrast and saturation need no masks: each of the four jitter positions is one blend
whose per-image coefficients encode the op each image drew there, identity for the rest
(``views_ops.blend_jitter``). Hue, grayscale, blur and solarize are applied to the images that
drew them in one of two ways, chosen by device (``apply_view``'s ``sync_free``):

* CPU: only on those rows (``nonzero`` -> ``index_select`` -> op -> ``index_copy_``). The index
  is free there, and the op runs on the images that drew it (10-20 % of the batch for most ops
  of the presets).
* CUDA (``sync_free``): on the whole batch, ``torch.where`` keeping the selected rows -- more
  arithmetic, but no host sync and no data-dependent shape. Tests run both ways on the CPU and
  require the same images, and run this way on the meta device, where any host read fails.

Each op runs once per batch (a subset gathered once). On the CPU, ops over the whole batch run
in place ~1.5 MB of floats at a time (128 CIFAR images, ``_CPU_CHUNK_FLOATS``), so that their
temporaries stay that size: such tensors stay in cache and in malloc's free lists, while with
6 MB temporaries (512 images) glibc tends to hand the memory back to the OS after an op and the
next op page-faults it in again (~3 us per 4 KB page on the 2-core VM measured) -- there a
512-image batch in one pass took ~1.4-1.8x as long as in chunks of 128 (chunks of 64: slower
again, the Python overhead per op). On CUDA the whole batch is one pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sslray import views_ops as ops
from sslray.config import ViewConfig, ViewsConfig
from sslray.views_params import blur_kernel_size, sample_crop_boxes, sample_view_params
from sslray.views_resample import crop_resize_flip

__all__ = ["Crops", "apply_view", "blur_kernel_size", "eval_view", "sample_crop_boxes", "sample_view_params"]

_CPU_CHUNK_FLOATS = 128 * 3 * 32 * 32  # per pass of an op on the CPU (module docstring)


def _chunked(fn, x: torch.Tensor, args: tuple, step: int) -> None:
    """``fn(rows, *args_rows)`` in place on ``step`` images at a time."""
    for s in range(0, x.shape[0], step):
        fn(x[s:s + step], *(a[s:s + step] for a in args))


def _rows(x: torch.Tensor, mask: torch.Tensor, fn, args: tuple, sync_free: bool, step: int) -> torch.Tensor:
    """x with the in-place op ``fn(t, *args)`` applied to the images where ``mask`` holds (the two
    ways: module docstring), ``step`` images at a time. The CPU way writes into ``x``; the
    sync-free way returns a new tensor."""
    if sync_free:
        return torch.where(mask.view(-1, 1, 1, 1), fn(x.clone(), *args), x)
    idx = mask.nonzero().squeeze(1)
    if idx.numel() == 0:
        return x
    if idx.numel() == x.shape[0]:  # e.g. blur_p = 1: no gather/scatter round trip
        _chunked(fn, x, args, step)
        return x
    sub = x.index_select(0, idx)
    _chunked(fn, sub, tuple(a.index_select(0, idx) for a in args), step)
    return x.index_copy_(0, idx, sub)


def _plan(params: dict) -> dict:
    """The sampled parameters as per-image coefficients, [B, 4] per jitter position: the blend
    (scale, mean weight, gray weight) of the op drawn there -- identity where it is hue or jitter
    is off -- and where hue is shifted."""
    order = params["order"]
    f = params["factors"].gather(1, order)  # the factor of the op at each position
    on = params["jitter"].unsqueeze(1)
    one, zero = torch.ones_like(f), torch.zeros_like(f)
    return {
        "scale": torch.where(on & (order < 3), f, one),  # brightness, contrast, saturation: x * f
        "mean_w": torch.where(on & (order == 1), 1 - f, zero),  # contrast: + (1 - f) * mean(gray)
        "gray_w": torch.where(on & (order == 2), 1 - f, zero),  # saturation: + (1 - f) * gray
        "hue": on & (order == 3),
    }


# The in-place ops _rows applies (each writes its result into its input rows).
def _hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return ops.hue(x, f, out=x)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return x.copy_(ops.grayscale(x).expand_as(x))


def apply_view(images: torch.Tensor, params: dict, cfg: ViewConfig, size: int, sync_free: bool | None = None,
               normalise: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Apply sampled parameters to float images in [0, 1]; returns [B, 3, size, size] in [0, 1],
    or ``x * scale + shift`` with ``normalise=(scale, shift)``.

    ``sync_free`` (default: on CUDA) takes the whole-batch ``torch.where`` way instead of the
    CPU's row subsets and chunks; both give the same images, only this way is safe on CUDA."""
    sync_free = images.is_cuda if sync_free is None else sync_free
    b, c, h, w = images.shape
    step = max(b, 1) if sync_free else max(1, _CPU_CHUNK_FLOATS // (c * max(h * w, size * size)))
    x = images.new_empty(b, c, size, size)
    _chunked(lambda out, img, box, flip: crop_resize_flip(img, box, flip, size, out=out), x,
             (images, params["boxes"], params["flip"]), step)
    if cfg.jitter_p > 0:
        plan = _plan(params)
        for pos in range(4):
            # identity coefficients leave the images that do not blend here as they are
            _chunked(ops.blend_jitter, x, (plan["scale"][:, pos], plan["mean_w"][:, pos], plan["gray_w"][:, pos]), step)
            x = _rows(x, plan["hue"][:, pos], _hue, (params["factors"][:, 3],), sync_free, step)
    if cfg.grayscale_p > 0:
        x = _rows(x, params["gray"], _gray, (), sync_free, step)
    if cfg.blur_p > 0:
        k = blur_kernel_size(size)
        x = _rows(x, params["blur"], lambda t, s: ops.gaussian_blur(t, s, k, out=t), (params["sigma"],), sync_free, step)
    if cfg.solarize_p > 0:
        x = _rows(x, params["solarize"], lambda t: ops.solarize(t, cfg.solarize_threshold, out=t), (), sync_free, step)
    if normalise is not None:
        x = torch.addcmul(normalise[1], x, normalise[0], out=x)
    return x


def normaliser(cfg: ViewsConfig, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) [1, 3, 1, 1] with ``x * scale + shift == (x - mean) / std`` (one fused
    multiply-add; equal to the division up to float rounding)."""
    mean = torch.tensor(cfg.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float64).view(1, 3, 1, 1)
    return (1 / std).to(device, dtype), (-mean / std).to(device, dtype)


class Crops:
    """uint8 [B,3,H,W] -> every crop of ``views.crops``, normalised float32 [B,3,s,s], on the
    images' device, in group order (two views by default; multi-crop adds groups of small crops)."""

    def __init__(self, cfg: ViewsConfig):
        self.cfg = cfg
        self.groups = [(g, g.size or cfg.size) for g in cfg.crops for _ in range(g.count)]
        self._norm: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # no host copy per batch

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        x = images.float().div_(255)  # once for all crops
        if x.device not in self._norm:
            self._norm[x.device] = normaliser(self.cfg, x.device)
        b, _, h, w = x.shape
        return [apply_view(x, sample_view_params(vc, b, h, w, generator), vc, size, normalise=self._norm[x.device])
                for vc, size in self.groups]


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
    mean = torch.tensor(cfg.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std
