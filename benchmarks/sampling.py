"""Sampling throughput: the reference code's strategy vs leakk's HF sampler, same everything.

Reference (the paper's code): per question, ``model.generate`` on 32 copies of the prompt,
repeated until n samples. Ours: :func:`leakk.sampling.hf.sample_hf` (questions batched and
length-sorted, one prefill per prompt with its KV cache expanded to the samples, finished
rows dropped). Both run on the same model, questions, n, decoding and machine; each is
timed ``--repeats`` times and the median is reported. Last line: ``ratio: <ours/ref>``.

    .venv/bin/python benchmarks/sampling.py [--quick] [--model DIR | --llama-1b] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# only torch-level modules here: the GPU machine has torch + transformers but no polars
from leakk.sampling.decoding import Decoding  # noqa: E402
from leakk.sampling.hf import sample_hf  # noqa: E402


def reference_generate(model, tokenizer, prompts, n, decoding, max_new_tokens, copies=32):
    """The reference strategy: per question, generate on `copies` prompt copies until n."""
    out = []
    for prompt in prompts:
        ids = torch.tensor([prompt], device=model.device)
        done = 0
        while done < n:
            k = min(copies, n - done)
            gen = model.generate(ids.expand(k, -1), attention_mask=torch.ones_like(ids).expand(k, -1),
                                 do_sample=True, temperature=decoding.temperature, top_p=decoding.top_p,
                                 max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
            new = gen[:, ids.shape[1]:]
            finished = (new == tokenizer.eos_token_id).int()
            # tokens up to and including the first EOS (what a user keeps)
            lengths = torch.where(finished.any(1), finished.argmax(1) + 1, torch.full_like(finished[:, 0], new.shape[1]))
            out += lengths.tolist()
            done += k
    return out


def ours(model, tokenizer, prompts, n, decoding, max_new_tokens, batch_rows):
    qids = [f"q{i}" for i in range(len(prompts))]
    comps = sample_hf(model, tokenizer, qids, prompts, decoding, n, max_new_tokens, seed=0,
                      batch_rows=batch_rows, progress=False)
    return [len(c.token_ids) for c in comps]


def timed(fn, repeats, sync):
    times, tokens = [], None
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        lengths = fn()
        sync()
        times.append(time.perf_counter() - t)
        tokens = sum(lengths)
    return statistics.median(times), tokens, len(lengths), times


def build_llama_1b(device, dtype, layers=16):
    """A ~1.2B-parameter Llama-3.2-1B-shaped model with random weights (built, not downloaded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=layers,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096,
                      rope_theta=500000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    return model.eval()


class _IdTokenizer:
    """Enough of a tokenizer for the sampler when prompts are already token ids."""

    pad_token_id, eos_token_id = 0, 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small run (< 1 min on 2 CPU cores)")
    ap.add_argument("--model", default=None, help="HF model folder (default: results/models/full, else a fresh "
                                                   "GPT-2 built from params.yaml)")
    ap.add_argument("--llama-1b", action="store_true", help="random-weight 1B Llama built from a config (GPU)")
    ap.add_argument("--llama-layers", type=int, default=16, help="layers of that Llama (fewer: a smoke test)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--questions", type=int, default=None)
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--batch-rows", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--no-prealloc", action="store_true", help="leakk with HF's concatenating KV cache (A/B)")
    ap.add_argument("--reference-questions", type=int, default=None,
                    help="run the reference on only the first R questions (its samples/s does not depend on "
                         "the number of questions: it works one question at a time); default: all")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.no_prealloc:
        import leakk.sampling.hf as hf

        hf.PREALLOCATE = False
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    decoding = Decoding(args.temperature, args.top_p)
    batch_rows = args.batch_rows if args.batch_rows == "auto" else int(args.batch_rows)

    if args.llama_1b:
        model = build_llama_1b(device, torch.bfloat16, args.llama_layers)
        tokenizer = _IdTokenizer()
        q = args.questions or 64
        n = args.n or 200
        max_new = args.max_new_tokens or 200
        gen = torch.Generator().manual_seed(0)
        prompts = [torch.randint(3, 128000, (int(torch.randint(24, 48, (1,), generator=gen)),), generator=gen).tolist()
                   for _ in range(q)]
        what = "llama-1b (random weights, bf16)"
    else:
        import polars as pl

        from leakk.config import load_params
        from leakk.data.synthetic import generate as make_benchmark
        from leakk.models.finetune import corpus_texts
        from leakk.models.modeling import build_gpt2, build_tokenizer, load_model
        from leakk.models.prompting import encode_prompt

        params = load_params(ROOT / "params.yaml")
        data = make_benchmark(**params["data"]["synthetic"], seed=params["seed"])
        path = Path(args.model) if args.model else ROOT / "results/models/full"
        if path.is_dir():
            model, tokenizer = load_model(path, device)
            what = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} (trained)"
        else:
            tokenizer = build_tokenizer(corpus_texts(data, params["prompt_template"]), params["model"]["vocab_size"])
            model = build_gpt2(tokenizer, params["model"]["arch"], 0).to(device)
            what = "default tiny GPT-2 (random weights)"
        model.eval()
        forget = data.filter(pl.col("split") == "forget")
        q = args.questions or (16 if args.quick else forget.height)
        questions = (forget["paraphrased_question"].to_list() * 10)[:q]
        prompts = [encode_prompt(x, tokenizer, params["prompt_template"]) for x in questions]
        n = args.n or (32 if args.quick else 64)
        max_new = args.max_new_tokens or params["sample"]["max_new_tokens"]
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {what}, {n_params / 1e6:.1f}M parameters, device {device}, threads {torch.get_num_threads()}")
    print(f"work: {len(prompts)} questions × n={n}, max_new_tokens={max_new}, decoding {decoding.name}, "
          f"median of {args.repeats}")

    ours_fn = lambda: ours(model, tokenizer, prompts, n, decoding, max_new, batch_rows)  # noqa: E731
    ours_fn()  # warm-up
    t_ours, tok_ours, s_ours, all_ours = timed(ours_fn, args.repeats, sync)
    rows = [("leakk", t_ours, tok_ours, s_ours)]
    if not args.skip_reference:
        ref_prompts = prompts[: args.reference_questions or len(prompts)]
        ref_fn = lambda: reference_generate(model, tokenizer, ref_prompts, n, decoding, max_new)  # noqa: E731
        t_ref, tok_ref, s_ref, all_ref = timed(ref_fn, args.repeats, sync)
        rows.insert(0, (f"reference ({len(ref_prompts)} q, generate×32 copies)", t_ref, tok_ref, s_ref))
    print(f"{'strategy':<42} {'median s':>9} {'samples/s':>10} {'tokens/s':>11}")
    for name, t, tok, s in rows:
        print(f"{name:<42} {t:9.2f} {s / t:10.1f} {tok / t:11.0f}")
    result = {"model": what, "params": n_params, "device": str(device), "questions": len(prompts), "n": n,
              "max_new_tokens": max_new, "ours_s": t_ours, "ours_tokens": tok_ours, "ours_runs": all_ours}
    if device.type == "cuda":
        flops = 2 * n_params * tok_ours / t_ours
        result["ours_tflops"] = flops / 1e12
        print(f"leakk: {flops / 1e12:.1f} TFLOP/s of useful decode compute (2·params per token) = "
              f"{flops / 790e12:.1%} of the H200's ~790 TFLOP/s bf16 bound")
    if not args.skip_reference:
        result.update(ref_s=t_ref, ref_tokens=tok_ref, ref_runs=all_ref)
        if device.type == "cuda":
            result["ref_tflops"] = 2 * n_params * tok_ref / t_ref / 1e12
            print(f"reference: {result['ref_tflops']:.1f} TFLOP/s = {result['ref_tflops'] / 790:.1%} of the bound")
        ratio = (s_ours / t_ours) / (s_ref / t_ref)
        result["ratio"] = ratio
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if not args.skip_reference:
        print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
