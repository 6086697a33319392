"""Offline check of a candidate stop for RULE (issue 17) on a finished tuning run.

Instead of stopping at the first round that crosses a threshold (``rule.<name>.stop``, which
the tuning run configs/tuning_rule_stop.yaml showed to stop RULE-NPO after one round), *select*
among a RULE run's rounds: every round's starting model has a training-phrasing leak@n (its
round log) and a training-phrasing greedy retain accuracy (measured here, as RULE's retain
guard measures it); keep the round with the lowest training leak among those whose retain
accuracy is within ``--drop`` of the base model's. Nothing here reads the evaluation phrasing
to choose; the pick is then scored on it (the run's ``rule_eval`` rows: round r−1's output is
round r's starting model) against issue 17's three targets.

    .venv/bin/python scripts/tuning/rule_round_selection.py results/presets/tuning_rule_stop \\
        --run rule_npo --run rule_graddiff_stop --drop 0.03

Writes ``rule_round_selection.csv`` (every candidate round) into the run folder and prints the
picks. The measured retain accuracies are cached in ``rule_round_selection.cache.json`` there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import leakk  # noqa: F401  (first: pins the CPU kernels before torch loads)
import polars as pl

from leakk.config import load_params
from leakk.core.io import read_parquet
from leakk.unlearn.rule import retain_accuracy, round_model_dir

TARGETS = "cut >= 80% of the base's leak@n, retain within 3 points, leak@n <= 2 leak@1 + 0.02"


def candidates(seed_dir: Path, name: str, memo: dict) -> list[dict]:
    """One row per round of RULE run ``name`` that sampled: its starting model's training leak,
    training-phrasing retain accuracy, and evaluation-phrasing leak and retain (rule_eval)."""
    res = seed_dir / "results"
    params = load_params(str(seed_dir / "params.yaml"))
    cfg, n = params["rule"][name], params["rule"][name]["n"]
    data = read_parquet(res / "data/benchmark.parquet", "data")
    rounds = sorted((res / "rule" / name).glob("round_*"), key=lambda p: int(p.name.split("_")[1]))
    rows = []
    for r, folder in enumerate(rounds, start=1):
        log = pl.read_parquet(folder / "round.parquet").row(0, named=True)
        if log[f"train_leak_at_{n}"] is None:
            break  # a stopped round drew no samples
        start = res / "models" / cfg["base"] if r == 1 else round_model_dir(rounds[r - 2])
        key = f"{seed_dir.name}/{name}/{r}"
        if key not in memo:
            memo[key] = retain_accuracy(start, data, params, cfg, seed=cfg["seed"] + 1000 * r, desc=key)
        ev = pl.read_parquet(res / "rule_eval" / name / f"round_{r - 1}.parquet").row(0, named=True)
        rows.append({"seed": seed_dir.name, "run": name, "start_of_round": r, "train_leak": log[f"train_leak_at_{n}"],
                     "train_retain": memo[key], "eval_leak_at_1": ev["eval_leak_at_1"],
                     "eval_leak": ev[f"eval_leak_at_{n}"], "eval_retain": ev["retain_accuracy"]})
    return rows


def pick(rounds: pl.DataFrame, drop: float) -> dict:
    """The selected round of one run and how it fares on the evaluation phrasing."""
    base = rounds.filter(pl.col("start_of_round") == 1).row(0, named=True)
    ok = rounds.filter(pl.col("train_retain") >= base["train_retain"] - drop - 1e-12)
    best = ok.sort(["train_leak", "start_of_round"]).row(0, named=True)
    cut = 1.0 - best["eval_leak"] / base["eval_leak"] if base["eval_leak"] else 0.0
    retain = best["eval_retain"] - base["eval_retain"]
    flat = best["eval_leak"] <= 2 * best["eval_leak_at_1"] + 0.02 + 1e-12
    return {"seed": best["seed"], "run": best["run"], "round": best["start_of_round"], "eval_leak": best["eval_leak"],
            "cut": round(cut, 3), "retain_points": round(100 * retain, 1), "flat": flat,
            "targets": cut >= 0.8 - 1e-12 and retain >= -0.03 - 1e-12 and flat}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="a replicates folder holding seed_<s>/ (a finished tuning run)")
    ap.add_argument("--run", action="append", required=True, help="a RULE run name (repeatable)")
    ap.add_argument("--drop", type=float, action="append", help="retain drop allowed (repeatable; default 0.03)")
    args = ap.parse_args()
    cache = args.root / "rule_round_selection.cache.json"
    memo = json.loads(cache.read_text()) if cache.is_file() else {}
    rows = []
    for seed_dir in sorted(args.root.glob("seed_*")):
        for name in args.run:
            if (seed_dir / "results" / "rule" / name).is_dir():
                rows += candidates(seed_dir, name, memo)
                cache.write_text(json.dumps(memo, indent=1, sort_keys=True))
    table = pl.DataFrame(rows)
    table.write_csv(args.root / "rule_round_selection.csv")
    pl.Config.set_tbl_rows(-1)
    pl.Config.set_tbl_cols(-1)
    for drop in args.drop or [0.03]:
        print(f"drop {drop}: {TARGETS}")
        print(pl.DataFrame([pick(g, drop) for _, g in table.group_by(["seed", "run"], maintain_order=True)]))


if __name__ == "__main__":
    main()
