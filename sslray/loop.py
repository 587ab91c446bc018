"""The pretraining loop: one function, ``run``, that reads top to bottom.

It runs unchanged in a single process and inside a Ray Train worker: everything
process-specific (where metrics and checkpoints go, where a resume comes from) is behind the small
:class:`Reporter` interface, and the distributed world comes from ``torch.distributed``.

Reproducibility: every random draw of an epoch (data order, augmentation) comes from generators
seeded by (seed, epoch, rank), so resuming from epoch k reproduces the uninterrupted run exactly,
given what the checkpoint holds (sslray.checkpoint.TrainingState: the method's state, both
optimizers, and torch's global generators for anything else that draws from them).
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.distributed as dist
import torch.nn.functional as F

from sslray import data as data_mod
from sslray.checkpoint import TrainingState, method_state, restore_rng, rng_state
from sslray.config import Config
from sslray.data.subset import stratified_subset
from sslray.eval import collapse_stats, extract_features, knn_accuracy, probe_accuracy
from sslray.methods import build_method
from sslray.methods.base import fp32
from sslray.optim import build_optimizer, lr_factor, scaled_lr, set_lr
from sslray.parallel import compile_net, wrap_data_parallel
from sslray.views import Crops


class Reporter(Protocol):
    def resume_state(self) -> dict | None: ...  # a checkpoint dict to continue from, or None
    def report(self, metrics: dict[str, Any], checkpoint: dict | None) -> None: ...  # every rank calls it
    def log(self, line: str) -> None: ...


@dataclass
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # bf16 autocast on CUDA; None = fp32
    channels_last: bool
    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_runtime(cfg: Config) -> Runtime:
    t = cfg.train
    if t.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but CUDA is not available; use train.device=cpu or auto")
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    if t.device == "cuda" or (t.device == "auto" and torch.cuda.is_available()):
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    on_cuda = device.type == "cuda"
    bf16 = t.precision == "bf16" or (t.precision == "auto" and on_cuda)
    cl = t.channels_last == "true" or (t.channels_last == "auto" and on_cuda)
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    return Runtime(device, torch.bfloat16 if bf16 else None, cl, rank, world)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**63)


def shard_batches(n: int, batch: int, epoch: int, seed: int, rank: int, world: int) -> torch.Tensor:
    """Index batches [steps, batch] of this rank for one epoch: one global permutation per epoch,
    dealt round-robin to ranks (no overlap), incomplete last batches dropped (variance and
    covariance terms need full, equal batches on every rank)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
    steps = n // (batch * world)
    if steps == 0:
        raise ValueError(f"train.batch_size: {batch} x {world} worker(s) exceeds the {n} training images")
    return perm[: steps * batch * world].view(steps, batch, world)[:, :, rank]


def _mean_across_ranks(values: dict[str, float], rt: Runtime) -> dict[str, float]:
    if rt.world_size == 1 or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=rt.device)
    dist.all_reduce(t)
    return dict(zip(values, (t / rt.world_size).tolist()))


def run(cfg: Config, reporter: Reporter) -> dict[str, Any]:
    """Pretrain according to ``cfg``; returns the final summary (also on divergence)."""
    rt = resolve_runtime(cfg)
    t, o = cfg.train, cfg.optim

    # ---- data: decoded once, kept as uint8 on the training device (CIFAR-10 train: 153 MB)
    train = data_mod.load_split(cfg.data, "train", seed=t.seed)
    test = data_mod.load_split(cfg.data, "test", seed=t.seed)
    num_classes = len(train.classes)
    train_images = train.images.to(rt.device)
    train_labels = train.labels.to(rt.device)
    views = Crops(cfg.views)

    # ---- the method (encoder, projector, probe and whatever networks and state it owns), optimisers
    torch.manual_seed(t.seed)  # identical initial weights (and queues) on every rank
    model = build_method(cfg, num_classes).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    global_batch = t.batch_size * rt.world_size
    optimizer = build_optimizer(o, model.param_groups(), global_batch)
    probe_optimizer = torch.optim.AdamW(model.probe.parameters(), lr=o.probe_lr, weight_decay=0.0)
    start_epoch, best = 0, {}
    resume = reporter.resume_state()
    if resume is not None:
        model.load_state_dict(method_state(resume))
        load_optimizer_state(optimizer, resume["optimizer"])
        probe_optimizer.load_state_dict(resume["probe_optimizer"])
        start_epoch, best = resume["epoch"], dict(resume.get("best", {}))
        restore_rng(resume.get("rng", {}))  # as the uninterrupted run had them after epoch start_epoch
        reporter.log(f"resumed from epoch {start_epoch}")
    net = wrap_data_parallel(model, rt.device, cfg.model.sync_batchnorm) if rt.world_size > 1 else model
    net = compile_net(net, t.compile)  # epoch 1's img/s includes the compile time

    steps_per_epoch = len(train) // global_batch
    total_steps, warmup_steps = t.epochs * steps_per_epoch, int(o.warmup_epochs * steps_per_epoch)
    base_lr = scaled_lr(o, global_batch)
    reporter.log(f"{cfg.loss.name} | {cfg.model.encoder} | {len(train)} train / {len(test)} test images | "
                 f"batch {t.batch_size}/worker x {rt.world_size} = {global_batch} global | lr {base_lr:.4g} | "
                 f"{rt.device}, {'bf16' if rt.amp_dtype else 'fp32'}{', channels_last' if rt.channels_last else ''}"
                 f"{'' if t.compile == 'false' else ', compiled'}")

    metrics: dict[str, Any] = dict(resume["metrics"]) if resume is not None else {}
    status, reason, completed = "finished", None, start_epoch
    saved = start_epoch if resume is not None else None  # the epoch of the newest checkpoint
    if resume is not None:
        # Report the resumed epoch again: a process killed after its checkpoint was saved but
        # before its metrics line was written (or before Tune heard of it) would otherwise lose
        # that epoch for good. Listeners ignore epochs they already hold. With nothing left to
        # train (a search driver died right after the last epoch) this is the final result.
        reporter.report(metrics, None)
    for epoch in range(start_epoch, t.epochs):
        net.train()
        model.start_epoch(epoch)  # epoch-dependent method state: SwAV's frozen prototypes, UOTA's start
        batches = shard_batches(len(train), t.batch_size, epoch, t.seed, rt.rank, rt.world_size).to(rt.device)
        gen = torch.Generator(rt.device).manual_seed(epoch_seed(t.seed, epoch, rt.rank))
        sums: dict[str, torch.Tensor] = {}  # running sums stay on the device: no per-step host sync
        t0 = time.perf_counter()
        for step in range(steps_per_epoch):
            global_step = epoch * steps_per_epoch + step
            lr = base_lr * lr_factor(global_step, total_steps, warmup_steps, o.min_lr_ratio)
            set_lr(optimizer, lr, base_lr)
            idx = batches[step]
            crops = views(train_images[idx], gen)
            out, probe_loss = train_step(net, model, (optimizer, probe_optimizer), crops, train_labels[idx], rt,
                                         o.grad_clip)
            model.after_step(global_step, total_steps)  # EMA targets, queues: from the configured total
            for name, value in {"loss": out.total, **{f"loss_{k}": v for k, v in out.terms.items()},
                                "probe_loss": probe_loss}.items():
                sums[name] = sums.get(name, 0) + value.detach()
            if (step + 1) % t.log_every == 0 or step + 1 == steps_per_epoch:
                # host sync, once every log_every steps; all-reduced so every rank stops at the same step
                running = _mean_across_ranks({"loss": sums["loss"].item() / (step + 1)}, rt)["loss"]
                if not math.isfinite(running):
                    status, reason = "diverged", f"non-finite loss at epoch {epoch + 1}, step {step + 1}"
                    break
                if rt.is_main and sys.stdout.isatty():
                    ips = (step + 1) * global_batch / (time.perf_counter() - t0)
                    print(f"\r  epoch {epoch + 1} step {step + 1}/{steps_per_epoch} loss {running:.4f} {ips:.0f} img/s",
                          end="", flush=True)
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        train_time = time.perf_counter() - t0
        if rt.is_main and sys.stdout.isatty():
            print("\r", end="")
        if status != "finished":
            metrics = {"epoch": epoch + 1, "status": status, "reason": reason}
            kept = f"the checkpoint of epoch {saved} is kept" if saved else "no checkpoint had been written"
            reporter.log(f"stopped: {reason}; {kept}")
            reporter.report(metrics, None)
            break

        # ---- epoch metrics: means over steps, averaged over ranks (one sync per epoch)
        metrics = {k: v.item() / steps_per_epoch for k, v in sums.items()}
        metrics = _mean_across_ranks(metrics, rt)
        metrics.update(epoch=epoch + 1, lr=lr, img_per_s=steps_per_epoch * global_batch / train_time,
                       epoch_time_s=train_time)
        last = epoch + 1 == t.epochs
        if (cfg.eval.every and (epoch + 1) % cfg.eval.every == 0) or last:
            t_eval = time.perf_counter()
            metrics.update(evaluate(cfg, model, train_images, train_labels, test, num_classes, rt))
            metrics["eval_time_s"] = time.perf_counter() - t_eval  # evaluate ends in host reads: no sync needed
            if rt.is_main and metrics["knn_top1"] > best.get("knn_top1", -1.0):
                best = {"knn_top1": metrics["knn_top1"], "epoch": epoch + 1}
        checkpoint = None
        if last or (t.checkpoint_every and (epoch + 1) % t.checkpoint_every == 0):
            checkpoint = TrainingState(
                epoch=epoch + 1, config=cfg.to_dict(), num_classes=num_classes,
                model=model.state_dict(),  # the method's: networks, target, queue, loss state
                optimizer=optimizer.state_dict(), probe_optimizer=probe_optimizer.state_dict(),
                rng=rng_state(), metrics=metrics, best=best,
            )
        reporter.report(metrics, checkpoint)
        completed = epoch + 1
        saved = epoch + 1 if checkpoint is not None else saved

    return {"status": status, "reason": reason, "epochs_completed": completed, "metrics": metrics, "best": best}


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """The checkpoint's optimiser state (momentum, Adam moments) under this config's settings:
    torch's load_state_dict also brings back each group's weight decay, momentum and betas, and a
    resume whose values changed (PBT's exploit: the clone's checkpoint, perturbed values) must train
    with the new ones. The lr is set every step from the config (set_lr)."""
    settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, own in zip(optimizer.param_groups, settings):
        group.update(own)


def train_step(net, model, optimizers, crops, labels, rt: Runtime, grad_clip: float | None = None):
    """One optimisation step of the method (its own loss) and the online probe (cross-entropy on
    detached representations). ``net`` is ``model`` or its DDP wrapper. Returns the method's output
    and the probe loss, still on the device (reading them is a host sync)."""
    if rt.channels_last:
        crops = [c.contiguous(memory_format=torch.channels_last) for c in crops]
    with torch.autocast(rt.device.type, dtype=rt.amp_dtype) if rt.amp_dtype else contextlib.nullcontext():
        out = net(crops)  # the method runs its loss in fp32 itself
    probe_loss = F.cross_entropy(model.probe(fp32(out.rep.detach())), labels)
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    (out.total + probe_loss).backward()  # the probe sees detached features: no gradient into the encoder
    model.after_backward()  # gradients the method drops this step (SwAV's prototypes while frozen)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_([p for g in optimizers[0].param_groups for p in g["params"]], grad_clip)
    for opt in optimizers:
        opt.step()
    return out, probe_loss


@torch.no_grad()
def evaluate(cfg: Config, model, train_images, train_labels, test, num_classes: int, rt: Runtime) -> dict[str, float]:
    """kNN and online-probe top-1 on the test split, collapse statistics of its embeddings.

    Costs one forward pass over train + test images; on rank 0 only (other ranks would compute
    the same numbers)."""
    if not rt.is_main:
        return {}
    e = cfg.eval
    if e.knn_train_limit is not None and e.knn_train_limit < len(train_labels):  # the same bank every epoch
        bank = stratified_subset(train_labels.cpu(), e.knn_train_limit, cfg.train.seed).to(train_labels.device)
        train_images, train_labels = train_images[bank], train_labels[bank]
    kw = dict(views_cfg=cfg.views, batch_size=e.feature_batch_size, amp_dtype=rt.amp_dtype, channels_last=rt.channels_last)
    train_reps, _ = extract_features(model.encoder, train_images, **kw)
    test_reps, test_embs = extract_features(model.encoder, test.images, projector=model.projector, **kw)
    knn = knn_accuracy(train_reps, train_labels, test_reps, test.labels, num_classes, e.knn_k, e.knn_t, e.knn_chunk)
    return {"knn_top1": knn, "probe_top1": probe_accuracy(model.probe, test_reps, test.labels),
            **collapse_stats(test_reps, test_embs)}
