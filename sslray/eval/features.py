"""Feature extraction for evaluation: representations (encoder) and embeddings (projector)."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from sslray.views import eval_view


@torch.no_grad()
def extract_features(encoder: nn.Module, images: torch.Tensor, views_cfg, batch_size: int = 512,
                     projector: nn.Module | None = None, amp_dtype: torch.dtype | None = None,
                     channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Representations (and embeddings if a projector is given) of uint8 images, in eval mode.

    The model's device decides where the work runs; images are moved there batch by batch, so a
    dataset kept on the CPU never needs to fit on the GPU at once. Results are fp32 on that device.
    """
    device = next(encoder.parameters()).device
    was_training = encoder.training, projector.training if projector is not None else False
    encoder.eval()
    if projector is not None:
        projector.eval()
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    reps, embs = [], []
    for start in range(0, images.shape[0], batch_size):
        x = eval_view(images[start:start + batch_size].to(device, non_blocking=True), views_cfg)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            h = encoder(x)
            if projector is not None:
                embs.append(projector(h).float())
        reps.append(h.float())
    encoder.train(was_training[0])
    if projector is not None:
        projector.train(was_training[1])
    return torch.cat(reps), (torch.cat(embs) if embs else None)
