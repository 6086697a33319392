"""Numbers across replicate seeds: mean ± sd of the per-seed results beside the pooled CI.

Two views of the same seeds, reported side by side because they answer different questions:

* **Spread across seeds** (``mean``, ``sd`` with ddof = 1, ``min``, ``max``): how much a result
  moves when the *model-building* randomness changes (data draw, init, unlearning batches).
  Read from each seed's own ``results/leak_at_k.parquet`` and ``results/utility.csv``, so a
  seed's row here is exactly what its run reported.
* **Pooled** (``pooled``, ``pooled_ci_low/high``): every seed's judgments in one frame, with
  qids and groups prefixed by the seed so that the bootstrap resamples (seed, author) clusters,
  run through the package's own :func:`leakk.estimate.leak_table` — one estimator, not a second
  copy. Its CI covers question sampling only; the sd covers the seeds. A reader needs both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl

from leakk.errors import ArtifactError
from leakk.estimate import leak_table, model_order, utility_table
from leakk.io import atomic_path, read_parquet, write_parquet, write_text

KEYS = ["model", "decoding", "judge", "k"]


def seed_results(root: str | os.PathLike, seed: int) -> Path:
    return Path(root) / f"seed_{seed}" / "results"


def found_seeds(root: str | os.PathLike) -> list[int]:
    """Seeds with a finished run under ``root`` (a ``seed_<s>/results/leak_at_k.parquet``)."""
    out = []
    for path in Path(root).glob("seed_*/results/leak_at_k.parquet"):
        tail = path.parts[-3].removeprefix("seed_")
        if tail.isdigit():
            out.append(int(tail))
    return sorted(out)


def prefix_seed(frame: pl.DataFrame, seed: int) -> pl.DataFrame:
    """``qid`` and ``group`` as ``"<seed>/<value>"``: seeds never share a question or a cluster
    (each seed may even draw its own benchmark), so the pooled bootstrap resamples (seed, group)."""
    return frame.with_columns(
        (pl.lit(f"{seed}/") + pl.col(c).cast(pl.String)).alias(c) for c in ("qid", "group"))


def pool_judgments(frames: dict[int, pl.DataFrame]) -> pl.DataFrame:
    """One judgments frame of every seed (see :func:`prefix_seed`), with a ``seed`` column."""
    return pl.concat([prefix_seed(f, s).with_columns(seed=pl.lit(s, pl.Int64)) for s, f in frames.items()],
                     how="diagonal_relaxed")


def _spread(value: str) -> list[pl.Expr]:
    v = pl.col(value)
    return [v.count().cast(pl.Int64).alias("seeds"), v.mean().alias("mean"), v.std(ddof=1).alias("sd"),
            v.min().alias("min"), v.max().alias("max")]


def spread_table(per_seed: dict[int, pl.DataFrame], pooled: pl.DataFrame) -> pl.DataFrame:
    """Per (model, decoding, judge, k): ``seeds, mean, sd, min, max`` of the seeds' leak@k,
    ``excess_mean, excess_sd`` of their excess over retrain, and the pooled estimate
    ``pooled, pooled_ci_low, pooled_ci_high, pooled_excess, questions`` (a leak table of the
    pooled judgments). ``sd`` is null with one seed."""
    if not per_seed:
        raise ArtifactError("no seeds to aggregate")
    long = pl.concat([t.select(*KEYS, "leak_at_k", "excess_over_retrain").with_columns(seed=pl.lit(s, pl.Int64))
                      for s, t in per_seed.items()], how="vertical_relaxed")
    spread = long.group_by(KEYS).agg(
        *_spread("leak_at_k"),
        pl.col("excess_over_retrain").mean().alias("excess_mean"),
        pl.col("excess_over_retrain").std(ddof=1).alias("excess_sd"),
    )
    pooled = pooled.select(*KEYS, pl.col("leak_at_k").alias("pooled"), pl.col("ci_low").alias("pooled_ci_low"),
                           pl.col("ci_high").alias("pooled_ci_high"),
                           pl.col("excess_over_retrain").alias("pooled_excess"), "questions")
    return spread.join(pooled, on=KEYS, how="full", coalesce=True).sort(KEYS)


def utility_spread(per_seed: dict[int, pl.DataFrame], pooled: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per model: ``seeds, mean, sd, min, max`` of the seeds' retain accuracy (and ``pooled``,
    the accuracy over every seed's retain questions, where given)."""
    long = pl.concat([t.select("model", "retain_accuracy").with_columns(seed=pl.lit(s, pl.Int64))
                      for s, t in per_seed.items()], how="vertical_relaxed")
    out = long.group_by("model").agg(*_spread("retain_accuracy"))
    if pooled is not None:
        out = out.join(pooled.select("model", pl.col("retain_accuracy").alias("pooled")), on="model", how="left")
    return out.sort("model")


# -------------------------------------------------------------------------------------------- summary

def _mean_sd(row: dict | None, key: str = "mean", sd: str = "sd") -> str:
    if row is None or row.get(key) is None:
        return "–"
    return f"{row[key]:.2f}" if row.get(sd) is None else f"{row[key]:.2f} ± {row[sd]:.2f}"


def _cell(row: dict | None) -> str:
    """``mean ± sd [pooled CI]``."""
    text = _mean_sd(row)
    if row is not None and row.get("pooled_ci_low") is not None:
        text += f" [{row['pooled_ci_low']:.2f}, {row['pooled_ci_high']:.2f}]"
    return text


def summary_markdown(table: pl.DataFrame, utility: pl.DataFrame, judge: str, headline_decoding: str,
                     seeds: list[int], greedy: str = "greedy") -> str:
    """One row per model (:func:`leakk.estimate.model_order`): greedy leak and leak@k_max at
    the headline decoding as ``mean ± sd [pooled CI]``, excess over retrain and retain
    accuracy as ``mean ± sd``."""
    sub = table.filter(pl.col("judge") == judge)
    head = sub.filter(pl.col("decoding") == headline_decoding)
    k_max = int(head["k"].max()) if head.height else 1
    rows = {(r["model"], r["decoding"], r["k"]): r for r in sub.iter_rows(named=True)}
    acc = {r["model"]: r for r in utility.iter_rows(named=True)}
    lines = [
        f"Judge `{judge}`, headline decoding `{headline_decoding}`, seeds {seeds}: mean ± sd across seeds "
        "(ddof = 1) [CI of the pooled estimate, clustered by (seed, group)].",
        "",
        f"| model | greedy leak | leak@{k_max} | excess@{k_max} over retrain | retain accuracy |",
        "|---|---|---|---|---|",
    ]
    for m in model_order(list(sub["model"]) + list(acc)):
        atk = rows.get((m, headline_decoding, k_max))
        lines.append(f"| {m} | {_cell(rows.get((m, greedy, 1)))} | {_cell(atk)} "
                     f"| {_mean_sd(atk, 'excess_mean', 'excess_sd')} | {_mean_sd(acc.get(m))} |")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------- figure

def plot_replicate_curves(table: pl.DataFrame, judge: str, out_path: str | os.PathLike,
                          greedy: str = "greedy") -> None:
    """leak@k vs k (log-2 axis) per model, one panel per sampled decoding: the mean across
    seeds with ± sd error bars (artist gid ``mean:<model>``; each model's points nudged
    sideways by a few % of an octave so that bars at one k stay apart), and the greedy mean as a
    dashed line — the style of :func:`leakk.figures.plot_leak_curves` (colour + marker per model,
    direct labels, legend below the panels)."""
    from matplotlib.lines import Line2D

    from leakk import figures

    plt = figures._pyplot()
    sub = table.filter((pl.col("judge") == judge) & pl.col("mean").is_not_null())
    decodings = sorted(d for d in sub["decoding"].unique().to_list() if d != greedy)
    if not decodings:
        raise ArtifactError(f"replicate table has no sampled decodings for judge {judge!r}")
    models = model_order(sub["model"].to_list())
    styles = figures.model_styles(models)
    greedy_mean = {r["model"]: r["mean"] for r in sub.filter((pl.col("decoding") == greedy) & (pl.col("k") == 1))
                   .iter_rows(named=True)}
    fig, axes = figures.facet_grid(plt, len(decodings), f"leak@k ({judge})", width=5.0, height=3.8, max_cols=3)
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
        figures.finish_k_panel(ax, dec, names, ends, styles, kmax, sorted(set(part["k"].to_list())))
    seeds = int(sub["seeds"].max())
    handles = [Line2D([], [], color=styles[m]["color"], marker=styles[m]["marker"], ls="-") for m in models]
    labels = [*models, f"mean leak@k ± sd over {seeds} seeds", "greedy leak, mean (same colour/marker)"]
    handles += [Line2D([], [], color="grey", ls="-"),
                Line2D([], [], color="grey", ls="--", marker="o", markerfacecolor="none")]
    fig.suptitle(f"leak@k across {seeds} seeds — judge: {judge}")
    fig.tight_layout(rect=(0, 0.08 + 0.02 * (len(labels) // 5), 1, 1))
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=min(5, len(labels)),
               frameon=False, fontsize=8)
    figures._save(fig, out_path)


# -------------------------------------------------------------------------------------------- the stage

def _read_seed(root: Path, seed: int, params: dict[str, Any]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(leak table, utility table, judgments joined with groups) of one finished seed."""
    from leakk.stages import collect_judgments

    res = seed_results(root, seed)
    leak_path, util_path = res / "leak_at_k.parquet", res / "utility.csv"
    for path in (leak_path, util_path, res / "data" / "benchmark.parquet"):
        if not path.is_file():
            raise ArtifactError(f"{path}: missing; seed {seed} has not finished (run `leakk replicates`)")
    data = read_parquet(res / "data" / "benchmark.parquet", "data")
    judgments = collect_judgments(res / "judgments", data, params)
    return read_parquet(leak_path, "leak_table"), pl.read_csv(util_path), judgments


def aggregate(params: dict[str, Any], root: str | os.PathLike, seeds: list[int] | None = None) -> str:
    """Write ``leak_at_k.parquet/.csv``, ``utility.csv``, ``summary.md`` and
    ``figures/leak_at_k_<judge>.png`` under ``root`` from the seeds' finished runs (``seeds``:
    default ``replicates`` of the params, else every ``seed_<s>`` found); return the summary."""
    from leakk.config import utility_judge

    root = Path(root)
    seeds = seeds or params.get("replicates") or found_seeds(root)
    if not seeds:
        raise ArtifactError(f"{root}: no seed_<s>/results/leak_at_k.parquet to aggregate (run `leakk replicates`)")
    est = params["estimate"]
    leaks, utils, judged = {}, {}, {}
    for s in seeds:
        leaks[s], utils[s], judged[s] = _read_seed(root, s, params)
    pooled_frame = pool_judgments(judged)
    pooled = leak_table(pooled_frame.filter(pl.col("split") == "forget"), est["ks"], n_boot=est["bootstrap"],
                        ci=est["ci"], seed=est["seed"], ci_method=est["ci_method"])
    util_judge = utility_judge(params)
    pooled_util = utility_table(pooled_frame.filter((pl.col("split") == "retain") & (pl.col("decoding") == "greedy")
                                                    & (pl.col("judge") == util_judge)))
    table = spread_table(leaks, pooled)
    utility = utility_spread(utils, pooled_util)
    write_parquet(table, root / "leak_at_k.parquet")
    for frame, name in ((table, "leak_at_k.csv"), (utility, "utility.csv")):
        with atomic_path(root / name) as tmp:
            frame.write_csv(tmp)
    summary = summary_markdown(table, utility, est["headline_judge"], est["headline_decoding"], list(seeds))
    text = (f"# leak@k across replicate seeds\n\nn = {params['sample']['n']} samples per forget question; "
            f"{est['ci']:.0%} CIs of the pooled estimate; retain accuracy = greedy answers to retain questions "
            f"judged by `{util_judge}`.\n\n{summary}")
    write_text(text, root / "summary.md")
    for judge in params["judge"]:
        if table.filter((pl.col("judge") == judge) & (pl.col("decoding") != "greedy")).height:
            plot_replicate_curves(table, judge, root / "figures" / f"leak_at_k_{judge}.png")
    return text
