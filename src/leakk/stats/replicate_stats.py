"""Numbers across replicate seeds: mean ± sd of the per-seed results beside the pooled CI.

Two views of the same seeds, reported side by side because they answer different questions:

* **Spread across seeds** (``mean``, ``sd`` with ddof = 1, ``min``, ``max``): how much a result
  moves when the *model-building* randomness changes (data draw, init, unlearning batches).
  Read from each seed's own ``results/leak_at_k.parquet`` and ``results/utility.csv``, so a
  seed's row here is exactly what its run reported.
* **Pooled** (``pooled``, ``pooled_ci_low/high``): every seed's judgments in one frame, with
  qids and groups prefixed by the seed so that the bootstrap resamples (seed, author) clusters,
  run through the package's own :func:`leakk.stats.estimate.leak_table` — one estimator, not a second
  copy. Its CI covers question sampling only; the sd covers the seeds. A reader needs both.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from leakk.core.errors import ArtifactError
from leakk.stats.estimate import model_order

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
    """One row per model (:func:`leakk.stats.estimate.model_order`): greedy leak and leak@k_max at
    the headline decoding as ``mean ± sd [pooled CI]``, excess over retrain and retain
    accuracy as ``mean ± sd``."""
    sub = table.filter(pl.col("judge") == judge)
    head = sub.filter(pl.col("decoding") == headline_decoding)
    k_max = int(head["k"].max()) if head.height else 1
    rows = {(r["model"], r["decoding"], r["k"]): r for r in sub.iter_rows(named=True)}
    acc = {r["model"]: r for r in utility.iter_rows(named=True)}
    lines = [
        f"Judge `{judge}`, headline decoding `{headline_decoding}`, seeds {seeds}: mean ± sd across seeds "
        "(ddof = 1) [CI of the pooled estimate, bootstrap clustered by (seed, group)].",
        "",
        f"| model | greedy leak | leak@{k_max} | excess@{k_max} over retrain | retain accuracy |",
        "|---|---|---|---|---|",
    ]
    for m in model_order(list(sub["model"]) + list(acc)):
        atk = rows.get((m, headline_decoding, k_max))
        lines.append(f"| {m} | {_cell(rows.get((m, greedy, 1)))} | {_cell(atk)} "
                     f"| {_mean_sd(atk, 'excess_mean', 'excess_sd')} | {_mean_sd(acc.get(m))} |")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------- the stage
