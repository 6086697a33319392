"""Re-plant the seven bugs of issue 13 one at a time and check the suite now catches each.

Each bug is a one-line edit of ``src/leakk``; the script applies it, runs the given tests
(``tests/test_survivors.py`` plus the pre-existing file that should have caught it), records
which tests fail, and restores the file. Run from the repository root:

    python benchmarks/replant_survivors.py          # exit 1 if a bug survives
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (name, file, original line fragment, planted fragment, tests)
BUGS = [
    ("NPO sign flipped", "src/leakk/unlearn/methods.py",
     "F.logsigmoid(-self.beta * log_ratio)", "F.logsigmoid(self.beta * log_ratio)",
     ["tests/test_survivors.py", "tests/test_unlearn.py"]),
    ("NPO reference from the current model", "src/leakk/unlearn/loop.py",
     "method.forget_loss(model, fb, ref[idx] if ref is not None else None)",
     "method.forget_loss(model, fb, reference_logprobs(model, [forget[i] for i in idx], pad, device)"
     " if ref is not None else None)",
     ["tests/test_survivors.py", "tests/test_unlearn.py"]),
    ("sampler key ignores the question id", "src/leakk/sampling/hf.py",
     "row_keys(seed, row_qids, sample_idx)", "row_keys(seed, [''] * len(row_qids), sample_idx)",
     ["tests/test_survivors.py", "tests/test_sampling.py"]),
    ("row keys ignore the question id", "src/leakk/sampling/rng.py",
     "q = np.array([qid_key(x) for x in qids], dtype=np.uint64)", "q = np.zeros(len(qids), dtype=np.uint64)",
     ["tests/test_survivors.py", "tests/test_sampling.py"]),
    ("RULE seed check misses the last round", "src/leakk/config.py",
     'for r in range(run["rounds"] + 1)', 'for r in range(run["rounds"])',
     ["tests/test_survivors.py", "tests/test_config.py"]),
    ("write_parquet not atomic", "src/leakk/core/io.py",
     "df.write_parquet(tmp)", "df.write_parquet(path)",
     ["tests/test_survivors.py", "tests/test_io.py"]),
    ("RULE round stats need n > k", "src/leakk/unlearn/rule.py",
     'pl.col("n") >= k', 'pl.col("n") > k',
     ["tests/test_survivors.py", "tests/test_rule.py"]),
    ("every RULE round uses the same seed", "src/leakk/unlearn/rule.py",
     'seed = cfg["seed"] + 1000 * round_idx', 'seed = cfg["seed"] + 1000',
     ["tests/test_survivors.py", "tests/test_rule.py"]),
]


def main() -> int:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TQDM_DISABLE="1")
    survived = 0
    for name, rel, old, new, tests in BUGS:
        path = ROOT / rel
        original = path.read_text()
        assert original.count(old) == 1, f"{rel}: {old!r} not found exactly once"
        path.write_text(original.replace(old, new))
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *tests],
                                  cwd=ROOT, env=env, capture_output=True, text=True)
        finally:
            path.write_text(original)
        failed = sorted({line.split()[1].split("::", 1)[1] for line in proc.stdout.splitlines()
                         if line.startswith("FAILED ")})
        caught = proc.returncode != 0 and failed
        survived += not caught
        print(f"{'CAUGHT  ' if caught else 'SURVIVED'} {name}: {len(failed)} failing test(s)")
        for test in failed:
            print(f"           {test}")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
