"""RULE vs its base: the paired, clustered difference of leak@k (leakk.estimate.paired_difference_table)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leakk.stats.estimate import (
    PAIRED_COLUMNS,
    cluster_bootstrap_ci,
    hall_interval,
    leak_table,
    paired_difference_table,
    paired_markdown,
)


def _rows(model, decoding, per_q):
    """{qid: (group, [leaked …])} → judgment rows."""
    return [{"model": model, "decoding": decoding, "judge": "fact", "qid": q, "group": g, "sample_idx": i, "leaked": v}
            for q, (g, leaks) in per_q.items() for i, v in enumerate(leaks)]


def _brute(n, c, k):
    return 1 - math.comb(n - c, k) / math.comb(n, k)


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    rows = []
    for model, rate in (("graddiff", 0.3), ("rule_graddiff", 0.05), ("retrain", 0.0)):
        per_q = {f"q{i}": (f"a{i % 5}", list(rng.random(8) < rate * (1 + i % 3))) for i in range(20)}
        if model == "rule_graddiff":
            per_q["q3"] = ("a3", [None] * 8)       # every judgment failed: not paired
            per_q["q4"] = ("a4", per_q["q4"][1][:3] + [None] * 5)  # 3 valid: pairs for k ≤ 3 only
        if model == "graddiff":
            del per_q["q19"]  # the base lacks a question
        rows += _rows(model, "t1.0_p1.0", per_q)
        rows += _rows(model, "greedy", {q: (g, leaks[:1]) for q, (g, leaks) in per_q.items()})
    return pl.DataFrame(rows, schema={"model": pl.String, "decoding": pl.String, "judge": pl.String, "qid": pl.String,
                                      "group": pl.String, "sample_idx": pl.Int64, "leaked": pl.Boolean})


def test_difference_by_brute_force(frame):
    table = paired_difference_table(frame, {"rule_graddiff": "graddiff"}, [1, 2, 4, 8], n_boot=200)
    assert tuple(table.columns) == PAIRED_COLUMNS
    assert table.filter(pl.col("decoding") == "greedy")["k"].to_list() == [1]
    counts = {(r["model"], r["qid"]): r for r in frame.filter(pl.col("decoding") == "t1.0_p1.0")
              .group_by("model", "qid").agg(pl.col("group").first(), pl.col("leaked").is_not_null().sum().alias("n"),
                                            pl.col("leaked").fill_null(False).sum().alias("c")).iter_rows(named=True)}
    for r in table.filter(pl.col("decoding") == "t1.0_p1.0").iter_rows(named=True):
        k, d, groups = r["k"], [], []
        for i in range(20):
            a, b = counts.get(("rule_graddiff", f"q{i}")), counts.get(("graddiff", f"q{i}"))
            if a is None or b is None or a["n"] < k or b["n"] < k:
                continue
            d.append(_brute(a["n"], a["c"], k) - _brute(b["n"], b["c"], k))
            groups.append(a["group"])
        assert r["questions"] == len(d) == (18 if k <= 3 else 17)  # q19 unpaired, q3 failed, q4 for k ≤ 3
        assert r["difference"] == pytest.approx(np.mean(d), abs=1e-12)
        assert r["difference"] == pytest.approx(r["leak_at_k"] - r["base_leak_at_k"], abs=1e-12)
        assert r["groups"] == len(set(groups))
        lo, hi = cluster_bootstrap_ci(np.array(d), np.array(groups), method="hall", bounds=(-1, 1))
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
        assert r["relative_change"] == pytest.approx(r["difference"] / r["base_leak_at_k"])


def test_same_questions_equal_the_leak_table_difference(frame):
    """With every judgment valid in both, the difference of means is the leak tables' difference."""
    clean = frame.filter(pl.col("qid").is_in(["q3", "q4", "q19"]).not_())
    paired = paired_difference_table(clean, {"rule_graddiff": "graddiff"}, [1, 8], ci_method="t", n_boot=100)
    leak = leak_table(clean, [1, 8], n_boot=100)
    for r in paired.iter_rows(named=True):
        get = lambda m: leak.filter((pl.col("model") == m) & (pl.col("decoding") == r["decoding"])
                                    & (pl.col("k") == r["k"]))["leak_at_k"][0]
        assert r["difference"] == pytest.approx(get("rule_graddiff") - get("graddiff"), abs=1e-12)


def test_zero_base_and_unknown_pairs(frame):
    table = paired_difference_table(frame, {"rule_graddiff": "retrain"}, [1], n_boot=50)
    assert table["relative_change"].is_null().all()
    assert paired_difference_table(frame, {}, [1]).is_empty()
    assert paired_difference_table(frame, {"nope": "graddiff"}, [1]).is_empty()


def test_all_minus_one_gets_the_rescaled_exact_bound():
    """Every question leaks under the base and never under the model: difference −1 everywhere."""
    g = 6
    low, high = hall_interval(np.full(g, -4.0), np.full(g, 4), 0.95, bounds=(-1.0, 1.0))
    assert float(low) == -1.0 and float(high) == pytest.approx(-1 + 2 * (1 - 0.05 ** (1 / g)))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=4, max_size=24), st.integers(1, 8))
def test_interval_contains_the_difference_and_stays_in_bounds(pairs, k):
    rows = []
    for i, (ca, cb) in enumerate(pairs):
        rows += _rows("m", "d", {f"q{i}": (f"g{i % 4}", [j < ca for j in range(8)])})
        rows += _rows("b", "d", {f"q{i}": (f"g{i % 4}", [j < cb for j in range(8)])})
    r = paired_difference_table(pl.DataFrame(rows), {"m": "b"}, [k]).row(0, named=True)
    assert -1 <= r["ci_low"] <= r["difference"] + 1e-12 and r["difference"] - 1e-12 <= r["ci_high"] <= 1


def test_markdown_says_whether_the_ci_excludes_zero(frame):
    table = paired_difference_table(frame, {"rule_graddiff": "graddiff"}, [1, 8], n_boot=50)
    md = paired_markdown(table, "fact", "t1.0_p1.0")
    row = [ln for ln in md.splitlines() if ln.startswith("| rule_graddiff")][0]
    r8 = table.filter((pl.col("decoding") == "t1.0_p1.0") & (pl.col("k") == 8)).row(0, named=True)
    assert f"{r8['difference']:+.2f} [{r8['ci_low']:+.2f}, {r8['ci_high']:+.2f}]" in row
    assert ("excludes 0" if r8["ci_high"] < 0 or r8["ci_low"] > 0 else "includes 0") in row.split("|")[4]
    assert "Δ leak@8" in md and paired_markdown(table, "fact", "t0.5_p0.5") == ""
