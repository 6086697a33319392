"""RULE's stages: rounds (``rule-round``; all of them: ``rule``), their evaluation on the
held-out phrasing (``rule-eval``) and the round log with its figure (``rule-report``)."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from leakk.core.io import read_parquet, write_parquet
from leakk.report.figures import plot_rule_trajectory


def report(round_dirs: list[Path], eval_files: list[Path], out_log: str | os.PathLike,
           out_figure: str | os.PathLike) -> pl.DataFrame:  # pragma: no mutate block
    """Join each round's training log with its evaluation into one Parquet; plot the trajectory."""
    train = pl.concat([read_parquet(Path(d) / "round.parquet") for d in round_dirs], how="diagonal_relaxed")
    evals = pl.concat([read_parquet(f) for f in eval_files], how="diagonal_relaxed")
    log = evals.join(train, on="round", how="left").sort("round")  # round 0: evaluation only
    write_parquet(log, out_log)
    plot_rule_trajectory(log, out_figure)
    return log
