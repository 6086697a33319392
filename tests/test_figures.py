"""Figures render non-empty PNGs from a small synthetic leak table."""

from __future__ import annotations

import polars as pl
import pytest

from leakk.core.errors import ArtifactError
from leakk.report.figures import plot_greedy_vs_sampled, plot_leak_curves

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


# ------------------------------------------------- what the figures show (not only that they exist)

import numpy as np  # noqa: E402

from leakk.report import figures  # noqa: E402
from leakk.report.figures import (  # noqa: E402
    leak_rate_shares,
    plot_bound_vs_sampled,
    plot_leak_rate_distribution,
    plot_rule_trajectory,
    spread_labels,
)


@pytest.fixture
def captured(monkeypatch):
    """The figures the plot functions would save (drawn, not closed)."""
    figs = []

    def keep(fig, out_path):
        fig.canvas.draw()
        figs.append(fig)

    monkeypatch.setattr(figures, "_save", keep)
    yield figs
    import matplotlib.pyplot as plt

    for f in figs:
        plt.close(f)


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _legends_off_axes(fig):
    renderer = fig.canvas.get_renderer()
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert legends
    for leg in legends:
        box = leg.get_window_extent(renderer)
        for ax in fig.axes:
            if ax.get_visible():
                assert not _overlaps(box, ax.get_window_extent(renderer)), "legend covers an axes"


@pytest.fixture
def zero_leak():
    """retrain and two RULE models at exactly 0 everywhere, greedy included (the pile-up)."""
    rows = []
    for mi, model in enumerate(["full", "retrain", "npo", "rule_npo", "rule_graddiff"]):
        at_zero = model in ("retrain", "rule_npo", "rule_graddiff")
        rows.append(dict(model=model, decoding="greedy", judge="fact", k=1,
                         leak_at_k=0.0 if at_zero else 0.1 * (mi + 1), ci_low=0.0, ci_high=0.0 if at_zero else 0.3))
        for k in [1, 2, 4, 8]:
            v = 0.0 if at_zero else min(1.0, 0.2 * (mi + 1) * k ** 0.5)
            rows.append(dict(model=model, decoding="t1.0_p1.0", judge="fact", k=k, leak_at_k=v,
                             ci_low=max(0.0, v - 0.05), ci_high=min(1.0, v + 0.05)))
    return pl.DataFrame(rows).with_columns(n=pl.lit(8), questions=pl.lit(10), missing=pl.lit(0),
                                           excess_over_retrain=pl.lit(None, pl.Float64))


def test_leak_curves_show_every_model_by_line_marker_and_label(zero_leak, captured, tmp_path):
    plot_leak_curves(zero_leak, "fact", tmp_path / "c.png")
    (fig,) = captured
    ax = fig.axes[0]
    lines = {ln.get_gid(): ln for ln in ax.lines if ln.get_gid()}
    models = ["full", "retrain", "npo", "rule_graddiff", "rule_npo"]
    for m in models:
        want = zero_leak.filter((pl.col("model") == m) & (pl.col("decoding") == "t1.0_p1.0")).sort("k")
        np.testing.assert_allclose(lines[f"sampled:{m}"].get_xdata(), want["k"].to_numpy())
        np.testing.assert_allclose(lines[f"sampled:{m}"].get_ydata(), want["leak_at_k"].to_numpy())
        g = zero_leak.filter((pl.col("model") == m) & (pl.col("decoding") == "greedy"))["leak_at_k"][0]
        assert set(lines[f"greedy:{m}"].get_ydata()) == {g}
        assert lines[f"greedy:{m}"].get_linestyle() == "--"
        # the greedy line carries the model's marker, not only its colour
        assert lines[f"greedy:{m}"].get_marker() == lines[f"sampled:{m}"].get_marker()
    assert len({lines[f"sampled:{m}"].get_marker() for m in models}) == len(models)
    # models at exactly 0 are drawn hollow
    assert lines["sampled:retrain"].get_markerfacecolor() == "none"
    assert lines["sampled:full"].get_markerfacecolor() != "none"
    # every model is labelled directly, and the three at 0 get labels that do not overlap
    renderer = fig.canvas.get_renderer()
    labels = {t.get_text(): t for t in ax.texts}
    assert set(models) <= set(labels)
    from matplotlib.text import Text

    # the text's own box (an Annotation's extent also covers its leader line)
    boxes = [Text.get_window_extent(labels[m], renderer) for m in ("retrain", "rule_npo", "rule_graddiff")]
    assert not any(_overlaps(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    _legends_off_axes(fig)


def test_spread_labels_keeps_order_and_gap():
    got = spread_labels([0.0, 0.0, 0.5, 0.0, 1.0], 0.1)
    srt = sorted(got)
    assert all(b - a >= 0.1 - 1e-12 for a, b in zip(srt, srt[1:]))
    assert max(got) <= 1.0 + 1e-12 and min(got) >= 0.0
    assert spread_labels([0.2, 0.7], 0.1) == [0.2, 0.7]


def test_greedy_vs_sampled_marks_zero_bars(zero_leak, captured, tmp_path):
    plot_greedy_vs_sampled(zero_leak, "fact", 8, "t1.0_p1.0", tmp_path / "b.png")
    (fig,) = captured
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    # 5 models × 2 bars, each labelled; retrain and the RULE models read "0" twice each
    assert len(texts) == 10 and texts.count("0") == 6
    heights = [p.get_height() for p in ax.patches]
    assert heights.count(0.0) == 6
    assert [t.get_text() for t in ax.get_xticklabels()] == ["full", "retrain", "npo", "rule_graddiff", "rule_npo"]
    _legends_off_axes(fig)


def test_rule_trajectory_has_cis_and_legend_off_data(captured, tmp_path):
    log = pl.DataFrame({"round": [0, 1, 2], "model": ["rule_npo"] * 3, "eval_judge": ["fact"] * 3,
                        "eval_decoding": ["t1.0_p1.0"] * 3, "eval_leak_at_1": [0.1, 0.05, 0.0],
                        "eval_leak_at_1_ci_low": [0.05, 0.0, 0.0], "eval_leak_at_1_ci_high": [0.2, 0.1, 0.0],
                        "eval_leak_at_64": [0.5, 0.2, 0.1], "eval_leak_at_64_ci_low": [0.4, 0.1, 0.0],
                        "eval_leak_at_64_ci_high": [0.6, 0.3, 0.2], "retain_accuracy": [0.8, 0.78, 0.77]})
    plot_rule_trajectory(log, tmp_path / "r.png")
    (fig,) = captured
    ax = fig.axes[0]
    # one errorbar container per k, whose bars span exactly the CI
    assert len(ax.containers) == 2
    segs = ax.containers[1].lines[2][0].get_segments()
    np.testing.assert_allclose([s[:, 1] for s in segs], [[0.4, 0.6], [0.1, 0.3], [0.0, 0.2]])
    _legends_off_axes(fig)


def test_bound_vs_sampled_shows_bound_and_sampled(captured, tmp_path):
    ks = [1, 2, 4, 10_000]
    rows = []
    for m in ("full", "npo"):
        for k in ks:
            rows.append(dict(model=m, decoding="t1.0_p1.0", judge="fact", k=k, bound=1 - 0.9 ** k,
                             questions=3, leak_at_k=None if k > 4 else 0.5, ci_low=None if k > 4 else 0.4,
                             ci_high=None if k > 4 else 0.6, consistent=None))
    table = pl.DataFrame(rows)
    plot_bound_vs_sampled(table, "fact", "t1.0_p1.0", tmp_path / "x.png")
    (fig,) = captured
    ax = fig.axes[0]
    assert ax.get_title() == "full"
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [1 - 0.9 ** k for k in ks])
    assert ax.get_xscale() == "log"


def test_leak_rate_shares_and_figure(captured, tmp_path):
    counts = pl.DataFrame({"model": ["m"] * 5, "decoding": ["d"] * 5, "judge": ["j"] * 5,
                           "qid": list("abcde"), "n": [10] * 5, "c": [0, 1, 3, 9, 10]})
    assert leak_rate_shares(counts)["m"] == [0.2, 0.2, 0.2, 0.2, 0.2]
    plot_leak_rate_distribution(counts, "j", "d", tmp_path / "d.png")
    (fig,) = captured
    widths = [p.get_width() for p in fig.axes[0].patches]
    assert widths == pytest.approx([0.2] * 5)


def _grid_leak():
    from leakk.sampling.decoding import Decoding

    rows = []
    for mi, m in enumerate(["full", "retrain", "npo"]):
        rows.append(dict(model=m, decoding="greedy", judge="fact", k=1, leak_at_k=0.0, ci_low=0.0, ci_high=0.0))
        for t in (0.2, 0.8, 1.0):
            for p in (0.2, 0.8, 1.0):
                for k in (1, 8):
                    v = 0.0 if m == "retrain" else round(min(1.0, t * p * k / 8 / (mi + 1)), 4)
                    rows.append(dict(model=m, decoding=Decoding(t, p).name, judge="fact", k=k, leak_at_k=v,
                                     ci_low=v, ci_high=v))
    return pl.DataFrame(rows).with_columns(n=pl.lit(8), questions=pl.lit(10), missing=pl.lit(0),
                                           excess_over_retrain=pl.lit(None, pl.Float64))


def test_decoding_heatmap_cells_equal_the_leak_table(captured, tmp_path):
    from leakk.report.figures import plot_decoding_heatmap

    plot_decoding_heatmap(_grid_leak(), "fact", 8, tmp_path / "h.png")
    (fig,) = captured
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["full (greedy 0.00)", "retrain (greedy 0.00)", "npo (greedy 0.00)"]
    cells = panels[0].images[0].get_array()
    # rows: T = 0.2, 0.8, 1.0; columns: top-p = 0.2, 0.8, 1.0; leak@8 = T·p for full
    np.testing.assert_allclose(cells, [[0.04, 0.16, 0.2], [0.16, 0.64, 0.8], [0.2, 0.8, 1.0]])
    assert [t.get_text() for t in panels[0].texts][:3] == ["0.04", "0.16", "0.20"]
    np.testing.assert_allclose(panels[1].images[0].get_array(), np.zeros((3, 3)))
    # k is selectable
    plot_decoding_heatmap(_grid_leak(), "fact", 1, tmp_path / "h1.png")
    np.testing.assert_allclose([ax for ax in captured[1].axes if ax.images][0].images[0].get_array()[2, 2], 1 / 8)


def test_decoding_grid_detection():
    from leakk.report.figures import decoding_grid

    assert decoding_grid(["greedy", "t1.0_p1.0", "t0.8_p0.8"]) is None
    assert decoding_grid(["greedy", "t1.0_p1.0", "t1.0_p0.8", "t0.8_p1.0"]) is None  # a corner missing
    assert decoding_grid(["t1.0_p1.0", "t1.0_p0.8", "t0.8_p1.0", "t0.8_p0.8"]) == ([0.8, 1.0], [0.8, 1.0])
    with pytest.raises(ArtifactError, match="grid"):
        from leakk.report.figures import plot_decoding_heatmap

        plot_decoding_heatmap(_grid_leak().filter(pl.col("decoding") != "t0.2_p0.2"), "fact", 8, "x.png")


def test_decoding_grid_preset_is_a_complete_valid_params_file():
    from pathlib import Path

    from leakk.config import load_params
    from leakk.sampling.decoding import decoding_names
    from leakk.report.figures import decoding_grid

    root = Path(__file__).resolve().parents[1]
    p = load_params(root / "configs" / "decoding_grid.yaml")
    assert decoding_grid(decoding_names(p)) == ([0.2, 0.8, 1.0], [0.2, 0.8, 1.0])
    assert decoding_names(p)[0] == "greedy"
    base = load_params(root / "params.yaml")
    assert {k: v for k, v in p.items() if k != "sample"} == {k: v for k, v in base.items() if k != "sample"}


def test_leak_rate_distribution_legend_sits_right_under_the_x_label(captured, tmp_path):
    """No band of empty space between the axes' label and the legend (any number of models),
    and the legend covers neither the bars nor the label."""
    for n_models in (2, 7):
        counts = pl.DataFrame({"model": [f"m{i}" for i in range(n_models) for _ in range(4)],
                               "decoding": ["d"] * 4 * n_models, "judge": ["j"] * 4 * n_models,
                               "qid": list("abcd") * n_models, "n": [10] * 4 * n_models,
                               "c": [0, 1, 5, 10] * n_models})
        plot_leak_rate_distribution(counts, "j", "d", tmp_path / "d.png")
        fig = captured[-1]
        renderer = fig.canvas.get_renderer()
        (legend,) = fig.legends
        label = fig.axes[0].xaxis.label.get_window_extent(renderer)
        box = legend.get_window_extent(renderer)
        gap = label.y0 - box.y1
        assert 0 <= gap <= 0.25 * fig.dpi, (n_models, gap / fig.dpi)
        assert box.y0 >= 0  # inside the figure
        _legends_off_axes(fig)


def _calibration_rows(points):
    rows = [dict(judge="rougeL", model=m, decoding="t1.0_p1.0", items=10, tp=1, fp=1, fn=1, tn=7, k=64,
                 leak_at_k_fact=x, leak_at_k=y) for m, (x, y) in points.items()]
    return pl.DataFrame(rows)


def test_calibration_labels_every_model_readably_inside_the_axes(captured, tmp_path):
    """Models that sit on the same point (three at (0, 0)) get labels that do not overlap, and
    a model at (1, 1) is labelled inside the axes (not cut at the edge)."""
    from matplotlib.text import Text

    from leakk.report.figures import plot_calibration

    points = {"full": (1.0, 1.0), "retrain": (0.0, 0.0), "rule_graddiff": (0.0, 0.05), "rule_npo": (0.0, 0.0),
              "ga": (0.32, 0.45), "npo": (0.43, 0.53), "graddiff": (0.43, 0.58)}
    plot_calibration(_calibration_rows(points), tmp_path / "c.png", "t1.0_p1.0")
    (fig,) = captured
    ax = fig.axes[1]
    renderer = fig.canvas.get_renderer()
    labels = {t.get_gid().removeprefix("label:"): t for t in ax.texts if (t.get_gid() or "").startswith("label:")}
    assert set(labels) == set(points)
    for name, text in labels.items():
        assert text.xy == pytest.approx(points[name])  # each label points at its model's point
    boxes = {name: Text.get_window_extent(t, renderer) for name, t in labels.items()}
    frame = ax.get_window_extent(renderer)
    for name, b in boxes.items():
        assert frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1, name
    names = sorted(boxes)
    assert not [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if _overlaps(boxes[a], boxes[b])]
