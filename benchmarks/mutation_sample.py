"""Names of a seeded random sample of the not-yet-tested mutants, per module.

When a full ``make mutation`` does not fit (a shared machine), test a stratified sample
and read the per-module score as an estimate (``mutation_report.py`` prints its 95%
Wilson interval). Every not-yet-tested mutant of a small module is taken, a ``--fraction``
(at least ``--min``) of a large one; already-tested survivors are always included so that
new tests are tried on them:

    mutmut run $(python benchmarks/mutation_sample.py --fraction 0.15)
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KILLED = {1, 3, 36, -24, 24, 152, 255}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mutants", type=Path, default=ROOT / "mutants")
    ap.add_argument("--fraction", type=float, default=0.15)
    ap.add_argument("--min", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    names = []
    for meta in sorted(args.mutants.glob("src/**/*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        untested = sorted(k for k, v in codes.items() if v is None)
        names += sorted(k for k, v in codes.items() if v is not None and v not in KILLED)
        take = max(args.min, round(args.fraction * len(untested)))
        names += untested if take >= len(untested) else sorted(rng.sample(untested, take))
    print(" ".join(names))


if __name__ == "__main__":
    main()
