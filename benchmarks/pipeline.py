"""Where the pipeline's time goes: run the Snakemake DAG and sum each rule's job time.

Every rule writes a Snakemake ``benchmark:`` file (wall seconds per job); this harness runs
the DAG in a scratch folder (the default params.yaml, or the micro test config with
``--quick``) and prints seconds per rule, jobs, the share of all job time, and the wall time.

    .venv/bin/python benchmarks/pipeline.py [--quick] [--cores 2]
    .venv/bin/python benchmarks/pipeline.py --existing .   # summarise the last `make run`
Last line: ``ratio: <share of all job time spent in the sample rule>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]


def job_times(run: Path) -> pl.DataFrame:
    """Jobs and seconds per rule of the run in folder ``run`` (its Snakemake ``benchmark:`` files),
    with each rule's share of all job time, largest first."""
    rows = []
    for tsv in (run / "results/benchmarks").rglob("*.tsv"):
        rule = tsv.parent.name if tsv.parent.name != "benchmarks" else tsv.stem
        rows.append({"rule": rule, "seconds": float(pl.read_csv(tsv, separator="\t")["s"][0])})
    return (pl.DataFrame(rows).group_by("rule").agg(jobs=pl.len(), seconds=pl.col("seconds").sum())
            .with_columns(share=pl.col("seconds") / pl.col("seconds").sum()).sort("seconds", descending=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the micro test configuration (< 1 min)")
    ap.add_argument("--cores", default="all")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--existing", metavar="DIR", help="only summarise DIR/results/benchmarks of a finished run")
    args = ap.parse_args()
    if args.existing:
        work, wall = Path(args.existing), float("nan")
    else:
        work = Path(tempfile.mkdtemp(prefix="leakk-pipeline-"))
        if args.quick:  # the micro test config without RULE: ~25 jobs
            sys.path.insert(0, str(ROOT / "tests"))
            from conftest import MICRO

            quick = {k: v for k, v in MICRO.items() if k != "rule"}
            (work / "params.yaml").write_text(yaml.safe_dump(quick, sort_keys=False))
        else:
            shutil.copy(ROOT / "params.yaml", work / "params.yaml")
        env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
               "TQDM_DISABLE": "1"}
        t = time.perf_counter()
        proc = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-s", str(ROOT / "Snakefile"),
                               "--directory", str(work), "--cores", str(args.cores), "--quiet", "all"],
                              env=env, cwd=work, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode:
            sys.exit(proc.stderr[-3000:])
    table = job_times(work)
    config = args.existing or ("micro (tests/conftest.py, no RULE)" if args.quick else "params.yaml")
    print(f"config: {config}; cores: {args.cores}; "
          f"wall {wall:.0f}s for {int(table['jobs'].sum())} jobs ({table['seconds'].sum():.0f} job-seconds)")
    print(f"{'rule':<14} {'jobs':>5} {'seconds':>9} {'share':>7}")
    for r in table.iter_rows(named=True):
        print(f"{r['rule']:<14} {r['jobs']:>5} {r['seconds']:>9.1f} {r['share']:>7.1%}")
    if args.keep or args.existing:
        print(f"results in {work}")
    else:
        shutil.rmtree(work)
    sample_share = table.filter(pl.col("rule") == "sample")["share"].sum()
    print(f"ratio: {sample_share:.3f}")


if __name__ == "__main__":
    main()
