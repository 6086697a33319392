"""Figures from the leak table (docs/design.md §4 "leak table").

matplotlib is imported lazily with the non-interactive Agg backend, so the package imports
without a display and a headless cluster job never tries to open a window. Every PNG is
written to a temporary sibling and renamed into place (``leakk.core.io.atomic_path``), so an
interrupted run never leaves a truncated figure that Snakemake/DVC would take as done.
"""

from __future__ import annotations

import os

import polars as pl

from leakk.core.errors import ArtifactError
from leakk.core.layout import ATTACK_SEP
from leakk.stats.estimate import model_order as _model_order
from leakk.core.io import atomic_path

GREEDY = "greedy"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_path: str | os.PathLike) -> None:
    plt = _pyplot()
    try:
        with atomic_path(out_path) as tmp:
            # the temporary file ends in .tmp, so the format must be given explicitly
            fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    finally:
        plt.close(fig)


def _judge_rows(leak: pl.DataFrame, judge: str) -> pl.DataFrame:
    sub = leak.filter((pl.col("judge") == judge) & pl.col("leak_at_k").is_not_null())
    if sub.is_empty():
        raise ArtifactError(f"leak table has no rows for judge {judge!r}")
    return sub


#: one marker and line style per model (in model order), so colour is never the only cue
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")
LINESTYLES = ("-", "--", "-.", ":")


def model_styles(models) -> dict[str, dict]:
    """Colour, marker and line style per model, in :func:`leakk.stats.estimate.model_order`."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {m: {"color": cmap(i % 10), "marker": MARKERS[i % len(MARKERS)]}
            for i, m in enumerate(_model_order(models))}


def spread_labels(values, min_gap: float, low: float = 0.0, high: float = 1.0) -> list[float]:
    """Label heights near ``values`` with at least ``min_gap`` between neighbours (order kept),
    inside [low, high] where the range allows: direct labels of lines that end together
    (several models at 0) stay readable."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    pos = [float(values[i]) for i in order]
    for j in range(1, len(pos)):
        pos[j] = max(pos[j], pos[j - 1] + min_gap)
    overflow = pos[-1] - high if pos else 0.0
    if overflow > 0:
        pos = [max(low, p - overflow) for p in pos]
        for j in range(1, len(pos)):
            pos[j] = max(pos[j], pos[j - 1] + min_gap)
    out = [0.0] * len(values)
    for j, i in enumerate(order):
        out[i] = pos[j]
    return out


def finish_k_panel(ax, title: str, names: list[str], ends: list[float], styles: dict, kmax: int,
                   ks: list[int]) -> None:
    """One leak@k-vs-k panel's furniture: each curve named at its end (labels spread apart, so
    no legend lookup), a log₂ k axis ticked at the measured ks, fixed y limits, title, grid."""
    for name, y, ylab in zip(names, ends, spread_labels(ends, 0.075, 0.0, 1.0)):
        ax.annotate(name, xy=(kmax, y), xytext=(kmax * 1.6, ylab), fontsize=7.5, va="center",
                    color=styles[name]["color"], annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": styles[name]["color"]})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlim(right=kmax * 6)  # room for the direct labels
    ax.set_ylim(-0.04, 1.04)
    ax.set_title(title)
    ax.set_xlabel("k (samples)")
    ax.grid(True, which="major", alpha=0.3)


def ci_label(ci: float | None) -> str:
    """``95% CI`` for a known level (``estimate.ci``), else ``CI``: legends never state a
    level the run did not use."""
    return f"{ci:.0%} CI" if ci else "CI"


def plot_leak_curves(
    leak: pl.DataFrame, judge: str, out_path: str | os.PathLike, greedy: str = GREEDY, ci: float | None = None
) -> None:
    """leak@k vs k (log-2 axis), one panel per sampled decoding, one line + CI band per model.

    Each model has its own colour *and* marker and is labelled at the end of its line
    (labels spread apart where lines end together, e.g. several models at 0). Its greedy
    leak is a dashed horizontal line with the same colour and marker: the gap between it
    and the sampled curve is the paper's "illusion of forgetting". Points at exactly 0 are
    drawn hollow on the zero line, so a model at 0 is visibly there. The legend sits below
    the panels, off the data.
    """
    import numpy as np

    plt = _pyplot()
    sub = _judge_rows(leak, judge)
    decodings = sorted(d for d in sub["decoding"].unique().to_list() if d != greedy)
    if not decodings:
        raise ArtifactError(f"leak table has no sampled decodings for judge {judge!r}")
    models = _model_order(sub["model"].to_list())
    styles = model_styles(models)
    greedy_leak = {
        r["model"]: r["leak_at_k"]
        for r in sub.filter((pl.col("decoding") == greedy) & (pl.col("k") == 1)).iter_rows(
            named=True
        )
    }

    fig, axes = facet_grid(plt, len(decodings), f"leak@k ({judge})", width=5.0, height=3.8, max_cols=3)
    for ax, dec in zip(axes.flat, decodings):
        part = sub.filter(pl.col("decoding") == dec)
        ends, names, kmax = [], [], 1
        for m in models:
            rows = part.filter(pl.col("model") == m).sort("k")
            if rows.is_empty():
                continue
            st = styles[m]
            k = rows["k"].to_numpy()
            v = rows["leak_at_k"].to_numpy()
            kmax = max(kmax, int(k.max()))
            ax.plot(k, v, ls="-", lw=1.4, color=st["color"], marker=st["marker"], ms=4.5,
                    markerfacecolor="none" if np.all(v == 0) else st["color"], label=m, gid=f"sampled:{m}")
            lo, hi = rows["ci_low"].to_numpy(), rows["ci_high"].to_numpy()
            ax.fill_between(k, lo, hi, color=st["color"], alpha=0.15, linewidth=0)
            if m in greedy_leak and greedy_leak[m] is not None:
                ax.plot([k.min(), k.max()], [greedy_leak[m]] * 2, ls="--", lw=1.0, color=st["color"],
                        marker=st["marker"], ms=4, markevery=[0], markerfacecolor="none",
                        gid=f"greedy:{m}")
            ends.append(float(v[-1]))
            names.append(m)
        finish_k_panel(ax, dec, names, ends, styles, kmax, sorted(set(part["k"].to_list())))
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=styles[m]["color"], marker=styles[m]["marker"], ls="-") for m in models]
    labels = list(models)
    handles += [Line2D([], [], color="grey", ls="-"), Line2D([], [], color="grey", ls="--", marker="o",
                                                            markerfacecolor="none")]
    labels += [f"sampled leak@k (band: {ci_label(ci)})", "greedy leak (same colour/marker)"]
    fig.suptitle(f"leak@k by decoding — judge: {judge}")
    fig.tight_layout(rect=(0, 0.08 + 0.02 * (len(labels) // 5), 1, 1))
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=min(5, len(labels)),
               frameon=False, fontsize=8)
    _save(fig, out_path)


def plot_greedy_vs_sampled(
    leak: pl.DataFrame,
    judge: str,
    k: int,
    decoding: str,
    out_path: str | os.PathLike,
    greedy: str = GREEDY,
) -> None:
    """Grouped bars per model: greedy leak (grey, hatched) beside sampled leak@k (red), with
    CI error bars. Every bar is labelled with its value, so a bar of height 0 reads "0"
    rather than looking absent; a value that was not measured reads "n/a". The legend sits
    above the axes, off the data.
    """
    import numpy as np

    plt = _pyplot()
    sub = _judge_rows(leak, judge)
    g = {r["model"]: r for r in sub.filter(
        (pl.col("decoding") == greedy) & (pl.col("k") == 1)).iter_rows(named=True)}
    s = {r["model"]: r for r in sub.filter(
        (pl.col("decoding") == decoding) & (pl.col("k") == k)).iter_rows(named=True)}
    models = _model_order(list(g) + list(s))
    if not models:
        raise ArtifactError(f"no greedy or {decoding} k={k} rows for judge {judge!r}")

    def series(rows: dict) -> tuple[np.ndarray, np.ndarray]:
        val = np.array([rows[m]["leak_at_k"] if m in rows else np.nan for m in models], float)
        lo = np.array([rows[m]["ci_low"] if m in rows else np.nan for m in models], float)
        hi = np.array([rows[m]["ci_high"] if m in rows else np.nan for m in models], float)
        err = np.vstack([np.clip(val - lo, 0, None), np.clip(hi - val, 0, None)])
        return val, np.nan_to_num(err)

    x = np.arange(len(models))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(models) + 2), 3.9))
    for offset, rows, label, color, hatch in (
        (-width / 2, g, "greedy", "#9a9a9a", "//"),
        (width / 2, s, f"leak@{k} ({decoding})", "#d62728", None),
    ):
        val, err = series(rows)
        ax.bar(x + offset, np.nan_to_num(val), width, yerr=err, capsize=3, label=label,
                      color=color, edgecolor="black", linewidth=0.5, hatch=hatch)
        for xi, v, e in zip(x + offset, val, err[1]):
            text = "n/a" if np.isnan(v) else ("0" if v == 0 else f"{v:.2f}")
            ax.text(xi, (0 if np.isnan(v) else v + e) + 0.015, text, ha="center", va="bottom", fontsize=7,
                    gid=f"value:{label}")
    ax.set_xticks(x, models, rotation=20, ha="right")
    ax.set_ylim(0, 1.12)
    ax.set_ylabel(f"leak ({judge})")
    ax.legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
    ax.set_title(f"Greedy vs sampled leak@{k} — judge: {judge}", pad=24)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, out_path)


def _rule_ks(columns) -> list[int]:
    """The k of every ``eval_leak_at_<k>`` column (not its ``_ci_low``/``_ci_high``)."""
    import re

    return sorted({int(m.group(1)) for c in columns if (m := re.fullmatch(r"eval_leak_at_(\d+)", c))})


def plot_rule_trajectory(log: pl.DataFrame, out_path: str | os.PathLike, ci: float | None = None) -> None:
    """RULE across rounds: leak@1 and leak@n with their clustered-bootstrap CIs (error bars,
    where the log has ``eval_leak_at_<k>_ci_low/high``) on the left axis, retain accuracy on
    the right. The legend sits below the axes, off the data.

    Round 0 is the base method's model; every point is measured on evaluation-seed samples of
    the held-out phrasing that no round trained on. Where the log has the rounds' own
    samples (``train_leak_at_<n>``: round r's samples are of round r−1's model, in the training
    phrasings), they are drawn too, grey, so the gap between the phrasings RULE sees and the
    one it is graded on stays visible.
    """
    import numpy as np

    plt = _pyplot()
    log = log.sort("round")
    first = log.row(0, named=True)
    rounds = log["round"].to_list()
    ks = _rule_ks(log.columns)
    fig, ax = plt.subplots(figsize=(5.8, 4.2))
    for k, style, color in zip(ks, ("o--", "s-"), ("tab:blue", "tab:red")):
        v = np.array(log[f"eval_leak_at_{k}"].to_list(), dtype=float)
        lo_col, hi_col = f"eval_leak_at_{k}_ci_low", f"eval_leak_at_{k}_ci_high"
        if lo_col in log.columns:
            lo = np.array(log[lo_col].to_list(), dtype=float)
            hi = np.array(log[hi_col].to_list(), dtype=float)
            err = np.nan_to_num(np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)]))
            ax.errorbar(rounds, v, yerr=err, fmt=style, color=color, capsize=3, label=f"leak@{k} ({ci_label(ci)})")
        else:
            ax.plot(rounds, v, style, color=color, label=f"leak@{k}")
    if ks and f"train_leak_at_{ks[-1]}" in log.columns:  # round r sampled the model of round r − 1
        seen = log.filter(pl.col(f"train_leak_at_{ks[-1]}").is_not_null())
        ax.plot([r - 1 for r in seen["round"].to_list()], seen[f"train_leak_at_{ks[-1]}"].to_list(), "x:",
                color="tab:gray", label=f"leak@{ks[-1]}, training phrasings (RULE's own samples)")
    ax.set_xlabel("RULE round (0 = base method)")
    ax.set_ylabel(f"leak ({first['eval_judge']} judge, {first['eval_decoding']})")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xticks(rounds)
    ax2 = ax.twinx()
    ax2.plot(rounds, log["retain_accuracy"].to_list(), "^:", color="tab:green", label="retain accuracy")
    ax2.set_ylabel("retain accuracy (greedy)")
    ax2.set_ylim(-0.03, 1.03)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=3, frameon=False, fontsize=8)
    name = log.filter(pl.col("model").is_not_null())["model"] if "model" in log.columns else []
    ax.set_title(f"{name[0] if len(name) else 'RULE'}: leak and retain accuracy over rounds")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    _save(fig, out_path)


def facet_grid(plt, count: int, ylabel: str, width: float = 3.6, height: float = 3.0, max_cols: int = 4):
    """``count`` panels in rows of ``max_cols`` sharing the y axis, labelled ``ylabel`` on the
    first column (a 2-D ``axes`` array, the unused panels hidden)."""
    ncols = min(max_cols, count)
    nrows = -(-count // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), sharey=True,
                             squeeze=False)
    for ax in list(axes.flat)[count:]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    return fig, axes


def plot_bound_vs_sampled(table: pl.DataFrame, judge: str, decoding: str, out_path: str | os.PathLike) -> None:
    """One panel per model: the exact lower bound 1 − (1 − p)^k (line, k up to 10⁴, log x)
    beside the sampled leak@k with its CI (points and bars, k ≤ n only).

    Reading it: the sampled points must sit on or above the line (within their CI); where
    the line climbs beyond the last sampled k, leak@k is guaranteed to climb at least as
    much. The dotted vertical line marks n, the samples per question.
    """
    import numpy as np

    plt = _pyplot()
    sub = table.filter((pl.col("decoding") == decoding)
                       & (pl.col("judge").is_null() | (pl.col("judge") == judge)))
    if sub.is_empty():
        raise ArtifactError(f"bound table has no rows for decoding {decoding!r}, judge {judge!r}")
    models = _model_order(sub["model"].to_list())
    fig, axes = facet_grid(plt, len(models), "P(at least one leak in k)")
    for ax, m in zip(axes.flat, models):
        rows = sub.filter(pl.col("model") == m).sort("k")
        ax.plot(rows["k"].to_numpy(), rows["bound"].to_numpy(), "-", color="black", lw=1.4,
                label="exact lower bound 1−(1−p)^k")
        got = rows.filter(pl.col("leak_at_k").is_not_null())
        if got.height:
            v = got["leak_at_k"].to_numpy()
            err = np.vstack([np.clip(v - got["ci_low"].to_numpy(), 0, None),
                             np.clip(got["ci_high"].to_numpy() - v, 0, None)])
            ax.errorbar(got["k"].to_numpy(), v, yerr=err, fmt="o", ms=4, color="tab:red",
                        capsize=2, label=f"sampled leak@k ({judge}) with CI")
            ax.axvline(int(got["k"].max()), color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(m)
        ax.set_xlabel("k (samples)")
        ax.grid(True, alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    fig.suptitle(f"Exact bound vs sampled leak@k — decoding {decoding}", y=1.08)
    fig.tight_layout()
    _save(fig, out_path)


#: per-question leak-rate bins for plot_leak_rate_distribution: (label, low, high], 0 and 1 exact
RATE_BINS = (("never (c = 0)", None, 0.0), ("rare (≤ 10%)", 0.0, 0.1), ("sometimes (10–50%)", 0.1, 0.5),
             ("often (50–99%)", 0.5, 1.0), ("always (c = n)", 1.0, None))


def leak_rate_shares(counts: pl.DataFrame) -> dict[str, list[float]]:
    """Share of questions in each RATE_BINS bin of c/n (one list per model, bins in order)."""
    out = {}
    for m in _model_order(counts["model"].to_list()):
        rate = counts.filter(pl.col("model") == m).select((pl.col("c") / pl.col("n")).alias("r"))["r"].to_numpy()
        shares = []
        for _, lo, hi in RATE_BINS:
            if lo is None:
                hit = rate == 0
            elif hi is None:
                hit = rate == 1
            else:
                hit = (rate > lo) & (rate <= hi) & (rate < 1)
            shares.append(float(hit.mean()) if len(rate) else 0.0)
        out[m] = shares
    return out


def plot_leak_rate_distribution(counts: pl.DataFrame, judge: str, decoding: str,
                                out_path: str | os.PathLike) -> None:
    """How questions leak, per model: the share of forget questions whose per-sample leak
    rate c/n is 0, rare, sometimes, often or always (stacked horizontal bars, labelled).

    Reading it: a model with many "rare" questions looks forgotten under greedy decoding
    yet leaks at large k; "never" is what unlearning should achieve.
    """
    plt = _pyplot()
    sub = counts.filter((pl.col("judge") == judge) & (pl.col("decoding") == decoding))
    if sub.is_empty():
        raise ArtifactError(f"no per-question counts for judge {judge!r}, decoding {decoding!r}")
    shares = leak_rate_shares(sub)
    models = list(shares)
    colors = ["#f0f0f0", "#fdd49e", "#fc8d59", "#d7301f", "#7f0000"]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(models) + 1.6))
    left = [0.0] * len(models)
    for b, ((label, _, _), color) in enumerate(zip(RATE_BINS, colors)):
        width = [shares[m][b] for m in models]
        bars = ax.barh(models, width, left=left, color=color, edgecolor="black", linewidth=0.5, label=label)
        for rect, w in zip(bars, width):
            if w >= 0.06:
                ax.text(rect.get_x() + w / 2, rect.get_y() + rect.get_height() / 2, f"{w:.0%}",
                        ha="center", va="center", fontsize=7, color="white" if b >= 3 else "black")
        left = [l + w for l, w in zip(left, width)]
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of forget questions ({judge} judge, {decoding})")
    ax.set_title("Per-question leak rate c/n")
    # the legend in its own strip at the bottom of the figure, right under the x label
    strip = 0.24 / fig.get_figheight()
    fig.tight_layout(rect=(0, strip, 1, 1))
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=len(RATE_BINS), frameon=False,
               fontsize=7)
    _save(fig, out_path)


def decoding_grid(decodings) -> tuple[list[float], list[float]] | None:
    """(temperatures, top_ps) if the sampled decoding names form a full T × top-p grid of at
    least 2 × 2, else None (the heatmap needs a grid)."""
    from leakk.sampling.decoding import Decoding

    decs = [Decoding.from_name(d) for d in decodings if d != GREEDY]
    temps = sorted({d.temperature for d in decs})
    tops = sorted({d.top_p for d in decs})
    if len(temps) < 2 or len(tops) < 2:
        return None
    have = {(d.temperature, d.top_p) for d in decs}
    if any((t, p) not in have for t in temps for p in tops):
        return None
    return temps, tops


def plot_decoding_heatmap(leak: pl.DataFrame, judge: str, k: int, out_path: str | os.PathLike,
                          greedy: str = GREEDY) -> None:
    """leak@k over temperature (rows) × top-p (columns), one panel per model, every cell
    labelled with its value; the model's greedy leak is in the panel title.

    Reading it: leak grows towards the bottom-right (hotter, wider nucleus); a model that is
    only "forgotten" at the top-left (near-greedy) is not forgotten.
    """
    import numpy as np

    plt = _pyplot()
    sub = _judge_rows(leak, judge)
    grid = decoding_grid(sub["decoding"].unique().to_list())
    if grid is None:
        raise ArtifactError("the leak table's decodings do not form a temperature × top-p grid")
    temps, tops = grid
    at_k = sub.filter(pl.col("k") == k)
    if at_k.filter(pl.col("decoding") != greedy).is_empty():
        raise ArtifactError(f"no sampled rows at k={k} for judge {judge!r}")
    models = _model_order(sub["model"].to_list())
    fig, axes = facet_grid(plt, len(models), "temperature", width=3.3, height=3.0)
    from leakk.sampling.decoding import Decoding

    image = None
    for ax, m in zip(axes.flat, models):
        cells = np.full((len(temps), len(tops)), np.nan)
        for r in at_k.filter(pl.col("model") == m).iter_rows(named=True):
            if r["decoding"] == greedy:
                continue
            d = Decoding.from_name(r["decoding"])
            cells[temps.index(d.temperature), tops.index(d.top_p)] = r["leak_at_k"]
        image = ax.imshow(cells, vmin=0, vmax=1, cmap="magma_r", origin="upper", aspect="auto")
        for i in range(len(temps)):
            for j in range(len(tops)):
                v = cells[i, j]
                ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if (not np.isnan(v) and v > 0.55) else "black")
        g = sub.filter((pl.col("model") == m) & (pl.col("decoding") == greedy) & (pl.col("k") == 1))
        title = m + (f" (greedy {g['leak_at_k'][0]:.2f})" if g.height else "")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(tops)), [f"{p:g}" for p in tops])
        ax.set_yticks(range(len(temps)), [f"{t:g}" for t in temps])
        ax.set_xlabel("top-p")
    fig.suptitle(f"leak@{k} over temperature × top-p — judge: {judge}")
    fig.tight_layout()
    if image is not None:
        fig.colorbar(image, ax=list(axes.flat), shrink=0.8, label=f"leak@{k}")
    _save(fig, out_path)


def label_points(ax, points: list[tuple[float, float, str]], min_gap: float = 0.06) -> None:
    """Name each (x, y) point of a unit-square scatter beside it: labels on the right of the
    point, or on its left past x = 0.7 (so none runs off the axes), spread apart vertically
    within each side (points at the same place, e.g. several models at 0, get readable
    labels), with a leader line where a label moved. Each label's gid is ``label:<name>``."""
    for side in ("right", "left"):
        mine = [p for p in points if (p[0] > 0.7) == (side == "left")]
        heights = spread_labels([y for _, y, _ in mine], min_gap, 0.0, 1.0)
        for (x, y, name), ly in zip(mine, heights):
            lx = x + 0.04 if side == "right" else x - 0.04
            ax.annotate(name, xy=(x, y), xytext=(lx, ly), fontsize=7, va="center", ha="left" if side == "right"
                        else "right", color="#333", gid=f"label:{name}",
                        arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "grey", "shrinkA": 0, "shrinkB": 3})


def plot_calibration(table: pl.DataFrame, out_path: str | os.PathLike, decoding: str | None = None) -> None:
    """Left: precision / recall / false-positive rate per judge (pooled over models) at
    ``decoding``. Right: leak@k under each judge vs under fact, one point per model."""
    import numpy as np

    from leakk.stats.calibrate import ratio as _ratio

    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    if table.is_empty():
        for ax in (ax1, ax2):
            ax.text(0.5, 0.5, "no ground truth (fact) to calibrate against", ha="center", va="center")
            ax.set_axis_off()
        _save(fig, out_path)
        return
    if decoding is None or decoding not in table["decoding"].to_list():
        decoding = table["decoding"].to_list()[0]
    sub = table.filter(pl.col("decoding") == decoding)
    pooled = sub.group_by("judge", maintain_order=True).agg(pl.col("tp", "fp", "fn", "tn").sum())
    judges = pooled["judge"].to_list()
    x = np.arange(len(judges))
    for off, (name, fn) in zip((-0.27, 0.0, 0.27), (
            ("precision", lambda r: _ratio(r["tp"], r["tp"] + r["fp"])),
            ("recall", lambda r: _ratio(r["tp"], r["tp"] + r["fn"])),
            ("false-positive rate", lambda r: _ratio(r["fp"], r["fp"] + r["tn"])))):
        vals = [fn(r) for r in pooled.iter_rows(named=True)]
        ax1.bar(x + off, [np.nan if v is None else v for v in vals], width=0.27, label=name)
    ax1.set_xticks(x, judges, rotation=20)
    ax1.set_ylim(0, 1.05)
    ax1.set_title(f"vs fact, per completion ({decoding}, all models)")
    ax1.legend(frameon=False, fontsize=8)
    markers = "osD^v<>P*X"
    points = []
    for i, judge in enumerate(judges):
        part = sub.filter(pl.col("judge") == judge)
        ax2.scatter(part["leak_at_k_fact"].to_numpy(), part["leak_at_k"].to_numpy(), marker=markers[i % 10],
                    label=judge)
        points += [(r["leak_at_k_fact"], r["leak_at_k"], r["model"] if len(judges) == 1 else f"{r['model']} ({judge})")
                   for r in part.iter_rows(named=True) if r["leak_at_k_fact"] is not None and r["leak_at_k"] is not None]
    label_points(ax2, points)
    ax2.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax2.set_xlim(-0.03, 1.03)
    ax2.set_ylim(-0.03, 1.03)
    ks = sorted(set(sub["k"].to_list()))
    ax2.set_xlabel(f"leak@{ks[-1] if len(ks) == 1 else 'k'} under fact (ground truth)")
    ax2.set_ylabel("leak@k under the judge")
    ax2.set_title("how far each judge moves leak@k")
    ax2.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    _save(fig, out_path)


def plot_replicate_curves(table: pl.DataFrame, judge: str, out_path: str | os.PathLike,
                          greedy: str = "greedy") -> None:
    """leak@k vs k (log-2 axis) per model, one panel per sampled decoding: the mean across
    seeds with ± sd error bars (artist gid ``mean:<model>``; each model's points nudged
    sideways by a few % of an octave so that bars at one k stay apart), and the greedy mean as a
    dashed line — the style of :func:`leakk.report.figures.plot_leak_curves` (colour + marker per model,
    direct labels, legend below the panels)."""
    from matplotlib.lines import Line2D

    plt = _pyplot()
    sub = table.filter((pl.col("judge") == judge) & pl.col("mean").is_not_null())
    decodings = sorted(d for d in sub["decoding"].unique().to_list() if d != greedy)
    if not decodings:
        raise ArtifactError(f"replicate table has no sampled decodings for judge {judge!r}")
    models = _model_order(sub["model"].to_list())
    styles = model_styles(models)
    greedy_mean = {r["model"]: r["mean"] for r in sub.filter((pl.col("decoding") == greedy) & (pl.col("k") == 1))
                   .iter_rows(named=True)}
    fig, axes = facet_grid(plt, len(decodings), f"leak@k ({judge})", width=5.0, height=3.8, max_cols=3)
    for ax, dec in zip(axes.flat, decodings):
        part = sub.filter(pl.col("decoding") == dec)
        ends, names, kmax = [], [], 1
        for i, m in enumerate(models):
            rows = part.filter(pl.col("model") == m).sort("k")
            if rows.is_empty():
                continue
            st = styles[m]
            # each model's points nudged sideways (a few % of an octave) so error bars at one k do not overlap
            dodge = 2.0 ** (0.035 * (i - (len(models) - 1) / 2))
            k, mean = rows["k"].to_numpy() * dodge, rows["mean"].to_numpy()
            sd = rows["sd"].fill_null(0.0).to_numpy()
            kmax = max(kmax, int(rows["k"].max()))
            bars = ax.errorbar(k, mean, yerr=sd, fmt="-", lw=1.4, color=st["color"], marker=st["marker"], ms=4.5,
                               capsize=3, label=m)
            bars.lines[0].set_gid(f"mean:{m}")  # the mean's line (not its caps)
            if greedy_mean.get(m) is not None:
                ax.plot([k.min(), k.max()], [greedy_mean[m]] * 2, ls="--", lw=1.0, color=st["color"],
                        marker=st["marker"], ms=4, markevery=[0], markerfacecolor="none", gid=f"greedy:{m}")
            ends.append(float(mean[-1]))
            names.append(m)
        finish_k_panel(ax, dec, names, ends, styles, kmax, sorted(set(part["k"].to_list())))
    seeds = int(sub["seeds"].max())
    handles = [Line2D([], [], color=styles[m]["color"], marker=styles[m]["marker"], ls="-") for m in models]
    labels = [*models, f"mean leak@k ± sd over {seeds} seeds", "greedy leak, mean (same colour/marker)"]
    handles += [Line2D([], [], color="grey", ls="-"),
                Line2D([], [], color="grey", ls="--", marker="o", markerfacecolor="none")]
    fig.suptitle(f"leak@k across {seeds} seeds — judge: {judge}")
    fig.tight_layout(rect=(0, 0.08 + 0.02 * (len(labels) // 5), 1, 1))
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=min(5, len(labels)),
               frameon=False, fontsize=8)
    _save(fig, out_path)


def plot_attacks(table: pl.DataFrame, judge: str, decoding: str, out_path: str | os.PathLike) -> None:
    """Methods × attacks: one panel per attack; per model, its leak unattacked (open marker)
    and attacked (filled), on the questions the attacked model was evaluated on, for greedy
    (grey) and leak@k_max at ``decoding`` (red), each pair joined by a line and the attacked
    leak@k_max labelled with its paired difference and CI. ``table``: ``attacks.csv``.
    """
    import numpy as np

    plt = _pyplot()
    sub = table.filter(pl.col("judge") == judge)
    sampled = sub.filter(pl.col("decoding") == decoding)
    if sampled.is_empty():
        raise ArtifactError(f"attack table has no {decoding} rows for judge {judge!r}")
    k = int(sampled["k"].max())
    cells = {(r["model"], r["decoding"]): r for r in sub.filter(
        ((pl.col("decoding") == decoding) & (pl.col("k") == k))
        | ((pl.col("decoding") == GREEDY) & (pl.col("k") == 1))).iter_rows(named=True)}
    sep = ATTACK_SEP
    attacks = list(dict.fromkeys(m.split(sep, 1)[1] for m in sampled["model"].to_list()))
    fig, axes = facet_grid(plt, len(attacks), f"leak ({judge})", width=max(4.0, 0.9 * sampled["base"].n_unique() + 1.2),
                           height=3.4, max_cols=2)
    for ax, attack in zip(axes.flat, attacks):
        models = _model_order([m.split(sep, 1)[0] for m in sampled["model"].to_list() if m.endswith(sep + attack)])
        x = np.arange(len(models))
        for dec, label, color, dx in ((GREEDY, "greedy", "#7f7f7f", -0.12), (decoding, f"leak@{k}", "#d62728", 0.12)):
            for xi, model in zip(x, models):
                r = cells.get((f"{model}{sep}{attack}", dec))
                if r is None:
                    continue
                ax.plot([xi + dx] * 2, [r["base_leak_at_k"], r["leak_at_k"]], color=color, linewidth=1)
                ax.plot(xi + dx, r["base_leak_at_k"], "o", mfc="white", mec=color, ms=5)
                ax.plot(xi + dx, r["leak_at_k"], "o", color=color, ms=5,
                        label=label if xi == 0 else None)
                if dec == decoding:
                    ax.text(xi + dx + 0.06, r["leak_at_k"], f"{r['difference']:+.2f}\n[{r['ci_low']:+.2f}, "
                            f"{r['ci_high']:+.2f}]", fontsize=6, va="center", gid=f"delta:{model}:{attack}")
        ax.set_xticks(x, models, rotation=25, ha="right")
        ax.set_xlim(-0.6, len(models) - 0.1)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"attack: {attack}")
        ax.grid(True, axis="y", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    top = 1 - 0.55 / fig.get_figheight()  # room for the title and the legend, in inches
    fig.suptitle(f"Methods under attack — judge {judge}, {decoding}; same questions", y=1 - 0.08 / fig.get_figheight(),
                 va="top")
    fig.legend(handles, [f"{lab}: open = unattacked, filled = attacked (Δ [CI])" for lab in labels],
               frameon=False, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.3 / fig.get_figheight()), ncol=2,
               fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, top))
    _save(fig, out_path)
