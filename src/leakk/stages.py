"""Stage functions behind the CLI: read artifacts, call the library, write artifacts.

Each reads only what its rule declares and writes atomically, so Snakemake and DVC can
cache and resume the pipeline stage by stage.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl

from leakk.config import decoding_names, model_names, utility_judge
from leakk.errors import ArtifactError
from leakk.io import atomic_path, read_parquet, write_parquet, write_text


def judge_file(samples_path: str | os.PathLike, data: pl.DataFrame, params: dict[str, Any],
               out: str | os.PathLike) -> None:
    """Judge one samples Parquet with every configured judge."""
    from leakk.judges import judge_samples

    samples = read_parquet(samples_path, "samples")
    write_parquet(judge_samples(samples, data, params["judge"]), out, "judgments")


def collect_judgments(judgments_dir: str | os.PathLike, data: pl.DataFrame, params: dict[str, Any]) -> pl.DataFrame:
    """All (model, decoding) judgments of the experiment, with each question's group."""
    frames = []
    for model in model_names(params):
        for decoding in decoding_names(params):
            path = Path(judgments_dir) / model / f"{decoding}.parquet"
            frames.append(read_parquet(path, "judgments").with_columns(
                model=pl.lit(model), decoding=pl.lit(decoding)))
    frame = pl.concat(frames, how="diagonal_relaxed")
    if "split" not in frame.columns:
        raise ArtifactError(f"{judgments_dir}: judgments lack the split column")
    return frame.join(data.select("qid", "group"), on="qid", how="left")


def estimate(judgments_dir: str | os.PathLike, data: pl.DataFrame, params: dict[str, Any],
             out_dir: str | os.PathLike) -> str:
    """Write leak_at_k.parquet/.csv, utility.csv and summary.md; return the summary."""
    from leakk.estimate import leak_table, summary_markdown, utility_table

    est = params["estimate"]
    frame = collect_judgments(judgments_dir, data, params)
    forget = frame.filter(pl.col("split") == "forget")
    leak = leak_table(forget, est["ks"], n_boot=est["bootstrap"], ci=est["ci"], seed=est["seed"],
                      ci_method=est.get("ci_method", "t"))
    util_judge = utility_judge(params)
    utility = utility_table(frame.filter((pl.col("split") == "retain") & (pl.col("decoding") == "greedy")
                                         & (pl.col("judge") == util_judge)))
    out_dir = Path(out_dir)
    write_parquet(leak, out_dir / "leak_at_k.parquet", "leak_table")
    for frame, name in ((leak, "leak_at_k.csv"), (utility, "utility.csv")):
        with atomic_path(out_dir / name) as tmp:
            frame.write_csv(tmp)
    summary = summary_markdown(leak, utility, judge=est["headline_judge"],
                               headline_decoding=est["headline_decoding"])
    header = (f"# leak@k summary\n\nn = {params['sample']['n']} samples per forget question, "
              f"{est['ci']:.0%} CIs; retain accuracy = greedy answers to retain questions judged by "
              f"`{util_judge}`.\n\n")
    write_text(header + summary + "\n", out_dir / "summary.md")
    return header + summary


def figures(leak_path: str | os.PathLike, params: dict[str, Any], out_dir: str | os.PathLike,
            judges: list[str] | None = None) -> None:
    """leak@k curves per judge, and the greedy-vs-sampled bars at the headline decoding."""
    from leakk.figures import plot_greedy_vs_sampled, plot_leak_curves

    leak = read_parquet(leak_path, "leak_table")
    out_dir = Path(out_dir)
    est = params["estimate"]
    for judge in judges or params["judge"]:
        plot_leak_curves(leak, judge, out_dir / f"leak_at_k_{judge}.png")
        sampled = leak.filter((pl.col("judge") == judge) & (pl.col("decoding") == est["headline_decoding"]))
        k = int(sampled["k"].max())
        plot_greedy_vs_sampled(leak, judge, k, est["headline_decoding"], out_dir / f"greedy_vs_sampled_{judge}.png")
