"""Data parallelism for the worker loop: global-batch BatchNorm, the DDP wrapper, torch.compile.

BatchNorm under DDP normalises with each rank's *local* statistics unless it is synchronised;
then N workers with batch b are not the same model as one worker with batch N*b. torch's
``SyncBatchNorm`` runs only on accelerators, so on the CPU (gloo) we use :class:`GlobalBatchNorm`:
per-channel sums and sums of squares are all-reduced with the *autograd-aware* functional
all_reduce (its backward all-reduces the gradients too), giving exactly the statistics -- and the
gradients -- of one process on the combined batch. Cost: one all-reduce of 2C+1 numbers per BN
layer per forward and one per backward.
"""
from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch import nn


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of all ranks, on any device (train mode); plain BN in eval."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0] + list(range(2, x.dim()))
        n_local = torch.tensor([x.numel() / x.shape[1]], device=x.device, dtype=x.dtype)
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), n_local])
        with warnings.catch_warnings():  # torch 2.14 marks it deprecated; its replacement is private API
            warnings.simplefilter("ignore", FutureWarning)
            stats = all_reduce(stats)  # autograd-aware: backward all-reduces the gradient of the stats
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean  # biased, as BN normalises with
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)  # unbiased, as BN
        return y


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm{1,2,3}d by :class:`GlobalBatchNorm`, keeping parameters and buffers."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        # the same Parameter and buffer objects: an optimizer built earlier still updates them
        for name, p in module.named_parameters(recurse=False):
            setattr(new, name, p)
        for name, b in module.named_buffers(recurse=False):
            setattr(new, name, b)
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_global_batchnorm(child))
    return module


def wrap_data_parallel(model: nn.Module, device: torch.device, sync_batchnorm: bool) -> nn.Module:
    """DDP over the initialised process group, BatchNorm synchronised when asked: torch's
    SyncBatchNorm kernels on CUDA, :class:`GlobalBatchNorm` elsewhere. Modifies ``model`` in place.

    A method's own buffers (``model.rank_state()``: TiCo's C, queues) are kept out of DDP's
    per-forward broadcast from rank 0 (see :mod:`sslray.methods.base` for why, per buffer)."""
    if sync_batchnorm:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            model = convert_global_batchnorm(model)
    if hasattr(model, "rank_state"):
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, model.rank_state())
    return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def compile_net(net: nn.Module, mode: str) -> nn.Module:
    """``net`` (the method or its DDP wrapper) under torch.compile as ``train.compile`` asks; false:
    ``net`` itself. torch's order is DDP first, then compile: the compiled graph is split at DDP's
    gradient buckets, so the all-reduces still overlap the backward pass.

    The compiled module is only the training front: the method itself stays eager, so evaluation
    and ``state_dict`` (checkpoints) see the plain module's keys, never ``_orig_mod.``.
    Cost: the first step traces and compiles forward and backward (~25 s for the tests' tiny CNN on
    2 CPU cores, more for ResNet-18; max-autotune also benchmarks kernels). Each guard that fails
    later -- a new crop shape, another autocast or grad mode -- compiles again; the loop keeps
    shapes fixed (full batches only; evaluation uses the eager module), and every method compiles
    to one graph with no recompile over epochs. Past torch's recompile limit (8) a frame silently
    runs eagerly. Under DDP, DDP's own Python forward stays eager (torch skips it) and the method
    is compiled in pieces split at the gradient buckets."""
    if mode == "false":
        return net
    return torch.compile(net, mode=None if mode == "true" else mode)
