"""Figures render non-empty PNGs from a small synthetic leak table."""

from __future__ import annotations

import polars as pl
import pytest

from leakk.errors import ArtifactError
from leakk.figures import plot_greedy_vs_sampled, plot_leak_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def leak():
    rows = []
    for mi, model in enumerate(["full", "retrain", "npo"]):
        rows.append(dict(model=model, decoding="greedy", judge="fact", k=1,
                         leak_at_k=0.1 * mi, ci_low=0.0, ci_high=0.2 * mi + 0.05))
        for dec in ["t1.0_p1.0", "t0.2_p0.2"]:
            for j, k in enumerate([1, 2, 4, 8, 16]):
                v = min(1.0, 0.1 * (mi + 1) * (j + 1) / 2)
                rows.append(dict(model=model, decoding=dec, judge="fact", k=k, leak_at_k=v,
                                 ci_low=max(0.0, v - 0.05), ci_high=min(1.0, v + 0.05)))
    df = pl.DataFrame(rows)
    return df.with_columns(n=pl.lit(16), questions=pl.lit(10), missing=pl.lit(0),
                           excess_over_retrain=pl.lit(None, pl.Float64))


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC)
    # atomic write leaves no temporary sibling behind
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_leak_curves_png(leak, tmp_path):
    out = tmp_path / "figs" / "curves.png"
    plot_leak_curves(leak, "fact", out)
    assert_png(out)


def test_greedy_vs_sampled_png(leak, tmp_path):
    out = tmp_path / "bars.png"
    plot_greedy_vs_sampled(leak, "fact", 16, "t1.0_p1.0", out)
    assert_png(out)


def test_unknown_judge_is_a_clear_error(leak, tmp_path):
    with pytest.raises(ArtifactError, match="judge"):
        plot_leak_curves(leak, "nope", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
