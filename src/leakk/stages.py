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


def judgment_path(judgments_dir: str | os.PathLike, model: str, decoding: str, judge: str) -> Path:
    """Where one (model, decoding, judge)'s judgments live: one file per judge, in a folder
    per (model, judge) so that DVC can track each judge's files as one stage output."""
    return Path(judgments_dir) / model / judge / f"{decoding}.parquet"


def judge_file(samples_path: str | os.PathLike, data: pl.DataFrame, params: dict[str, Any],
               label: str, out: str | os.PathLike) -> None:
    """Judge one samples Parquet with the judge ``judge.<label>``; fail (writing nothing)
    when more than its ``max_missing`` fraction of judgments failed."""
    from leakk.errors import ParamsError
    from leakk.judges import judge_samples
    from leakk.judges.run import check_missing, judge_spec

    if label not in params["judge"]:
        raise ParamsError(f"judge.{label}: no such judge (known: {sorted(params['judge'])})")
    _, _, max_missing = judge_spec(label, params["judge"][label])
    samples = read_parquet(samples_path, "samples")
    judged = judge_samples(samples, data, {label: params["judge"][label]}, device=params["device"])
    check_missing(judged, label, max_missing, where=str(samples_path))
    write_parquet(judged, out, "judgments")


def collect_judgments(judgments_dir: str | os.PathLike, data: pl.DataFrame, params: dict[str, Any]) -> pl.DataFrame:
    """All judgments of the experiment, with each question's group: a long frame with
    ``model, decoding, judge, qid, sample_idx, score, leaked, split, group``.

    Reads, for every configured model, decoding and judge, the judge's file where it exists
    (:func:`judgment_path`); a configured judge without files is left out with a warning.
    """
    import logging

    frames = []
    absent: list[str] = []
    for model in model_names(params):
        for judge in params["judge"]:
            for decoding in decoding_names(params):
                path = judgment_path(judgments_dir, model, decoding, judge)
                if not path.is_file():
                    absent.append(str(path))
                    continue
                frame = read_parquet(path, "judgments")
                if frame.height and set(frame["judge"].unique().to_list()) != {judge}:
                    raise ArtifactError(f"{path}: holds judge(s) {sorted(frame['judge'].unique().to_list())}, "
                                        f"not {judge!r}")
                frames.append(frame.with_columns(model=pl.lit(model), decoding=pl.lit(decoding),
                                                 judge=pl.lit(judge)))
    if not frames:
        raise ArtifactError(f"{judgments_dir}: no judgments of the configured models, decodings and judges "
                            "(did the judge stage run?)")
    if absent:
        logging.getLogger(__name__).warning("%d configured judgment file(s) absent, e.g. %s", len(absent), absent[0])
    frame = pl.concat(frames, how="diagonal_relaxed")
    if "split" not in frame.columns:
        raise ArtifactError(f"{judgments_dir}: judgments lack the split column")
    return frame.join(data.select("qid", "group"), on="qid", how="left")


def estimate(judgments_dir: str | os.PathLike, data: pl.DataFrame, params: dict[str, Any],
             out_dir: str | os.PathLike) -> str:
    """Write leak_at_k.parquet/.csv, utility.csv, rule_vs_base.csv and summary.md; return the summary.

    rule_vs_base.csv pairs each RULE model with its base run (``rule.<name>.base``). That key
    is not among the stage's declared params: a new base retrains the RULE model, whose new
    judgments re-run this stage anyway."""
    from leakk.estimate import leak_table, paired_difference_table, paired_markdown, summary_markdown, utility_table

    est = params["estimate"]
    frame = collect_judgments(judgments_dir, data, params)
    forget = frame.filter(pl.col("split") == "forget")
    leak = leak_table(forget, est["ks"], n_boot=est["bootstrap"], ci=est["ci"], seed=est["seed"],
                      ci_method=est["ci_method"])
    models = set(forget["model"].unique().to_list())
    pairs = {name: cfg["base"] for name, cfg in (params.get("rule") or {}).items()
             if name in models and cfg["base"] in models}
    paired = paired_difference_table(forget, pairs, est["ks"], n_boot=est["bootstrap"], ci=est["ci"],
                                     seed=est["seed"], ci_method=est["ci_method"])
    util_judge = utility_judge(params)
    utility = utility_table(frame.filter((pl.col("split") == "retain") & (pl.col("decoding") == "greedy")
                                         & (pl.col("judge") == util_judge)))
    out_dir = Path(out_dir)
    write_parquet(leak, out_dir / "leak_at_k.parquet", "leak_table")
    for frame, name in ((leak, "leak_at_k.csv"), (utility, "utility.csv"), (paired, "rule_vs_base.csv")):
        with atomic_path(out_dir / name) as tmp:
            frame.write_csv(tmp)
    summary = summary_markdown(leak, utility, judge=est["headline_judge"],
                               headline_decoding=est["headline_decoding"], ci_method=est["ci_method"])
    significance = paired_markdown(paired, est["headline_judge"], est["headline_decoding"], est["ci"],
                                   est["ci_method"])
    if significance:
        summary += "\n" + significance
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
