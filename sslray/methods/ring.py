"""A ring buffer of past embeddings, for MoCo's queue of keys and SwAV's queue of global crops.

The queue is a buffer ``[..., K, D]`` of the method (``queue``, with a ``queue_ptr`` buffer of one
long: where the next row goes), so both travel in its ``state_dict`` under those names. Rows are
written at the pointer in the order given, wrapping around, oldest out; with more rows than the
queue holds only the last K are kept (they would overwrite the earlier ones anyway), and the
pointer advances by all of them.

Every rank writes the same rows (gathered from every rank, in rank order) at the same place, so
the queue and its pointer stay identical on every rank and equal to one process's on the
combined batch (:mod:`sslray.methods.base`: replicated state). The positions are computed on the
device from the pointer tensor: reading it (``int()``) would be a host sync every step on a GPU.

Example::

    self.register_buffer("queue", torch.zeros(K, D))
    self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
    ring_write(self.queue, self.queue_ptr, keys)          # keys: [m, D]
"""
from __future__ import annotations

import torch


@torch.no_grad()
def ring_write(queue: torch.Tensor, ptr: torch.Tensor, rows: torch.Tensor) -> None:
    """Write ``rows`` ``[..., m, D]`` into ``queue`` ``[..., K, D]`` (K >= 1) at ``ptr``, in place."""
    size, m = queue.shape[-2], rows.shape[-2]
    kept = rows[..., -size:, :]
    idx = (ptr + (m - kept.shape[-2]) + torch.arange(kept.shape[-2], device=rows.device)) % size
    queue[..., idx, :] = kept.to(queue.dtype)
    ptr.add_(m).remainder_(size)
