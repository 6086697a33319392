"""The README's result tables, written from results so that they cannot drift.

Every table the README quotes sits between marker comments,

    <!-- leakk:table NAME -->
    …generated Markdown…
    <!-- /leakk:table -->

and is rendered from a small committed snapshot under ``docs/results/`` (CSV + meta.json),
which :func:`snapshot_run` and :func:`snapshot_replicates` write from results trees.
``results/`` is not in git; the snapshot is, so ``tests/test_readme_tables.py`` regenerates
every block from it and fails when the README disagrees. After a run:
``leakk readme-tables --results results --replicates results/replicates`` (either may be
left out; the snapshot keeps what it had).

Tables (``NAME``): ``headline`` (one run's summary table, exactly what ``make run`` prints),
``rule-vs-base`` (each RULE model minus its base run, paired by question), ``replicates``
(mean ± sd across seeds [pooled CI]), ``rule-targets`` and ``rule-rounds`` (RULE on the
held-out phrasing per seed: its last round against its base, and round by round),
``extrapolation`` (the hold-out check across seeds and the claim it supports),
``calibration`` (the run's other judges against ``fact``), ``attacks`` (each attacked model
against itself unattacked, per seed, and the checks of :data:`ATTACK_CLAIMS`, from an attack
preset's seeds: ``--attacks``), ``attack-checks`` (those checks alone), ``methods`` (every
unlearning method under the same stop rule, per seed, from the methods preset's seeds:
``--methods``) and ``ci-coverage`` (benchmarks/ci_coverage.py's simulation,
``docs/ci_coverage.csv``).

A block marked ``<!-- leakk:table NAME from=DIR -->`` renders from the sub-snapshot
``docs/results/DIR`` instead: the tables of an earlier default that a preset has not been
rerun on yet, kept with their own meta.json and checked against that default's report seeds;
or a rerun of today's report seeds on another machine (``leakk readme-tables --replicates DIR
--snapshot docs/results/<name> --readme``), which ``rerun`` compares with
the README's own seeds. A rerun of an earlier default's seeds sits inside that default's
sub-snapshot (``from=EARLIER/DIR``) and is compared with it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl

from leakk.core.errors import ArtifactError
from leakk.core.layout import ATTACK_SEP
from leakk.stats.estimate import fmt_num, is_missing, model_order

START = "<!-- leakk:table {name} -->"
END = "<!-- /leakk:table -->"
#: ``from=DIR``: the block renders from ``<snapshot>/DIR``, an earlier default's snapshot whose
#: report seeds the tuning record lists under ``earlier`` (:func:`report_seed_errors`), or a
#: rerun of today's report seeds; ``from=EARLIER/DIR``: a rerun of that earlier default's seeds
_BLOCK = re.compile(r"<!-- leakk:table (?P<name>[a-z0-9-]+)"
                    r"(?: from=(?P<sub>[A-Za-z0-9][A-Za-z0-9_-]*(?:/[A-Za-z0-9][A-Za-z0-9_-]*)?))? -->\n"
                    r"(?P<body>.*?)<!-- /leakk:table -->", re.S)


# ------------------------------------------------------------------------------ CI coverage

def _pct(x: float | None) -> str:
    return "–" if is_missing(x) else f"{100 * x:.1f}"


def coverage_markdown(table: pl.DataFrame, method: str, baseline: str = "t", phase: str = "confirm") -> str:
    """The README's coverage table: per regime × shape × k, the coverage (%) of a nominal 95%
    interval for ``baseline`` (today's) and ``method`` (the default), and ``method``'s
    median width, from the ``phase`` rows of benchmarks/ci_coverage.py's CSV."""
    sub = table.filter(pl.col("phase") == phase)
    if sub.is_empty():
        raise ArtifactError(f"ci coverage table: no rows of phase {phase!r}")
    reps, seed = int(sub["experiments"].min()), int(sub["seed"][0])
    cells = {(r["regime"], r["authors"], r["questions"], r["k"], r["method"]): r for r in sub.iter_rows(named=True)}
    keys = sub.select("regime", "authors", "questions", "k", "truth").unique(maintain_order=True)
    lines = [f"Coverage (%) of nominal 95% intervals, {reps} simulated experiments a cell (seed {seed}, "
             f"Monte Carlo SE ≈ {100 * math.sqrt(0.95 * 0.05 / reps):.1f} points); width = median width of "
             f"`{method}`.", "",
             f"| regime | authors × questions | k | true leak@k | `{baseline}` | `{method}` | width |",
             "|---|---|---|---|---|---|---|"]
    for r in keys.iter_rows(named=True):
        key = (r["regime"], r["authors"], r["questions"], r["k"])
        base, new = cells.get((*key, baseline)), cells.get((*key, method))
        width = "–" if new is None else f"{new['median_width']:.3f}"
        lines.append(f"| {r['regime']} | {r['authors']} × {r['questions']} | {r['k']} | {r['truth']:.3f} | "
                     f"{_pct(base['coverage'] if base else None)} | {_pct(new['coverage'] if new else None)} | "
                     f"{width} |")
    return "\n".join(lines) + "\n"


def _method_grid(sub: pl.DataFrame, value: str, fmt: Callable[[float], str]) -> list[str]:
    methods = sub["method"].unique(maintain_order=True).to_list()
    cells = {(r["regime"], r["authors"], r["questions"], r["k"], r["method"]): r[value]
             for r in sub.iter_rows(named=True)}
    lines = ["| regime | shape | k | truth | " + " | ".join(methods) + " |",
             "|---|---|---|---|" + "---|" * len(methods)]
    for r in sub.select("regime", "authors", "questions", "k", "truth").unique(maintain_order=True).iter_rows(named=True):
        key = (r["regime"], r["authors"], r["questions"], r["k"])
        lines.append(f"| {r['regime']} | {r['authors']}×{r['questions']} | {r['k']} | {r['truth']:.3f} | "
                     + " | ".join(fmt(cells.get((*key, m))) for m in methods) + " |")
    return lines


def coverage_page(table: pl.DataFrame, chosen: pl.DataFrame, confirm: pl.DataFrame) -> str:
    """docs/ci_coverage.md: the verdicts (``chosen``/``confirm``: benchmarks/ci_coverage.py's
    ``verdict`` of each phase, best first), the default method's cells outside the rule, and
    every method's coverage, width and share of trivial [0, 1] intervals in both phases."""
    from leakk.stats.estimate import DEFAULT_CI_METHOD

    best = chosen.row(0, named=True)
    verdict = (f"**{best['method']}** meets the rule in every cell" if best["ok"] else
               f"no candidate meets the rule in every cell; the fewest cells outside it ({best['cells_outside']} of "
               f"{best['cells']}), then the narrowest, is **{best['method']}**")
    lines = ["# CI coverage by simulation", "",
             "Generated by `benchmarks/ci_coverage.py` (its docstring has the model and the rule); "
             "the README's table is built from `docs/ci_coverage.csv` by `leakk readme-tables`.", "",
             "## Verdict", "",
             f"On the `select` phase {verdict}. leakk's default `estimate.ci_method`: **{DEFAULT_CI_METHOD}**.", "",
             "Cells outside the rule per method (shapes with ≥ 20 authors; 95 ± 3%, and only ≥ 92% where the "
             "true leak@k is within 0.05 of 0 or 1; and at most 5% of intervals all of [0, 1]):", "",
             "| method | select: cells outside | confirm: cells outside | confirm: min–max coverage | median width |",
             "|---|---|---|---|---|"]
    conf = {r["method"]: r for r in confirm.iter_rows(named=True)}
    for r in chosen.iter_rows(named=True):
        c = conf.get(r["method"])
        outside = "–" if c is None else f"{c['cells_outside']}/{c['cells']}"
        span = "–" if c is None else f"{_pct(c['min_coverage'])}–{_pct(c['max_coverage'])}"
        lines.append(f"| {r['method']} | {r['cells_outside']}/{r['cells']} | {outside} | {span} | "
                     f"{r['median_width']:.3f} |")
    big = table.filter((pl.col("method") == DEFAULT_CI_METHOD) & (pl.col("authors") >= 20))
    out = big.filter((pl.col("coverage") < 0.92) | (~pl.col("edge") & (pl.col("coverage") > 0.98))
                     | (pl.col("trivial") > 0.05))
    lines += ["", f"`{DEFAULT_CI_METHOD}` outside the rule: "
              + ("none." if out.is_empty() else "; ".join(
                  f"{r['phase']} {r['regime']} {r['authors']}×{r['questions']} k={r['k']} ({100 * r['coverage']:.2f}%)"
                  for r in out.iter_rows(named=True)) + ".")]
    for phase in table["phase"].unique(maintain_order=True).to_list():
        sub = table.filter(pl.col("phase") == phase)
        lines += ["", f"## Coverage (%), phase `{phase}` (seed {sub['seed'][0]}, {sub['experiments'].min()} "
                  "experiments a cell)", ""]
        lines += _method_grid(sub, "coverage", _pct)
        lines += ["", f"### Median width, phase `{phase}`", ""]
        lines += _method_grid(sub, "median_width", lambda x: "–" if x is None else f"{x:.3f}")
        lines += ["", f"### Share of intervals that are all of [0, 1], phase `{phase}`", ""]
        lines += _method_grid(sub, "trivial", _pct)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ the snapshot

#: where the committed snapshot lives, relative to the repository root
SNAPSHOT_DIR = Path("docs/results")
COVERAGE_CSV = Path("docs/ci_coverage.csv")
_META = "meta.json"


def _write_csv(frame: pl.DataFrame, path: Path) -> None:
    from leakk.core.io import atomic_path

    with atomic_path(path) as tmp:
        frame.write_csv(tmp)


def _meta(snapshot: Path) -> dict:
    path = Path(snapshot) / _META
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_meta(snapshot: Path, key: str, value: dict) -> None:
    from leakk.core.io import write_text

    meta = _meta(snapshot)
    meta[key] = value
    write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", Path(snapshot) / _META)


def _headline_rows(leak: pl.DataFrame, judge: str, decoding: str, greedy: str = "greedy") -> pl.DataFrame:
    """The leak-table rows the headline table shows: greedy k = 1, the headline decoding at k = 1 and k_max."""
    sub = leak.filter(pl.col("judge") == judge)
    head = sub.filter(pl.col("decoding") == decoding)
    k_max = int(head["k"].max()) if head.height else 1
    return sub.filter(((pl.col("decoding") == greedy) & (pl.col("k") == 1))
                      | ((pl.col("decoding") == decoding) & pl.col("k").is_in([1, k_max]))).sort("model", "decoding", "k")


def _trust_rows(results: Path, judge: str, decoding: str) -> pl.DataFrame:
    """Per model, what the trust stages say at the headline judge and decoding: the exact lower
    bound at the largest k (``bounds.csv``), how many of its k ≤ n comparisons with the sampled
    leak@k are consistent (every decoding), the starts-with check's largest |z|
    (``bounds_check.csv``), the simultaneous per-sample guarantee (``guarantees.csv``) and
    why greedy decoding hides the leak (``why_leaks.csv``)."""
    bounds = pl.read_csv(results / "bounds.csv").filter(pl.col("judge") == judge)
    k_big = int(bounds["k"].max())
    big = bounds.filter((pl.col("decoding") == decoding) & (pl.col("k") == k_big)).select(
        "model", pl.lit(k_big).alias("k_big"), bound_k_big="bound")
    compared = bounds.filter(pl.col("consistent").is_not_null()).group_by("model").agg(
        bound_checks=pl.len(), bound_consistent=pl.col("consistent").sum())
    z = pl.read_csv(results / "bounds_check.csv").group_by("model").agg(starts_with_max_abs_z=pl.col("z").abs().max())
    guarantee = pl.read_csv(results / "guarantees.csv").filter(
        (pl.col("judge") == judge) & (pl.col("decoding") == decoding)).select("model", guarantee="max_upper")
    why = pl.read_csv(results / "why_leaks.csv").select("model", "fact_not_argmax", "fact_rank_median")
    out = big
    for part in (compared, z, guarantee, why):
        out = out.join(part, on="model", how="left")
    return out.sort("model")


def snapshot_run(results: str | os.PathLike, params: dict[str, Any], snapshot: str | os.PathLike = SNAPSHOT_DIR) -> list[str]:
    """From one run's results folder: ``headline.csv`` (the summary's leak-table rows),
    ``utility.csv`` and ``rule_vs_base.csv`` (headline judge and decoding), and the run's
    settings in ``meta.json``; ``trust.csv`` (:func:`_trust_rows`) where the trust stages ran;
    ``calibration.csv`` (:func:`_calibration_rows`) where ``leakk calibrate`` measured a judge
    against ``fact``, else no calibration (an earlier run's is removed, never shown under
    this run's seed). Returns the files written."""
    from leakk.core.io import read_parquet

    results, snapshot = Path(results), Path(snapshot)
    est = params["estimate"]
    judge, decoding = est["headline_judge"], est["headline_decoding"]
    leak = read_parquet(results / "leak_at_k.parquet", "leak_table")
    _write_csv(_headline_rows(leak, judge, decoding), snapshot / "headline.csv")
    _write_csv(pl.read_csv(results / "utility.csv").sort("model"), snapshot / "utility.csv")
    written = ["headline.csv", "utility.csv"]
    paired = results / "rule_vs_base.csv"
    if paired.is_file():
        table = pl.read_csv(paired)
        if table.height:
            table = table.filter((pl.col("judge") == judge) & (pl.col("decoding") == decoding))
        _write_csv(table, snapshot / "rule_vs_base.csv")
        written.append("rule_vs_base.csv")
    if all((results / name).is_file() for name in ("bounds.csv", "bounds_check.csv", "guarantees.csv", "why_leaks.csv")):
        _write_csv(_trust_rows(results, judge, decoding), snapshot / "trust.csv")
        written.append("trust.csv")
    calibration = _calibration_rows(results / "calibration.csv", decoding)
    if calibration is not None:
        _write_csv(calibration, snapshot / "calibration.csv")
        written.append("calibration.csv")
    else:
        (snapshot / "calibration.csv").unlink(missing_ok=True)
    _write_meta(snapshot, "run", {"judge": judge, "decoding": decoding, "ci": est["ci"], "ci_method": est["ci_method"],
                                  "n": params["sample"]["n"], "seed": params["seed"]})
    return written


def _calibration_rows(path: Path, decoding: str) -> pl.DataFrame | None:
    """``leakk calibrate``'s rows at ``decoding``, in the order it wrote them (per judge, the
    summary's model order: :func:`leakk.stats.calibrate.calibration_table`); None when the run
    has none (one judge, no ``fact``, or no calibrate stage)."""
    if not path.is_file():
        return None
    table = pl.read_csv(path)
    if table.is_empty():
        return None
    if missing := {"judge", "model", "decoding", "k", "items"} - set(table.columns):
        raise ArtifactError(f"{path}: lacks columns {sorted(missing)}; rerun `leakk calibrate`")
    table = table.filter(pl.col("decoding") == decoding)
    return None if table.is_empty() else table


def _rounds(results: Path, seed: int) -> pl.DataFrame | None:
    frames = []
    for path in sorted(results.glob("rule_eval/*/rounds.parquet")):
        log = pl.read_parquet(path)
        n = max(int(c.removeprefix("eval_leak_at_")) for c in log.columns
                if c.startswith("eval_leak_at_") and c.removeprefix("eval_leak_at_").isdigit())
        frames.append(log.select("round", pl.col("eval_leak_at_1").alias("leak_at_1"),
                                 pl.col(f"eval_leak_at_{n}").alias("leak_at_n"), "retain_accuracy")
                      .with_columns(rule=pl.lit(path.parent.name), seed=pl.lit(seed, pl.Int64), n=pl.lit(n, pl.Int64)))
    return pl.concat(frames) if frames else None


def _seed_claim_rows(results: Path, seed: int, judge: str, decoding: str) -> pl.DataFrame:
    """One seed's numbers the claims table checks: per model, greedy leak, leak@n of the
    headline decoding (n = its largest k) and retain accuracy."""
    from leakk.core.io import read_parquet

    leak = read_parquet(results / "leak_at_k.parquet", "leak_table").filter(pl.col("judge") == judge)
    greedy = leak.filter((pl.col("decoding") == "greedy") & (pl.col("k") == 1)).select("model", greedy="leak_at_k")
    head = leak.filter(pl.col("decoding") == decoding)
    sampled = head.filter(pl.col("k") == head["k"].max()).select("model", "k", leak_at_n="leak_at_k")
    utility = pl.read_csv(results / "utility.csv").select("model", "retain_accuracy")
    return (greedy.join(sampled, on="model", how="full", coalesce=True).join(utility, on="model", how="left")
            .with_columns(seed=pl.lit(seed, pl.Int64)).select("seed", "model", "greedy", "k", "leak_at_n",
                                                              "retain_accuracy").sort("model"))


def snapshot_replicates(root: str | os.PathLike, params: dict[str, Any],
                        snapshot: str | os.PathLike = SNAPSHOT_DIR, claim_file: str | os.PathLike | None = None) -> list[str]:
    """From a replicates folder (``leakk replicates``): ``replicates.csv`` and
    ``replicates_utility.csv`` (the aggregate's rows the summary shows), ``rule_rounds.csv``
    (every seed's RULE rounds on the held-out phrasing), ``seed_claims.csv`` (what :data:`CLAIMS`
    checks, per seed), ``extrapolation_errors.csv`` (the
    hold-out check of every seed, :func:`leakk.stats.extrapolate.validate_runs`) and its claim,
    written to ``claim_file`` (default: the one the reliability stage reads)."""
    from leakk.stats.extrapolate import CLAIM_FILE, error_claim, validate_runs
    from leakk.core.io import write_text
    from leakk.stats.replicate_stats import found_seeds, seed_results

    root, snapshot = Path(root), Path(snapshot)
    est = params["estimate"]
    judge, decoding = est["headline_judge"], est["headline_decoding"]
    seeds = params.get("replicates") or found_seeds(root)
    table = pl.read_csv(root / "leak_at_k.csv")
    _write_csv(_headline_rows(table, judge, decoding), snapshot / "replicates.csv")
    _write_csv(pl.read_csv(root / "utility.csv").sort("model"), snapshot / "replicates_utility.csv")
    written = ["replicates.csv", "replicates_utility.csv"]
    rounds = [r for s in seeds if (r := _rounds(seed_results(root, s), s)) is not None]
    if rounds:
        _write_csv(pl.concat(rounds).sort("rule", "seed", "round"), snapshot / "rule_rounds.csv")
        written.append("rule_rounds.csv")
    _write_csv(pl.concat([_seed_claim_rows(seed_results(root, s), s, judge, decoding) for s in seeds]),
               snapshot / "seed_claims.csv")
    written.append("seed_claims.csv")
    errors = validate_runs({s: seed_results(root, s) for s in seeds})
    _write_csv(errors, snapshot / "extrapolation_errors.csv")
    claim = error_claim(errors)
    write_text(json.dumps(claim, indent=2, sort_keys=True) + "\n", Path(claim_file or CLAIM_FILE))
    written.append("extrapolation_errors.csv")
    _write_meta(snapshot, "replicates", {"judge": judge, "decoding": decoding, "seeds": list(seeds),
                                         "n": params["sample"]["n"], "ci": est["ci"], "ci_method": est["ci_method"]})
    return written


def _preset(root: str | os.PathLike, snapshot: str | os.PathLike, params: dict[str, Any]):
    """(root, snapshot, headline judge, headline decoding, seeds) of a preset's replicates folder."""
    from leakk.stats.replicate_stats import found_seeds

    est = params["estimate"]
    return (Path(root), Path(snapshot), est["headline_judge"], est["headline_decoding"],
            params.get("replicates") or found_seeds(root))


def snapshot_attacks(root: str | os.PathLike, params: dict[str, Any],
                     snapshot: str | os.PathLike = SNAPSHOT_DIR) -> list[str]:
    """From an attack preset's replicates folder (``configs/attacks.yaml``): ``attacks.csv``,
    every seed's attacked-vs-clean rows at the headline judge (greedy, and the headline
    decoding at its largest k) with a ``seed`` column."""
    from leakk.stats.replicate_stats import seed_results

    est = params["estimate"]
    root, snapshot, judge, decoding, seeds = _preset(root, snapshot, params)
    frames = []
    for seed in seeds:
        path = seed_results(root, seed) / "attacks.csv"
        if not path.is_file():
            raise ArtifactError(f"{path}: missing; seed {seed} of the attack preset has not finished")
        table = pl.read_csv(path).filter(pl.col("judge") == judge)
        head = table.filter(pl.col("decoding") == decoding)
        k_max = int(head["k"].max()) if head.height else 1
        frames.append(table.filter(((pl.col("decoding") == "greedy") & (pl.col("k") == 1))
                                   | ((pl.col("decoding") == decoding) & (pl.col("k") == k_max)))
                      .with_columns(seed=pl.lit(seed, pl.Int64)))
    rows = pl.concat(frames, how="diagonal_relaxed").sort("seed", "model", "decoding")
    if rows.is_empty():
        raise ArtifactError(f"{root}: the seeds' attacks.csv hold no rows (no attack: entries in the params?)")
    _write_csv(rows, snapshot / "attacks.csv")
    _write_meta(snapshot, "attacks", {"judge": judge, "decoding": decoding, "seeds": list(seeds),
                                      "ci": est["ci"], "ci_method": est["ci_method"]})
    return ["attacks.csv"]


def preset_seed_rows(root: Path, params: dict[str, Any], seeds: list[int], judge: str, decoding: str,
                     preset: str) -> pl.DataFrame:
    """Every finished seed's claim numbers per model (as ``seed_claims.csv``) of a preset's
    replicates folder, refused when a seed has not finished or the results hold a model these
    params do not define (the table would silently drop it: not the params the preset ran)."""
    from leakk.stats.replicate_stats import seed_results

    frames = []
    for seed in seeds:
        results = seed_results(root, seed)
        if not (results / "leak_at_k.parquet").is_file():
            raise ArtifactError(f"{results}: no leak_at_k.parquet; seed {seed} of the {preset} preset has not finished")
        frames.append(_seed_claim_rows(results, seed, judge, decoding))
    rows = pl.concat(frames)
    unknown = sorted(set(rows["model"]) - {"full", "retrain"} - set(params["unlearn"]) - set(params.get("rule") or {}))
    if unknown:
        raise ArtifactError(f"{root}: the preset's results hold {', '.join(unknown)}, which these params do not "
                            f"define; pass the preset's own params (leakk --params configs/{preset}.yaml readme-tables …)")
    return rows


def snapshot_methods(root: str | os.PathLike, params: dict[str, Any],
                     snapshot: str | os.PathLike = SNAPSHOT_DIR) -> list[str]:
    """From the methods preset's replicates folder (``configs/methods.yaml``): ``methods.csv``,
    every seed's greedy leak, leak@k_max and retain accuracy per model (as ``seed_claims.csv``)."""
    root, snapshot, judge, decoding, seeds = _preset(root, snapshot, params)
    rows = preset_seed_rows(root, params, seeds, judge, decoding, "methods")
    _write_csv(rows, snapshot / "methods.csv")
    _write_meta(snapshot, "methods", {"judge": judge, "decoding": decoding, "seeds": list(seeds),
                                      "runs": {m: r["method"] for m, r in params["unlearn"].items()}})
    return ["methods.csv"]


# ------------------------------------------------------------------------------ the tables

def _read(snapshot: Path, name: str) -> pl.DataFrame:
    path = Path(snapshot) / name
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; write it with `leakk readme-tables --results … --replicates …`")
    return pl.read_csv(path)


def _need(meta: dict, key: str, snapshot: Path) -> dict:
    if key not in meta:
        raise ArtifactError(f"{Path(snapshot) / _META}: no {key!r} entry; write it with `leakk readme-tables`")
    return meta[key]


def _minus(text: str) -> str:
    """The README's typography: a real minus sign."""
    return text.replace("-", "−")


_NAMES = {"graddiff": "GradDiff", "npo": "NPO", "ga": "GA", "simnpo": "SimNPO", "full": "the full model"}


def _pretty(rule: str) -> str:
    base = rule.removeprefix("rule_")
    return f"RULE-{_NAMES.get(base, base)}" if rule.startswith("rule_") else rule


def _spoken(model: str) -> str:
    """A model's name in a sentence ("GradDiff", "RULE-NPO", "the full model")."""
    return _NAMES.get(model) or _pretty(model)


def headline(snapshot: Path) -> str:
    """One run's summary table, exactly as ``make run`` prints it (:func:`leakk.stats.estimate.summary_markdown`)."""
    from leakk.stats.estimate import summary_markdown

    run = _need(_meta(snapshot), "run", snapshot)
    return summary_markdown(_read(snapshot, "headline.csv"), _read(snapshot, "utility.csv"), judge=run["judge"],
                            headline_decoding=run["decoding"], ci_method=run["ci_method"])


def rule_vs_base(snapshot: Path) -> str:
    """The summary's RULE-vs-base lines (:func:`leakk.stats.estimate.paired_markdown`)."""
    from leakk.stats.estimate import paired_markdown

    run = _need(_meta(snapshot), "run", snapshot)
    return paired_markdown(_read(snapshot, "rule_vs_base.csv"), run["judge"], run["decoding"], run["ci"],
                           run["ci_method"])


def replicates(snapshot: Path) -> str:
    """Mean ± sd across seeds [pooled CI] (:func:`leakk.stats.replicate_stats.summary_markdown`)."""
    from leakk.stats.replicate_stats import summary_markdown

    rep = _need(_meta(snapshot), "replicates", snapshot)
    return summary_markdown(_read(snapshot, "replicates.csv"), _read(snapshot, "replicates_utility.csv"),
                            rep["judge"], rep["decoding"], rep["seeds"])


def _round_cells(rounds: pl.DataFrame):
    """{(rule, seed, round): (leak@n, change vs round 0, retain Δ in points)}."""
    out = {}
    for (rule, seed), part in rounds.group_by("rule", "seed", maintain_order=True):
        part = part.sort("round")
        base, base_acc = part["leak_at_n"][0], part["retain_accuracy"][0]
        for r in part.iter_rows(named=True):
            change = None if not base else r["leak_at_n"] / base - 1
            out[(rule, seed, r["round"])] = (r["leak_at_n"], change, 100 * (r["retain_accuracy"] - base_acc))
    return out


def _change(x: float | None) -> str:
    if x is None:
        return "–"
    return "±0%" if round(100 * x) == 0 else _minus(f"{100 * x:+.0f}%")


def rule_targets(snapshot: Path) -> str:
    """RULE's three targets per seed at its last round: leak@n and its cut against round 0
    (the base run), retain change in points, and whether the curve is flat
    (leak@n ≤ 2·leak@1 + 0.02), all on the held-out phrasing."""
    rounds = _read(snapshot, "rule_rounds.csv")
    cells = _round_cells(rounds)
    seeds = sorted(rounds["seed"].unique().to_list())
    rules = rounds["rule"].unique(maintain_order=True).to_list()
    n = int(rounds["n"].max())
    last = {(r["rule"], r["seed"]): r for r in rounds.sort("round").group_by("rule", "seed").last().iter_rows(named=True)}
    lines = ["| | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds)]
    for rule in rules:
        row = []
        for s in seeds:
            end = last.get((rule, s))
            if end is None:
                row.append("–")
                continue
            leak, change, retain = cells[(rule, s, end["round"])]
            row.append(_minus(f"{leak:.2f} ({_change(change)}), {retain:+.0f} pts").replace("−−", "−"))
        lines.append(f"| {_pretty(rule)}: leak@{n} (cut), retain Δ | " + " | ".join(row) + " |")
    flat = []
    for s in seeds:
        marks = []
        for rule in rules:
            end = last.get((rule, s))
            marks.append("–" if end is None else ("yes" if end["leak_at_n"] <= 2 * end["leak_at_1"] + 0.02 else "no"))
        flat.append(" / ".join(marks))
    lines.append(f"| flat ({' / '.join(map(_pretty, rules))}) | " + " | ".join(flat) + " |")
    return "\n".join(lines) + "\n"


def rule_rounds(snapshot: Path) -> str:
    """RULE round by round, per seed: leak@n (its change vs round 0), retain Δ in points."""
    rounds = _read(snapshot, "rule_rounds.csv")
    cells = _round_cells(rounds)
    seeds = sorted(rounds["seed"].unique().to_list())
    lines = []
    for i, rule in enumerate(rounds["rule"].unique(maintain_order=True).to_list()):
        title = f"{_pretty(rule)} round"
        if i == 0:
            lines += [f"| {title} | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds)]
        else:
            lines.append(f"| **{title}** |" + " |" * len(seeds))
        for r in sorted(rounds.filter(pl.col("rule") == rule)["round"].unique().to_list()):
            row = []
            for s in seeds:
                cell = cells.get((rule, s, r))
                if cell is None:
                    row.append("–")
                elif r == 0:
                    row.append(f"{cell[0]:.2f} (base)")
                else:
                    row.append(f"{cell[0]:.2f} ({_change(cell[1])}), " + _minus(f"{cell[2]:+.0f}"))
            lines.append(f"| {r} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def extrapolation(snapshot: Path) -> str:
    """What the Beta-binomial extrapolation held to across seeds (:func:`leakk.stats.extrapolate.error_claim`)."""
    from leakk.stats.extrapolate import error_claim

    errors = _read(snapshot, "extrapolation_errors.csv").with_columns(pl.col("run").cast(pl.String))
    claim = error_claim(errors)
    lines = [f"Fitted on the first {claim['fraction']:.0%} of each question's samples, predicting the leak@n that "
             f"all n samples measure, over {claim['rows']} rows (runs {', '.join(claim['runs'])}; decodings "
             f"{', '.join(claim['decodings'])}; judges {', '.join(claim['judges'])}): **|error| ≤ "
             f"{claim['abs_error']:.3f} in {claim['share']:.0%} of rows** ({claim['within']}/{claim['rows']}); "
             f"median |error| {claim['median_abs_error']:.3f}, largest {claim['max_abs_error']:.3f}; "
             f"{claim['share_within_2sd']:.0%} of rows within 2 noise SDs.", "",
             "| run | decoding | rows | median \\|error\\| | largest \\|error\\| | beyond the claim |",
             "|---|---|---|---|---|---|"]
    for (run, decoding), part in errors.group_by("run", "decoding", maintain_order=True):
        err = part["error"].abs()
        lines.append(f"| {run} | {decoding} | {part.height} | {err.median():.3f} | {err.max():.3f} | "
                     f"{int((err > claim['abs_error'] + 1e-12).sum())} |")
    return "\n".join(lines) + "\n"


def trust(snapshot: Path) -> str:
    """The run's exact bounds, guarantees and why-it-leaks numbers, one row per model."""
    run = _need(_meta(snapshot), "run", snapshot)
    rows = _read(snapshot, "trust.csv")
    k_big = int(rows["k_big"].max())
    lines = [f"Judge `{run['judge']}`, decoding `{run['decoding']}` (the bound check: every decoding).", "",
             f"| model | exact lower bound on leak@{k_big:,} | bound ≤ sampled leak@k (k ≤ n) | starts-with rate, "
             "largest \\|z\\| | per-sample leak probability ≤ (95%, all questions at once) | fact token not the "
             "argmax | median rank of the fact token |", "|---|---|---|---|---|---|---|"]

    def cell(x, fmt):
        return "–" if x is None else format(x, fmt)

    for r in rows.iter_rows(named=True):
        checks = "–" if r["bound_checks"] is None else f"{r['bound_consistent']}/{r['bound_checks']}"
        lines.append(f"| {r['model']} | {cell(r['bound_k_big'], '.2f')} | {checks} | "
                     f"{cell(r['starts_with_max_abs_z'], '.1f')} | {cell(r['guarantee'], '.3f')} | "
                     f"{cell(r['fact_not_argmax'], '.0%')} | {cell(r['fact_rank_median'], 'g')} |")
    return "\n".join(lines) + "\n"


def calibration(snapshot: Path) -> str:
    """Every other judge of the run against ``fact`` (:mod:`leakk.stats.calibrate`), per judge
    and model at the headline decoding: agreement per completion, and leak@1 and leak@k under
    each. A run without a second judge says so in one line."""
    from leakk.stats.calibrate import TRUTH

    run = _need(_meta(snapshot), "run", snapshot)
    if not (Path(snapshot) / "calibration.csv").is_file():
        return (f"No calibration in this snapshot: the run of seed {run['seed']} has no judge besides "
                f"`{TRUTH}`, or no `{TRUTH}` judge, at decoding `{run['decoding']}`.\n")
    rows = _read(snapshot, "calibration.csv")
    ks, items = sorted(set(rows["k"])), sorted(set(rows["items"]))
    at_k = f"leak@{ks[0]}" if len(ks) == 1 else "leak@k (k per row)"
    count = f"{items[0]:,}" if len(items) == 1 else f"{items[0]:,}–{items[-1]:,}"
    lines = [f"Each judge against `{TRUTH}` (the truth here), decoding `{run['decoding']}`, seed {run['seed']}; "
             f"{count} completions per model.", "",
             f"| judge | model | precision | recall | F1 | false-pos. rate | leak@1: judge / {TRUTH} | "
             f"{at_k}: judge / {TRUTH} |", "|---|---|---|---|---|---|---|---|"]
    for r in rows.iter_rows(named=True):
        k_note = "" if len(ks) == 1 else f" (k = {r['k']})"
        lines.append(f"| {r['judge']} | {r['model']} | {fmt_num(r['precision'])} | {fmt_num(r['recall'])} | "
                     f"{fmt_num(r['f1'])} | {fmt_num(r['false_positive_rate'])} | "
                     f"{fmt_num(r['leak_at_1'])} / {fmt_num(r['leak_at_1_fact'])} | "
                     f"{fmt_num(r['leak_at_k'])} / {fmt_num(r['leak_at_k_fact'])}{k_note} |")
    return "\n".join(lines) + "\n"


#: the miniature's claims, checked per report seed: (what, models, column, "≥"/"≤", threshold)
CLAIMS: tuple[tuple[str, tuple[str, ...], str, str, float], ...] = (
    ("the full model leaks greedily", ("full",), "greedy", "≥", 0.8),
    ("the retrain model does not leak when sampled", ("retrain",), "leak_at_n", "≤", 0.05),
    ("greedy says forgotten", ("ga", "graddiff", "npo"), "greedy", "≤", 0.15),
    ("sampling leaks", ("ga", "graddiff", "npo"), "leak_at_n", "≥", 0.3),
    ("retain accuracy kept", ("graddiff", "npo"), "retain_accuracy", "≥", 0.5),
)


#: the claims table's numbers (seed_claims.csv columns) a rerun is compared on, and their labels
CLAIM_NUMBERS = {"greedy": "greedy leak", "leak_at_n": "leak@n", "retain_accuracy": "retain accuracy"}


def _label(column: str, n: int) -> str:
    """A claim number's label, leak@n with its n ("leak@64")."""
    return CLAIM_NUMBERS[column].replace("@n", f"@{n}")


class ClaimCheck(NamedTuple):
    """One (claim, model) of :data:`CLAIMS` on seed_claims.csv rows."""
    label: str                # "greedy says forgotten: greedy leak ≤ 0.15"
    model: str
    column: str               # the seed_claims.csv number it checks
    cells: list[str]          # per seed: the value, ✗ where it fails, – where missing
    holds: bool               # on every seed (a missing value fails)
    room: float | None        # the least distance to the line over the seeds (None: a seed lacks it)
    room_seed: int | None     # where that least room is


def _claim_checks(rows: pl.DataFrame) -> list[ClaimCheck]:
    """Each (claim, model) of :data:`CLAIMS` on seed_claims.csv rows (:class:`ClaimCheck`)."""
    seeds = sorted(rows["seed"].unique().to_list())
    value = {(r["seed"], r["model"]): r for r in rows.iter_rows(named=True)}
    n = int(rows["k"].max())
    out = []
    for what, models, column, op, threshold in CLAIMS:
        for model in models:
            cells, rooms = [], []
            for s in seeds:
                x = (value.get((s, model)) or {}).get(column)
                room = None if x is None else (x - threshold if op == "≥" else threshold - x)
                rooms.append((room, s))
                cells.append("–" if x is None else f"{x:.2f}" + ("" if room >= 0 else " ✗"))
            least = min(rooms) if rooms and all(r is not None for r, _ in rooms) else (None, None)
            holds = least[0] is not None and least[0] >= 0  # a missing value fails
            out.append(ClaimCheck(f"{what}: {_label(column, n)} {op} {threshold:g}", model, column, cells, holds,
                                  *least))
    return out


def _claims_lines(rows: pl.DataFrame, checks: list[ClaimCheck]) -> list[str]:
    """The claims table's Markdown lines for seed_claims.csv ``rows`` and their :func:`_claim_checks`."""
    seeds = sorted(rows["seed"].unique().to_list())
    return (["| claim | model | " + " | ".join(f"seed {s}" for s in seeds) + " | holds |",
             "|---|---|" + "---|" * len(seeds) + "---|"]
            + [f"| {c.label} | {c.model} | " + " | ".join(c.cells) + " | " + ("yes" if c.holds else "**no**") + " |"
               for c in checks])


def claims(snapshot: Path) -> str:
    """The miniature's claims on every report seed: the value per model and seed, ✗ where a
    claim fails, and a verdict per claim (it holds only if it holds on every seed)."""
    rows = _read(snapshot, "seed_claims.csv")
    return "\n".join(_claims_lines(rows, _claim_checks(rows))) + "\n"


def claims_drift(reference: pl.DataFrame, rerun: pl.DataFrame) -> pl.DataFrame:
    """A rerun's seed_claims.csv rows beside the reference's for the same seeds (columns
    ``<number>`` and ``<number>_rerun``), sorted by seed and model; a seed the reference lacks
    is refused."""
    if unknown := sorted(set(rerun["seed"]) - set(reference["seed"])):
        raise ArtifactError(f"the rerun's seeds {unknown} are not in the reference's seed_claims.csv "
                            f"(it holds {sorted(set(reference['seed']))})")
    keys = ["seed", "model"]
    numbers = {c: pl.Float64 for c in CLAIM_NUMBERS}  # an all-empty CSV column reads as text
    reference = reference.filter(pl.col("seed").is_in(rerun["seed"].unique().to_list())).cast(numbers)
    both = reference.join(rerun.cast(numbers), on=keys, how="full", coalesce=True, suffix="_rerun").sort(keys)
    if (other_k := both.filter(pl.col("k") != pl.col("k_rerun"))).height:  # leak@32 is no leak@64
        row = other_k.row(0, named=True)
        raise ArtifactError(f"the rerun's leak@n is at n = {row['k_rerun']} where the reference's is at n = {row['k']} "
                            f"(seed {row['seed']}, {row['model']}): its numbers are not comparable")
    return both


def _drift_summary(both: pl.DataFrame) -> dict[str, tuple[str, str]]:
    """(largest, median) |Δ| of each claim number over every (seed, model) both runs have, as
    text ("–" where no row has both)."""
    out = {}
    for c in CLAIM_NUMBERS:
        delta = (both[f"{c}_rerun"] - both[c]).abs().drop_nulls()
        out[c] = (f"{delta.max():.3f}", f"{delta.median():.3f}") if delta.len() else ("–", "–")
    return out


#: what must match between a rerun and the README's seeds for their numbers to be compared
RERUN_MATCH = ("judge", "decoding", "n")


def _kind_differs(snapshot: Path, other: Path) -> list[str]:
    """Which of :data:`RERUN_MATCH` two snapshots' seed numbers differ in (empty: comparable)."""
    mine, theirs = (_meta(p).get("replicates", {}) for p in (snapshot, other))
    return [k for k in RERUN_MATCH if mine.get(k) != theirs.get(k)]


def _rerun_parts(snapshot: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the drift frame, the rerun's rows) of a rerun sub-snapshot against its parent."""
    mine, theirs = (_meta(p).get("replicates", {}) for p in (snapshot, snapshot.parent))
    if differ := _kind_differs(snapshot, snapshot.parent):
        raise ArtifactError(f"{snapshot}: the rerun's {', '.join(differ)} ({[mine.get(k) for k in differ]}) differ "
                            f"from the README's ({[theirs.get(k) for k in differ]}): its numbers are not comparable")
    rerun = _read(snapshot, "seed_claims.csv")
    try:
        both = claims_drift(_read(snapshot.parent, "seed_claims.csv"), rerun)
    except ArtifactError as err:
        raise ArtifactError(f"{snapshot}: {err}; a rerun of other report seeds is stale: rerun today's report "
                            "seeds on that machine, or remove the folder") from None
    return both, rerun


def rerun_provenance(root: str | os.PathLike) -> dict[str, list[str]]:
    """The CPU kernel modes (``LEAKK_CPU_KERNELS``) and the CPUs the seeds under ``root`` trained
    and sampled with, as their artifacts record them: a rerun's provenance, read, not typed
    ("unrecorded" for artifacts written before leakk recorded it)."""
    from leakk.core.io import read_execution

    found: dict[str, set[str]] = {"cpu_kernels": set(), "cpu": set()}
    for part in ("models", "samples"):
        for path in Path(root).glob(f"seed_*/results/{part}/**/*.parquet"):
            execution = read_execution(path)
            for key, values in found.items():
                values.add(str(execution.get(key, "unrecorded")))
    return {key: sorted(values) for key, values in found.items()}


def rerun_markdown(both: pl.DataFrame, rerun: pl.DataFrame) -> str:
    """Every (seed, model)'s claim numbers, reference → rerun, each row's largest |Δ|, the
    largest and median |Δ| of each number, and the claims table as the rerun gives it."""
    n = int(rerun["k"].max())
    labels = [_label(c, n) for c in CLAIM_NUMBERS]
    lines = ["| seed | model | " + " | ".join(labels) + " | largest \\|Δ\\| |",
             "|---|---|" + "---|" * (len(labels) + 1)]
    for row in both.iter_rows(named=True):
        pairs = [(row[c], row[f"{c}_rerun"]) for c in CLAIM_NUMBERS]
        cells = ["–" if a is None or b is None else f"{a:.3f} → {b:.3f}" for a, b in pairs]
        largest = max((abs(b - a) for a, b in pairs if a is not None and b is not None), default=0.0)
        lines.append(f"| {row['seed']} | {row['model']} | " + " | ".join(cells) + f" | {largest:.3f} |")
    summary = _drift_summary(both)
    lines += ["", "|Δ| over every seed and model: " + "; ".join(
        f"{label} largest {summary[c][0]}, median {summary[c][1]}" for c, label in zip(CLAIM_NUMBERS, labels))
        + ".", ""]
    checks = _claim_checks(rerun)
    lines += [f"The claims on the rerun ({sum(c.holds for c in checks)} of {len(checks)} hold on every seed):", ""]
    return "\n".join(lines + _claims_lines(rerun, checks)) + "\n"


def rerun(snapshot: Path) -> str:
    """A rerun of the report seeds on another machine (a sub-snapshot: ``from=DIR``) against
    its parent's seed_claims.csv (:func:`rerun_markdown`: the README's own, or an earlier
    default's), and how many of the rerun's extrapolation rows the parent's claim covers."""
    from leakk.stats.extrapolate import error_claim

    both, rows = _rerun_parts(snapshot)
    text = rerun_markdown(both, rows)
    if (snapshot / "extrapolation_errors.csv").is_file() and (snapshot.parent / "extrapolation_errors.csv").is_file():
        bound = error_claim(_read(snapshot.parent, "extrapolation_errors.csv"))["abs_error"]
        err = _read(snapshot, "extrapolation_errors.csv")["error"].abs()
        whose = f"{snapshot.parent.name}'s" if _is_sub_snapshot(snapshot.parent) else "The README's"
        text += (f"\n{whose} extrapolation claim, |error| ≤ {bound:.3f}, covers "
                 f"{int((err <= bound + 1e-12).sum())} of the rerun's {err.len()} rows "
                 f"(median |error| {err.median():.3f}, largest {err.max():.3f}).\n")
    return text


# ------------------------------------------------------------------------------ the tolerance

def rerun_moves(snapshot: Path) -> pl.DataFrame:
    """|Δ| of each claim number in every committed rerun under ``snapshot`` (today's report
    seeds' and earlier defaults', each against its own parent): one row per (rerun, seed,
    model), null where one side lacks the number. What another arithmetic did to these numbers,
    measured, not assumed. Only reruns at the snapshot's judge, decoding and n are pooled: an
    earlier default's leak@32 says nothing about today's leak@64."""
    frames = []
    for sub in _nested_snapshots(snapshot):
        if "rerun" not in _meta(sub) or _kind_differs(sub.parent, snapshot):
            continue  # an earlier default's own tables, or a rerun of numbers of another kind
        both, _ = _rerun_parts(sub)
        frames.append(both.select(
            pl.lit(sub.relative_to(snapshot).as_posix()).alias("rerun"), "seed", "model",
            *[(pl.col(f"{c}_rerun") - pl.col(c)).abs().alias(c) for c in CLAIM_NUMBERS]))
    schema = {"rerun": pl.String, "seed": pl.Int64, "model": pl.String} | {c: pl.Float64 for c in CLAIM_NUMBERS}
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)


def _measured_moves(snapshot: Path) -> pl.DataFrame:
    """:func:`rerun_moves`, refused when no rerun is committed (there is no tolerance to state)."""
    moves = rerun_moves(snapshot)
    if moves.is_empty():
        raise ArtifactError(f"{snapshot}: no rerun sub-snapshot (meta.json `rerun`) to measure a tolerance from")
    return moves


def largest_moves(moves: pl.DataFrame) -> dict[str, dict[str, float | None]]:
    """model → claim number → the largest |Δ| any rerun measured for it (:func:`rerun_moves`;
    None where none did): how far that model's number has moved under other arithmetic, so
    whether a claim on it can flip on another CPU."""
    rows = moves.group_by("model").agg(pl.col(c).max() for c in CLAIM_NUMBERS).iter_rows(named=True)
    return {row["model"]: {c: row[c] for c in CLAIM_NUMBERS} for row in rows}


def tolerance(moves: pl.DataFrame) -> dict[str, float]:
    """claim number → the largest |Δ| any model's number moved in any rerun: the tolerance a run
    on another CPU is held to (:func:`beyond_tolerance`). Pooled over models, so that it rests
    on every move measured, not on a dozen per model (a fourth draw held out of the first three
    moved 5 of 63 numbers beyond their own model's largest move, none beyond this). A number no
    rerun measured has tolerance 0: nothing but the same bits is known to be possible."""
    return {c: float(moves[c].max() or 0.0) for c in CLAIM_NUMBERS}


def widest(moves: pl.DataFrame) -> dict[str, str]:
    """claim number → the rerun that measured its tolerance (the first, if several tie)."""
    return {c: moves.sort(["rerun", "seed", "model"]).filter(pl.col(c) == pl.col(c).max())["rerun"][0]
            for c in CLAIM_NUMBERS if moves[c].max() is not None}


def beyond_tolerance(both: pl.DataFrame, allowed: dict[str, float], n: int,
                     columns: dict[str, str] | None = None, suffix: str = "_rerun") -> list[str]:
    """Where a run moved more than the tolerance, or lacks a number the reference has (or the
    other way round): "seed S model: number a → b" per such number (``both``:
    :func:`claims_drift`'s columns, or ``columns``: claim number → the reference's column in
    ``both``, the run's with ``suffix``; ``n``: the k of leak@n)."""
    columns = columns or {c: c for c in CLAIM_NUMBERS}
    out = []
    for row in both.iter_rows(named=True):
        where = f"seed {row['seed']} " if "seed" in row else ""
        for c, col in columns.items():
            a, b = row.get(col), row.get(f"{col}{suffix}")
            if a is None and b is None:
                continue
            if a is None or b is None:
                out.append(f"{where}{row['model']}: {_label(c, n)} "
                           + ("missing from the run" if b is None else "not in the reference"))
                continue
            limit = allowed.get(c, 0.0)
            if abs(b - a) > limit + 1e-12:
                out.append(f"{where}{row['model']}: {_label(c, n)} {a:.3f} → {b:.3f} "
                           f"(|Δ| {abs(b - a):.3f} > {limit:.3f})")
    return out


def _three(x: float | None) -> str:
    """A move to three decimals, "–" when none was measured."""
    return "–" if x is None else f"{x:.3f}"


def _and(items: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _fragile(checks: list[ClaimCheck], per_model: dict[str, dict[str, float | None]]) -> list[bool]:
    """Per claim: whether it can come out either way on another CPU (its least room on the
    report seeds is no more than its model's largest move, or either is unknown)."""
    return [c.room is None or (move := per_model.get(c.model, {}).get(c.column)) is None or c.room <= move
            for c in checks]


def _draws(snapshot: Path) -> tuple[int, int, list[bool]]:
    """Today's report seeds under every arithmetic the snapshot holds (its own and each rerun's):
    (arithmetics, seeds, whether each claim of :data:`CLAIMS` held on every seed in all of them)."""
    frames = [_read(snapshot, "seed_claims.csv")] + [
        _rerun_parts(sub)[1] for sub in earlier_snapshots(snapshot)
        if _meta(sub).get("rerun", {}).get("of") == "report_seeds"]
    checks = [_claim_checks(f) for f in frames]
    return len(frames), frames[0]["seed"].n_unique(), [all(c[i].holds for c in checks) for i in range(len(checks[0]))]


def tolerance_table(snapshot: Path) -> str:
    """The largest |Δ| any committed rerun measured, per model and over every model (the
    tolerance, with the rerun that measured it), and each claim's least room on the report
    seeds against its model's largest move."""
    moves = _measured_moves(snapshot)
    per_model, rows = largest_moves(moves), _read(snapshot, "seed_claims.csv")
    n = int(rows["k"].max())
    runs = moves.group_by("rerun").agg(pl.col("seed").n_unique()).sort("rerun")
    lines = [f"Largest \\|Δ\\| per model over {runs['seed'].sum()} seed-draws in {runs.height} reruns ("
             + ", ".join(f"`{r}`: {s} seeds" for r, s in runs.iter_rows()) + "):", "",
             "| model | " + " | ".join(_label(c, n) for c in CLAIM_NUMBERS) + " |", "|---|" + "---|" * len(CLAIM_NUMBERS)]
    for model in model_order(per_model):
        lines.append(f"| {model} | " + " | ".join(_three(per_model[model][c]) for c in CLAIM_NUMBERS) + " |")
    allowed, source = tolerance(moves), widest(moves)
    lines.append("| **any model: the tolerance** | " + " | ".join(f"**{allowed[c]:.3f}** (`{source.get(c, '–')}`)"
                                                                  for c in CLAIM_NUMBERS) + " |")
    lines += ["", "| claim | model | least room (seed) | its model's largest \\|Δ\\| | more room |",
              "|---|---|---|---|---|"]
    checks = _claim_checks(rows)
    for c, fragile in zip(checks, _fragile(checks, per_model)):
        room = "–" if c.room is None else f"{c.room:.3f} ({c.room_seed})"
        move = _three(per_model.get(c.model, {}).get(c.column))
        lines.append(f"| {c.label} | {c.model} | {room} | {move} | " + ("**no**" if fragile else "yes") + " |")
    return "\n".join(lines) + "\n"


def tolerance_summary(snapshot: Path) -> str:
    """One sentence for the README: the tolerance, the claims with less room than their model's
    largest move, and how many claims held on every report seed under every arithmetic."""
    from leakk.report.unlearn_seeds import summary_clause

    moves = _measured_moves(snapshot)
    largest, source, rows = tolerance(moves), widest(moves), _read(snapshot, "seed_claims.csv")
    n = int(rows["k"].max())
    checks = _claim_checks(rows)
    fragile = [f"{_spoken(c.model)}'s {_label(c.column, n)}"
               for c, f in zip(checks, _fragile(checks, largest_moves(moves))) if f]
    arithmetics, seeds, held = _draws(snapshot)
    return (f"over {moves.select('rerun', 'seed').n_unique()} seed-draws under other arithmetic, a model's greedy "
            f"leak moved by up to {largest['greedy']:.3f}, leak@{n} by up to {largest['leak_at_n']:.3f} and retain "
            f"accuracy by up to {largest['retain_accuracy']:.3f} (in {_and(sorted(f'`{r}`' for r in set(source.values())))}): "
            f"the tolerance `scripts/compare_run.py` holds a rerun to. {len(checks) - len(fragile)} of the {len(checks)} claims keep more room than their model's own "
            f"largest move on every seed" + (f"; {_and(fragile)} can come out either way on another CPU" if fragile
                                              else "")
            + f". {sum(held)} of {len(held)} held on all {seeds} report seeds in all {arithmetics} arithmetics."
            + summary_clause(snapshot) + "\n")


#: what the attack grid must show on every report seed (issue "leak under attack"), as
#: (what, the check on one seed's rows of attacks.csv at the headline decoding's largest k)
ATTACK_CLAIMS: tuple[str, ...] = (
    "retrain (the control) leaks ≤ 0.05 under every attack",
    "some attack raises the leak of at least two of GA, GradDiff, NPO by ≥ 0.10",
    "int8 (the negative control): every difference's CI includes 0",
)


def _attack_checks(rows: pl.DataFrame) -> list[bool | None]:
    """The :data:`ATTACK_CLAIMS` on one seed's sampled rows (None: the grid lacks what it checks)."""
    attack = pl.col("model").str.split(ATTACK_SEP).list.get(1)
    retrain = rows.filter(pl.col("base") == "retrain")
    control = None if retrain.is_empty() else bool((retrain["leak_at_k"] <= 0.05).all())
    base = rows.filter(pl.col("base").is_in(["ga", "graddiff", "npo"])).with_columns(attack=attack)
    raised = None if base.is_empty() else bool(
        base.group_by("attack").agg((pl.col("difference") >= 0.10).sum().alias("raised"))["raised"].max() >= 2)
    int8 = rows.with_columns(attack=attack).filter(pl.col("attack") == "int8")
    negative = None if int8.is_empty() else bool(((int8["ci_low"] <= 0) & (int8["ci_high"] >= 0)).all())
    return [control, raised, negative]


def attacks(snapshot: Path) -> str:
    """Methods × attacks on every seed of the attack preset: per attack and model, greedy leak
    and leak@k_max unattacked → attacked on the same questions, with the paired difference and
    its CI; then the :data:`ATTACK_CLAIMS` per seed."""
    meta = _need(_meta(snapshot), "attacks", snapshot)
    rows = _read(snapshot, "attacks.csv")
    seeds = sorted(rows["seed"].unique().to_list())
    sampled = rows.filter(pl.col("decoding") == meta["decoding"])
    k = int(sampled["k"].max())
    cells = {(r["seed"], r["model"], r["decoding"]): r for r in rows.iter_rows(named=True)}
    lines = [f"Judge `{meta['judge']}`, decoding `{meta['decoding']}`; each cell: greedy leak, then leak@{k}, "
             f"unattacked → attacked on the same questions, and the paired difference of leak@{k} "
             f"[{meta['ci']:.0%} CI clustered by author, `{meta['ci_method']}`].", "",
             "| attack | model | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|---|" + "---|" * len(seeds)]
    names = sampled.select("model", "base").unique(maintain_order=True)
    order = {m: i for i, m in enumerate(model_order(names["base"].to_list()))}
    keyed = sorted(names.iter_rows(), key=lambda mb: (mb[0].split(ATTACK_SEP, 1)[1], order[mb[1]]))
    for model, base in keyed:
        row = []
        for s in seeds:
            r, g = cells.get((s, model, meta["decoding"])), cells.get((s, model, "greedy"))
            if r is None:
                row.append("–")
                continue
            greedy = "" if g is None else f"{g['base_leak_at_k']:.2f}→{g['leak_at_k']:.2f}; "
            row.append(_minus(f"{greedy}{r['base_leak_at_k']:.2f}→{r['leak_at_k']:.2f} "
                              f"({r['difference']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}])"))
        lines.append(f"| {model.split(ATTACK_SEP, 1)[1]} | {_pretty(base)} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n\n" + attack_checks(snapshot)


def attack_checks(snapshot: Path) -> str:
    """The :data:`ATTACK_CLAIMS` per seed of the attack preset, and whether each holds on all."""
    meta = _need(_meta(snapshot), "attacks", snapshot)
    sampled = _read(snapshot, "attacks.csv").filter(pl.col("decoding") == meta["decoding"])
    seeds = sorted(sampled["seed"].unique().to_list())
    checks = {s: _attack_checks(sampled.filter(pl.col("seed") == s)) for s in seeds}
    lines = [f"| check (leak@{int(sampled['k'].max())}, judge `{meta['judge']}`) | "
             + " | ".join(f"seed {s}" for s in seeds) + " | holds |", "|---|" + "---|" * len(seeds) + "---|"]
    for i, what in enumerate(ATTACK_CLAIMS):
        marks = [checks[s][i] for s in seeds]
        text = ["–" if m is None else ("yes" if m else "no ✗") for m in marks]
        holds = "–" if None in marks else ("yes" if all(marks) else "**no**")
        lines.append(f"| {what} | " + " | ".join(text) + f" | {holds} |")
    return "\n".join(lines) + "\n"


#: what every unlearning method must show on every seed, the paper's effect: greedy decoding
#: says forgotten (the stop rule reached), sampling leaks
METHOD_CHECK = ("greedy leak ≤ 0.15", "leak@k ≥ 0.30")


def methods(snapshot: Path) -> str:
    """Every method under the same stop rule, per report seed: greedy leak, leak@k_max and retain
    accuracy; full, retrain, GA, GradDiff and NPO from the default's seeds (``seed_claims.csv``),
    the other methods from the methods preset (``methods.csv``), whose full and retrain must
    equal the default's (the same seed trains the same models)."""
    meta = _need(_meta(snapshot), "methods", snapshot)
    own = _read(snapshot, "methods.csv")
    default = _read(snapshot, "seed_claims.csv").filter(pl.col("seed").is_in(own["seed"].unique().to_list()))
    for model in ("full", "retrain"):  # a check, not a display: the two sources must agree
        a = own.filter(pl.col("model") == model).sort("seed")
        b = default.filter(pl.col("model") == model).sort("seed")
        if a.select("seed", "greedy", "leak_at_n").rows() != b.select("seed", "greedy", "leak_at_n").rows():
            raise ArtifactError(f"{snapshot}/methods.csv: {model} differs from seed_claims.csv on the same seeds; "
                                "the methods preset and the replicates were not run from the same params")
    rows = pl.concat([default.filter(pl.col("model").is_in(["full", "retrain", "ga", "graddiff", "npo"])),
                      own.filter(pl.col("model").is_in(list(meta["runs"])))], how="diagonal_relaxed")
    seeds = sorted(rows["seed"].unique().to_list())
    k = int(rows["k"].max())
    cells = {(r["seed"], r["model"]): r for r in rows.iter_rows(named=True)}
    lines = [f"Judge `{meta['judge']}`, decoding `{meta['decoding']}`; each cell: greedy leak / leak@{k} / retain "
             f"accuracy. Every method stops once its greedy leak on the training phrasings is ≤ 0.15 (at most "
             f"300 steps). The last column: on every seed, {METHOD_CHECK[0]} and leak@{k} ≥ 0.30.", "",
             "| model | " + " | ".join(f"seed {s}" for s in seeds) + " | greedy says forgotten, sampling leaks |",
             "|---|" + "---|" * len(seeds) + "---|"]
    for model in model_order(rows["model"].unique().to_list()):
        row, marks = [], []
        for s in seeds:
            r = cells.get((s, model))
            if r is None:
                row.append("–")
                marks.append(None)
                continue
            row.append(" / ".join(fmt_num(r[c]) for c in ("greedy", "leak_at_n", "retain_accuracy")))
            marks.append(None if is_missing(r["greedy"]) or is_missing(r["leak_at_n"])  # every judgment failed
                         else r["greedy"] <= 0.15 + 1e-9 and r["leak_at_n"] >= 0.30 - 1e-9)
        verdict = "" if model in ("full", "retrain") else (
            "–" if None in marks else "yes" if all(marks) else f"**no** ({sum(map(bool, marks))}/{len(marks)} seeds)")
        lines.append(f"| {_pretty(model)} | " + " | ".join(row) + f" | {verdict} |")
    return "\n".join(lines) + "\n"


def ci_coverage(snapshot: Path, coverage_csv: Path = COVERAGE_CSV) -> str:
    """The simulation's coverage table for the default interval beside today's t."""
    from leakk.stats.estimate import DEFAULT_CI_METHOD

    path = Path(coverage_csv)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; write it with `python benchmarks/ci_coverage.py`")
    return coverage_markdown(pl.read_csv(path), DEFAULT_CI_METHOD)


def unlearn_seeds(snapshot: Path) -> str:
    """The unlearning's own spread beside another CPU's (:mod:`leakk.report.unlearn_seeds`)."""
    from leakk.report.unlearn_seeds import unlearn_seeds_table

    return unlearn_seeds_table(snapshot)


TABLES: dict[str, Callable[..., str]] = {
    "headline": headline, "rule-vs-base": rule_vs_base, "replicates": replicates, "rule-targets": rule_targets,
    "rule-rounds": rule_rounds, "extrapolation": extrapolation, "ci-coverage": ci_coverage, "claims": claims,
    "trust": trust, "calibration": calibration, "attacks": attacks, "attack-checks": attack_checks, "methods": methods,
    "rerun": rerun, "tolerance": tolerance_table,
    "tolerance-summary": tolerance_summary, "unlearn-seeds": unlearn_seeds,
}


def render(name: str, snapshot: str | os.PathLike = SNAPSHOT_DIR, coverage_csv: str | os.PathLike = COVERAGE_CSV) -> str:
    if name not in TABLES:
        raise ArtifactError(f"unknown README table {name!r} (known: {', '.join(TABLES)})")
    if name == "ci-coverage":
        return ci_coverage(Path(snapshot), Path(coverage_csv))
    return TABLES[name](Path(snapshot))


def update(text: str, snapshot: str | os.PathLike = SNAPSHOT_DIR,
           coverage_csv: str | os.PathLike = COVERAGE_CSV) -> tuple[str, list[str]]:
    """``text`` with every marked block regenerated, and the names of the blocks that changed."""
    changed: list[str] = []

    def repl(m: re.Match) -> str:
        body = render(m["name"], Path(snapshot) / m["sub"] if m["sub"] else snapshot, coverage_csv)
        if body != m["body"]:
            changed.append(m["name"])
        head = m["name"] + (f" from={m['sub']}" if m["sub"] else "")
        return START.format(name=head) + "\n" + body + END

    return _BLOCK.sub(repl, text), changed


def blocks(text: str) -> list[str]:
    """Names of the marked blocks in ``text``, in order."""
    return [m["name"] for m in _BLOCK.finditer(text)]


# ------------------------------------------------------------------------------ the protocol

#: the tuning record (docs/tuning.yaml): which seeds chose the defaults, which the README reports
TUNING_FILE = Path("docs/tuning.yaml")


def report_seed_errors(meta: dict, tuning: str | os.PathLike = TUNING_FILE, earlier: str | None = None) -> list[str]:
    """Why the snapshot's seeds break the tuning protocol (empty when they do not): every seed
    the README reports (``meta.json``: the run's and the replicates') must be one of the
    record's ``report_seeds``, never a ``tuning_seeds`` one. ``earlier`` names a sub-snapshot
    (``from=`` blocks): an earlier default's tables, whose seeds must be that default's report
    seeds (the record's ``earlier.<name>.report_seeds``). No record, no protocol to check."""
    import yaml

    path = Path(tuning)
    if not path.is_file():
        return []
    record = yaml.safe_load(path.read_text()) or {}
    tuned, reported = set(record.get("tuning_seeds") or []), set(record.get("report_seeds") or [])
    if earlier is not None:
        entry = (record.get("earlier") or {}).get(earlier)
        if not isinstance(entry, dict):
            return [f"{path}: no earlier.{earlier} entry for the snapshot folder {earlier!r}; say which earlier "
                    "default it holds and its report seeds"]
        reported = set(entry.get("report_seeds") or [])
    if tuned & reported:
        return [f"{path}: seeds {sorted(tuned & reported)} are both tuning_seeds and report_seeds"]
    used = {"run": [meta["run"]["seed"]] if "run" in meta else [],
            "replicates": list(meta.get("replicates", {}).get("seeds", [])),
            "attacks": list(meta.get("attacks", {}).get("seeds", [])),
            "methods": list(meta.get("methods", {}).get("seeds", [])),
            "unlearn_seeds": list(meta.get("unlearn_seeds", {}).get("seeds", []))}
    errors = []
    for part, seeds in used.items():
        if bad := sorted(s for s in seeds if s not in reported):
            why = "a tuning seed" if set(bad) <= tuned else "not a report seed"
            errors.append(f"the {part} snapshot's seed(s) {bad}: {why} of {path} (report_seeds: {sorted(reported)}); "
                          "the README reports only seeds no tuning choice looked at")
    return errors


def _snapshot_role(snapshot: str | os.PathLike, tuning: str | os.PathLike) -> tuple[str | None, bool]:
    """(the record's ``earlier`` name whose report seeds ``snapshot`` must hold, or None for
    today's; whether it is a rerun). A sub-snapshot named under ``earlier`` holds that default's
    tables; any other sub-snapshot is a rerun of its parent's seeds on another machine: of
    today's report seeds, or (one level further down) of an earlier default's."""
    import yaml

    path, record = Path(snapshot), Path(tuning)
    if not _is_sub_snapshot(path):
        return None, False
    earlier = ((yaml.safe_load(record.read_text()) or {}).get("earlier") or {}) if record.is_file() else {}
    if path.name in earlier:
        return path.name, False
    parent = path.parent
    return (parent.name if _is_sub_snapshot(parent) and parent.name in earlier else None), True


def _is_sub_snapshot(snapshot: str | os.PathLike) -> bool:
    """Whether ``snapshot`` sits inside another snapshot (an earlier default's, or a rerun)."""
    return (Path(snapshot).parent / _META).is_file()


def _nested_snapshots(snapshot: str | os.PathLike) -> list[Path]:
    """The sub-snapshots of ``snapshot`` and theirs (an earlier default's reruns), parents first."""
    return [p for sub in earlier_snapshots(snapshot) for p in (sub, *_nested_snapshots(sub))]


def earlier_snapshots(snapshot: str | os.PathLike) -> list[Path]:
    """The sub-snapshots of ``snapshot`` (folders with a meta.json): earlier defaults' tables."""
    root = Path(snapshot)
    return sorted(p for p in root.iterdir() if (p / _META).is_file()) if root.is_dir() else []


# ------------------------------------------------------------------------------ CLI

def readme_tables(params: dict[str, Any], *, results: str | None, replicates: str | None, snapshot: str,
                  coverage: str, readme: list[str], check: bool, tuning: str = str(TUNING_FILE),
                  attacks: str | None = None, methods: str | None = None, unlearn_seeds: str | None = None,
                  against_rerun: list[str] | None = None, rerun_note: str | None = None) -> None:
    """Snapshot a results tree (and replicates, the attack, methods and unlearn_seeds presets' seeds) into ``snapshot``, then rewrite (or, with
    ``check``, compare) every ``<!-- leakk:table NAME -->`` block of the ``readme`` files
    (README.md and the docs page with the deeper tables). Seeds the ``tuning`` record did not
    set aside for reporting are refused (:func:`report_seed_errors`)."""
    from leakk.core.errors import ArtifactError
    from leakk.core.io import write_text

    from leakk.stats.replicate_stats import found_seeds

    written = []
    seeds = {"run": {"seed": params["seed"]}} if results else {}
    for part, root in (("replicates", replicates), ("attacks", attacks), ("methods", methods),
                       ("unlearn_seeds", unlearn_seeds)):
        if root:
            seeds[part] = {"seeds": list(params.get("replicates") or found_seeds(root))}
    earlier, is_rerun = _snapshot_role(snapshot, tuning)  # an earlier default's seeds, or today's
    if rerun_note is not None and not (replicates and is_rerun):
        raise ArtifactError("--rerun-note describes a rerun: give it with --replicates DIR and a rerun's "
                            "--snapshot (a folder inside the README's snapshot)")
    if against_rerun and not unlearn_seeds:
        raise ArtifactError("--against-rerun compares the unlearn_seeds preset's runs: give it with --unlearn-seeds DIR")
    if bad := [a for a in against_rerun or [] if a.count("=") != 1 or not all(a.split("="))]:
        raise ArtifactError(f"--against-rerun {bad[0]!r}: write NAME=DIR (a rerun sub-snapshot's name and its "
                            "replicates folder)")
    if errors := report_seed_errors(seeds, tuning, earlier=earlier):  # refused before anything is written
        raise ArtifactError("; ".join(errors))
    if results:
        written += snapshot_run(results, params, snapshot)
    if replicates:  # a sub-snapshot (a rerun) keeps its own extrapolation claim, never the package's
        own_claim = Path(snapshot) / "extrapolation_claim.json" if _is_sub_snapshot(snapshot) else None
        written += snapshot_replicates(replicates, params, snapshot, claim_file=own_claim)
    if attacks:
        written += snapshot_attacks(attacks, params, snapshot)
    if methods:
        written += snapshot_methods(methods, params, snapshot)
    if unlearn_seeds:
        from leakk.report.unlearn_seeds import snapshot_unlearn_seeds

        written += snapshot_unlearn_seeds(unlearn_seeds, params, snapshot,
                                          reruns=dict(a.split("=") for a in against_rerun or []))
    if replicates and is_rerun:  # a rerun of its parent's seeds on another machine
        _write_meta(Path(snapshot), "rerun", {"of": f"earlier.{earlier}" if earlier else "report_seeds"}
                    | rerun_provenance(replicates) | ({"note": rerun_note} if rerun_note else {}))
    if check and (errors := report_seed_errors(_meta(Path(snapshot)), tuning, earlier=earlier)):
        raise ArtifactError(f"{snapshot}/{_META}: " + "; ".join(errors))
    for sub in _nested_snapshots(snapshot) if check else []:
        # an earlier default (named in the record), or a rerun of its parent's seeds
        sub_earlier, sub_rerun = _snapshot_role(sub, tuning)
        meta = _meta(sub)
        errors = report_seed_errors(meta, tuning, earlier=sub_earlier)
        if sub_rerun and "rerun" not in meta:
            errors.append("a folder here that the record does not name as an earlier default is a rerun of its "
                          "parent's seeds: write it with `leakk readme-tables --replicates DIR --snapshot "
                          f"{sub}` (no earlier.{sub.name} entry names it otherwise)")
        if errors:
            raise ArtifactError(f"{sub}/{_META}: " + "; ".join(errors))
    for path in map(Path, readme):
        text = path.read_text()
        new, changed = update(text, snapshot, coverage)
        if check:
            if changed:
                raise ArtifactError(f"{path}: block(s) {', '.join(changed)} differ from the snapshot in {snapshot}; "
                                    "rewrite them with `leakk readme-tables`")
            print(f"{path}: {len(blocks(text))} tables agree with {snapshot}")
            continue
        if changed:
            write_text(new, path)
        print(f"{path}: {len(blocks(text))} tables, rewritten: {', '.join(changed) or 'none'}")
    if written:
        print(f"snapshot files: {', '.join(written)}")


def extrapolation_check(params: dict[str, Any], *, results: list[str], share: float, out: str | None) -> None:
    """The extrapolation hold-out check over several results trees; prints the claim that held."""
    from leakk.core.io import atomic_path
    from leakk.stats.extrapolate import error_claim, validate_runs

    table = validate_runs({Path(r).parent.name if Path(r).name == "results" else r: r for r in results})
    if out:
        with atomic_path(out) as tmp:
            table.write_csv(tmp)
    print(json.dumps(error_claim(table, share), indent=2))
