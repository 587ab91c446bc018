"""SwAV's two pieces: Sinkhorn-Knopp codes and the swapped-prediction loss.

Caron, Misra, Mairal, Goyal, Bojanowski & Joulin, "Unsupervised Learning of Visual Features by
Contrasting Cluster Assignments", NeurIPS 2020, https://arxiv.org/abs/2006.09882, §3.1 and
Appendix A.1; the official code is facebookresearch/swav ``main_swav.py`` (``distributed_sinkhorn``).

Codes (§3.1, the online codes, and A.1). With s_ik = z_i . c_k the score of sample i against
prototype k (B samples of the *global* batch, K prototypes, all L2-normalised), the codes are the
transport plan Q [K, B] in the polytope {Q >= 0: rows (prototypes) sum to 1/K, columns (samples)
sum to 1/B} that maximises Tr(Q^T s^T) + eps H(Q), found by alternating normalisations:

    Q  = exp(s^T / eps)                     [K, B]
    Q /= sum(Q)                             (the whole matrix sums to 1)
    repeat ``iters`` times:
        Q_k. /= sum_i Q_ki ;  Q /= K        (each prototype's row sums to 1/K: equipartition)
        Q_.i /= sum_k Q_ki ;  Q /= B        (each sample's column sums to 1/B)
    codes = B Q^T                           [B, K], each sample's row sums to 1

eps = 0.05 and iters = 3 (the paper's defaults, solo-learn's CIFAR recipe). Soft codes: no
rounding (the paper reports that hard codes do worse).

Across ranks. The columns (samples) are spread over the ranks; a column's normalisation is local
to the rank holding it, while the row sums and the total need every column: they are all-reduced
(no gradient flows: codes are targets). B, the global column count, is all-reduced with the total
(a rank may hold more columns than another: SwAV's queue is split among the ranks, see
:mod:`sslray.methods.swav`). So W ranks compute the codes one process computes on the combined
columns. Every scalar factor above (the total, 1/K, 1/B) cancels in the next normalisation; they
are kept as the paper writes them and cost one extra scalar all-reduce.

Precision. Computed in float64 whatever the input dtype or autocast state, and from s minus its
global maximum (one scalar all-reduce; it cancels in the first normalisation): exp(1 / eps)
overflows float32 below eps = 0.011, and a column of underflowed zeros would turn into NaN. In
float64 with |s| <= 1 (normalised z and c) neither happens for eps >= 0.003. Cost: about
2 iters + 3 passes over K x B elements.

Swapped prediction (§3.1, and §3.2 for multi-crop). With p_v = softmax(s_v / T) the prediction of
crop v (T = 0.1) and q_a the codes of the assignment crop a (the first A = 2 crops: the two global
crops; ``crops_for_assign`` = [0, 1] in the official code),

    l(q, p) = - sum_k q_k log p_k
    L = 1/A sum_{a < A} 1/(V - 1) sum_{v != a} mean_i l(q_a,i , p_v,i)

the official code's averaging (``main_swav.py``: subloss / (V - 1), then / len(crops_for_assign)).
:func:`swapped_prediction` returns it as per-view, per-image losses [V, n] whose plain mean is L:
term (v, a) belongs to the *predicting* view v (the view whose p_v the term's gradient reaches;
q_a is a target), scaled by V / (A (V - 1)).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from sslray.losses.distributed import all_reduce_sum_nograd, world_size


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, eps: float = 0.05, iters: int = 3) -> torch.Tensor:
    """SwAV's codes (module docstring) for this rank's ``scores`` [m, K] (its columns of the
    global problem; every rank passes the same K): [m, K], each row sums to 1, in the scores'
    dtype (float32 at least). Row sums, the total, the maximum and B are global across ranks."""
    if scores.ndim != 2 or scores.shape[1] < 1:
        raise ValueError(f"scores must be [samples, prototypes]; got {tuple(scores.shape)}")
    if iters < 1:
        raise ValueError(f"iters: {iters!r} is out of range; allowed: >= 1")
    s = scores.detach().double()
    top = s.max()
    if world_size() > 1:
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
    q = torch.exp((s - top) / eps).T  # [K, m]
    k = q.shape[0]
    total, b = all_reduce_sum_nograd(torch.stack([q.sum(), torch.tensor(float(q.shape[1]), dtype=q.dtype,
                                                                                device=q.device)]))
    q /= total
    for _ in range(iters):
        q /= all_reduce_sum_nograd(q.sum(dim=1, keepdim=True))  # prototypes: global row sums
        q /= k
        q /= q.sum(dim=0, keepdim=True)  # samples: each column is on one rank
        q /= b
    q *= b
    return q.T.to(torch.promote_types(scores.dtype, torch.float32))


def swapped_prediction(scores: torch.Tensor, codes: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Per-view, per-image swapped-prediction losses [V, n] (module docstring) whose plain mean is
    SwAV's loss. ``scores`` [V, n, K]: every crop's prototype scores (crops of one image at the same
    index i); ``codes`` [A, n, K]: the codes of crops 0..A-1 (detached here: they are targets)."""
    if scores.ndim != 3 or codes.ndim != 3:
        raise ValueError(f"scores must be [views, batch, prototypes] and codes [assigned views, batch, "
                         f"prototypes]; got {tuple(scores.shape)} and {tuple(codes.shape)}")
    v, a = scores.shape[0], codes.shape[0]
    if v < 2 or not 1 <= a <= v or codes.shape[1:] != scores.shape[1:]:
        raise ValueError(f"need views >= 2 and 1 <= assigned views <= views with matching [batch, prototypes]; "
                         f"got scores {tuple(scores.shape)} and codes {tuple(codes.shape)}")
    log_p = F.log_softmax(scores / temperature, dim=2)  # [V, n, K]
    ce = -torch.einsum("ank,vnk->avn", codes.detach().to(log_p.dtype), log_p)  # [A, V, n]: l(q_a, p_v)
    others = 1.0 - F.one_hot(torch.arange(a, device=ce.device), v).to(ce.dtype)  # [A, V]: v != a
    return (ce * others[:, :, None]).sum(dim=0) * (v / (a * (v - 1)))


def swav_loss(scores: torch.Tensor, codes: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SwAV's loss L (module docstring): the mean of :func:`swapped_prediction`."""
    return swapped_prediction(scores, codes, temperature).mean()
