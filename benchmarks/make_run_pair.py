"""`make run` of two commits, back to back on the same machine: wall time, job-seconds, the ratio.

Each commit is checked out (``git worktree``) in a scratch folder and runs what `make run` runs
after its install step — ``snakemake --cores <cores>`` and ``snakemake --report`` — with this
checkout's environment (``.venv``) and that commit's code first on ``PYTHONPATH``. Pairs
alternate their order (the machine's speed drifts over minutes). After each pair the two runs'
trained models and summary are compared byte for byte: a speed-up that changes a result is
not one.

    .venv/bin/python benchmarks/make_run_pair.py BASE [OURS] [--pairs 1] [--ours-first] [--cores all] [--keep]

Last line: ``ratio: <median of OURS / BASE wall time>``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from pipeline import job_times  # benchmarks/pipeline.py, beside this script

ROOT = Path(__file__).resolve().parents[1]


def checkout(rev: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(into), rev], check=True,
                   capture_output=True)
    return into


def make_run(tree: Path, cores: str) -> dict:
    """Run the DAG and its report in ``tree``; its wall time and the sum of its jobs' times."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), PATH=f"{ROOT / '.venv/bin'}:{os.environ['PATH']}")
    snakemake = str(ROOT / ".venv/bin/snakemake")
    start = time.perf_counter()
    for args in (["--cores", cores], ["--report", "results/report.html"]):
        subprocess.run([snakemake, *args], cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    times = job_times(tree)
    return {"wall": wall, "job_seconds": times["seconds"].sum(), "jobs": int(times["jobs"].sum()),
            "per_rule": dict(times.select("rule", "seconds").iter_rows())}


def fingerprint(tree: Path) -> dict[str, str]:
    """Every trained model's weights and the summary, hashed."""
    files = sorted((tree / "results").glob("**/model.safetensors")) + [tree / "results/summary.md"]
    return {str(f.relative_to(tree)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base")
    ap.add_argument("ours", nargs="?", default="HEAD")
    ap.add_argument("--pairs", type=int, default=1)
    ap.add_argument("--cores", default="all")
    ap.add_argument("--ours-first", action="store_true", help="the first pair runs OURS first (to add a pair "
                    "of the other order to an earlier call)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch checkouts and their results")
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="leakk-make-run-"))
    ratios = []
    for pair in range(args.pairs):
        order = [("base", args.base), ("ours", args.ours)][:: 1 if (pair + args.ours_first) % 2 == 0 else -1]
        runs = {}
        for label, rev in order:
            tree = checkout(rev, scratch / f"{label}_{pair}")
            runs[label] = make_run(tree, args.cores) | {"fingerprint": fingerprint(tree)}
            r = runs[label]
            print(f"pair {pair} {label} ({rev}): make run {r['wall']:.0f} s, {r['jobs']} jobs, "
                  f"{r['job_seconds']:.0f} job-seconds (unlearn {r['per_rule'].get('unlearn', 0):.0f})", flush=True)
        same = runs["base"]["fingerprint"] == runs["ours"]["fingerprint"]
        print(f"pair {pair}: models and summary {'identical' if same else 'DIFFER'} "
              f"({len(runs['ours']['fingerprint'])} files)", flush=True)
        ratios.append(runs["ours"]["wall"] / runs["base"]["wall"])
        for label, _ in order if not args.keep else []:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(scratch / f"{label}_{pair}")],
                           check=False, capture_output=True)
    if args.keep:
        print(f"kept: {scratch}")
    print(f"ratio: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
