"""leak@k estimator, clustered bootstrap and the leak/utility tables (src/leakk/stats/estimate.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leakk.core.errors import ArtifactError
from leakk.stats.estimate import (
    LEAK_TABLE_COLUMNS,
    cluster_bootstrap_ci,
    leak_at_k,
    leak_table,
    summary_markdown,
    utility_table,
)

# ------------------------------------------------------------------------------ leak_at_k


def brute_force(n: int, c: int, k: int) -> float:
    """Fraction of k-subsets of the n samples that contain at least one leaked sample."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_matches_enumeration_of_all_k_subsets(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert leak_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12)


def test_matches_exact_binomials_for_larger_n():
    for n, c, k in [(200, 3, 128), (200, 50, 8), (57, 13, 20), (1000, 1, 1), (300, 290, 5)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert leak_at_k(n, c, k) == pytest.approx(exact, rel=1e-12, abs=1e-15)


def test_vectorised_matches_elementwise():
    rng = np.random.default_rng(1)
    n = rng.integers(8, 300, size=200)
    c = rng.integers(0, n + 1)
    got = leak_at_k(n, c, 8)
    assert got.shape == (200,)
    for ni, ci, g in zip(n, c, got):
        assert g == pytest.approx(1 - math.comb(ni - ci, 8) / math.comb(ni, 8), abs=1e-12)
    assert isinstance(leak_at_k(10, 2, 3), float)
    assert leak_at_k(np.array([[5, 6], [7, 8]]), np.array([[1, 2], [3, 0]]), 1).shape == (2, 2)


def test_matches_monte_carlo_draws_without_replacement():
    rng = np.random.default_rng(0)
    n, c, k, draws = 40, 5, 6, 20_000
    samples = np.zeros(n, bool)
    samples[:c] = True
    # each row a random permutation; its first k entries are a uniform k-subset
    keys = rng.random((draws, n))
    subsets = np.argsort(keys, axis=1)[:, :k]
    hits = samples[subsets].any(axis=1)
    p_hat = hits.mean()
    se = math.sqrt(p_hat * (1 - p_hat) / draws)
    assert abs(leak_at_k(n, c, k) - p_hat) < 4 * se


@st.composite
def nck(draw):
    n = draw(st.integers(1, 400))
    c = draw(st.integers(0, n))
    k = draw(st.integers(1, n))
    return n, c, k


@settings(max_examples=200, deadline=None)
@given(nck())
def test_properties(args):
    n, c, k = args
    v = leak_at_k(n, c, k)
    assert 0.0 <= v <= 1.0
    if k < n:
        assert leak_at_k(n, c, k + 1) >= v - 1e-12  # monotone non-decreasing in k
    assert leak_at_k(n, 0, k) == 0.0
    assert leak_at_k(n, n, k) == 1.0
    assert leak_at_k(n, c, 1) == pytest.approx(c / n, rel=1e-12, abs=1e-15)
    if n - c < k:
        assert v == 1.0


@pytest.mark.parametrize("n,k", [(1, 2), (5, 8), (199, 200)])
def test_k_greater_than_n_is_refused(n, k):
    with pytest.raises(ValueError, match=rf"k={k} > n={n}: leak@k is undefined for k > n"):
        leak_at_k(n, 0, k)


def test_k_greater_than_any_element_is_refused():
    with pytest.raises(ValueError, match="undefined for k > n"):
        leak_at_k(np.array([200, 200, 3]), np.array([0, 1, 0]), 4)


@pytest.mark.parametrize("k", [0, -1])
def test_k_below_one_is_refused(k):
    with pytest.raises(ValueError):
        leak_at_k(10, 1, k)


def test_bad_c_is_refused():
    with pytest.raises(ValueError):
        leak_at_k(10, 11, 1)
    with pytest.raises(ValueError):
        leak_at_k(10, -1, 1)
    with pytest.raises(ValueError):
        leak_at_k(10, 1, 1.5)


def test_stable_for_n_ten_thousand():
    n = 10_000
    c = np.array([0, 1, 2, 10, 100, 5000, 9_872, 9_873, 10_000])
    for k in (1, 128, 1024):
        v = leak_at_k(np.full(c.shape, n), c, k)
        assert np.all(np.isfinite(v)) and np.all((v >= 0) & (v <= 1))
        assert v[0] == 0.0 and v[-1] == 1.0
        assert np.all(np.diff(v) >= 0)
    # closed forms: c = 1 → k/n exactly; small probabilities keep relative precision
    assert leak_at_k(n, 1, 1) == pytest.approx(1e-4, rel=1e-13)
    assert leak_at_k(n, 1, 128) == pytest.approx(128 / n, rel=1e-13)
    exact = 1 - math.comb(n - 2, 64) / math.comb(n, 64)
    assert leak_at_k(n, 2, 64) == pytest.approx(exact, rel=1e-12)


# ------------------------------------------------------------------------------ bootstrap


def naive_bootstrap(values, groups, n_boot, ci, seed):
    """Loop version using the same multinomial draws: expand each drawn group into its rows."""
    values = np.asarray(values, float)
    labels, inv = np.unique(groups, return_inverse=True)
    g = len(labels)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(g, np.full(g, 1 / g), size=n_boot)
    means = []
    for row in counts:
        pooled = []
        for gi, times in enumerate(row):
            pooled.extend(list(values[inv == gi]) * int(times))
        means.append(np.mean(pooled))
    a = (1 - ci) / 2
    return tuple(np.quantile(means, [a, 1 - a]))


def test_bootstrap_matches_naive_loop_with_same_draws():
    rng = np.random.default_rng(5)
    groups = rng.integers(0, 12, size=60)
    values = rng.random(60)
    got = cluster_bootstrap_ci(values, groups, n_boot=300, ci=0.9, seed=11)
    want = naive_bootstrap(values, groups, n_boot=300, ci=0.9, seed=11)
    assert got == pytest.approx(want, abs=1e-12)


def test_bootstrap_agrees_statistically_with_index_resampling():
    """An independent loop (rng.integers over group indices) gives about the same CI."""
    rng = np.random.default_rng(7)
    groups = np.repeat(np.arange(20), 5)
    values = np.repeat(rng.random(20), 5) + 0.05 * rng.random(100)
    lo, hi = cluster_bootstrap_ci(values, groups, n_boot=2000, seed=1)
    loop_rng = np.random.default_rng(99)
    means = []
    for _ in range(2000):
        pick = loop_rng.integers(0, 20, size=20)
        means.append(np.concatenate([values[groups == g] for g in pick]).mean())
    ref_lo, ref_hi = np.quantile(means, [0.025, 0.975])
    width = ref_hi - ref_lo
    assert abs(lo - ref_lo) < 0.1 * width and abs(hi - ref_hi) < 0.1 * width


def test_clustered_wider_than_iid_when_groups_correlate():
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(10), 20)
    values = np.repeat(rng.random(10), 20)
    lo_c, hi_c = cluster_bootstrap_ci(values, groups, seed=0)
    lo_i, hi_i = cluster_bootstrap_ci(values, np.arange(200), seed=0)
    assert hi_c - lo_c > 2 * (hi_i - lo_i)


def test_single_group_collapses_to_point():
    values = [0.1, 0.5, 0.9]
    assert cluster_bootstrap_ci(values, ["a", "a", "a"]) == (0.5, 0.5)


def test_ci_contains_mean_and_is_reproducible():
    rng = np.random.default_rng(4)
    values, groups = rng.random(80), rng.integers(0, 16, 80)
    lo, hi = cluster_bootstrap_ci(values, groups, seed=3)
    assert lo <= values.mean() <= hi and lo < hi
    assert cluster_bootstrap_ci(values, groups, seed=3) == (lo, hi)
    lo99, hi99 = cluster_bootstrap_ci(values, groups, ci=0.99, seed=3)
    assert lo99 <= lo and hi99 >= hi


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError):
        cluster_bootstrap_ci([], [])
    with pytest.raises(ValueError):
        cluster_bootstrap_ci([1.0, 2.0], [0])
    with pytest.raises(ValueError):
        cluster_bootstrap_ci([1.0], [0], ci=1.0)


# ------------------------------------------------------------------------------ leak_table


def judgments(model, decoding, judge, per_q):
    """Rows for {qid: (group, [leaked values...])}."""
    rows = []
    for qid, (group, leaks) in per_q.items():
        for i, v in enumerate(leaks):
            rows.append(dict(model=model, decoding=decoding, judge=judge, qid=qid,
                             group=group, sample_idx=i, leaked=v))
    return rows


T, F, N = True, False, None


@pytest.fixture
def frame():
    rows = []
    # sampled decoding, n = 4 nominal
    rows += judgments("full", "t1.0_p1.0", "fact", {
        "q1": ("a1", [T, F, F, F]),      # n=4 c=1
        "q2": ("a1", [T, T, F, F]),      # n=4 c=2
        "q3": ("a2", [F, F, F, N]),      # n=3 c=0, one judge failure
        "q4": ("a2", [T, N, N, F]),      # n=2 c=1, two failures
    })
    rows += judgments("retrain", "t1.0_p1.0", "fact", {
        "q1": ("a1", [F, F, F, F]),
        "q2": ("a1", [T, F, F, F]),
        "q3": ("a2", [F, F, F, F]),
        "q4": ("a2", [F, F, F, F]),
    })
    # greedy: one sample per question
    rows += judgments("full", "greedy", "fact", {
        "q1": ("a1", [F]), "q2": ("a1", [T]), "q3": ("a2", [F]), "q4": ("a2", [N]),
    })
    rows += judgments("retrain", "greedy", "fact", {
        "q1": ("a1", [F]), "q2": ("a1", [F]), "q3": ("a2", [F]), "q4": ("a2", [F]),
    })
    # a second judge with no retrain rows → excess is null
    rows += judgments("full", "t1.0_p1.0", "rouge", {
        "q1": ("a1", [T, T, T, T]), "q2": ("a1", [F, F, F, F]),
    })
    return pl.DataFrame(rows, schema={
        "model": pl.String, "decoding": pl.String, "judge": pl.String, "qid": pl.String,
        "group": pl.String, "sample_idx": pl.Int64, "leaked": pl.Boolean,
    })


def row(table, **key):
    sub = table.filter(pl.all_horizontal([pl.col(c) == v for c, v in key.items()]))
    assert sub.height == 1, key
    return sub.row(0, named=True)


def test_leak_table_hand_computed(frame):
    table = leak_table(frame, ks=[1, 2, 4, 8], n_boot=200, seed=0)
    assert tuple(table.columns) == LEAK_TABLE_COLUMNS
    assert table.sort(["model", "decoding", "judge", "k"]).equals(table)

    # k = 1: per-question c/n over valid judgments = 1/4, 2/4, 0/3, 1/2
    r = row(table, model="full", decoding="t1.0_p1.0", judge="fact", k=1)
    assert r["leak_at_k"] == pytest.approx((0.25 + 0.5 + 0 + 0.5) / 4)
    assert (r["n"], r["questions"], r["missing"]) == (4, 4, 3)
    assert r["ci_low"] <= r["leak_at_k"] <= r["ci_high"]
    # k = 2: q1 1-C(3,2)/C(4,2) = 1/2, q2 1-1/6 = 5/6, q3 0, q4 (n=2,c=1) 1
    r = row(table, model="full", decoding="t1.0_p1.0", judge="fact", k=2)
    assert r["leak_at_k"] == pytest.approx((0.5 + 5 / 6 + 0 + 1) / 4)
    assert r["questions"] == 4
    # k = 4: q3 (n=3) and q4 (n=2) are excluded, q1 and q2 both 1
    r = row(table, model="full", decoding="t1.0_p1.0", judge="fact", k=4)
    assert r["leak_at_k"] == 1.0 and r["questions"] == 2 and r["missing"] == 3
    # one group left (a1) → CI collapses
    assert r["ci_low"] == r["ci_high"] == 1.0
    # k = 8 > nominal n = 4: skipped, never reported as 0
    assert table.filter((pl.col("decoding") == "t1.0_p1.0") & (pl.col("k") == 8)).is_empty()

    # greedy only gets k = 1; q4's failed judgment is dropped, not counted as no-leak
    greedy = table.filter((pl.col("model") == "full") & (pl.col("decoding") == "greedy"))
    assert greedy["k"].to_list() == [1]
    r = greedy.row(0, named=True)
    assert r["leak_at_k"] == pytest.approx(1 / 3)
    assert (r["n"], r["questions"], r["missing"]) == (1, 3, 1)

    # retrain: k=1 → (0 + 1/4 + 0 + 0)/4; k=2 → (0 + 1/2 + 0 + 0)/4
    rr1 = row(table, model="retrain", decoding="t1.0_p1.0", judge="fact", k=1)
    assert rr1["leak_at_k"] == pytest.approx(1 / 16) and rr1["missing"] == 0
    assert rr1["excess_over_retrain"] == 0.0
    r = row(table, model="full", decoding="t1.0_p1.0", judge="fact", k=1)
    assert r["excess_over_retrain"] == pytest.approx(1.25 / 4 - 1 / 16)
    r = row(table, model="full", decoding="t1.0_p1.0", judge="fact", k=2)
    assert r["excess_over_retrain"] == pytest.approx((0.5 + 5 / 6 + 1) / 4 - 0.5 / 4)
    r = row(table, model="full", decoding="greedy", judge="fact", k=1)
    assert r["excess_over_retrain"] == pytest.approx(1 / 3)

    # no retrain rows for the rouge judge → null excess
    r = row(table, model="full", decoding="t1.0_p1.0", judge="rouge", k=2)
    assert r["leak_at_k"] == 0.5 and r["excess_over_retrain"] is None


def test_leak_table_is_reproducible_row_by_row(frame):
    a = leak_table(frame, ks=[1, 2, 4], n_boot=200, seed=5)
    b = leak_table(frame, ks=[1, 2, 4], n_boot=200, seed=5)
    assert a.equals(b)
    # adding other models/decodings does not change an existing row's CI
    only = frame.filter(pl.col("model") == "full")
    c = leak_table(only, ks=[1, 2, 4], n_boot=200, seed=5)
    key = (pl.col("model") == "full") & (pl.col("decoding") == "t1.0_p1.0")
    assert a.filter(key).select("ci_low", "ci_high").equals(
        c.filter(key).select("ci_low", "ci_high"))


def test_leak_table_all_failed_keeps_visible_row():
    rows = judgments("npo", "greedy", "llm", {"q1": ("a", [N]), "q2": ("b", [N])})
    table = leak_table(pl.DataFrame(rows), ks=[1, 2])
    assert table.height == 1
    r = table.row(0, named=True)
    assert r["leak_at_k"] is None and r["questions"] == 0 and r["missing"] == 2


def test_leak_table_rejects_duplicates_and_missing_columns(frame):
    with pytest.raises(ArtifactError, match="duplicated"):
        leak_table(pl.concat([frame, frame.head(1)]), ks=[1])
    with pytest.raises(ArtifactError, match="group"):
        leak_table(frame.drop("group"), ks=[1])


def test_leak_table_empty_frame_has_contract_columns(frame):
    table = leak_table(frame.head(0), ks=[1])
    assert table.is_empty() and tuple(table.columns) == LEAK_TABLE_COLUMNS


# ------------------------------------------------------------------------------ utility + summary


def test_utility_table():
    df = pl.DataFrame({
        "model": ["full"] * 4 + ["npo"] * 4,
        "qid": ["r1", "r2", "r3", "r4"] * 2,
        "leaked": [T, T, F, N, T, F, F, F],
    })
    u = utility_table(df)
    assert u.columns == ["model", "retain_accuracy", "questions", "missing"]
    assert u.row(0) == ("full", pytest.approx(2 / 3), 3, 1)
    assert u.row(1) == ("npo", 0.25, 4, 0)


def test_summary_markdown(frame):
    graddiff = frame.filter(pl.col("model") == "full").with_columns(model=pl.lit("graddiff"))
    frame_x = pl.concat([frame, graddiff])
    table = leak_table(frame_x, ks=[1, 2, 4], n_boot=100)
    util = pl.DataFrame({"model": ["full", "retrain", "graddiff"],
                         "retain_accuracy": [0.9, 0.88, 0.5],
                         "questions": [4, 4, 4], "missing": [0, 0, 0]})
    md = summary_markdown(table, util)
    lines = md.strip().splitlines()
    body = [ln for ln in lines if ln.startswith("| ") and not ln.startswith("| model")]
    assert [ln.split("|")[1].strip() for ln in body] == ["full", "retrain", "graddiff"]
    assert "leak@4" in md and "0.33 [" in md  # greedy leak of full with a CI
    assert "0.90" in md and "+0.00" in md
    # explicit k_max, unknown decoding → dashes rather than a crash
    assert "–" in summary_markdown(table, util, headline_decoding="t0.2_p0.2", k_max=2)
