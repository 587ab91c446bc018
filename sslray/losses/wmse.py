"""W-MSE: whitening, then MSE between normalised views (Ermolov, Siarohin, Sangineto & Sebe,
"Whitening for Self-Supervised Representation Learning", ICML 2021, https://arxiv.org/abs/2007.06346;
official code github.com/htdt/self-supervised, ``methods/whitening.py`` and ``methods/w_mse.py``).

Whitening of one sub-batch x of m rows, x_i in R^D (the paper's method section; the official
``Whitening2d``, Cholesky variant):

    mu    = (1/m) sum_i x_i
    Sigma = (1/(m-1)) sum_i (x_i - mu)(x_i - mu)^T               (the official code's m - 1)
    Sigma <- (1 - eps) Sigma + eps I                              (``w_eps``; 0 in the paper's runs)
    Sigma = L L^T (Cholesky),   W = L^{-1},   w_i = W (x_i - mu)
    => (1/(m-1)) sum_i w_i w_i^T = W Sigma W^T = I

The rank of Sigma is at most m - 1, so Cholesky needs m > D (the paper's sub-batch is 2 x D: 128
rows for 64 dimensions). m = D + 1 is the bare minimum and degenerate: the m whitened rows are then
a fixed simplex up to a rotation, which the first D - 1 input coordinates decide (the last gets no
gradient); keep m well above D. It runs in the input's precision, at least fp32, with autocast off (a bf16
covariance loses the small eigenvalues Cholesky divides by); the official code casts to fp32. A
covariance Cholesky cannot factor (a collapsed embedding) gives NaN rows, not an exception and not
a host sync: the loop records the run as diverged at its next loss check.

Sub-batches (``w_size``, ``w_iter``; the paper's batch slicing). A batch of n images is cut into
n / w_size sub-batches, the *same* cut for every view; each view's rows of a sub-batch are whitened
with that view's own statistics (the official code whitens ``h[idx + v * bs]`` per view v). With
``w_iter`` > 1 this is repeated with new random cuts and the loss averaged over the repetitions.

Loss over V views (the paper's MSE of normalised embeddings, the official ``norm_mse_loss``), with
w^ = w / ||w|| and P = V (V - 1) / 2 view pairs:

    L = (1/w_iter) sum_iters (1/P) sum_{v<u} (1/n) sum_i (2 - 2 cos(w_{v,i}, w_{u,i}))
      = ... || w^_{v,i} - w^_{u,i} ||^2

Neither view is detached: the gradient reaches both views of every pair through the normalisation
*and* through the whitening matrix (which depends on every row of the sub-batch). One library's
"simplified" loss detaches one view of each pair; the original does not, and neither does this.

Per view and image (for UOTA's view weighting, :meth:`sslray.methods.base.Method.view_mean`), each
pair's term is split half to each of its two views, which makes view v's loss for image i its mean
distance to the other views:

    l_{v,i} = (1/(V-1)) sum_{u != v} (2 - 2 cos(w_{v,i}, w_{u,i})),     mean_{v,i} l_{v,i} = L

Which cut, and what W ranks mean. Whitening uses only the rows of one process (per sub-batch per
rank, as the official code and solo-learn under DDP). Nothing is gathered: the sub-batch is the
estimator the paper chose (w_size is one of its hyperparameters), not a stand-in for a global
covariance, and whitening a gathered batch would be a different method. The loss is a mean over the local images, so DDP's
gradient average over equal local batches is the gradient of the mean over all images. W ranks
with local batch b therefore equal one process on the combined batch W*b whose sub-batches never
straddle a rank's block of b rows. The first cut is taken in row order (rows [k m, (k+1) m)): the
loop's batch is already a uniformly random draw (a fresh permutation of the data every epoch), so
a cut in row order has the distribution of the official ``randperm`` cut, and it is rank-aligned:
with w_size dividing the local batch, W workers equal one worker on the combined batch exactly
(tests/test_wmse.py). The later cuts (``w_iter`` > 1) permute each rank's own rows (the method
draws the permutations, :mod:`sslray.methods.wmse`); one process equal to W ranks there is one whose
permutation maps each rank's block of b rows onto itself -- the same procedure in distribution as
one worker permuting the combined batch, not the same numbers.

Defaults (official code and solo-learn's CIFAR recipe, REFERENCE §11): w_size = 128, w_iter = 1,
w_eps = 0; projector 1024 -> 64; Adam lr 2e-3 (the official README: 3e-3), weight decay 1e-6.

Example::

    z = torch.randn(2, 256, 64)                      # [views, batch, dim] projector outputs
    losses = wmse_view_losses(z, w_size=128)         # [2, 256]; losses.mean() is L
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _full_precision(x: torch.Tensor):
    """Autocast off (the method's own context does the same; a loss file does not import methods)."""
    return torch.autocast(x.device.type, enabled=False) if torch.is_autocast_enabled(x.device.type) \
        else contextlib.nullcontext()


def _fp32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def whiten(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Whiten the rows of each sub-batch ``x`` ``[..., m, D]`` with its own mean and covariance
    (module docstring; batched over the leading dimensions), in ``x``'s precision, at least fp32."""
    if x.ndim < 2 or x.shape[-2] <= x.shape[-1]:
        raise ValueError(f"whitening needs sub-batches [..., m, D] with m > D (the covariance has rank <= m - 1); "
                         f"got {tuple(x.shape)}")
    with _full_precision(x):
        x = _fp32(x)
        m, d = x.shape[-2], x.shape[-1]
        xc = x - x.mean(dim=-2, keepdim=True)
        cov = xc.transpose(-2, -1) @ xc / (m - 1)
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        if eps:
            cov = (1 - eps) * cov + eps * eye
        chol, info = torch.linalg.cholesky_ex(cov)
        chol = torch.where((info > 0)[..., None, None], torch.full_like(chol, float("nan")), chol)
        w = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False)  # W = L^{-1}
        return xc @ w.transpose(-2, -1)  # rows w_i = W (x_i - mu)


def whiten_sub_batches(z: torch.Tensor, w_size: int, eps: float = 0.0, order: torch.Tensor | None = None) -> torch.Tensor:
    """Every view of ``z`` ``[V, n, D]`` whitened in sub-batches of ``w_size`` rows, returned in
    ``z``'s row order. The sub-batches are rows ``order[k w_size : (k+1) w_size]`` (``order``: a
    permutation of the n images, the same for every view; None: row order)."""
    v, n, d = z.shape
    if n % w_size:
        raise ValueError(f"batch {n} is not a multiple of w_size {w_size}: W-MSE whitens sub-batches of w_size rows")
    x = z if order is None else z[:, order]
    w = whiten(x.reshape(v, n // w_size, w_size, d), eps).reshape(v, n, d)
    if order is None:
        return w
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(n, device=order.device)
    return w[:, inverse]


def view_pair_losses(w: torch.Tensor) -> torch.Tensor:
    """``[V, n]``: l_{v,i} = mean over the other views u of 2 - 2 cos(w_{v,i}, w_{u,i}) for the
    whitened embeddings ``w`` ``[V, n, D]`` (module docstring: each pair split half to each view)."""
    v = w.shape[0]
    e = F.normalize(w, dim=2)
    cos = torch.einsum("vnd,und->vun", e, e)  # [V, V, n]
    off = ~torch.eye(v, dtype=torch.bool, device=w.device)  # a view is no pair with itself
    return (2 - 2 * cos)[off].view(v, v - 1, -1).mean(dim=1)


def wmse_view_losses(z: torch.Tensor, w_size: int, eps: float = 0.0,
                     orders: Sequence[torch.Tensor | None] = (None,)) -> torch.Tensor:
    """W-MSE's per-view, per-image losses ``[V, n]`` for the projector outputs ``z`` ``[V, n, D]``
    (V >= 2 views of n images), one whitening pass per entry of ``orders`` (``w_iter`` of them; an
    entry is a permutation of the n images that sets the sub-batches, None: row order), averaged.
    Their mean is the loss L of the module docstring."""
    if z.ndim != 3 or z.shape[0] < 2:
        raise ValueError(f"embeddings must be [views >= 2, batch, dim]; got {tuple(z.shape)}")
    if not z.is_floating_point():
        raise ValueError(f"embeddings must be floating point; got {z.dtype}")
    if w_size <= z.shape[2]:
        raise ValueError(f"w_size {w_size} must exceed the embedding width {z.shape[2]} "
                         f"(a sub-batch of m rows has a covariance of rank <= m - 1)")
    if not orders:
        raise ValueError("orders: at least one whitening pass is needed; allowed: (None,) or permutations")
    with _full_precision(z):
        z = _fp32(z)
        return torch.stack([view_pair_losses(whiten_sub_batches(z, w_size, eps, o)) for o in orders]).mean(dim=0)


def wmse_loss(z: torch.Tensor, w_size: int, eps: float = 0.0,
              orders: Sequence[torch.Tensor | None] = (None,)) -> torch.Tensor:
    """The W-MSE loss L (a scalar): the mean of :func:`wmse_view_losses`."""
    return wmse_view_losses(z, w_size, eps, orders).mean()
