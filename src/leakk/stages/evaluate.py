"""The evaluation stages: ``judge`` (one file per judge), ``estimate`` (the leak table, utility
and summary), ``calibrate`` (judges against fact) and ``figures``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl

from leakk.core.layout import attacked_models, judgment_path, model_names
from leakk.judges.run import utility_judge
from leakk.sampling.decoding import decoding_names
from leakk.core.errors import ArtifactError
from leakk.core.io import atomic_path, read_parquet, write_parquet, write_text


def judge_file(samples_path: str | os.PathLike, data: pl.DataFrame, params: dict[str, Any],
               label: str, out: str | os.PathLike) -> None:
    """Judge one samples Parquet with the judge ``judge.<label>``; fail (writing nothing)
    when more than its ``max_missing`` fraction of judgments failed."""
    from leakk.core.errors import ParamsError
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


def write_estimate(judgments_dir: str | os.PathLike, data: pl.DataFrame, params: dict[str, Any],
             out_dir: str | os.PathLike) -> str:
    """Write leak_at_k.parquet/.csv, utility.csv, rule_vs_base.csv, attacks.csv and summary.md;
    return the summary.

    rule_vs_base.csv pairs each RULE model with its base run (``rule.<name>.base``, declared by
    the stage as its ``rule`` read); attacks.csv each attacked model ``<m>__<attack>`` with
    ``m``, on the questions the attacked model was evaluated on."""
    from leakk.stats.estimate import (UNDER_ATTACK, ci_phrase, leak_table, paired_difference_table,
                                      paired_markdown, summary_markdown, utility_table)

    est = params["estimate"]
    frame = collect_judgments(judgments_dir, data, params)
    forget = frame.filter(pl.col("split") == "forget")
    leak = leak_table(forget, est["ks"], n_boot=est["bootstrap"], ci=est["ci"], seed=est["seed"],
                      ci_method=est["ci_method"], attacked=attacked_models(params))
    models = set(forget["model"].unique().to_list())
    pairs = {name: cfg["base"] for name, cfg in (params.get("rule") or {}).items()
             if name in models and cfg["base"] in models}
    paired = paired_difference_table(forget, pairs, est["ks"], n_boot=est["bootstrap"], ci=est["ci"],
                                     seed=est["seed"], ci_method=est["ci_method"])
    attack_pairs = {name: clean for name, (clean, _) in attacked_models(params).items()
                    if name in models and clean in models}
    attacked = paired_difference_table(forget, attack_pairs, est["ks"], n_boot=est["bootstrap"], ci=est["ci"],
                                       seed=est["seed"], ci_method=est["ci_method"])
    util_judge = utility_judge(params)
    utility = utility_table(frame.filter((pl.col("split") == "retain") & (pl.col("decoding") == "greedy")
                                         & (pl.col("judge") == util_judge)))
    out_dir = Path(out_dir)
    write_parquet(leak, out_dir / "leak_at_k.parquet", "leak_table")
    for frame, name in ((leak, "leak_at_k.csv"), (utility, "utility.csv"), (paired, "rule_vs_base.csv"),
                        (attacked, "attacks.csv")):
        with atomic_path(out_dir / name) as tmp:
            frame.write_csv(tmp)
    summary = summary_markdown(leak, utility, judge=est["headline_judge"],
                               headline_decoding=est["headline_decoding"], ci_method=est["ci_method"])
    significance = paired_markdown(paired, est["headline_judge"], est["headline_decoding"], est["ci"],
                                   est["ci_method"])
    if significance:
        summary += "\n" + significance
    under_attack = paired_markdown(attacked, est["headline_judge"], est["headline_decoding"], est["ci"],
                                   est["ci_method"], title=UNDER_ATTACK)
    if under_attack:
        summary += "\n" + under_attack
    header = (f"# leak@k summary\n\nn = {params['sample']['n']} samples per forget question; {ci_phrase(est)}; "
              f"retain accuracy = greedy answers to retain questions judged by `{util_judge}`.\n\n")
    write_text(header + summary + "\n", out_dir / "summary.md")
    return header + summary


def write_figures(leak_path: str | os.PathLike, params: dict[str, Any], out_dir: str | os.PathLike,
            judges: list[str] | None = None) -> None:
    """leak@k curves per judge, and the greedy-vs-sampled bars at the headline decoding."""
    from leakk.report.figures import plot_greedy_vs_sampled, plot_leak_curves
    from leakk.report.tables import figure_fragment

    leak = read_parquet(leak_path, "leak_table")
    out_dir = Path(out_dir)
    est = params["estimate"]
    for judge in judges or params["judge"]:
        plot_leak_curves(leak, judge, out_dir / f"leak_at_k_{judge}.png", ci=est["ci"])
        sampled = leak.filter((pl.col("judge") == judge) & (pl.col("decoding") == est["headline_decoding"]))
        k = int(sampled["k"].max())
        png = out_dir / f"greedy_vs_sampled_{judge}.png"
        plot_greedy_vs_sampled(leak, judge, k, est["headline_decoding"], png)
        # the same figure for the report's landing page, written by the job that draws it
        write_text(figure_fragment(png, f"greedy leak beside sampled leak@{k}, judge {judge}"), png.with_suffix(".html"))


def write_calibration(judgments_dir: str | os.PathLike, data: pl.DataFrame, params: dict[str, Any],
                      out_dir: str | os.PathLike, figure: str | os.PathLike) -> pl.DataFrame:
    """The ``calibrate`` stage: calibration.parquet/.csv in ``out_dir`` and the figure.
    Without a ``fact`` judge (or facts) the table is empty and the figure says so."""
    from leakk.report.figures import plot_calibration
    from leakk.stats.calibrate import EMPTY, TRUTH, calibration_table

    if TRUTH in params["judge"] and data["fact"].null_count() < data.height:
        table = calibration_table(collect_judgments(judgments_dir, data, params), params["estimate"]["ks"])
    else:
        table = pl.DataFrame(schema=EMPTY)
    out_dir = Path(out_dir)
    write_parquet(table, out_dir / "calibration.parquet", "calibration")
    with atomic_path(out_dir / "calibration.csv") as tmp:
        table.write_csv(tmp)
    plot_calibration(table, figure, params["estimate"].get("headline_decoding"))
    return table


# ----------------------------------------------------------------------------- stage entries

def judge(params: dict[str, Any], *, data: str, samples: str, judge: str | None, out: str) -> None:
    """Judge a samples file with judge ``judge`` into the file ``out``; or a folder of
    ``<decoding>.parquet``: with ``judge``, into ``out/<decoding>.parquet``, without, every
    configured judge into ``out/<judge>/<decoding>.parquet``."""
    from leakk.core.errors import ParamsError

    frame = read_parquet(data, "data")
    src = Path(samples)
    if not src.is_dir():
        if judge is None:
            raise ParamsError("--judge is required with a samples file (one file per judge)")
        judge_file(src, frame, params, judge, out)
        return
    paths = sorted(src.glob("*.parquet"))
    if not paths:
        raise ArtifactError(f"{src}: no samples Parquet files")
    for label in [judge] if judge else list(params["judge"]):
        folder = Path(out) if judge else Path(out) / label
        for path in paths:
            judge_file(path, frame, params, label, folder / path.name)


def estimate(params: dict[str, Any], *, data: str, judgments: str, out_dir: str) -> None:
    """The leak table with CIs, the utility table and the summary (printed too)."""
    print(write_estimate(judgments, read_parquet(data, "data"), params, out_dir))


def calibrate(params: dict[str, Any], *, data: str, judgments: str, out_dir: str, figure: str) -> None:
    """Every judge against fact; an empty table without a fact judge."""
    table = write_calibration(judgments, read_parquet(data, "data"), params, out_dir, figure)
    print(f"calibration: {table.height} rows (judge × model × decoding) against fact")


def figures(params: dict[str, Any], *, leak: str, judge: str | None, out_dir: str) -> None:
    """leak@k curves and greedy-vs-sampled bars for ``judge`` (default: every judge)."""
    write_figures(leak, params, out_dir, judges=[judge] if judge else None)


def attack_figure(params: dict[str, Any], *, attacks: str, out: str) -> None:
    """Methods × attacks at the headline judge and decoding (from ``attacks.csv``)."""
    from leakk.report.figures import plot_attacks

    est = params["estimate"]
    plot_attacks(pl.read_csv(attacks), est["headline_judge"], est["headline_decoding"], out)
