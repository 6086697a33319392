"""Clopper–Pearson guarantees (src/leakk/stats/guarantees.py) and the Beta-binomial extrapolation
(src/leakk/stats/extrapolate.py), each against an independent computation."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from leakk.stats.estimate import leak_at_k
from leakk.stats.extrapolate import (
    betabinom_logpmf,
    extrapolation_table,
    fit_betabinom,
    holdout_check,
    per_question_counts,
)
from leakk.stats.guarantees import cp_upper, guarantee_table, per_question

# ------------------------------------------------------------------------- Clopper–Pearson


@pytest.mark.parametrize("n", [1, 5, 64, 200])
def test_cp_upper_equals_scipy_binomtest(n):
    for c in range(0, n + 1, max(1, n // 7)):
        ref = stats.binomtest(c, n, alternative="less").proportion_ci(0.95, method="exact").high
        assert cp_upper(c, n, 0.95) == pytest.approx(ref, abs=1e-10)


def test_cp_upper_closed_forms():
    # c = 0: the bound solves (1 − x)^n = α; c = n: 1
    for n in (1, 10, 64):
        assert cp_upper(0, n, 0.95) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-10)
        assert cp_upper(n, n, 0.95) == 1.0
    with pytest.raises(ValueError):
        cp_upper(3, 2)
    with pytest.raises(ValueError):
        cp_upper(0, 5, 1.0)


@pytest.mark.parametrize("q", [0.001, 0.02, 0.3, 0.9])
def test_cp_upper_covers_at_least_nominal_by_monte_carlo(q):
    rng = np.random.default_rng(1)
    c = rng.binomial(64, q, size=20_000)
    coverage = np.mean(cp_upper(c, 64, 0.95) >= q)
    assert coverage >= 0.95 - 3 * np.sqrt(0.05 * 0.95 / 20_000)


def test_bonferroni_bound_is_simultaneous_by_monte_carlo():
    """All 60 questions' bounds hold at once in ≥ 95% of simulated experiments."""
    rng = np.random.default_rng(2)
    q = rng.beta(0.3, 3, size=60)
    reps = 4000
    c = rng.binomial(64, q, size=(reps, 60))
    upper = cp_upper(c, 64, 1 - 0.05 / 60)
    assert np.mean((upper >= q).all(axis=1)) >= 0.95 - 3 * np.sqrt(0.05 * 0.95 / reps)


def test_guarantee_table_statement():
    counts = pl.DataFrame({"model": ["m"] * 3, "decoding": ["d"] * 3, "judge": ["j"] * 3,
                           "qid": ["a", "b", "c"], "n": [64, 64, 64], "c": [0, 0, 2]})
    g = guarantee_table(per_question(counts, 0.95), 0.95).row(0, named=True)
    x = stats.beta.ppf(1 - 0.05 / 3, 3, 62)
    assert g["max_upper"] == pytest.approx(x)
    assert g["max_upper_pointwise"] == pytest.approx(stats.beta.ppf(0.95, 3, 62))
    assert g["leaked_questions"] == 1 and g["correction"] == "bonferroni"
    assert f"{x:.3f}" in g["statement"] and "Bonferroni over 3 questions" in g["statement"]


# ---------------------------------------------------------------------------- Beta-binomial

@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), data=st.data(), a=st.floats(0.01, 50), b=st.floats(0.01, 50))
def test_betabinom_logpmf_equals_scipy(n, data, a, b):
    c = data.draw(st.integers(0, n))
    assert betabinom_logpmf(c, n, a, b) == pytest.approx(stats.betabinom.logpmf(c, n, a, b), rel=1e-9, abs=1e-9)


def test_model_leak_at_k_equals_monte_carlo_expectation():
    fit = fit_betabinom(np.full(4, 10), np.array([0, 1, 3, 10]), family="zi-betabinom")
    assert fit.pi > 0
    rng = np.random.default_rng(3)
    q = np.where(rng.random(400_000) < fit.pi, 0.0, rng.beta(fit.a, fit.b, 400_000))
    for k in (1, 7, 64, 640):
        assert fit.leak_at_k(k) == pytest.approx(np.mean(1 - (1 - q) ** k), abs=4e-3)


def _simulate(rng, questions, n, a, b, pi):
    q = np.where(rng.random(questions) < pi, 0.0, rng.beta(a, b, questions))
    return q, rng.binomial(n, q)


def test_fit_recovers_parameters_and_extrapolates():
    rng = np.random.default_rng(4)
    q, c = _simulate(rng, 3000, 64, 0.4, 3.0, 0.5)
    fit = fit_betabinom(np.full(3000, 64), c, family="aic")
    assert fit.family == "zi-betabinom"
    assert fit.pi == pytest.approx(0.5, abs=0.05)
    assert fit.a == pytest.approx(0.4, rel=0.25) and fit.b == pytest.approx(3.0, rel=0.4)
    for k in (64, 640):
        truth = np.mean(1 - (1 - q) ** k)
        assert fit.leak_at_k(k) == pytest.approx(truth, abs=0.03)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), k1=st.integers(1, 10_000), k2=st.integers(1, 10_000))
def test_model_leak_at_k_monotone_and_bounded(seed, k1, k2):
    rng = np.random.default_rng(seed)
    _, c = _simulate(rng, 30, 16, 0.5, 2.0, 0.3)
    fit = fit_betabinom(np.full(30, 16), c)
    lo, hi = sorted([k1, k2])
    assert 0.0 <= fit.leak_at_k(lo) <= fit.leak_at_k(hi) + 1e-12 <= 1.0 + 1e-12


def test_degenerate_counts():
    assert fit_betabinom([5, 5], [0, 0]).leak_at_k(1000) == 0.0
    assert fit_betabinom([5, 5], [5, 5]).leak_at_k(1) == 1.0


def _frame(rng, questions=60, n=64, groups=6, a=0.4, b=3.0, pi=0.5):
    q, _ = _simulate(rng, questions, n, a, b, pi)
    leaked = rng.random((questions, n)) < q[:, None]
    rows = [{"model": "m", "decoding": "t1.0_p1.0", "judge": "fact", "qid": f"q{i:03d}",
             "group": f"g{i % groups}", "sample_idx": s, "leaked": bool(leaked[i, s])}
            for i in range(questions) for s in range(n)]
    return pl.DataFrame(rows), q


def test_extrapolation_table_marks_beyond_n_and_agrees_in_sample():
    frame, _ = _frame(np.random.default_rng(5))
    counts = per_question_counts(frame)
    t = extrapolation_table(counts, n_boot=30)
    assert t["k"].to_list() == [64, 128, 256, 640]
    assert t["beyond_n"].to_list() == [False, True, True, True]
    assert t.filter(pl.col("beyond_n"))["measured_leak_at_k"].is_null().all()
    first = t.row(0, named=True)
    measured = leak_at_k(counts["n"].to_numpy(), counts["c"].to_numpy(), 64).mean()
    assert first["measured_leak_at_k"] == pytest.approx(measured)
    assert first["extrapolated_leak_at_k"] == pytest.approx(measured, abs=0.08)
    assert (t["extrapolated_ci_low"] <= t["extrapolated_leak_at_k"] + 1e-12).all()
    assert (t["extrapolated_leak_at_k"] <= t["extrapolated_ci_high"] + 1e-12).all()
    assert t["extrapolated_leak_at_k"].is_sorted()


def test_holdout_check_uses_the_first_quarter_of_samples():
    frame, _ = _frame(np.random.default_rng(6))
    got = holdout_check(frame).row(0, named=True)
    assert got["fit_samples"] == 16 and got["n"] == 64
    counts = per_question_counts(frame, max_sample_idx=16)
    assert counts["n"].max() == 16
    fit = fit_betabinom(counts["n"].to_numpy(), counts["c"].to_numpy())
    want = fit.posterior_leak_at_k(counts["n"].to_numpy(), counts["c"].to_numpy(), 64).mean()
    assert got["predicted_leak_at_n"] == pytest.approx(float(want))
    assert abs(got["error"]) < 4 * got["noise_sd"] + 0.02


@pytest.mark.parametrize("family", ["betabinom", "zi-betabinom"])
def test_posterior_leak_at_k_equals_monte_carlo_conditional(family):
    """E[1 − (1 − q)^k | c of n] by simulation: draw q from the fitted prior, c ~ Bin(n, q),
    and average 1 − (1 − q)^k over the draws that produced each c."""
    from leakk.stats.extrapolate import BetaBinomFit

    fit = BetaBinomFit(family, 0.4, 2.5, 0.3 if family == "zi-betabinom" else 0.0, 0.0, 0.0)
    rng = np.random.default_rng(8)
    m = 2_000_000
    q = np.where(rng.random(m) < fit.pi, 0.0, rng.beta(fit.a, fit.b, m))
    c = rng.binomial(16, q)
    for cv in (0, 1, 5):
        sel = q[c == cv]
        mc = np.mean(1 - (1 - sel) ** 64)
        se = np.std(1 - (1 - sel) ** 64) / np.sqrt(sel.size)
        assert fit.posterior_leak_at_k(16, cv, 64) == pytest.approx(mc, abs=4 * se + 1e-4)


def test_fit_families_and_unknown_family():
    rng = np.random.default_rng(9)
    _, c = _simulate(rng, 200, 16, 0.5, 2.0, 0.4)
    n = np.full(200, 16)
    assert fit_betabinom(n, c).family == "betabinom"
    assert fit_betabinom(n, c, family="zi-betabinom").family == "zi-betabinom"
    aic = fit_betabinom(n, c, family="aic")
    assert aic.aic == min(fit_betabinom(n, c).aic, fit_betabinom(n, c, family="zi-betabinom").aic)
    with pytest.raises(ValueError, match="family"):
        fit_betabinom(n, c, family="nope")


def test_extrapolation_without_any_leak_has_an_exact_upper_interval():
    counts = pl.DataFrame({"model": ["m"] * 10, "decoding": ["d"] * 10, "judge": ["j"] * 10,
                           "qid": [f"q{i}" for i in range(10)], "group": [f"g{i % 5}" for i in range(10)],
                           "n": [64] * 10, "c": [0] * 10})
    t = extrapolation_table(counts, n_boot=10)
    assert (t["extrapolated_leak_at_k"] == 0).all() and (t["extrapolated_ci_low"] == 0).all()
    u = 1 - 0.05 ** (1 / 640)
    assert t["extrapolated_ci_high"].to_list() == pytest.approx([1 - (1 - u) ** k for k in (64, 128, 256, 640)])
