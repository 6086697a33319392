"""Property-based tests (hypothesis) of the estimator and the bounds against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leakk.stats.bounds import bound_at_k
from leakk.stats.estimate import cluster_bootstrap_ci, leak_at_k


@st.composite
def small_nck(draw):
    n = draw(st.integers(1, 10))
    return n, draw(st.integers(0, n)), draw(st.integers(1, n))


def _enumerate(n, c, k):
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@settings(max_examples=300, deadline=None)
@given(small_nck())
def test_estimator_equals_brute_force_and_is_monotone(args):
    n, c, k = args
    v = leak_at_k(n, c, k)
    assert v == pytest.approx(_enumerate(n, c, k), abs=1e-12)
    assert 0.0 <= v <= 1.0
    if k < n:
        assert leak_at_k(n, c, k + 1) >= v - 1e-12  # monotone in k
    if c < n:
        assert leak_at_k(n, c + 1, k) >= v - 1e-12  # and in c


@settings(max_examples=100, deadline=None)
@given(p=st.floats(0, 1), k=st.integers(1, 8))
def test_bound_equals_enumeration_of_k_bernoulli_draws(p, k):
    """P(at least one of k independent draws begins with the answer), by enumerating all 2^k
    outcomes, equals 1 − (1 − p)^k."""
    total = 0.0
    for outcome in itertools.product((0, 1), repeat=k):
        if any(outcome):
            hits = sum(outcome)
            total += p ** hits * (1 - p) ** (k - hits)
    assert bound_at_k(p, k) == pytest.approx(total, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(0, 1), min_size=2, max_size=40), groups=st.integers(1, 8),
       method=st.sampled_from(["percentile", "t", "hall"]))
def test_ci_within_the_values_range_and_around_the_mean(values, groups, method):
    values = np.asarray(values)
    labels = np.arange(len(values)) % groups
    lo, hi = cluster_bootstrap_ci(values, labels, n_boot=200, method=method)
    # the bootstrap intervals stay within the values; Hall's within [0, 1], the values' bounds
    low, high = (0.0, 1.0) if method == "hall" else (values.min(), values.max())
    assert low - 1e-12 <= lo <= hi <= high + 1e-12
    if method in ("t", "hall"):  # contain the point estimate
        assert lo <= values.mean() + 1e-12 and hi >= values.mean() - 1e-12


def test_t_interval_of_equal_values_is_that_value():
    """Found by hypothesis: three equal values whose float mean (3x/3) rounds an ulp below x.
    Clipping the t interval's ends to [min, max] then gave low = x > high = mean."""
    x = 0.8092273871442444
    assert np.asarray([x, x, x]).mean() < x  # the rounding this guards against
    lo, hi = cluster_bootstrap_ci(np.asarray([x, x, x]), np.arange(3), n_boot=200, method="t")
    assert lo == hi == x


def test_hall_interval_survives_a_spread_whose_cube_underflows():
    """Found by hypothesis: values [0, 8e-118] have s > 0 but s³ = 0 in float64, which made the
    skewness inf and the interval NaN. The interval is scale-free, so it is the same one as for
    [0, 1e-3] rescaled."""
    from leakk.stats.estimate import hall_interval

    tiny, scale = 8.156706260876966e-118, 1e-3
    low, high = hall_interval(np.array([0.0, tiny]), np.array([1.0, 1.0]))
    ref_low, ref_high = hall_interval(np.array([0.0, scale]), np.array([1.0, 1.0]))
    assert np.isfinite([low, high]).all()
    assert 0.0 <= low <= tiny / 2 <= high
    assert high == pytest.approx(ref_high * tiny / scale, rel=1e-9)
