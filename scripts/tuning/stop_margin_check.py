"""The greedy stop's margin (configs/tuning_stop_margin.yaml): per unlearning run and seed, the
greedy leak and leak@n on the run's scored phrasing, and the margin the decision rule reads,

    margin = min(0.15 - greedy leak, leak@n - 0.30)

(the room left on both sides of the paper's effect: "greedy says forgotten" and "sampling
leaks"). The smallest margin per stop threshold (one stop for all methods), per method and
stop (a stop per method) and per run (runs of one method that differ in more than the stop,
such as the learning rate): the rules adopt the one with the largest. The numbers come from
:func:`leakk.report.readme_tables.snapshot_methods` (the methods table's own code), written to a
scratch folder.

    .venv/bin/python scripts/tuning/stop_margin_check.py results/presets/tuning_stop_margin \\
        --params configs/tuning_stop_margin.yaml
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import leakk  # noqa: F401  (first: pins the CPU kernels before torch loads)
import polars as pl

from leakk.config import load_params
from leakk.report.readme_tables import CLAIMS, snapshot_methods
from leakk.stats.replicate_stats import found_seeds

#: the claims table's lines for the unlearning runs: greedy leak ≤ GREEDY_MAX, leak@n ≥ LEAK_MIN
_LINES = {column: line for _, models, column, _, line in CLAIMS if "ga" in models}
GREEDY_MAX, LEAK_MIN = _LINES["greedy"], _LINES["leak_at_n"]


def margins(methods: pl.DataFrame, params: dict) -> pl.DataFrame:
    """``methods.csv`` rows of the unlearning runs, with each run's stop threshold and margin.
    A run with a missing number (every judgment failed) is refused, never half-scored."""
    runs = params["unlearn"]
    stops = pl.DataFrame({"model": list(runs), "stop": [float(r["stop"]["greedy_leak"]) for r in runs.values()],
                          "method": [r["method"] for r in runs.values()],
                          "lr": [float(r["lr"]) if "lr" in r else None for r in runs.values()]},
                         schema_overrides={"lr": pl.Float64})
    rows = methods.join(stops, on="model", how="inner")
    if missing := rows.filter(pl.any_horizontal(pl.col(c).is_null() | pl.col(c).is_nan()
                                                for c in ("greedy", "leak_at_n")))["model"].to_list():
        raise SystemExit(f"stop_margin_check: runs {sorted(set(missing))} have no greedy leak or leak@n")
    return (rows
            .with_columns(margin=pl.min_horizontal(GREEDY_MAX - pl.col("greedy"), pl.col("leak_at_n") - LEAK_MIN))
            .select("stop", "method", pl.col("model").alias("run"), "lr", "seed", "greedy", "leak_at_n",
                    "retain_accuracy", "margin")
            .sort("stop", "method", "run", "seed", descending=[True, False, False, False]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="a finished `leakk replicates` folder")
    ap.add_argument("--params", required=True, help="the preset it ran")
    args = ap.parse_args()
    params = load_params(args.params)
    params["replicates"] = found_seeds(args.root)
    with tempfile.TemporaryDirectory() as tmp:
        snapshot_methods(args.root, params, tmp)
        table = margins(pl.read_csv(Path(tmp) / "methods.csv"), params)
    with pl.Config(tbl_rows=200, tbl_hide_dataframe_shape=True, float_precision=3):
        print(table)
        for rule, keys in (("one stop for all", ["stop"]), ("a stop per method", ["method", "stop"]),
                           ("a run per method", ["method", "run"])):
            print(f"{rule}: the smallest margin over seeds (adopt the largest; a tie keeps the higher stop)")
            print(table.group_by(keys).agg(pl.col("margin").min().alias("smallest_margin"), pl.len().alias("runs"))
                  .sort(keys, descending=[False] * (len(keys) - 1) + [keys[-1] == "stop"]))


if __name__ == "__main__":
    main()
