"""Issue 17's checks on a finished tuning run of a candidate default (e.g. configs/tuning_shape.yaml).

Renders, for the run's seeds, the same tables the README renders for the report seeds (the
paper's claims per seed and RULE's three targets), through the same code
(:mod:`leakk.report.readme_tables`) but into a scratch snapshot, never docs/results/, and adds
what choosing a default shape needs: leak@n's clustered CI half-width per model, the number of
forget clusters, and each seed's compute (the sum of its jobs' seconds, and its wall time from
the first to the last result written).

    .venv/bin/python scripts/tuning/shape_check.py results/presets/tuning_shape \\
        --params configs/tuning_shape.yaml
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import leakk  # noqa: F401  (first: pins the CPU kernels before torch loads)
import polars as pl

from leakk.config import load_params
from leakk.core.io import read_parquet
from leakk.report.readme_tables import render, snapshot_replicates
from leakk.stats.replicate_stats import found_seeds, seed_results

HALF_WIDTH_TARGET = 0.12  # issue 17: leak@64's 95% CI half-width for GA, GradDiff and NPO


def half_widths(results: Path, seed: int, judge: str, decoding: str) -> pl.DataFrame:
    """leak@n (n = the largest k) with its CI and half-width (the larger side) per model."""
    leak = read_parquet(results / "leak_at_k.parquet", "leak_table").filter(
        (pl.col("judge") == judge) & (pl.col("decoding") == decoding))
    top = leak.filter(pl.col("k") == leak["k"].max())
    return top.select(pl.lit(seed, pl.Int64).alias("seed"), "model", "k", "leak_at_k", "ci_low", "ci_high",
                      half_width=pl.max_horizontal(pl.col("ci_high") - pl.col("leak_at_k"),
                                                   pl.col("leak_at_k") - pl.col("ci_low"))).sort("model")


def compute(results: Path) -> dict[str, float]:
    """Job seconds summed over the seed's Snakemake benchmark files, and wall seconds from its
    first to its last file written (the jobs ran side by side on the run's cores)."""
    job_s = sum(pl.read_csv(f, separator="\t")["s"].sum() for f in (results / "benchmarks").rglob("*.tsv"))
    times = [p.stat().st_mtime for p in results.rglob("*") if p.is_file()]
    return {"job_s": round(job_s), "wall_s": round(max(times) - min(times))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="a finished `leakk replicates` folder")
    ap.add_argument("--params", required=True, help="the preset it ran")
    ap.add_argument("--seeds", type=int, nargs="+", help="only these (default: the preset's replicates)")
    args = ap.parse_args()
    params = load_params(args.params)
    root, est = Path(args.root), params["estimate"]
    seeds = params["replicates"] = args.seeds or params.get("replicates") or found_seeds(root)
    if not (root / "leak_at_k.csv").is_file():
        raise SystemExit(f"{root}: no leak_at_k.csv across seeds; finish the run with `leakk --params "
                         f"{args.params} replicates --out-dir {root}` (it resumes)")
    with tempfile.TemporaryDirectory() as tmp:
        snapshot_replicates(root, params, tmp, claim_file=Path(tmp) / "claim.json")
        for table in ("claims", "rule-targets"):
            print(render(table, tmp), end="\n\n")
    widths = pl.concat([half_widths(seed_results(root, s), s, est["headline_judge"], est["headline_decoding"])
                        for s in seeds])
    data = read_parquet(seed_results(root, seeds[0]) / "data/benchmark.parquet", "data")
    clusters = data.filter(pl.col("split") == "forget")["group"].n_unique()
    print(f"leak@n and its {est['ci']:.0%} CI ({est['ci_method']}, {clusters} forget clusters); "
          f"target half-width <= {HALF_WIDTH_TARGET} for ga, graddiff, npo:")
    with pl.Config(tbl_rows=100, tbl_hide_dataframe_shape=True, float_precision=3):
        print(widths.pivot("seed", index="model", values="half_width"))
    for s in seeds:
        print(f"seed {s}: {compute(seed_results(root, s))}")


if __name__ == "__main__":
    main()
