"""Does a run reproduce the README's run table? Compare a results tree with a snapshot.

    .venv/bin/python scripts/compare_run.py results                 # against docs/results
    .venv/bin/python scripts/compare_run.py /tmp/other_snapshot     # two snapshots (headline.csv, …)
    .venv/bin/python scripts/compare_run.py --replicates results/replicates   # every report seed's claims

With ``--replicates`` (a finished ``leakk replicates`` folder of the report seeds) it compares
what the claims table checks (greedy leak, leak@n, retain accuracy per model and seed) with the
snapshot's ``seed_claims.csv``, prints the largest and median difference, and the claims table
as the rerun gives it: on another CPU vendor, how far the README's claims move.

Snapshots the run with the README's own code (``leakk.report.readme_tables.snapshot_run``,
into a temporary folder, never over the committed one) and prints, per model: greedy leak,
leak@1 and leak@n at the headline decoding, and retain accuracy, snapshot → this run, the
largest difference, and whether every number is bit for bit the same. The run must be of the
snapshot's seed (meta.json ``run.seed``) and params; on another CPU the floats may differ
(docs/workflow.md, "The same numbers on another machine"), and this prints by how much.

Either way a run that is not bit for bit the snapshot is then held to the README's stated
tolerance: the largest move of greedy leak, leak@n and retain accuracy that any rerun committed
under the snapshot measured, over every model (``readme_tables.tolerance``; leak@1 is printed,
not held to it: no rerun records it); a number one side lacks counts as beyond it. Exit
status 0 when the run reproduces the snapshot bit for bit or within that tolerance (it says
which), 1 when some number moved more (each is named: commit the rerun, and the tolerance
widens), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import polars as pl

from leakk.config import load_params
from leakk.core.errors import LeakkError
from leakk.report.readme_tables import (beyond_tolerance, claims_drift, rerun_markdown, rerun_moves,
                                        snapshot_replicates, snapshot_run, tolerance)


def _numbers(snapshot: Path) -> pl.DataFrame:
    """model → greedy, leak@1, leak@n (headline decoding) and retain accuracy of a snapshot."""
    meta = json.loads((snapshot / "meta.json").read_text())["run"]
    head = pl.read_csv(snapshot / "headline.csv")
    k_max = int(head.filter(pl.col("decoding") == meta["decoding"])["k"].max())
    cols = []
    for name, decoding, k in (("greedy", "greedy", 1), ("leak@1", meta["decoding"], 1),
                              (f"leak@{k_max}", meta["decoding"], k_max)):
        cols.append(head.filter((pl.col("decoding") == decoding) & (pl.col("k") == k))
                    .select("model", pl.col("leak_at_k").alias(name)))
    out = cols[0]
    for frame in cols[1:]:
        out = out.join(frame, on="model", how="full", coalesce=True)
    utility = pl.read_csv(snapshot / "utility.csv").select("model", pl.col("retain_accuracy").alias("retain"))
    return out.join(utility, on="model", how="left").sort("model")


def compare_replicates(root: Path, snapshot: Path, params: dict) -> int:
    """Every seed's claim numbers of ``root`` against the snapshot's seed_claims.csv, as the
    README's ``rerun`` table shows them (0: bit for bit the same or within the stated tolerance,
    1: some number moved beyond it, or one side lacks it)."""
    params = dict(params)
    params.pop("replicates", None)  # the seeds the folder holds, whatever the params file lists
    with tempfile.TemporaryDirectory() as tmp:  # never the committed snapshot or claim file
        snapshot_replicates(root, params, tmp, claim_file=Path(tmp) / "extrapolation_claim.json")
        mine = pl.read_csv(Path(tmp) / "seed_claims.csv")
    theirs = pl.read_csv(snapshot / "seed_claims.csv")
    both = claims_drift(theirs, mine)
    keys = ["seed", "model"]
    identical = theirs.filter(pl.col("seed").is_in(mine["seed"].unique().to_list())).sort(keys).equals(mine.sort(keys))
    print(f"seeds {sorted(set(mine['seed']))}: {snapshot}/seed_claims.csv → {root}"
          + (" (bit for bit identical)" if identical else ""))
    print(rerun_markdown(both, mine))
    if identical:
        return 0
    return verdict(beyond_tolerance(both, tolerance(rerun_moves(snapshot)), int(mine["k"].max())), snapshot)


def verdict(beyond: list[str], snapshot: Path) -> int:
    """Print whether the moves stay within the stated tolerance; the exit status (0 or 1)."""
    if not beyond:
        print(f"Not bit for bit, but within the stated tolerance (the largest moves of the reruns under {snapshot}).")
        return 0
    print(f"Beyond the stated tolerance (the largest moves of the reruns under {snapshot}), {len(beyond)} number(s):")
    print("\n".join(f"- {line}" for line in beyond))
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="?", help="a finished run's results folder")
    parser.add_argument("--replicates", metavar="DIR",
                        help="instead: a finished `leakk replicates` folder, compared seed by seed with seed_claims.csv")
    parser.add_argument("--snapshot", default="docs/results", help="default: docs/results")
    parser.add_argument("--params", default=None, help="the run's params file (default: <results>/../params.yaml "
                                                       "if it exists, else params.yaml)")
    args = parser.parse_args(argv)
    if (args.results is None) == (args.replicates is None):
        parser.error("give a results folder or --replicates DIR (one of them)")
    if args.replicates:
        try:
            return compare_replicates(Path(args.replicates), Path(args.snapshot),
                                      load_params(args.params or "params.yaml"))
        except (LeakkError, OSError, KeyError, pl.exceptions.PolarsError) as err:
            print(f"compare_run: {err}", file=sys.stderr)
            return 2
    results, snapshot = Path(args.results), Path(args.snapshot)
    params_file = Path(args.params) if args.params else next(
        (p for p in (results.parent / "params.yaml", Path("params.yaml")) if p.is_file()), Path("params.yaml"))
    try:
        if "run" not in (meta := json.loads((snapshot / "meta.json").read_text())):
            raise LeakkError(f"{snapshot}/meta.json holds no run (a rerun's sub-snapshot holds seeds: "
                             "compare a `leakk replicates` folder with --replicates)")
        seed = meta["run"]["seed"]
        if (results / "headline.csv").is_file():  # another snapshot, e.g. from an older version's run
            if (other := json.loads((results / "meta.json").read_text())["run"]["seed"]) != seed:
                raise LeakkError(f"{results} holds seed {other}, {snapshot} seed {seed}")
            mine = _numbers(results)
        else:
            params = load_params(params_file)
            if params["seed"] != seed:
                raise LeakkError(f"{params_file} runs seed {params['seed']}, the snapshot seed {seed}")
            with tempfile.TemporaryDirectory() as tmp:
                snapshot_run(results, params, tmp)
                mine = _numbers(Path(tmp))
        theirs = _numbers(snapshot)
        if mine.columns != theirs.columns:
            raise LeakkError(f"the run's numbers ({', '.join(mine.columns[1:])}) are not the snapshot's "
                             f"({', '.join(theirs.columns[1:])}): not comparable")
        identical = theirs.equals(mine)
        allowed = None if identical else tolerance(rerun_moves(snapshot))
    except (LeakkError, OSError, KeyError, pl.exceptions.PolarsError) as err:
        print(f"compare_run: {err}", file=sys.stderr)
        return 2
    both = theirs.join(mine, on="model", how="full", coalesce=True, suffix="_run")
    value_cols = [c for c in theirs.columns if c != "model"]
    print(f"seed {seed}: {snapshot} → {results}" + (" (bit for bit identical)" if identical else ""))
    print("| model | " + " | ".join(value_cols) + " | largest \\|Δ\\| |")
    print("|---|" + "---|" * (len(value_cols) + 1))
    for row in both.iter_rows(named=True):
        diffs = [abs(row[f"{c}_run"] - row[c]) for c in value_cols if row[c] is not None and row[f"{c}_run"] is not None]
        cells = [f"{row[c]:.3f} → {row[f'{c}_run']:.3f}" if row[c] is not None and row[f"{c}_run"] is not None
                 else "–" for c in value_cols]
        print(f"| {row['model']} | " + " | ".join(cells) + f" | {max(diffs, default=0.0):.3f} |")
    if identical:
        return 0
    leak_at_n = [c for c in value_cols if c.startswith("leak@")][-1]  # the claims' leak@n
    columns = {"greedy": "greedy", "leak_at_n": leak_at_n, "retain_accuracy": "retain"}
    n = int(leak_at_n.removeprefix("leak@"))
    return verdict(beyond_tolerance(both, allowed, n, columns, suffix="_run"), snapshot)


if __name__ == "__main__":
    sys.exit(main())
