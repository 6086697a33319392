"""Sharding reproducibility: sample one (model, decoding) as S = 1 and as S shards, merge, and
compare row by row and by leak@k (fact judge) with its cluster-bootstrap CI.

    .venv/bin/python benchmarks/sharding.py [--model results/models/graddiff] [--shards 4] [--quick]
Last line: ``ratio: <fraction of identical rows>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from leakk.config import load_params  # noqa: E402
from leakk.stats.estimate import leak_table  # noqa: E402
from leakk.judges import judge_samples  # noqa: E402
from leakk.sampling.decoding import Decoding  # noqa: E402
from leakk.sampling.stage import run_sampling  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "results/models/graddiff"))
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="n = 16 instead of params' n")
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml")
    data = pl.read_parquet(ROOT / "results/data/benchmark.parquet")
    sample = dict(params["sample"], n=16 if args.quick else params["sample"]["n"])
    dec = Decoding.from_name(params["estimate"]["headline_decoding"])
    kw = dict(model_name="m", params=sample, template=params["prompt_template"], progress=False)
    t = time.perf_counter()
    whole = run_sampling(args.model, data, dec, **kw)
    t1 = time.perf_counter() - t
    parts = [run_sampling(args.model, data, dec, shard=i, shards=args.shards, **kw) for i in range(args.shards)]
    merged = pl.concat(parts).sort("qid", "sample_idx")
    assert merged.select("qid", "sample_idx").equals(whole.select("qid", "sample_idx"))
    same = float((merged["text"] == whole["text"]).mean())
    ks = [k for k in params["estimate"]["ks"] if k <= sample["n"]]
    tables = {}
    for name, frame in (("S=1", whole), (f"S={args.shards}", merged)):
        j = judge_samples(frame, data, {"fact": None}, progress=False).join(data.select("qid", "group"), on="qid")
        tables[name] = leak_table(j.with_columns(model=pl.lit("m"), decoding=pl.lit(dec.name)), ks)
    print(f"model {args.model}, decoding {dec.name}, n={sample['n']}, {whole.height} rows; S=1 took {t1:.1f}s")
    print(f"{'k':>4} " + " ".join(f"{name:>24}" for name in tables))
    for i, k in enumerate(ks):
        cells = []
        for tab in tables.values():
            r = tab.row(i, named=True)
            cells.append(f"{r['leak_at_k']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
        print(f"{k:>4} " + " ".join(f"{c:>24}" for c in cells))
    a, b = tables.values()
    inside = all(lo <= x <= hi for x, lo, hi in zip(b["leak_at_k"], a["ci_low"], a["ci_high"]))
    print(f"identical rows: {same:.4f}; S={args.shards} leak@k inside the S=1 CI for every k: {inside}")
    print(f"ratio: {same:.4f}")


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
