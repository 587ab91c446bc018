"""SSL losses: one file per method, each term a small pure function.

Every two-view loss is an ``nn.Module`` whose ``forward(z1, z2)`` takes the two views' embeddings
(float [n, D], the same shape, n >= 2) and returns :class:`LossOutput` -- the total to
backpropagate and every *unweighted* term for logging. Its parameters are paper-named keyword
arguments, declared once in the file's ``PARAMS`` table (:mod:`sslray.losses.params`: default,
bounds, whether it sizes the state) and checked in ``__init__``:

    vicreg       VICRegLoss       lam=25, mu=25, nu=1, eps=1e-4
    tico         TiCoLoss         beta=0.9, rho=8                          (+ dim, for C)
    vicreg_tico  VICRegTiCoLoss   lam=25, mu=25, nu (required, ~1/dim), beta=0.9, eps=1e-4,
                                  center, offdiag, symmetric, bias_correction = False  (+ dim, for C)
    barlow       BarlowTwinsLoss  lambda_bt=5e-3

The methods that are these losses and nothing more are registered in :mod:`sslray.methods`
(``METHODS``, one registry); ``sslray.methods.build_loss`` builds one by its method name. The
other files hold the terms the other methods use (InfoNCE, NT-Xent, BYOL's regression, SwAV's
Sinkhorn, W-MSE's whitening, UOTA's weights).

Terms over the whole batch (variance, covariance, cross-correlation, TiCo's B) are computed on the
*global* batch across ranks; see :mod:`sslray.losses.distributed` for why the gradients are right.

Example::

    loss_fn = TiCoLoss(rho=20.0, dim=128)
    out = loss_fn(z1, z2)  # z1, z2: [n, 128] fp32
    out.total.backward()   # out.terms == {"inv": ..., "cov": ...}
"""
from sslray.losses.base import LossOutput, check_pair
from sslray.losses.params import Param, check_flag, check_range, resolve

__all__ = ["LossOutput", "Param", "check_flag", "check_pair", "check_range", "resolve"]
