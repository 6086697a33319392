"""The machinery of benchmarks/ci_coverage.py (fast): the estimand, the simulation, the
model-based candidate's fit, one small cell, the choice rule and the pages it writes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import special

from leakk.stats.estimate import DEFAULT_CI_METHOD, leak_at_k

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "ci_coverage.py"


@pytest.fixture(scope="module")
def cc():
    spec = importlib.util.spec_from_file_location("ci_coverage", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ci_coverage"] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["ci_coverage"]
    return module


def test_truth_at_k1_is_the_mean_and_matches_monte_carlo(cc):
    rng = np.random.default_rng(0)
    for regime in cc.REGIMES:
        if regime.family == "beta2":
            # E[q] = E[m] = μ exactly: a check on the quadrature over author means
            assert cc.truth(regime, 1) == pytest.approx(regime.mu, abs=1e-8)
        counts = cc.simulate(regime, 4000, 50, 1, rng)  # 200 000 questions
        q_hat = leak_at_k(np.full(counts.shape, cc.N_SAMPLES), counts, 64).mean()
        # SD of a question's leak@64 ≤ 0.5 and 4000 independent authors: SE ≤ 0.5/√4000·√50
        # bounds the author-level clustering (each author's mean of 50 values), so 4 SE ≈ 0.016
        assert q_hat == pytest.approx(cc.truth(regime, 64), abs=0.016), regime.name


def test_simulation_is_seeded_and_shaped(cc):
    regime = cc.REGIMES[0]
    a = cc.simulate(regime, 6, 10, 3, np.random.default_rng(1))
    b = cc.simulate(regime, 6, 10, 3, np.random.default_rng(1))
    assert a.shape == (3, 60) and np.array_equal(a, b)
    assert a.min() >= 0 and a.max() <= cc.N_SAMPLES


def test_betabinom_fit_matches_leakk_fit(cc):
    """The vectorised Newton fit of the model-based candidate against leakk.extrapolate's
    scipy fit of the same likelihood, and its leak@k against BetaBinomFit.leak_at_k."""
    from leakk.stats.extrapolate import fit_betabinom

    rng = np.random.default_rng(4)
    regime = cc.REGIMES[1]
    counts = cc.simulate(regime, 20, 8, 5, rng)
    values = leak_at_k(np.full(counts.shape, cc.N_SAMPLES), counts, 64)
    batch = cc.Batch(counts, values, values.reshape(5, 20, 8).sum(2), np.full(20, 8.0), 64, rng, 10)
    low, high = cc.betabinom(batch)
    for i in range(5):
        fit = fit_betabinom(np.full(160, cc.N_SAMPLES), counts[i])
        leak = float(fit.leak_at_k(64))
        assert low[i] < leak < high[i]
        # the interval is symmetric on the logit scale around the model's leak@k
        mid = special.expit((special.logit(low[i]) + special.logit(high[i])) / 2)
        assert mid == pytest.approx(leak, abs=2e-4)


def test_candidates_bracket_the_estimate_and_degenerate_samples_get_the_bound(cc):
    rng = np.random.default_rng(2)
    regime = cc.REGIMES[0]
    counts = cc.simulate(regime, 20, 5, 40, rng)
    counts[0] = 0  # one all-zero experiment
    values = leak_at_k(np.full(counts.shape, cc.N_SAMPLES), counts, 1)
    batch = cc.Batch(counts, values, values.reshape(40, 20, 5).sum(2), np.full(20, 5.0), 1, rng, 200)
    point = values.mean(1)
    for name, method in cc.METHODS.items():
        low, high = map(np.asarray, method(batch))
        assert np.all((0 <= low) & (low <= high) & (high <= 1)), name
        if name not in ("betabinom", "bca", "percentile"):  # these need not contain the mean
            assert np.all((low <= point + 1e-12) & (point - 1e-12 <= high)), name
        if name not in ("t", "percentile"):  # the new candidates all use the exact bound
            assert (low[0], high[0]) == (0.0, pytest.approx(1 - 0.05 ** (1 / 20))), name


def test_run_cell_counts_hits_and_is_reproducible(cc):
    regime = cc.REGIMES[1]
    rows = cc.run_cell(regime, 6, 4, 64, reps=60, n_boot=50, seed=3, methods=["t", "hall"], chunk=25)
    again = cc.run_cell(regime, 6, 4, 64, reps=60, n_boot=50, seed=3, methods=["t", "hall"], chunk=25)
    assert rows == again
    for r in rows:
        assert r["experiments"] == 60 and 0 <= r["coverage"] <= 1
        assert r["coverage"] + r["miss_below"] + r["miss_above"] == pytest.approx(1.0)
        assert r["mc_se"] == pytest.approx(np.sqrt(r["coverage"] * (1 - r["coverage"]) / 60))
        assert r["truth"] == pytest.approx(cc.truth(regime, 64))


def _table(cov, method, authors=20, edge=False, regime="rare", phase="select"):
    return {"regime": regime, "family": "beta2", "mu": 0.05, "edge": edge, "authors": authors, "questions": 20,
            "k": 1, "truth": 0.05, "method": method, "coverage": cov, "mc_se": 0.005, "miss_below": 0.0,
            "miss_above": 1 - cov, "median_width": 0.1, "trivial": 0.0, "experiments": 2000, "bootstrap": 1000,
            "phase": phase, "seed": 1}


def test_verdict_applies_the_rule(cc):
    rows = [_table(0.95, "a"), _table(0.99, "a", edge=True, regime="edge-0"),  # edge: over-coverage allowed
            _table(0.95, "b"), _table(0.985, "b", regime="common"),            # over outside an edge
            _table(0.95, "c"), _table(0.91, "c", edge=True, regime="edge-0"),  # under at an edge
            _table(0.50, "a", authors=6, regime="small"),                      # small shapes are not chosen on
            dict(_table(0.99, "d", edge=True, regime="edge-0"), trivial=0.2)]  # covers by saying nothing
    v = cc.verdict(pl.DataFrame(rows))
    assert dict(zip(v["method"], v["cells_outside"])) == {"a": 0, "b": 1, "c": 1, "d": 1}
    assert v.filter(pl.col("ok"))["method"].to_list() == ["a"]


def test_main_writes_the_csv_and_the_page(cc, tmp_path, monkeypatch):
    monkeypatch.setattr(cc, "REGIMES", cc.REGIMES[:1])
    monkeypatch.setattr(cc, "SHAPES", ((20, 3),))
    csv, md = tmp_path / "cov.csv", tmp_path / "cov.md"
    assert cc.main(["--reps", "30", "--boot", "30", "--methods", "t,hall", "--csv", str(csv), "--markdown", str(md)]) == 0
    table = pl.read_csv(csv)
    assert set(table["phase"]) == {"select", "confirm"} and set(table["method"]) == {"t", "hall"}
    assert table.height == 2 * 2 * len(cc.KS)
    page = md.read_text()
    assert "## Verdict" in page and f"**{DEFAULT_CI_METHOD}**" in page and "phase `confirm`" in page


def test_bootstrap_candidates_are_leakks_interval_on_shared_draws(cc):
    """Fed the draws cluster_bootstrap_ci makes from its seed, the harness's t and percentile
    equal leakk's per-experiment intervals exactly."""
    from leakk.stats.estimate import cluster_bootstrap_ci

    rng = np.random.default_rng(8)
    reps, g, q, n_boot = 6, 7, 3, 200
    counts = cc.simulate(cc.REGIMES[0], g, q, reps, rng)
    values = leak_at_k(np.full(counts.shape, cc.N_SAMPLES), counts, 64)
    sums, sizes = values.reshape(reps, g, q).sum(2), np.full(g, float(q))
    draws = np.stack([np.random.default_rng(r).multinomial(g, np.full(g, 1 / g), size=n_boot) for r in range(reps)])
    means = np.einsum("rbg,rg->rb", draws, sums) / (draws @ sizes)
    batch = cc.Batch(counts, values, sums, sizes, 64, rng, n_boot, _boot=(draws.astype(float), means))
    for method in ("t", "percentile"):
        low, high = cc.METHODS[method](batch)
        for r in range(reps):
            want = cluster_bootstrap_ci(values[r], np.repeat(np.arange(g), q), n_boot=n_boot, seed=r, method=method)
            assert (low[r], high[r]) == pytest.approx(want, abs=1e-12), method
