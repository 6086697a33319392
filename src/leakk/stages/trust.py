"""The stages a reviewer asks for after the leak table: ``bounds``, ``bounds-table``,
``reliability``, ``report-tables`` and ``heatmap``.

- ``bounds``: per model, the exact probability that one completion begins with the answer,
  for every configured decoding (:mod:`leakk.stats.bounds`).
- ``bounds-table``: the lower bound 1 − (1 − p)^k up to k = 10⁴ beside the sampled leak@k,
  the starts-with-answer check against the samples, and the bound-vs-sampled figure.
- ``reliability``: Clopper–Pearson guarantees (:mod:`leakk.stats.guarantees`), Beta-binomial
  extrapolation beyond n and its hold-out check (:mod:`leakk.stats.extrapolate`), the per-question
  leak-rate figure, and the headline metrics/plot files DVC reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import polars as pl

from leakk.sampling.decoding import decoding_names
from leakk.core.io import atomic_path, read_parquet, write_parquet, write_text


def _write_csv(frame: pl.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        frame.write_csv(tmp)


def forget_questions(data: pl.DataFrame, question_column: str) -> pl.DataFrame:
    """The forget questions in the phrasing sampling uses, with answer, fact and group."""
    from leakk.sampling.stage import questions_for

    cols = ["qid", "group", "answer"] + (["fact"] if "fact" in data.columns else [])
    return questions_for(data, ["forget"], question_column).join(data.select(cols), on="qid", how="left")


def write_bounds(data: pl.DataFrame, params: dict[str, Any], *, model_name: str, model_dir: str,
           out: str | os.PathLike, template: str | None = None) -> pl.DataFrame:
    """Teacher-forced exact p for every forget question × configured decoding of one model
    (prompted with ``template``, default ``prompt_template``: a prompt attack passes its own)."""
    from leakk.stats.bounds import question_bounds
    from leakk.models.modeling import load_model, pick_device
    from leakk.sampling.decoding import Decoding

    sample = params["sample"]
    model, tokenizer = load_model(model_dir, pick_device(params.get("device", "auto")))
    frame = question_bounds(model, tokenizer, forget_questions(data, sample["question_column"]),
                            [Decoding.from_name(d) for d in decoding_names(params)],
                            template=template or params["prompt_template"], max_new_tokens=sample["max_new_tokens"],
                            model_name=model_name)
    write_parquet(frame, out, "bounds")
    return frame


def write_bounds_table(data: pl.DataFrame, params: dict[str, Any], *, bound_files: list[str],
                 leak_path: str | os.PathLike, samples_dir: str | os.PathLike,
                 out_dir: str | os.PathLike) -> pl.DataFrame:
    """results/bounds.parquet + .csv, bounds_check.csv, why_leaks.csv and figures/bound_vs_sampled.png."""
    from leakk.stats.bounds import bound_table, starts_with_check, why_leaks_table
    from leakk.report.figures import plot_bound_vs_sampled

    per_q = pl.concat([read_parquet(f, "bounds") for f in bound_files])
    leak = read_parquet(leak_path, "leak_table")
    table = bound_table(per_q, leak)
    checks = []
    for (model, decoding), part in per_q.group_by(["model", "decoding"], maintain_order=True):
        path = Path(samples_dir) / model / f"{decoding}.parquet"
        if not path.is_file():
            continue
        samples = read_parquet(path, "samples").filter(pl.col("qid").is_in(part["qid"].implode()))
        checks.append({"model": model, "decoding": decoding, **starts_with_check(part, samples, data)})
    out_dir = Path(out_dir)
    write_parquet(table, out_dir / "bounds.parquet", "bound_table")
    _write_csv(table, out_dir / "bounds.csv")
    _write_csv(pl.DataFrame(checks), out_dir / "bounds_check.csv")
    est = params["estimate"]
    _write_csv(why_leaks_table(per_q, est["headline_decoding"]), out_dir / "why_leaks.csv")
    plot_bound_vs_sampled(table, est["headline_judge"], est["headline_decoding"],
                          out_dir / "figures" / "bound_vs_sampled.png")
    return table


def write_reliability(judgments_dir: str | os.PathLike, data: pl.DataFrame, params: dict[str, Any],
                      out_dir: str | os.PathLike, n_boot: int = 200) -> tuple[str, pl.DataFrame]:
    """guarantees.csv, extrapolation.csv, extrapolation_check.csv, reliability.md and
    figures/leak_rate_distribution.png; returns the Markdown and the retain-accuracy table
    (for the DVC metric files)."""
    from leakk.stats.extrapolate import extrapolation_table, holdout_check, load_claim, per_question_counts
    from leakk.report.figures import plot_leak_rate_distribution
    from leakk.stats.guarantees import guarantee_table, per_question
    from leakk.stages.evaluate import collect_judgments

    est = params["estimate"]
    frame = collect_judgments(judgments_dir, data, params)
    forget = frame.filter(pl.col("split") == "forget")
    counts = per_question_counts(forget)
    sampled = counts.filter(pl.col("decoding") != "greedy")
    guarantees = guarantee_table(per_question(sampled, est["ci"]), est["ci"])
    # the model-based columns for the headline judge (the bootstrap refits dominate the stage)
    extrap = extrapolation_table(sampled.filter(pl.col("judge") == est["headline_judge"]), n_boot=n_boot,
                                 ci=est["ci"], seed=est["seed"])
    claim = load_claim()
    check = holdout_check(forget.filter(pl.col("decoding") != "greedy"),
                          claim=None if claim is None else claim["abs_error"])
    out_dir = Path(out_dir)
    _write_csv(guarantees, out_dir / "guarantees.csv")
    _write_csv(extrap, out_dir / "extrapolation.csv")
    _write_csv(check, out_dir / "extrapolation_check.csv")
    plot_leak_rate_distribution(counts, est["headline_judge"], est["headline_decoding"],
                                out_dir / "figures" / "leak_rate_distribution.png")
    md = reliability_markdown(guarantees, extrap, check, est["headline_judge"], est["headline_decoding"], claim)
    write_text(md, out_dir / "reliability.md")
    from leakk.judges.run import utility_judge
    from leakk.stats.estimate import utility_table

    utility = utility_table(frame.filter((pl.col("split") == "retain") & (pl.col("decoding") == "greedy")
                                         & (pl.col("judge") == utility_judge(params))))
    return md, utility


def reliability_markdown(guarantees: pl.DataFrame, extrap: pl.DataFrame, check: pl.DataFrame,
                         judge: str, decoding: str, claim: dict | None = None) -> str:
    """A short Markdown page: the guarantees' sentences, the extrapolation and its check
    (rows outside the measured ``claim``, :func:`leakk.extrapolate.load_claim`, flagged)."""
    lines = [f"# Guarantees and extrapolation (judge `{judge}`, decoding `{decoding}`)", ""]
    g = guarantees.filter((pl.col("judge") == judge) & (pl.col("decoding") == decoding))
    lines += ["## Per-sample guarantees (exact Clopper–Pearson, Bonferroni over questions)", ""]
    lines += [f"- **{r['model']}**: {r['statement']} ({r['leaked_questions']}/{r['questions']} "
              f"questions leaked at least once in {r['n_min']} samples)" for r in g.iter_rows(named=True)]
    lines += ["", "## leak@k beyond n (model-based: Beta-binomial fit; EXTRAPOLATED where k > n)", "",
              "| model | k | beyond n | measured | extrapolated [95% CI] | family |", "|---|---|---|---|---|---|"]
    x = extrap.filter((pl.col("judge") == judge) & (pl.col("decoding") == decoding)) if extrap.height else extrap
    for r in x.iter_rows(named=True):
        meas = "–" if r["measured_leak_at_k"] is None else f"{r['measured_leak_at_k']:.3f}"
        lines.append(f"| {r['model']} | {r['k']} | {'yes' if r['beyond_n'] else 'no'} | {meas} | "
                     f"{r['extrapolated_leak_at_k']:.3f} [{r['extrapolated_ci_low']:.3f}, "
                     f"{r['extrapolated_ci_high']:.3f}] | {r['family']} |")
    stated = ("no measured claim is committed (src/leakk/stats/extrapolation_claim.json)" if claim is None else
              f"the measured claim: |error| ≤ {claim['abs_error']:.3f} in {claim['share']:.0%} of "
              f"{claim['rows']} rows across runs {', '.join(map(str, claim['runs']))}; rows beyond it are marked ⚠")
    lines += ["", "## Hold-out check: fit on the first n/4 samples, predict leak@n", "",
              "The Beta-binomial is fitted on each question's first n/4 samples (by sample_idx) only and predicts "
              "the leak@n that all n samples measure (a question that leaked already measures 1; one that did not "
              "leaks in the other samples with the model's probability). *noise sd*: how much a perfect model "
              f"would still miss by, from the unseen samples alone; z = error / noise sd. Compared with {stated}.",
              "",
              "| model | decoding | judge | fit samples | family | predicted leak@n | measured leak@n | error | "
              "noise sd | z |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in check.iter_rows(named=True):
        flag = " ⚠" if r.get("outside_claim") else ""
        lines.append(f"| {r['model']} | {r['decoding']} | {r['judge']} | {r['fit_samples']} | {r['family']} | "
                     f"{r['predicted_leak_at_n']:.3f} | {r['measured_leak_at_n']:.3f} | {r['error']:+.3f}{flag} | "
                     f"{r['noise_sd']:.3f} | {r['z']:+.1f} |")
    if check.height:
        head = check.filter((pl.col("judge") == judge) & (pl.col("decoding") == decoding))
        worst = head["error"].abs().max() if head.height else None
        lines += ["", f"Largest absolute error: {check['error'].abs().max():.3f} over every row"
                  + (f", {worst:.3f} at the headline judge and decoding." if worst is not None else ".")]
        if "outside_claim" in check.columns:
            out = int(check["outside_claim"].sum())
            lines.append(f"Rows outside the claim: {out} of {check.height}.")
    return "\n".join(lines) + "\n"


def model_metrics(metrics: dict[str, Any], utility: pl.DataFrame | None = None) -> dict[str, dict[str, float]]:
    """The headline numbers of each model as ``results/metrics/<model>.json`` holds them, so that
    ``dvc metrics show`` prints one row per model that fits a terminal: greedy leak, leak@1,
    leak@k_max, excess@k_max over retrain and retain accuracy, short keys, 3 decimals (the CIs
    are wider than that; metrics.json keeps every digit)."""
    acc = {} if utility is None else {r["model"]: r["retain_accuracy"] for r in utility.iter_rows(named=True)}
    k = metrics["k_max"]
    keys = {"greedy": "greedy_leak", "leak@1": "leak_at_1", f"leak@{k}": f"leak_at_{k}",
            f"excess@{k}": f"excess_at_{k}"}
    out = {}
    for model, numbers in metrics["models"].items():
        row = {short: numbers.get(long) for short, long in keys.items()}
        row["retain"] = acc.get(model)
        out[model] = {key: round(v, 3) for key, v in row.items() if v is not None}
    return out


def dvc_files(leak_path: str | os.PathLike, params: dict[str, Any], out_dir: str | os.PathLike,
              utility: pl.DataFrame | None = None) -> None:
    """leak_curve.csv (leak@k per model at the headline judge/decoding, for ``dvc plots``),
    metrics.json (greedy leak, leak@1 and leak@n_max per model) and metrics/<model>.json (the
    same per model, with retain accuracy: ``dvc metrics show`` prints one row per model)."""
    est = params["estimate"]
    leak = read_parquet(leak_path, "leak_table").filter(pl.col("judge") == est["headline_judge"])
    head = leak.filter(pl.col("decoding") == est["headline_decoding"]).sort("model", "k")
    out_dir = Path(out_dir)
    _write_csv(head.select("model", "k", "leak_at_k", "ci_low", "ci_high"), out_dir / "leak_curve.csv")
    kmax = int(head["k"].max()) if head.height else 1
    metrics: dict[str, Any] = {"judge": est["headline_judge"], "decoding": est["headline_decoding"],
                               "k_max": kmax, "models": {}}
    for r in leak.iter_rows(named=True):
        m = metrics["models"].setdefault(r["model"], {})
        if r["decoding"] == "greedy" and r["k"] == 1:
            m["greedy_leak"] = r["leak_at_k"]
        if r["decoding"] == est["headline_decoding"] and r["k"] in (1, kmax):
            m[f"leak_at_{r['k']}"] = r["leak_at_k"]
            if r["k"] == kmax:
                m[f"excess_at_{kmax}"] = r["excess_over_retrain"]
    write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", out_dir / "metrics.json")
    with atomic_path(out_dir / "metrics", is_dir=True) as tmp:  # the whole folder: no stale model's file
        for model, numbers in model_metrics(metrics, utility).items():
            (tmp / f"{model}.json").write_text(json.dumps(numbers, indent=1) + "\n")


# ----------------------------------------------------------------------------- stage entries

def bounds(params: dict[str, Any], *, data: str, model: str, model_dir: str, out: str) -> None:
    """Exact probability that a completion begins with the answer, per question × decoding
    (the questions the model is evaluated on: an attack may hold some out)."""
    from leakk.attacks import evaluation_inputs
    from leakk.core.io import check_model_dir

    check_model_dir(model_dir, "--model-dir")
    frame, template = evaluation_inputs(params, model, read_parquet(data, "data"))
    write_bounds(frame, params, model_name=model, model_dir=model_dir, out=out, template=template)


def bounds_table(params: dict[str, Any], *, data: str, bounds: list[str], leak: str, samples: str,
                 out_dir: str) -> None:
    """Lower bounds up to k = 10⁴ beside sampled leak@k, and their checks against the samples."""
    write_bounds_table(read_parquet(data, "data"), params, bound_files=bounds, leak_path=leak, samples_dir=samples,
                       out_dir=out_dir)


def reliability(params: dict[str, Any], *, data: str, judgments: str, leak: str, bootstrap: int,
                out_dir: str) -> None:
    """Guarantees, extrapolation and its hold-out check, and the files DVC's metrics and plots read."""
    md, utility = write_reliability(judgments, read_parquet(data, "data"), params, out_dir, n_boot=bootstrap)
    print(md)
    dvc_files(leak, params, out_dir, utility)


def report_tables(params: dict[str, Any], *, summary: str, bounds: str, check: str, reliability: str,
                  why: str | None, out: str) -> None:
    """The report's tables page (one self-contained HTML file)."""
    from leakk.report.tables import write_tables_page

    est = params["estimate"]
    write_tables_page(summary, bounds, check, reliability, out, est["headline_judge"], est["headline_decoding"],
                      why=why)


def heatmap(params: dict[str, Any], *, leak: str, judge: str | None, k: int | None, out: str) -> None:
    """leak@k over the temperature × top-p grid, per model."""
    from leakk.report.figures import plot_decoding_heatmap

    table = read_parquet(leak, "leak_table")
    k = k or int(table.filter(pl.col("decoding") != "greedy")["k"].max())
    plot_decoding_heatmap(table, judge or params["estimate"]["headline_judge"], k, out)


def report_examples(params: dict[str, Any], *, data: str, samples: str, judgments: str, per_model: int,
                    out: str) -> None:
    """The report's page of leaked completions (greedy beside sampled, the fact highlighted)."""
    from leakk.report.examples import write_examples

    write_examples(read_parquet(data, "data"), params, samples, judgments, out, per_model=per_model)
