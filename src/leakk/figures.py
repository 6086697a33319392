"""Figures from the leak table (DESIGN.md §3 "leak table").

matplotlib is imported lazily with the non-interactive Agg backend, so the package imports
without a display and a headless cluster job never tries to open a window. Every PNG is
written to a temporary sibling and renamed into place (``leakk.io.atomic_path``), so an
interrupted run never leaves a truncated figure that Snakemake/DVC would take as done.
"""

from __future__ import annotations

import os

import polars as pl

from leakk.errors import ArtifactError
from leakk.estimate import model_order as _model_order
from leakk.io import atomic_path

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


def plot_leak_curves(
    leak: pl.DataFrame, judge: str, out_path: str | os.PathLike, greedy: str = GREEDY
) -> None:
    """leak@k vs k (log-2 axis), one panel per sampled decoding, one line + CI band per model.

    Each model's greedy leak is drawn as a dashed horizontal line in the same colour: the
    gap between it and the sampled curve is the paper's "illusion of forgetting".
    """
    plt = _pyplot()
    sub = _judge_rows(leak, judge)
    decodings = sorted(d for d in sub["decoding"].unique().to_list() if d != greedy)
    if not decodings:
        raise ArtifactError(f"leak table has no sampled decodings for judge {judge!r}")
    models = _model_order(sub["model"].to_list())
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    greedy_leak = {
        r["model"]: r["leak_at_k"]
        for r in sub.filter((pl.col("decoding") == greedy) & (pl.col("k") == 1)).iter_rows(
            named=True
        )
    }

    ncols = min(3, len(decodings))
    nrows = -(-len(decodings) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), sharey=True, squeeze=False
    )
    for ax, dec in zip(axes.flat, decodings):
        part = sub.filter(pl.col("decoding") == dec)
        for m in models:
            rows = part.filter(pl.col("model") == m).sort("k")
            if rows.is_empty():
                continue
            k = rows["k"].to_numpy()
            ax.plot(k, rows["leak_at_k"].to_numpy(), marker="o", ms=3, color=colors[m], label=m)
            lo, hi = rows["ci_low"].to_numpy(), rows["ci_high"].to_numpy()
            ax.fill_between(k, lo, hi, color=colors[m], alpha=0.18, linewidth=0)
            if m in greedy_leak:
                ax.axhline(greedy_leak[m], color=colors[m], ls="--", lw=0.9, alpha=0.8)
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(dec)
        ax.set_xlabel("k (samples)")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"leak@k ({judge})")
    for ax in list(axes.flat)[len(decodings):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if greedy_leak:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="grey", ls="--", lw=0.9))
        labels.append("greedy leak")
    fig.legend(handles, labels, loc="center left",
               bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(f"leak@k by decoding — judge: {judge} (shaded: bootstrap CI)")
    fig.tight_layout()
    _save(fig, out_path)


def plot_greedy_vs_sampled(
    leak: pl.DataFrame,
    judge: str,
    k: int,
    decoding: str,
    out_path: str | os.PathLike,
    greedy: str = GREEDY,
) -> None:
    """Grouped bars per model: greedy leak beside sampled leak@k, with CI error bars.

    The point of the figure: greedy decoding can look forgotten while k samples leak.
    Models lacking one of the two values get only the bar they have.
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
        val = np.array([rows[m]["leak_at_k"] if m in rows else np.nan for m in models])
        lo = np.array([rows[m]["ci_low"] if m in rows else np.nan for m in models], float)
        hi = np.array([rows[m]["ci_high"] if m in rows else np.nan for m in models], float)
        err = np.vstack([np.clip(val - lo, 0, None), np.clip(hi - val, 0, None)])
        return val, np.nan_to_num(err)

    x = np.arange(len(models))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(models) + 2), 3.6))
    for offset, rows, label, color in (
        (-width / 2, g, "greedy", "#8c8c8c"),
        (width / 2, s, f"leak@{k} ({decoding})", "#d62728"),
    ):
        val, err = series(rows)
        ax.bar(x + offset, np.nan_to_num(val), width, yerr=err, capsize=3, label=label,
               color=color, edgecolor="black", linewidth=0.5)
    ax.set_xticks(x, models, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"leak ({judge})")
    ax.set_title(f"Greedy vs sampled leak@{k} — judge: {judge}")
    ax.legend(frameon=False)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, out_path)


def plot_rule_trajectory(log: pl.DataFrame, out_path: str | os.PathLike) -> None:
    """RULE across rounds: leak@1 and leak@n (left axis) and retain accuracy (right axis).

    Round 0 is the base method's model; every point is measured on evaluation-seed samples
    that no round trained on.
    """
    plt = _pyplot()
    log = log.sort("round")
    first = log.row(0, named=True)
    rounds = log["round"].to_list()
    ks = sorted({int(c.rsplit("_", 1)[1]) for c in log.columns if c.startswith("eval_leak_at_")})
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for k, style in zip(ks, ("o--", "o-")):
        ax.plot(rounds, log[f"eval_leak_at_{k}"].to_list(), style, label=f"leak@{k}")
    ax.set_xlabel("RULE round (0 = base method)")
    ax.set_ylabel(f"leak ({first['eval_judge']} judge, {first['eval_decoding']})")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(rounds)
    ax2 = ax.twinx()
    ax2.plot(rounds, log["retain_accuracy"].to_list(), "s:", color="tab:green", label="retain accuracy")
    ax2.set_ylabel("retain accuracy (greedy)")
    ax2.set_ylim(-0.02, 1.02)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax.legend(handles, labels, loc="center right", fontsize=8)
    name = log.filter(pl.col("model").is_not_null())["model"]
    ax.set_title(f"{name[0] if len(name) else 'RULE'}: leak and retain accuracy over rounds")
    _save(fig, out_path)


def _facet_grid(plt, count: int, width: float = 3.6, height: float = 3.0, max_cols: int = 4):
    ncols = min(max_cols, count)
    nrows = -(-count // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), sharey=True,
                             squeeze=False)
    for ax in list(axes.flat)[count:]:
        ax.set_visible(False)
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
    fig, axes = _facet_grid(plt, len(models))
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
    for ax in axes[:, 0]:
        ax.set_ylabel("P(at least one leak in k)")
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
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25 if len(models) > 3 else -0.4),
              ncol=len(RATE_BINS), frameon=False, fontsize=7)
    ax.set_title("Per-question leak rate c/n")
    fig.tight_layout()
    _save(fig, out_path)
