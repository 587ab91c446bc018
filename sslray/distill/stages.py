"""The two training stages and the final evaluation, each a function that reads top to bottom.

Both stages augment with a random resized crop (the pretraining's ``views.crops.0`` scale and
ratio) and a horizontal flip only -- SimCLRv2 fine-tunes with random crops and flips alone -- as
batched tensor ops on the training device (:class:`sslray.views.Crops`), and use
SGD with momentum (or LARS) with a cosine decay to zero and no warm-up. Every random draw comes
from generators seeded by (seed, stage, stream, epoch), so a run is reproducible.

- :func:`finetune`: cross-entropy on the labelled images; no weight decay (SimCLRv2 removes it
  for fine-tuning).
- :func:`distill`: the teacher, fixed and in eval mode, labels every training image of the batch
  with its temperature-scaled softmax; the student minimises
  ``(1 - alpha) * distillation_loss + alpha * cross-entropy on a batch of labelled images``
  (alpha = 0: distillation alone, SimCLRv2's main setting). Both parts go through the student in
  one forward, so its BatchNorm sees one batch.
- :func:`evaluate`: test top-1 of both classifiers, and the student's encoder evaluated exactly as
  ``python -m sslray.eval`` evaluates any checkpoint (kNN over the whole training split, offline
  linear probe, with the config's ``eval.*`` settings).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from sslray.config import CropGroup, OptimConfig, ViewsConfig, knob
from sslray.distill.loss import distillation_loss
from sslray.eval import extract_features, knn_accuracy, linear_probe
from sslray.loop import Runtime, epoch_seed, shard_batches
from sslray.optim import build_optimizer, lr_factor, set_lr
from sslray.views import Crops

FINETUNE, DISTILL = 1, 2
ORDER, CROPS, LABELLED, INIT = 0, 1, 2, 3  # a stage's random streams: image order, crops, labelled batches,
# initial weights (the student's: not the draw its pretraining-config twin started from)


def stream_seed(seed: int, stage: int, stream: int, epoch: int) -> int:
    """A generator seed per (run seed, stage, stream, epoch): no two streams share one."""
    return epoch_seed(seed, epoch, rank=4 * stage + stream)


@dataclass
class Settings:
    """How a distillation trains: each setting declared once, here (default, bounds, doc). The
    recipe ``sslray/recipes/cifar10_simclrv2_distill.yaml`` writes them out; ``python -m
    sslray.distill`` takes a recipe (``--recipe``) and each setting as a flag (``--label-fraction``)."""

    label_fraction: float = knob(0.1, lo=0, hi=1, lo_open=True,
                                 doc="class-stratified fraction of the training split used with labels")
    finetune_epochs: int = knob(30, lo=1, unit="epochs", doc="epochs over the labelled images")
    distill_epochs: int = knob(30, lo=1, unit="epochs", doc="epochs over the training split")
    batch_size: int = knob(256, lo=2, unit="images", doc="images per step, both stages")
    optimizer: str = knob("sgd", choices=("sgd", "lars"), doc="with momentum 0.9, both stages")
    finetune_lr: float = knob(0.08, lo=0, lo_open=True,
                              doc="cosine-decayed, no warm-up (SimCLRv2's 0.005 x sqrt(batch) at batch 256)")
    distill_lr: float = knob(0.1, lo=0, lo_open=True, doc="cosine-decayed, no warm-up")
    weight_decay: float = knob(1e-4, lo=0, doc="of the student; fine-tuning uses none, as SimCLRv2")
    momentum: float = knob(0.9, lo=0, hi=1, hi_open=True, doc="of both stages' optimizer")
    temperature: float = knob(1.0, lo=0, lo_open=True,
                              doc="softmax temperature of teacher and student while distilling (1: SimCLRv2)")
    alpha: float = knob(0.0, lo=0, hi=1, doc="weight of the labelled cross-entropy while distilling (0: distillation only)")


class Diverged(RuntimeError):
    """A stage's loss became non-finite."""


def crop_flip(views: ViewsConfig) -> Crops:
    """One crop per image: the pretraining's random resized crop and a flip, no colour changes."""
    first = views.crops[0]
    group = CropGroup(crop_scale=first.crop_scale, crop_ratio=first.crop_ratio, hflip_p=0.5, jitter_p=0.0,
                      grayscale_p=0.0, blur_p=0.0, solarize_p=0.0, count=1, size=views.size)
    return Crops(dataclasses.replace(views, crops=[group]))


def _optimizer(net: nn.Module, s: Settings, lr: float, weight_decay: float, batch: int) -> torch.optim.Optimizer:
    # lr_batch_size = batch: the learning rate is used as given, not scaled by the batch size
    o = OptimConfig(name=s.optimizer, lr=lr, lr_batch_size=batch, weight_decay=weight_decay, momentum=s.momentum)
    return build_optimizer(o, net, batch)


def _autocast(rt: Runtime):
    return torch.autocast(rt.device.type, dtype=rt.amp_dtype) if rt.amp_dtype else contextlib.nullcontext()


def _prepare(x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if rt.channels_last else x


def labelled_batches(n: int, batch: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """One epoch over ``n`` labelled images in batches of ``batch`` (a last, smaller batch kept
    unless it holds a single image: BatchNorm needs two)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(stream_seed(seed, FINETUNE, ORDER, epoch)))
    chunks = list(perm.split(batch))
    return chunks if chunks[-1].numel() > 1 else chunks[:-1]


def _endless_batches(n: int, batch: int, seed: int) -> Iterator[torch.Tensor]:
    """Full batches of ``n`` labelled images, one reshuffled pass after another (the labelled
    part of a distillation batch: the labelled set is smaller than the training split)."""
    for k in itertools.count():
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(stream_seed(seed, DISTILL, LABELLED, k)))
        yield from perm[: n // batch * batch].view(-1, batch)


def finetune(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, views: ViewsConfig, s: Settings,
             rt: Runtime, seed: int, on_epoch: Callable[[dict], None]) -> None:
    """Train all of ``net`` (encoder, head block, classifier) with cross-entropy on the labelled
    ``images`` (uint8, on the device) for ``s.finetune_epochs`` epochs."""
    batch = min(s.batch_size, images.shape[0])
    steps = len(labelled_batches(images.shape[0], batch, seed, 0))  # the same count every epoch
    total = s.finetune_epochs * steps
    opt = _optimizer(net, s, s.finetune_lr, 0.0, batch)
    crops = crop_flip(views)
    for epoch in range(s.finetune_epochs):
        net.train()
        gen = torch.Generator(rt.device).manual_seed(stream_seed(seed, FINETUNE, CROPS, epoch))
        loss_sum = torch.zeros((), device=rt.device)
        correct = torch.zeros((), device=rt.device, dtype=torch.long)
        seen = 0
        t0 = time.perf_counter()
        for step, idx in enumerate(labelled_batches(images.shape[0], batch, seed, epoch)):
            lr = s.finetune_lr * lr_factor(epoch * steps + step, total, 0)
            set_lr(opt, lr)
            idx = idx.to(rt.device)
            x = _prepare(crops(images[idx], gen)[0], rt)
            with _autocast(rt):
                logits = net(x).float()
            loss = F.cross_entropy(logits, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * idx.numel()
            correct += (logits.argmax(1) == labels[idx]).sum()
            seen += idx.numel()
        mean = loss_sum.item() / seen  # one host sync per epoch
        if not math.isfinite(mean):
            raise Diverged(f"fine-tuning loss is not finite at epoch {epoch + 1}; allowed: a lower --finetune-lr")
        on_epoch({"epoch": epoch + 1, "finetune_loss": mean, "finetune_acc": correct.item() / seen, "finetune_lr": lr,
                  "finetune_time_s": time.perf_counter() - t0})


def distill(student: nn.Module, teacher: nn.Module, images: torch.Tensor, lab_images: torch.Tensor,
            lab_labels: torch.Tensor, views: ViewsConfig, s: Settings, rt: Runtime, seed: int,
            on_epoch: Callable[[dict], None]) -> None:
    """Train ``student`` on every training image (uint8, on the device) from ``teacher``'s
    temperature-scaled predictions; with ``s.alpha > 0`` also on the labelled images' labels."""
    teacher.eval()
    batch = min(s.batch_size, images.shape[0])
    lab_batch = min(batch, lab_images.shape[0])
    steps = images.shape[0] // batch
    total = s.distill_epochs * steps
    opt = _optimizer(student, s, s.distill_lr, s.weight_decay, batch)
    crops = crop_flip(views)
    lab_batches = _endless_batches(lab_images.shape[0], lab_batch, seed)
    for epoch in range(s.distill_epochs):
        student.train()
        batches = shard_batches(images.shape[0], batch, epoch, stream_seed(seed, DISTILL, ORDER, 0), 0, 1).to(rt.device)
        gen = torch.Generator(rt.device).manual_seed(stream_seed(seed, DISTILL, CROPS, epoch))
        sums = {k: torch.zeros((), device=rt.device) for k in ("distill_loss", "distill_ce", "distill_agreement")}
        t0 = time.perf_counter()
        for step in range(steps):
            lr = s.distill_lr * lr_factor(epoch * steps + step, total, 0)
            set_lr(opt, lr)
            x = images[batches[step]]
            if s.alpha > 0:
                lab_idx = next(lab_batches).to(rt.device)
                x = torch.cat([x, lab_images[lab_idx]])
            x = _prepare(crops(x, gen)[0], rt)
            with _autocast(rt):
                with torch.no_grad():
                    target = teacher(x[:batch]).float()
                logits = student(x).float()
            kd = distillation_loss(logits[:batch], target, s.temperature)
            loss = kd
            if s.alpha > 0:
                ce = F.cross_entropy(logits[batch:], lab_labels[lab_idx])
                loss = (1 - s.alpha) * kd + s.alpha * ce
                sums["distill_ce"] += ce.detach()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums["distill_loss"] += kd.detach()
            sums["distill_agreement"] += (logits[:batch].argmax(1) == target.argmax(1)).float().mean()
        metrics = {k: v.item() / steps for k, v in sums.items() if k != "distill_ce" or s.alpha > 0}
        if not math.isfinite(metrics["distill_loss"]):
            raise Diverged(f"distillation loss is not finite at epoch {epoch + 1}; allowed: a lower --distill-lr")
        on_epoch({"epoch": epoch + 1, **metrics, "distill_lr": lr, "distill_time_s": time.perf_counter() - t0})


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1).cpu() == labels.cpu()).float().mean().item()


@torch.no_grad()
def evaluate(teacher, student_method, train, test, cfg, device: torch.device) -> dict[str, float]:
    """Test top-1 of the fine-tuned teacher and of the student's classifier; the student's encoder
    by kNN and linear probe -- the calls, settings and precision of ``sslray.eval``
    (``evaluate_checkpoint``), so evaluating the saved student there gives the same numbers."""
    e = cfg.eval
    kw = dict(views_cfg=cfg.views, batch_size=e.feature_batch_size,
              amp_dtype=torch.bfloat16 if device.type == "cuda" else None)
    _, teacher_logits = extract_features(teacher.encoder, test.images, projector=teacher.logits_head(), **kw)
    train_reps, _ = extract_features(student_method.encoder, train.images, **kw)
    test_reps, student_logits = extract_features(student_method.encoder, test.images, projector=student_method.probe,
                                                 **kw)
    n_cls = len(train.classes)
    knn = knn_accuracy(train_reps, train.labels, test_reps, test.labels, n_cls, e.knn_k, e.knn_t, e.knn_chunk)
    with torch.enable_grad():  # the probe trains
        probe = linear_probe(train_reps, train.labels, test_reps, test.labels, n_cls, epochs=e.probe_epochs,
                             lr=e.probe_lr, batch_size=e.probe_batch_size, seed=cfg.train.seed)
    return {"teacher_finetune_top1": top1(teacher_logits, test.labels),
            "student_top1": top1(student_logits, test.labels),
            "student_knn_top1": knn, "student_probe_top1": probe["probe_test_top1"],
            "student_teacher_agreement": top1(student_logits, teacher_logits.argmax(1))}
