"""The ``replicates-table`` stage: mean ± sd across finished replicate seeds beside the pooled CI
(:mod:`leakk.stats.replicate_stats`), written under the replicates root."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl

from leakk.core.errors import ArtifactError
from leakk.core.layout import attacked_models
from leakk.core.io import atomic_path, read_parquet, write_parquet, write_text
from leakk.judges.run import utility_judge
from leakk.report import figures
from leakk.stages.evaluate import collect_judgments
from leakk.stats.estimate import leak_table, utility_table
from leakk.stats.replicate_stats import (found_seeds, pool_judgments, seed_results, spread_table, summary_markdown,
                                         utility_spread)


def _read_seed(root: Path, seed: int, params: dict[str, Any]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(leak table, utility table, judgments joined with groups) of one finished seed."""
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
                        ci=est["ci"], seed=est["seed"], ci_method=est.get("ci_method", "t"),
                        attacked=attacked_models(params))
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
            figures.plot_replicate_curves(table, judge, root / "figures" / f"leak_at_k_{judge}.png")
    return text


def replicates_table(params: dict[str, Any], *, out_dir: str, seed: list[int] | None) -> None:
    """Aggregate finished seeds (``seed``: these; default: ``replicates``, else every seed found)."""
    print(aggregate(params, out_dir, seeds=seed or None))
