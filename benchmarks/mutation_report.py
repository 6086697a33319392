"""Per-module mutation score from a finished ``mutmut run`` (``make mutation-report``).

Reads mutmut's result files (``mutants/src/**/*.py.meta``) and the reviewed list of
equivalent mutants (``benchmarks/mutation_equivalent.txt``: one mutant name per line,
``#`` and the reason after it), and prints a Markdown table:

    score = killed / (mutants − equivalent)

(with a 95% Wilson interval, for runs that tested a random sample of a module's
mutants, ``benchmarks/mutation_sample.py``), where ``killed`` counts mutants a test failed on (or that timed out: an infinite loop is a
caught bug), and every other mutant that is not listed as equivalent — survived, no
covering test, suspicious — counts against the score. ``--survivors`` lists the
non-equivalent mutants that were not killed (``mutmut show <name>`` prints each diff).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KILLED = {1, 3, 36, -24, 24, 152, 255}  # mutmut's exit codes for killed / timeout
STATUS = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", None: "not checked"}


def load_equivalent(path: Path) -> dict[str, str]:
    out = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            name, _, reason = line.partition("#")
            if name.strip():
                out[name.strip()] = reason.strip()
    return out


def results(mutants: Path) -> dict[str, dict[str, int | None]]:
    """{module path: {mutant name: exit code}} for every mutated file."""
    out = {}
    for meta in sorted(mutants.glob("src/**/*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            out[str(meta.relative_to(mutants))[: -len(".meta")]] = codes
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mutants", type=Path, default=ROOT / "mutants")
    ap.add_argument("--equivalent", type=Path, default=ROOT / "benchmarks" / "mutation_equivalent.txt")
    ap.add_argument("--survivors", action="store_true", help="list the non-equivalent mutants not killed")
    args = ap.parse_args(argv)
    equivalent = load_equivalent(args.equivalent)
    by_module = results(args.mutants)
    if not by_module:
        print(f"no mutmut results under {args.mutants} (run `make mutation` first)", file=sys.stderr)
        return 1
    print("| module | mutants | killed | equivalent | not killed | not checked | score | 95% interval |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    total: Counter = Counter()
    left: list[tuple[str, str]] = []
    for module, codes in by_module.items():
        c: Counter = Counter()
        for name, code in codes.items():
            if code in KILLED:
                c["killed"] += 1
            elif name in equivalent:
                c["equivalent"] += 1
            elif code is None:
                c["unchecked"] += 1
            else:
                c["left"] += 1
                left.append((name, STATUS.get(code, f"exit {code}")))
        c["mutants"] = len(codes)
        total.update(c)
        print(_row(module, c))
    print(_row("**core total**", total))
    stale = sorted(set(equivalent) - {n for codes in by_module.values() for n in codes})
    if stale:
        print(f"\n{len(stale)} listed equivalent mutant(s) no longer exist: {', '.join(stale[:5])}…", file=sys.stderr)
    if args.survivors:
        print()
        for name, status in sorted(left, key=lambda x: _natural(x[0])):
            print(f"- `{name}`: {status}")
    return 0


def _row(label: str, c: Counter) -> str:
    checked = c["mutants"] - c["equivalent"] - c["unchecked"]
    score = f"{100 * c['killed'] / checked:.1f}%" if checked else "–"
    lo, hi = _wilson(c["killed"], checked)
    interval = f"{100 * lo:.0f}–{100 * hi:.0f}%" if checked else "–"
    return (f"| {label} | {c['mutants']} | {c['killed']} | {c['equivalent']} | {c['left']} | "
            f"{c['unchecked']} | {score} | {interval} |")


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a proportion k/n: where the score of all the module's
    non-equivalent mutants lies when only a random sample of them was tested."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


if __name__ == "__main__":
    sys.exit(main())
