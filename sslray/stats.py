"""Intervals and tests for "is recipe A better than recipe B", from a handful of seeds.

With n = 3-10 seeds per arm the choices matter, so each is stated next to its number:

    mean_interval      Student t:  mean ± t_{0.975, n-1} · s / √n          (s: sample std, ddof 1)
    bootstrap_interval percentile bootstrap of the mean (B resamples, fixed seed); narrower than t
                       for tiny n (it cannot see beyond the observed spread), so t is the default
    welch              difference of means a − b, its Welch–Satterthwaite t interval and two-sided
                       p-value (unequal variances: the arms need not vary alike)
    permutation_p      two-sided exact (n_a + n_b choose n_a ≤ 20k relabellings) or Monte-Carlo
                       permutation p-value of the difference of means; assumes nothing about shape

References: Welch, Biometrika 1947; Efron & Tibshirani, An Introduction to the Bootstrap, 1993,
ch. 13; the same quantities as ``scipy.stats.ttest_ind(equal_var=False)``, ``scipy.stats.bootstrap
(method="percentile")`` and ``scipy.stats.permutation_test``, which the tests check against.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats as st


@dataclass
class Interval:
    mean: float
    ci_low: float
    ci_high: float
    method: str  # "t" | "bootstrap"
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def _values(x: Sequence[float], what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.size < 2 or not np.isfinite(a).all():
        raise ValueError(f"{what}: {list(x)!r}; allowed: at least 2 finite values")
    return a


def mean_interval(x: Sequence[float], confidence: float = 0.95) -> Interval:
    """Student t interval of the mean."""
    a = _values(x, "scores")
    n, m = a.size, float(a.mean())
    half = st.t.ppf(0.5 + confidence / 2, n - 1) * a.std(ddof=1) / math.sqrt(n)
    return Interval(m, m - half, m + half, "t", n)


def bootstrap_interval(x: Sequence[float], confidence: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean."""
    a = _values(x, "scores")
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(float(a.mean()), float(lo), float(hi), "bootstrap", a.size)


@dataclass
class Difference:
    diff: float  # mean(a) - mean(b)
    ci_low: float
    ci_high: float
    df: float  # Welch-Satterthwaite degrees of freedom
    welch_p: float  # two-sided
    permutation_p: float  # two-sided
    ci_method: str = "welch t"

    def to_dict(self) -> dict:
        return asdict(self)


def welch(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float, float]:
    """(diff, ci_low, ci_high, df, two-sided p) of mean(a) - mean(b) without assuming equal variances.

    se² = s_a²/n_a + s_b²/n_b;  df = se⁴ / [(s_a²/n_a)²/(n_a-1) + (s_b²/n_b)²/(n_b-1)]."""
    x, y = _values(a, "scores of a"), _values(b, "scores of b")
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    diff, se = float(x.mean() - y.mean()), math.sqrt(va + vb)
    if se == 0.0:  # identical constant arms: no spread to test against
        return diff, diff, diff, float("nan"), 1.0 if diff == 0 else 0.0
    df = (va + vb) ** 2 / (va ** 2 / (x.size - 1) + vb ** 2 / (y.size - 1))
    half = st.t.ppf(0.5 + confidence / 2, df) * se
    p = 2 * st.t.sf(abs(diff) / se, df)
    return diff, diff - half, diff + half, float(df), float(p)


def permutation_p(a: Sequence[float], b: Sequence[float], resamples: int = 20_000, seed: int = 0) -> float:
    """Two-sided p of |mean(a) - mean(b)| under relabelling; exact when the relabellings are few.

    The observed labelling counts among the relabellings, so p >= 1 / (number of relabellings)."""
    x, y = _values(a, "scores of a"), _values(b, "scores of b")
    pooled, na = np.concatenate([x, y]), x.size
    observed = abs(x.mean() - y.mean())
    tol = 1e-12 * max(1.0, abs(observed))  # ties within rounding count as "at least as extreme"
    if math.comb(pooled.size, na) <= resamples:
        idx = np.arange(pooled.size)
        stats = []
        for chosen in itertools.combinations(idx, na):
            mask = np.zeros(pooled.size, bool)
            mask[list(chosen)] = True
            stats.append(abs(pooled[mask].mean() - pooled[~mask].mean()))
        return float(np.mean(np.asarray(stats) >= observed - tol))
    rng = np.random.default_rng(seed)
    perms = np.argsort(rng.random((resamples, pooled.size)), axis=1)
    s = np.abs(pooled[perms[:, :na]].mean(axis=1) - pooled[perms[:, na:]].mean(axis=1))
    return float((np.sum(s >= observed - tol) + 1) / (resamples + 1))


def compare_arms(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Difference:
    diff, lo, hi, df, p = welch(a, b, confidence)
    return Difference(diff, lo, hi, df, p, permutation_p(a, b))
