"""What reproducible CPU kernels cost: one training run and one sampling run of the default
miniature's model shape under each ``LEAKK_CPU_KERNELS`` mode, side by side.

Each measurement is a fresh process (torch and MKL read the mode when they load); the modes
are interleaved ``--repeats`` times so machine noise hits them alike, and medians are
reported with the ratio to ``native``. Also prints whether each mode gave the same weights
as itself run on this CPU made to look AVX2-only (MKL and oneDNN limited to AVX2).

    .venv/bin/python benchmarks/cpu_kernels.py [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

PROBE = r"""
import hashlib, json, sys, time, leakk, torch
from leakk.data.synthetic import generate
from leakk.models.finetune import corpus_texts, train_loop, training_pairs
from leakk.models.modeling import build_gpt2, build_tokenizer
from leakk.sampling.decoding import Decoding
from leakk.sampling.hf import sample_hf
torch.set_num_threads(1)
authors, epochs, questions = (int(x) for x in sys.argv[1:4])
T = "Question: {question} Answer:"
data = generate(authors, 10, forget_fraction=0.1, phrasings=4)
tok = build_tokenizer(corpus_texts(data, T), 1024)
model = build_gpt2(tok, {"n_layer": 4, "n_embd": 128, "n_head": 4, "n_positions": 64}, seed=0)
t = time.perf_counter()
train_loop(model, tok, training_pairs(data), template=T, epochs=epochs, lr=5e-3, batch_size=32,
           warmup_ratio=0.05, weight_decay=0.0, seed=0, device="cpu", desc="probe")
train_s = time.perf_counter() - t
model.eval()
rows = data.head(questions)
prompts = [tok(T.format(question=q))["input_ids"] for q in rows["question"]]
t = time.perf_counter()
comps = sample_hf(model, tok, rows["qid"].to_list(), prompts, Decoding(1.0, 1.0), 64, 32, seed=0,
                  batch_rows=512, progress=False)
sample_s = time.perf_counter() - t
h = hashlib.sha256(b"".join(v.numpy().tobytes() for _, v in sorted(model.state_dict().items())))
h.update(repr([c.token_ids for c in comps]).encode())
print(json.dumps({"train_s": train_s, "sample_s": sample_s, "hash": h.hexdigest()[:16],
                  "capability": torch.backends.cpu.get_cpu_capability()}))
"""

PINNED = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
AVX2_CPU = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def probe(mode: str, sizes: list[str], **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in PINNED}
    env.update(LEAKK_CPU_KERNELS=mode, TQDM_DISABLE="1", **extra)
    out = subprocess.run([sys.executable, "-c", PROBE, *sizes], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a smaller benchmark and 1 epoch (about a minute per run)")
    args = ap.parse_args()
    sizes = ["20", "1", "16"] if args.quick else ["60", "2", "60"]
    modes = ("native", "portable", "compatible")
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for _ in range(args.repeats):
        for m in modes:
            runs[m].append(probe(m, sizes))
    print(f"| mode | ATen kernels | training median s | sampling median s | vs native (train / sample) "
          f"| same bits on an AVX2-only CPU |")
    print("|---|---|---:|---:|---:|---|")
    base = {k: statistics.median(r[k] for r in runs["native"]) for k in ("train_s", "sample_s")}
    for m in modes:
        med = {k: statistics.median(r[k] for r in runs[m]) for k in ("train_s", "sample_s")}
        same = probe(m, sizes, **AVX2_CPU)["hash"] == runs[m][0]["hash"]
        print(f"| {m} | {runs[m][0]['capability']} | {med['train_s']:.1f} | {med['sample_s']:.1f} | "
              f"{med['train_s'] / base['train_s']:.2f}× / {med['sample_s'] / base['sample_s']:.2f}× | "
              f"{'yes' if same else 'no'} |")


if __name__ == "__main__":
    main()
