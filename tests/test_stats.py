"""sslray.stats against scipy on fixed data: the intervals and tests behind every comparison."""
import numpy as np
import pytest
from scipy import stats as st

from sslray import stats

A = [61.2, 62.8, 60.9, 63.4, 62.1]  # five seeds' linear-probe top-1 (fixed, made-up numbers)
B = [60.1, 61.0, 59.4, 61.9, 60.2]


def test_t_interval_matches_scipy():
    ci = stats.mean_interval(A)
    ref = st.t.interval(0.95, len(A) - 1, loc=np.mean(A), scale=st.sem(A))
    assert (ci.ci_low, ci.ci_high) == pytest.approx(ref, rel=1e-12)
    assert ci.mean == pytest.approx(np.mean(A)) and ci.method == "t" and ci.n == 5


def test_welch_matches_scipy():
    diff, lo, hi, df, p = stats.welch(A, B)
    ref = st.ttest_ind(A, B, equal_var=False)
    assert p == pytest.approx(ref.pvalue, rel=1e-10) and df == pytest.approx(ref.df, rel=1e-10)
    assert (lo, hi) == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-10)
    assert diff == pytest.approx(np.mean(A) - np.mean(B))


def test_exact_permutation_p_matches_scipy():
    p = stats.permutation_p(A, B)
    ref = st.permutation_test((A, B), lambda x, y: np.mean(x) - np.mean(y), permutation_type="independent",
                              alternative="two-sided", n_resamples=np.inf)
    assert p == pytest.approx(ref.pvalue, rel=1e-12)


def test_monte_carlo_permutation_p_is_close_to_exact():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.5, 1, 12), rng.normal(0, 1, 12)  # C(24, 12) ~ 2.7M: Monte-Carlo path
    ref = st.permutation_test((a, b), lambda x, y: np.mean(x) - np.mean(y), permutation_type="independent",
                              alternative="two-sided", n_resamples=200_000, rng=0)
    assert stats.permutation_p(a, b) == pytest.approx(ref.pvalue, abs=0.01)


def test_bootstrap_interval_matches_scipy_percentile():
    ci = stats.bootstrap_interval(A, resamples=20_000)
    ref = st.bootstrap((np.asarray(A),), np.mean, confidence_level=0.95, method="percentile", n_resamples=20_000, rng=0)
    assert ci.ci_low == pytest.approx(ref.confidence_interval.low, abs=0.05)
    assert ci.ci_high == pytest.approx(ref.confidence_interval.high, abs=0.05)
    t = stats.mean_interval(A)
    assert t.ci_low < ci.ci_low < ci.mean < ci.ci_high < t.ci_high  # percentile is narrower at n = 5


@pytest.mark.parametrize("bad", [[1.0], [1.0, float("nan")], []])
def test_too_few_or_non_finite_scores_are_refused(bad):
    with pytest.raises(ValueError, match="allowed: at least 2 finite values"):
        stats.mean_interval(bad)


def test_identical_constant_arms():
    d = stats.compare_arms([1.0, 1.0], [1.0, 1.0])
    assert d.diff == 0 and d.welch_p == 1.0 and d.permutation_p == 1.0
