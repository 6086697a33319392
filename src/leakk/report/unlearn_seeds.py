"""How far the unlearning's own randomness moves the claim numbers (``configs/unlearn_seeds.yaml``).

A rerun on another CPU moves GA's leak@64 by up to 0.175 (docs/results.md, "The tolerance").
Whether that is the CPU's doing or what any other draw of the same unlearning does on one
machine is a question the reruns cannot answer: they change the arithmetic and, through it,
everything from fine-tuning's first step on. The unlearn_seeds preset holds everything but the unlearning loop's seed fixed
(one report seed's full model, the default's settings, ``unlearn.<name>.loop_seed``), so the spread
of its runs is the unlearning's own; set beside the reruns' moves, it says which of the two a
claim needs room against. Nothing is chosen from it.

``snapshot_unlearn_seeds`` writes ``unlearn_seeds.csv`` (one row per run: the claim numbers,
where its greedy stop fired, and how many forget questions' leak@n verdicts differ from the
default's own run) into the README's snapshot, and ``unlearn_seeds_reruns.csv`` (the same count
for the default's runs against a committed rerun's on the same seed: what another CPU flips);
``unlearn_seeds_table`` renders both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl

from leakk.core.errors import ArtifactError
from leakk.core.layout import Layout
from leakk.report.readme_tables import (CLAIM_NUMBERS, SNAPSHOT_DIR, _and, _claim_checks, _kind_differs, _label,
                                        _meta, _need, _preset, _read, _seed_claim_rows, _spoken, _three, _write_csv,
                                        _write_meta, largest_moves, preset_seed_rows, rerun_moves)
from leakk.stats.estimate import model_order

CSV = "unlearn_seeds.csv"
#: the default runs' flips under another CPU: a committed rerun's seed beside the preset's
RERUN_CSV = "unlearn_seeds_reruns.csv"


def leaked_in_n(results: Path, model: str, judge: str, decoding: str) -> pl.DataFrame:
    """Per forget question of ``model``: whether any of its n samples leaked (``leaked``), the
    question's leak@n; null where a failed judgment leaves it undecided (no leak among fewer
    than n judged samples)."""
    path = Path(Layout(str(results)).judgments(model, judge, decoding))
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; {model} has not been sampled and judged in that run")
    rows = pl.read_parquet(path).filter(pl.col("split") == "forget")
    leaked = pl.col("leaked").cast(pl.Boolean)
    per_q = rows.group_by("qid").agg(leaked.fill_null(False).any().alias("any"), leaked.is_null().any().alias("gap"))
    return per_q.select("qid", leaked=pl.when(pl.col("any") | ~pl.col("gap")).then(pl.col("any")))


def _stop_step(results: Path, model: str) -> int:
    """The step the run ended at (its greedy stop, or the cap)."""
    log = Path(Layout(str(results)).model(model)) / "train_log.parquet"
    if not log.is_file():
        raise ArtifactError(f"{log}: missing; the unlearn_seeds preset has not finished {model}")
    return int(pl.read_parquet(log, columns=["step"])["step"].max())


def default_runs(params: dict[str, Any]) -> dict[str, str]:
    """method → its one run without a loop_seed of its own (the default's run, at the top-level seed)."""
    out: dict[str, str] = {}
    for name, run in params["unlearn"].items():
        if "loop_seed" not in run:
            if run["method"] in out:
                raise ArtifactError(f"unlearn.{name} and unlearn.{out[run['method']]}: two {run['method']} runs "
                                    "without a loop_seed of their own; the preset compares every run with one of them")
            out[run["method"]] = name
    if missing := sorted({r["method"] for r in params["unlearn"].values()} - set(out)):
        raise ArtifactError(f"methods {missing} have no run without a loop_seed of its own (the default's run to "
                            "compare with)")
    if alone := sorted(m for m in out if not any(r["method"] == m and "loop_seed" in r for r in params["unlearn"].values())):
        raise ArtifactError(f"methods {alone} have no run with a loop_seed of its own: nothing to set beside the "
                            "default's run (pass the preset's params: leakk --params configs/unlearn_seeds.yaml …)")
    return out


def _flips(verdicts: pl.DataFrame, reference: pl.DataFrame) -> dict[str, int]:
    """``questions`` both decide and ``flipped``: those whose leak@n verdicts differ."""
    both = verdicts.join(reference, on="qid", suffix="_reference").drop_nulls()
    return {"questions": both.height, "flipped": both.filter(pl.col("leaked") != pl.col("leaked_reference")).height}


def _rerun_flips(reruns: dict[str, str], seed: int, mine: dict[str, pl.DataFrame], defaults: dict[str, str],
                 judge: str, decoding: str, snapshot: Path) -> pl.DataFrame:
    """Per committed rerun (sub-snapshot name → its replicates folder) and method: the default
    run's flips (``mine``: run name → the preset's :func:`leaked_in_n` on ``seed``) against the
    rerun's run of the same name on the same seed."""
    from leakk.stats.replicate_stats import seed_results

    rows = []
    for name, root in reruns.items():
        sub = snapshot / name
        if _meta(sub).get("rerun", {}).get("of") != "report_seeds":  # (empty when the folder has no meta.json)
            raise ArtifactError(f"{sub}: not a committed rerun of today's report seeds; --against-rerun names one "
                                "(NAME=DIR: docs/results/NAME and the replicates folder it was written from)")
        if differ := _kind_differs(sub, snapshot):
            raise ArtifactError(f"{sub}: its {', '.join(differ)} differ from the README's; its flips are not comparable")
        committed = _read(sub, "seed_claims.csv")
        if seed not in set(committed["seed"]):
            raise ArtifactError(f"{sub}: the rerun has no seed {seed}; compare the preset with a rerun of its seed")
        theirs = seed_results(root, seed)
        numbers = _seed_claim_rows(theirs, seed, judge, decoding).filter(pl.col("model").is_in(list(defaults.values())))
        same = numbers.join(committed, on=["seed", "model"], how="left", suffix="_committed")
        if any(r[c] != r[f"{c}_committed"] for r in same.iter_rows(named=True) for c in CLAIM_NUMBERS):
            raise ArtifactError(f"{theirs}: its numbers are not those of {sub}/seed_claims.csv on seed "
                                f"{seed}; --against-rerun {name}=DIR needs the folder that rerun was written from")
        rows += [{"rerun": name, "seed": seed, "method": method,
                  **_flips(leaked_in_n(theirs, run, judge, decoding), mine[run])} for method, run in defaults.items()]
    return pl.DataFrame(rows, schema={"rerun": pl.String, "seed": pl.Int64, "method": pl.String,
                                      "questions": pl.Int64, "flipped": pl.Int64})


def snapshot_unlearn_seeds(root: str | os.PathLike, params: dict[str, Any],
                           snapshot: str | os.PathLike = SNAPSHOT_DIR, reruns: dict[str, str] | None = None) -> list[str]:
    """From the unlearn_seeds preset's replicates folder: ``unlearn_seeds.csv``, one row per
    (seed, unlearn run): its method and loop seed, greedy leak, leak@n and retain accuracy
    (as ``seed_claims.csv``), the step it stopped at, and ``flipped``: the forget questions
    whose leak@n verdict differs from the default run of its method (``questions``: those
    both runs decide). With ``reruns`` (a committed rerun sub-snapshot's name → the
    replicates folder it was written from), ``unlearn_seeds_reruns.csv``: the default runs'
    flips under that rerun's arithmetic."""
    from leakk.stats.replicate_stats import seed_results

    root, snapshot, judge, decoding, seeds = _preset(root, snapshot, params)
    runs, defaults = params["unlearn"], default_runs(params)
    if len(seeds) != 1:  # the table's spans and medians are one full model's
        raise ArtifactError(f"{root}: seeds {list(seeds)}; the preset sets loop seeds beside each other on one full "
                            "model: give one seed (replicates: [s])")
    (seed,) = seeds
    results = seed_results(root, seed)
    claims = preset_seed_rows(root, params, seeds, judge, decoding, "unlearn_seeds").filter(pl.col("model").is_in(list(runs)))
    verdicts = {name: leaked_in_n(results, name, judge, decoding) for name in runs}
    extra = [{"model": name, "method": run["method"], "loop_seed": int(run.get("loop_seed", seed)),
              "default": name == defaults[run["method"]], "stop_step": _stop_step(results, name),
              **_flips(verdicts[name], verdicts[defaults[run["method"]]])} for name, run in runs.items()]
    rows = claims.join(pl.DataFrame(extra), on="model", how="left").sort("seed", "method", "loop_seed")
    flips = (_rerun_flips(reruns, seed, verdicts, defaults, judge, decoding, snapshot)
             if reruns else None)  # (refused before anything is written)
    _write_csv(rows, snapshot / CSV)
    written = [CSV]
    if flips is not None:
        _write_csv(flips, snapshot / RERUN_CSV)
        written.append(RERUN_CSV)
    elif (snapshot / RERUN_CSV).is_file():
        (snapshot / RERUN_CSV).unlink()  # written from other runs than these: never shown beside them
    _write_meta(snapshot, "unlearn_seeds", {"judge": judge, "decoding": decoding, "seeds": list(seeds),
                                            "n": params["sample"]["n"],
                                            "phrasing": params["sample"]["question_column"]})
    return written


def _span(values: pl.Series, fmt: str = "{:.3f}") -> str:
    """"lo–hi" of the values (one value when they agree), "–" when none."""
    lo, hi = values.min(), values.max()
    return "–" if lo is None else fmt.format(lo) if lo == hi else f"{fmt.format(lo)}–{fmt.format(hi)}"


NUMBERS = tuple(CLAIM_NUMBERS)  # the claim numbers a run is compared on


def cpu_moves(snapshot: Path, seeds: list[int]) -> pl.DataFrame:
    """:func:`rerun_moves` of the committed reruns of today's report seeds, on ``seeds`` only:
    the same full models' draws under other arithmetic (an earlier default's reruns, or other
    seeds, would set other models beside these)."""
    moves = rerun_moves(Path(snapshot))
    today = [r for r in moves["rerun"].unique().to_list()
             if _meta(Path(snapshot) / r).get("rerun", {}).get("of") == "report_seeds"]
    return moves.filter(pl.col("rerun").is_in(today) & pl.col("seed").is_in(list(seeds)))


def moves_beside_cpu(snapshot: Path, rows: pl.DataFrame) -> tuple[dict[str, dict[str, tuple[float | None, float | None]]], int]:
    """(method → claim number → (the largest |Δ| of another loop seed from the default's run,
    the largest of a rerun on another CPU of the same seed), the number of such rerun draws)."""
    base = rows.filter(pl.col("default")).select("seed", "method", *[pl.col(c).alias(f"{c}_default") for c in NUMBERS])
    own = (rows.join(base, on=["seed", "method"])
           .group_by("method").agg((pl.col(c) - pl.col(f"{c}_default")).abs().max() for c in NUMBERS))
    moves = cpu_moves(snapshot, rows["seed"].unique().to_list())
    cpu = largest_moves(moves)
    return ({r["method"]: {c: (r[c], cpu.get(r["method"], {}).get(c)) for c in NUMBERS} for r in own.iter_rows(named=True)},
            moves.select("rerun", "seed").n_unique())


def _as_far(compared: dict[str, dict[str, tuple[float | None, float | None]]]) -> tuple[int, int]:
    """(numbers a loop seed moved at least as far as another CPU, numbers both measured)."""
    pairs = [(a, b) for per in compared.values() for a, b in per.values() if a is not None and b is not None]
    return sum(a >= b - 1e-9 for a, b in pairs), len(pairs)


def summary_clause(snapshot: Path) -> str:
    """For the README's tolerance sentence: how the loop seeds' moves compare with another CPU's
    ("" without the preset's snapshot)."""
    if not (Path(snapshot) / CSV).is_file():
        return ""
    rows = _read(snapshot, CSV)
    (compared, draws), n = moves_beside_cpu(snapshot, rows), int(rows["k"].max())
    as_far, both = _as_far(compared)
    if not both:
        return ""
    seeds = _and([str(s) for s in sorted(rows["seed"].unique().to_list())])
    whose = _and([f"{_spoken(m)}'s" for m in model_order(list(compared))])
    cpu_flips = _rerun_flip_rows(snapshot)
    more = [] if cpu_flips is None else _more_flips(cpu_flips, rows)
    return (f" On seed {seeds}, {_other_runs(rows)} other loop "
            f"seeds of the same full model on one machine moved {as_far} of {whose} {both} numbers "
            f"({', '.join(_label(c, n) for c in NUMBERS)}) at least as far as {draws} reruns under other arithmetic did"
            + (f", though the {cpu_flips['rerun'].n_unique()} reruns compared question by "
               f"question each flipped more questions' leak@{n} verdicts than any loop seed for {sum(more)} of "
               f"{len(more)} methods" if more else "")
            + " ([results.md](docs/results.md#another-cpu-or-another-training-order)).")


def _broken(rows: pl.DataFrame) -> list[str]:
    """"GA: greedy says forgotten: greedy leak ≤ 0.15 in 1 of 8 runs" for every claim on a
    method some run breaks, by :func:`_claim_checks` (each run a draw; a missing number breaks it)."""
    out = []
    for method in model_order(rows["method"].unique().to_list()):  # each method over its own runs
        draws = rows.filter(pl.col("method") == method).select(
            pl.col("loop_seed").alias("seed"), pl.col("method").alias("model"), "greedy", "k", "leak_at_n",
            "retain_accuracy")
        out += [f"{_spoken(c.model)}: {c.label} in {bad} of {len(c.cells)} runs" for c in _claim_checks(draws)
                if c.model == method and (bad := sum(cell.endswith("✗") or cell == "–" for cell in c.cells))]
    return out


def _rerun_flip_rows(snapshot: Path) -> pl.DataFrame | None:
    """``unlearn_seeds_reruns.csv`` in rerun order, or None where no rerun was compared."""
    path = Path(snapshot) / RERUN_CSV
    return pl.read_csv(path).sort("rerun", "seed") if path.is_file() else None


def _other_runs(rows: pl.DataFrame) -> int:
    """The most runs under a loop seed of their own that any method has."""
    return rows.filter(~pl.col("default")).group_by("method").len()["len"].max()


def _more_flips(cpu: pl.DataFrame, rows: pl.DataFrame) -> list[bool]:
    """Per method with committed reruns' flips (``cpu``: :func:`_rerun_flip_rows`): whether every
    rerun flipped more questions than any other loop seed did."""
    out = []
    for method in model_order(rows["method"].unique().to_list()):
        theirs, others = cpu.filter(pl.col("method") == method), rows.filter((pl.col("method") == method) & ~pl.col("default"))
        if theirs.height and others.height:
            out.append(theirs["flipped"].min() > others["flipped"].max())
    return out


def unlearn_seeds_table(snapshot: Path) -> str:
    """Per method: the spread of its runs over loop seeds, the questions they flipped beside the
    committed reruns', their largest |Δ| from the default's run beside the largest a rerun of the
    same seed on other arithmetic measured (:func:`cpu_moves`), and the claims any run breaks."""
    rows, meta = _read(snapshot, CSV), _need(_meta(Path(snapshot)), "unlearn_seeds", snapshot)
    n = int(rows["k"].max())
    (compared, draws), seeds = moves_beside_cpu(snapshot, rows), _and(list(map(str, meta["seeds"])))
    others_per_method = _other_runs(rows)
    lines = [f"Report seed {seeds}'s full model unlearned under {others_per_method + 1} loop seeds per method (the "
             f"default's own and {others_per_method} set by `unlearn.<name>.loop_seed`; nothing else changed), judge "
             f"`{meta['judge']}`, decoding `{meta['decoding']}`, phrasing `{meta['phrasing']}`:", "",
             "| method | " + " | ".join(_label(c, n) for c in NUMBERS)
             + " | stopped at step | forget questions flipped vs the default's run: another loop seed (median, most)"
             + " | other arithmetic (each rerun) |",
             "|---|" + "---|" * (len(NUMBERS) + 3)]
    cpu_flips = _rerun_flip_rows(snapshot)
    methods = model_order(rows["method"].unique().to_list())
    for method in methods:
        part = rows.filter(pl.col("method") == method)
        others = part.filter(~pl.col("default"))
        flipped = (f"{others['flipped'].median():g}, {others['flipped'].max()} of {part['questions'].max()}"
                   if others.height else "–")
        theirs = None if cpu_flips is None else cpu_flips.filter(pl.col("method") == method)
        cpu_cell = "–" if theirs is None or theirs.is_empty() else ", ".join(map(str, theirs["flipped"]))
        lines.append(f"| {_spoken(method)} | " + " | ".join(_span(part[c]) for c in NUMBERS)
                     + f" | {_span(part['stop_step'], '{:d}')} | {flipped} | {cpu_cell} |")
    if cpu_flips is not None:
        more = _more_flips(cpu_flips, rows)
        lines += ["", "Other arithmetic: " + ", ".join(f"`{r}` (seed {s})" for r, s in cpu_flips.select("rerun", "seed")
                                                   .unique(maintain_order=True).iter_rows())
                  + f"; for {sum(more)} of {len(more)} methods every rerun flipped more questions than any loop seed did."]
    lines += ["", f"Largest \\|Δ\\| from the default's run on seed {seeds}: another loop seed ({others_per_method} "
                  f"draws), against other arithmetic ({draws} reruns of seed {seeds}, today's report seeds' only):", "",
              "| method | " + " | ".join(_label(c, n) for c in NUMBERS) + " |", "|---|" + "---|" * len(NUMBERS)]
    for method in methods:
        lines.append(f"| {_spoken(method)} | " + " | ".join(
            f"{_three(compared[method][c][0])} / {_three(compared[method][c][1])}" for c in NUMBERS) + " |")
    broken, (as_far, both) = _broken(rows), _as_far(compared)
    lines += ["", (f"Another loop seed moved {as_far} of these {both} numbers at least as far as a rerun under "
                   "other arithmetic did. " if both else "No rerun under other arithmetic to compare with. ")
              + ("Claims a run broke: " + "; ".join(broken) + "." if broken
                 else f"No run broke a claim ({rows.height} runs).")]
    return "\n".join(lines) + "\n"
