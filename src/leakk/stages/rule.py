"""RULE's stages: rounds (``rule-round``; all of them: ``rule``), their evaluation on the
held-out phrasing (``rule-eval``) and the round log with its figure (``rule-report``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


def round_order(folders: list[str]) -> list[str]:
    """Round folders in round order (``round_10`` after ``round_9``, unlike a shell glob)."""
    import re

    def key(path: str):
        m = re.search(r"round_(\d+)(?:\.parquet)?/?$", path)
        return int(m.group(1)) if m else -1

    return sorted(folders, key=key)


# ----------------------------------------------------------------------------- stage entries

def rule_round(params: dict[str, Any], *, data: str, name: str, round: int, prev: str, out: str,
               reference: str | None) -> None:
    """One RULE round: sample, judge, add leaks, unlearn."""
    from leakk.unlearn.rule import run_round

    run_round(read_parquet(data, "data"), params, name=name, round_idx=round, prev_dir=prev, out_dir=out,
              reference_dir=reference)


def rule(params: dict[str, Any], *, data: str, name: str, model_dir: str, out: str, reference: str | None) -> None:
    """Every round of ``rule.<name>``, keeping the finished rounds trained with the same params."""
    from leakk.unlearn.rule import run_all_rounds

    run_all_rounds(read_parquet(data, "data"), params, name=name, base_model=model_dir, out_root=out,
                   reference_dir=reference)


def rule_eval(params: dict[str, Any], *, data: str, rounds: list[str], name: str, judgments: str | None,
              first_round: int, out_dir: str) -> None:
    """Evaluate round folders (in order from ``first_round``) on the held-out phrasing."""
    from leakk.unlearn.rule import evaluate_round

    frame = read_parquet(data, "data")
    for i, folder in enumerate(round_order(rounds)):
        evaluate_round(frame, params, name=name, round_idx=first_round + i, round_dir=folder,
                       out=Path(out_dir) / f"round_{first_round + i}.parquet", judgments=judgments)


def rule_report(params: dict[str, Any], *, rounds: list[str], evals: list[str], out_log: str,
                out_figure: str) -> None:
    """The round log (training log joined with each round's evaluation) and its figure."""
    report([Path(p) for p in round_order(rounds)], [Path(p) for p in evals], out_log, out_figure)
