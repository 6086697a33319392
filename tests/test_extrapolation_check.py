"""The extrapolation hold-out check (src/leakk/extrapolate.py): an all-zero prefix, the noise
SD by Monte Carlo, the check over several result trees and the claim it states."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from scipy import special

from leakk.stats.extrapolate import (
    error_claim,
    fit_betabinom,
    holdout_check,
    load_claim,
    per_question_counts,
    tree_judgments,
    validate_runs,
)
from leakk.core.io import write_parquet
from leakk.stages.trust import reliability_markdown


def _frame(leaked: np.ndarray, model="rule_npo", decoding="t1.0_p1.0", judge="fact", groups=6):
    q, n = leaked.shape
    return pl.DataFrame({
        "model": model, "decoding": decoding, "judge": judge,
        "qid": np.repeat([f"q{i:03d}" for i in range(q)], n), "group": np.repeat([f"g{i % groups}" for i in range(q)], n),
        "sample_idx": np.tile(np.arange(n), q), "leaked": leaked.ravel()})


def test_all_zero_prefix_predicts_a_leak_with_a_finite_z():
    """The issue's case: no leak in the first 16 of 64 samples of any question, 3 questions
    leak later (rule_npo: measured 0.05). The fit from 16 must not say 0 with SD 0."""
    leaked = np.zeros((60, 64), bool)
    leaked[[3, 17, 40], [30, 50, 63]] = True
    row = holdout_check(_frame(leaked)).row(0, named=True)
    assert row["family"] == "pooled" and row["measured_leak_at_n"] == pytest.approx(0.05)
    # one shared q ~ Beta(1/2, 960 + 1/2): P(a leak in 48 more samples) in closed form
    a, b = 0.5, 960.5
    m48 = np.exp(special.betaln(a, b + 48) - special.betaln(a, b))
    assert row["predicted_leak_at_n"] == pytest.approx(1 - m48, rel=1e-12)
    assert 0 < row["predicted_leak_at_n"] < 0.1 and row["noise_sd"] > 0 and np.isfinite(row["z"])
    # the SD by Monte Carlo of the same model: q shared by all 60 questions
    rng = np.random.default_rng(0)
    q = rng.beta(a, b, 200_000)
    hits = rng.binomial(60, 1 - (1 - q) ** 48) / 60
    assert row["noise_sd"] == pytest.approx(hits.std(), rel=0.02)
    assert row["predicted_leak_at_n"] == pytest.approx(hits.mean(), abs=4 * hits.std() / np.sqrt(q.size))


def test_noise_sd_of_a_fitted_model_equals_monte_carlo():
    rng = np.random.default_rng(1)
    q = np.where(rng.random(60) < 0.5, 0.0, rng.beta(0.4, 3.0, 60))
    leaked = rng.random((60, 64)) < q[:, None]
    frame = _frame(leaked)
    row = holdout_check(frame).row(0, named=True)
    assert row["family"] == "betabinom"
    pre = per_question_counts(frame, max_sample_idx=16)
    c = pre["c"].to_numpy()
    fit = fit_betabinom(pre["n"].to_numpy(), c)
    # draw each question's q from its posterior, then its 48 unseen samples
    draws = 100_000
    zero = np.flatnonzero(c == 0)
    qs = rng.beta(fit.a, fit.b + 16, (draws, zero.size))
    any_leak = rng.random((draws, zero.size)) < 1 - (1 - qs) ** 48
    measured = ((c > 0).sum() + any_leak.sum(1)) / 60
    assert row["predicted_leak_at_n"] == pytest.approx(measured.mean(), abs=4 * measured.std() / np.sqrt(draws))
    assert row["noise_sd"] == pytest.approx(measured.std(), rel=0.02)
    assert row["z"] == pytest.approx(row["error"] / row["noise_sd"])


def test_a_fully_leaked_prefix_leaves_nothing_to_chance():
    leaked = np.ones((12, 64), bool)
    row = holdout_check(_frame(leaked, model="full")).row(0, named=True)
    assert (row["family"], row["predicted_leak_at_n"], row["measured_leak_at_n"]) == ("pooled", 1.0, 1.0)
    assert (row["error"], row["noise_sd"], row["z"]) == (0.0, 0.0, 0.0)


def _tree(root, seed):
    """A finished results tree: data/benchmark.parquet and judgments/<model>/<judge>/<decoding>.parquet."""
    rng = np.random.default_rng(seed)
    qids = [f"s{seed}q{i:02d}" for i in range(24)]
    data = pl.DataFrame({"qid": qids + ["r0"], "group": [f"a{i % 4}" for i in range(24)] + ["a9"],
                         "question": "?", "answer": "!", "fact": "f", "split": ["forget"] * 24 + ["retain"]})
    write_parquet(data, root / "data" / "benchmark.parquet", "data")
    for model, rate in (("ga", 0.05), ("retrain", 0.0)):
        for decoding, n in (("t1.0_p1.0", 32), ("t0.8_p0.8", 32), ("greedy", 1)):
            leaked = rng.random((24, n)) < rate * rng.random((24, 1)) * 2
            frame = pl.DataFrame({"qid": np.repeat(qids, n), "sample_idx": np.tile(np.arange(n), 24),
                                  "judge": "fact", "score": 0.0, "leaked": leaked.ravel(), "split": "forget"})
            write_parquet(frame, root / "judgments" / model / "fact" / f"{decoding}.parquet", "judgments")
    return root


def test_validate_runs_over_seed_trees(tmp_path):
    trees = {s: _tree(tmp_path / f"seed_{s}" / "results", s) for s in (0, 1)}
    table = validate_runs(trees)
    assert table.columns[0] == "run" and sorted(set(table["run"])) == ["0", "1"]
    assert table.height == 2 * 2 * 2  # runs × models × sampled decodings (greedy has nothing to fit)
    for s, path in trees.items():
        direct = holdout_check(tree_judgments(path))
        got = table.filter(pl.col("run") == str(s)).drop("run")
        assert got.sort("model", "decoding").equals(direct.sort("model", "decoding"))
    assert table.filter(pl.col("model") == "retrain")["family"].unique().to_list() == ["pooled"]
    assert np.isfinite(table["z"].to_numpy()).all()


def test_error_claim_states_the_share_that_held():
    errors = [0.001, -0.012, 0.02, -0.031, 0.04, 0.05, -0.061, 0.07, 0.08, -0.2]
    table = pl.DataFrame({"run": ["0"] * 5 + ["1"] * 5, "decoding": "d", "judge": "j", "fit_samples": 16, "n": 64,
                          "error": errors, "z": [0.1, 1, 3, 0, 0, 0, 0, 0, 0, 5]})
    claim = error_claim(table, share=0.9)
    # 9 of 10 rows need |error| ≤ 0.08: already on the 0.005 grid
    assert claim["abs_error"] == 0.08 and claim["within"] == 9 and claim["rows"] == 10
    assert claim["runs"] == ["0", "1"] and claim["fraction"] == 0.25
    assert claim["max_abs_error"] == 0.2 and claim["share_within_2sd"] == 0.8
    assert error_claim(table, share=0.8)["abs_error"] == 0.07  # 8 of 10 rows: 0.07, on the grid
    assert error_claim(table.with_columns(error=pl.col("error") * 1.01), share=0.9)["abs_error"] == 0.085


def test_reliability_page_flags_rows_outside_the_claim(tmp_path):
    check = holdout_check(_frame(np.zeros((12, 64), bool)), claim=0.0)  # an impossible claim: 0 error
    leaked = np.zeros((12, 64), bool)
    leaked[0, 40] = True
    check = pl.concat([check, holdout_check(_frame(leaked, model="ga"), claim=0.01)])
    claim = {"abs_error": 0.01, "share": 0.95, "rows": 40, "runs": ["0", "1", "2"]}
    empty = pl.DataFrame(schema={"model": pl.String, "decoding": pl.String, "judge": pl.String})
    md = reliability_markdown(empty, empty, check, "fact", "t1.0_p1.0", claim)
    assert "|error| ≤ 0.010 in 95% of 40 rows across runs 0, 1, 2" in md
    flagged = [ln for ln in md.splitlines() if "⚠" in ln and ln.startswith("| ")]
    assert len(flagged) == int(check["outside_claim"].sum()) >= 1
    assert f"Rows outside the claim: {int(check['outside_claim'].sum())} of 2." in md
    path = tmp_path / "claim.json"
    assert load_claim(path) is None
    path.write_text(json.dumps(claim))
    assert load_claim(path) == claim


def test_a_few_always_leaking_questions_do_not_make_the_rest_certain():
    """58 questions never leak in 16 samples, 2 always do: the plain MLE runs to a, b → 0 (a
    point mass at 0 and 1); the concentration prior keeps a real chance of a later leak."""
    c = np.array([0] * 58 + [16, 16])
    fit = fit_betabinom(np.full(60, 16), c)
    assert fit.a + fit.b > 1e-3
    p_rest = 1 - fit.survival(16, 0, 48)
    assert 1e-4 < float(p_rest) < 0.1
    leaked = np.zeros((60, 64), bool)
    leaked[58:, :] = True
    row = holdout_check(_frame(leaked)).row(0, named=True)
    assert row["noise_sd"] > 1e-3 and row["family"] == "betabinom"


@pytest.mark.parametrize("a,b", [(0.4, 3.0), (0.2, 1.0), (1.0, 5.0), (0.3, 0.3)])
def test_the_concentration_prior_barely_moves_an_ordinary_fit(a, b):
    """Against the unpenalised MLE by Nelder–Mead on scipy's own Beta-binomial pmf."""
    from scipy import optimize, stats

    rng = np.random.default_rng(6)
    c = rng.binomial(16, rng.beta(a, b, 60))
    fit = fit_betabinom(np.full(60, 16), c)
    res = optimize.minimize(lambda t: -stats.betabinom.logpmf(c, 16, *np.exp(t)).sum(), [0.0, 0.0],
                            method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 5000})
    a_mle, b_mle = np.exp(res.x)
    assert fit.a == pytest.approx(a_mle, rel=0.05) and fit.b == pytest.approx(b_mle, rel=0.05)
    leak = lambda a_, b_: 1 - np.exp(special.betaln(a_, b_ + 64) - special.betaln(a_, b_))  # noqa: E731
    assert float(fit.leak_at_k(64)) == pytest.approx(leak(a_mle, b_mle), abs=0.003)


def test_the_committed_claim_is_the_one_the_reliability_stage_reads():
    """The claim file sits beside its loader and ships with the package: a claim written by
    `leakk readme-tables` but read from elsewhere would leave the report without it."""
    from importlib.resources import files

    from conftest import ROOT
    from leakk.report.readme_tables import SNAPSHOT_DIR
    from leakk.stats.extrapolate import CLAIM_FILE, error_claim

    claim = load_claim()
    assert claim is not None and CLAIM_FILE == files("leakk.stats") / "extrapolation_claim.json"
    errors = pl.read_csv(ROOT / SNAPSHOT_DIR / "extrapolation_errors.csv").with_columns(pl.col("run").cast(pl.String))
    assert claim == error_claim(errors)  # the snapshot's errors, across the report seeds
    assert "stats/extrapolation_claim.json" in (ROOT / "pyproject.toml").read_text()
