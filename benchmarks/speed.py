"""Sampler and training-step speed, baseline and leakk side by side in one process.

Baseline = the code before the GPU work (issue 22), kept here as monkeypatches: the sampler's
old sampling step (``.float()``, ``/ T`` and a padding copy of the vocabulary-sized logits
every step) and transformers' own GQA decoding (which expands K/V before transformers 5.2x);
the training step's fp32 log-softmax over every position's logits, fp32 weights cast by
autocast, and the unfused AdamW. Models are Llama-shaped, random weights, built from a config:

- ``--shape llama-1b``: Llama-3.2-1B (16 layers, hidden 2048, 32 q / 8 kv heads, 128k vocab), bf16;
- ``--shape proxy``: a CPU proxy (4 layers, hidden 512, 8 q / 2 kv heads, 32k vocab), fp32.

    .venv/bin/python benchmarks/speed.py --shape proxy --device cpu      # CPU proxy, ~5 min
    python3 benchmarks/speed.py --shape llama-1b --device cuda            # one H200

Prints a table and, last, one JSON line. Useful FLOPs: 2·params per sampled token; 6·params
per trained token (the issue's MFU), against ``--peak`` TFLOP/s (790: the H200's measured bf16 rate).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SHAPES = {
    "llama-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0, tie_word_embeddings=True),
    "proxy": dict(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
                  num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=True),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
}


def build_llama(shape: str, device, dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    return model.eval()


class IdTokenizer:
    """Enough of a tokenizer for the sampler when prompts are already token ids."""

    pad_token_id, eos_token_id = 0, 2


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# --- baselines ---------------------------------------------------------------------------------

def _old_next_tokens(logits, decoding, keys, step):
    """The sampling step before issue 22 (same draws; more vocabulary-sized passes)."""
    from leakk.sampling.rng import gumbel

    if decoding.greedy:
        return logits.argmax(-1)
    logp = torch.log_softmax(logits.float() / decoding.temperature, dim=-1)
    if decoding.top_p < 1.0:
        sorted_lp, order = logp.sort(dim=-1, descending=True)
        probs = sorted_lp.exp()
        drop = torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, order, (probs.cumsum(-1) - probs) >= decoding.top_p)
        logp = logp.masked_fill(drop, float("-inf"))
    rows, vocab = logp.shape
    block = max(1, math.isqrt(vocab - 1) + 1)
    blocks = -(-vocab // block)
    if blocks * block != vocab:
        logp = torch.nn.functional.pad(logp, (0, blocks * block - vocab), value=float("-inf"))
    logp = logp.view(rows, blocks, block)
    arange_b = torch.arange(blocks, device=logits.device).expand(rows, -1)
    chosen = (torch.logsumexp(logp, -1) + gumbel(keys, step, 0, arange_b)).argmax(-1)
    within = logp[torch.arange(rows, device=logits.device), chosen]
    token_ids = chosen.unsqueeze(-1) * block + torch.arange(block, device=logits.device)
    return chosen * block + (within + gumbel(keys, step, 1, token_ids)).argmax(-1)


@contextlib.contextmanager
def _repeat_kv_decoding(model):
    """transformers < 5.2x's GQA decoding: expand K/V to every query head, then SDPA with the mask."""
    from transformers.integrations import sdpa_attention as sa

    old = getattr(sa, "use_gqa_in_sdpa", None), getattr(sa, "pack_gqa", None)
    if old[1] is not None:
        sa.pack_gqa = lambda x, n: x
        real = sa.sdpa_attention_forward

        def forward(module, query, key, value, attention_mask, **kw):
            groups = getattr(module, "num_key_value_groups", 1)
            if query.shape[2] == 1 and groups > 1:
                key, value = sa.repeat_kv(key, groups), sa.repeat_kv(value, groups)
            return real(module, query, key, value, attention_mask, **kw)

        from transformers import AttentionInterface

        AttentionInterface._global_mapping["sdpa"] = forward
        try:
            yield False
        finally:
            AttentionInterface._global_mapping["sdpa"] = real
            sa.pack_gqa = old[1]
    else:
        yield False


@contextlib.contextmanager
def sampler_baseline():
    import leakk.sampling.hf as hf

    saved = hf.next_tokens, hf.grouped_decoding
    hf.next_tokens, hf.grouped_decoding = _old_next_tokens, _repeat_kv_decoding
    try:
        yield
    finally:
        hf.next_tokens, hf.grouped_decoding = saved


@contextlib.contextmanager
def training_baseline():
    """Every position's logits in fp32 (the full forward), no fused AdamW."""
    import leakk.models.prompting as prompting
    import leakk.models.training as training

    saved = prompting._reduced_precision, training.torch.optim.AdamW
    real = torch.optim.AdamW
    prompting._reduced_precision = lambda model, batch: False
    training.torch.optim.AdamW = lambda params, **kw: real(params, **{k: v for k, v in kw.items() if k != "fused"})
    try:
        yield
    finally:
        prompting._reduced_precision, training.torch.optim.AdamW = saved[0], real


# --- measurements ------------------------------------------------------------------------------

def sampler_run(model, prompts, n, max_new, device, repeats=3, decoding=None):
    """Median seconds of sampling ``prompts`` × n × max_new (random weights: no EOS, every row
    runs to max_new), and the tokens produced."""
    from leakk.sampling.decoding import Decoding
    from leakk.sampling.hf import sample_hf

    decoding = decoding or Decoding(1.0, 1.0)
    qids = [f"q{i}" for i in range(len(prompts))]
    run = lambda m: sample_hf(model, IdTokenizer, qids, prompts, decoding, n, m, 0, progress=False)  # noqa: E731
    run(min(8, max_new))  # warm-up: kernels, allocator
    times, tokens = [], 0
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        out = run(max_new)
        sync(device)
        times.append(time.perf_counter() - t)
        tokens = sum(len(c.token_ids) for c in out)
    return statistics.median(times), tokens, times


def make_prompts(count, vocab, lo=24, hi=48, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab - 1, (int(torch.randint(lo, hi, (1,), generator=gen)),), generator=gen).tolist()
            for _ in range(count)]


def sampler_ab(model, device, *, questions, n, max_new, repeats, peak_tflops, baseline=True, baseline_repeats=None):
    """leakk's sampler, and the baseline in the same process; tokens/s, % of bound, ratio."""
    params = sum(p.numel() for p in model.parameters())
    prompts = make_prompts(questions, model.config.vocab_size)
    out = {"questions": questions, "n": n, "max_new_tokens": max_new, "params": params}
    variants = [("leakk", contextlib.nullcontext, repeats)] + \
        ([("baseline", sampler_baseline, baseline_repeats or repeats)] if baseline else [])
    for name, ctx, reps in variants:
        with ctx():
            sec, tokens, times = sampler_run(model, prompts, n, max_new, device, reps)
        out[name] = {"seconds": sec, "runs": times, "tokens": tokens, "tokens_per_s": tokens / sec,
                     "pct_of_bound": 100 * 2 * params * tokens / sec / (peak_tflops * 1e12)}
    if baseline:
        out["ratio"] = out["leakk"]["tokens_per_s"] / out["baseline"]["tokens_per_s"]
    return out


def _examples(count, vocab, gen, prompt=(20, 40), answer=(30, 60)):
    out = []
    for _ in range(count):
        p = torch.randint(3, vocab - 1, (int(torch.randint(*prompt, (1,), generator=gen)),), generator=gen).tolist()
        a = torch.randint(3, vocab - 1, (int(torch.randint(*answer, (1,), generator=gen)),), generator=gen).tolist()
        out.append((p + a, [-100] * len(p) + a))
    return out


def train_run(shape, device, *, weights, examples, steps, peak_tflops):
    """An NPO + retain step (``examples`` each) with leakk's Trainer, as unlearn_loop builds it:
    median step seconds, tokens/s, MFU (6·params·tokens), peak memory vs leakk's estimate."""
    from leakk.models.prompting import answer_nll, collate
    from leakk.models.training import Term, Trainer, TrainingSpec, model_memory
    from leakk.unlearn.loop import reference_logprobs
    from leakk.unlearn.methods import make_method

    model = build_llama(shape, device, torch.float32).train()
    spec = TrainingSpec(precision="bf16", weights=weights)
    gen = torch.Generator().manual_seed(1)
    forget, retain = _examples(examples, model.config.vocab_size, gen), _examples(examples, model.config.vocab_size, gen)
    method = make_method("npo", beta=0.1)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        ref = reference_logprobs(model, forget, 0, device)
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(model, spec, device, lr=1e-5, weight_decay=0.01, pad_id=0,
                      schedule=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0))
    n_params, _, est = model_memory(trainer.model, spec, device)
    terms = [Term(forget, lambda b, part: method.forget_loss(trainer.model, b, ref[part]), 1.0, method.averages),
             Term(retain, lambda b, _: answer_nll(trainer.model, b), 1.0)]
    tokens = sum(int(collate(t.examples, 0)["attention_mask"].sum()) for t in terms)
    trainer.step(terms)  # warm-up
    times = []
    for _ in range(steps):
        sync(device)
        t = time.perf_counter()
        trainer.step(terms)
        sync(device)
        times.append(time.perf_counter() - t)
    sec = statistics.median(times)
    peak = torch.cuda.max_memory_allocated() if torch.device(device).type == "cuda" else None
    del trainer, model, terms
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return {"step_s": sec, "runs": times, "tokens": tokens, "tokens_per_s": tokens / sec,
            "mfu_pct": 100 * 6 * n_params * tokens / sec / (peak_tflops * 1e12),
            "peak_gb": None if peak is None else peak / 1e9, "estimate_gb": sum(est.values()) / 1e9}


def train_ab(shape, device, *, examples, steps, peak_tflops, baseline=True):
    out = {"examples": f"{examples} forget (NPO) + {examples} retain"}
    out["leakk_bf16_weights"] = train_run(shape, device, weights="bf16", examples=examples, steps=steps,
                                          peak_tflops=peak_tflops)
    out["leakk_fp32_weights"] = train_run(shape, device, weights="fp32", examples=examples, steps=steps,
                                          peak_tflops=peak_tflops)
    if baseline:
        with training_baseline():
            out["baseline"] = train_run(shape, device, weights="fp32", examples=examples, steps=steps,
                                        peak_tflops=peak_tflops)
        out["ratio"] = out["baseline"]["step_s"] / out["leakk_bf16_weights"]["step_s"]
    return out


def profile_sampler(model, device, *, questions, n, steps, top=15) -> str:
    """torch.profiler's table of one sampling run of ``steps`` tokens (the kernels' share)."""
    from torch.profiler import ProfilerActivity, profile

    prompts = make_prompts(questions, model.config.vocab_size)
    acts = [ProfilerActivity.CUDA] if torch.device(device).type == "cuda" else [ProfilerActivity.CPU]
    sampler_run(model, prompts, n, 2, device, repeats=1)
    with profile(activities=acts) as prof:
        sampler_run(model, prompts, n, steps, device, repeats=1)
    key = "cuda_time_total" if torch.device(device).type == "cuda" else "cpu_time_total"
    sync(device)
    return prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="proxy")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--questions", type=int, default=None)
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-examples", type=int, default=None)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--peak", type=float, default=790.0, help="peak TFLOP/s for %% of bound and MFU")
    ap.add_argument("--profile", action="store_true", help="also print torch.profiler's table of leakk's sampler")
    ap.add_argument("--skip", choices=["sampler", "training"], action="append", default=[])
    args = ap.parse_args()
    gpu = torch.device(args.device).type == "cuda"
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
    result = {"shape": args.shape, "device": torch.cuda.get_device_name(0) if gpu else "cpu",
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    import transformers

    result["transformers"] = transformers.__version__
    if "sampler" not in args.skip:
        model = build_llama(args.shape, args.device, torch.bfloat16 if gpu else torch.float32)
        result["sampler"] = sampler_ab(model, args.device, questions=args.questions or (64 if gpu else 8),
                                       n=args.n or (64 if gpu else 32), max_new=args.max_new_tokens or (128 if gpu else 48),
                                       repeats=args.repeats, peak_tflops=args.peak)
        if args.profile:
            print(profile_sampler(model, args.device, questions=args.questions or 64, n=args.n or 64, steps=16))
        del model
    if "training" not in args.skip and gpu:
        result["training"] = train_ab(args.shape, args.device, examples=args.train_examples or 32,
                                      steps=args.train_steps, peak_tflops=args.peak)
    elif "training" not in args.skip:  # bf16 training on a CPU says nothing about a GPU: fp32 weights only
        result["training"] = train_ab_cpu(args.shape, args.device, examples=args.train_examples or 8,
                                          steps=args.train_steps, peak_tflops=args.peak)
    s = result.get("sampler")
    if s:
        print(f"sampler: leakk {s['leakk']['tokens_per_s']:.0f} tok/s, baseline {s['baseline']['tokens_per_s']:.0f} "
              f"tok/s, ratio {s['ratio']:.2f}× (leakk {s['leakk']['pct_of_bound']:.1f}% of bound)")
    t = result.get("training")
    if t:
        for k, v in t.items():
            if isinstance(v, dict):
                print(f"training {k}: {v['step_s'] * 1e3:.0f} ms/step, {v['tokens_per_s']:.0f} tok/s, "
                      f"MFU {v['mfu_pct']:.1f}%, peak {v['peak_gb']} GB (estimate {v['estimate_gb']:.2f} GB)")
        print(f"training ratio (baseline / leakk): {t.get('ratio', float('nan')):.2f}×")
    print(json.dumps(result))


def train_ab_cpu(shape, device, *, examples, steps, peak_tflops):
    """On a CPU: the answer-position loss under bf16 autocast against the full-logits baseline."""
    out = {"examples": f"{examples} forget (NPO) + {examples} retain, bf16 autocast on CPU"}
    out["leakk_fp32_weights"] = train_run(shape, device, weights="fp32", examples=examples, steps=steps,
                                          peak_tflops=peak_tflops)
    with training_baseline():
        out["baseline"] = train_run(shape, device, weights="fp32", examples=examples, steps=steps,
                                    peak_tflops=peak_tflops)
    out["ratio"] = out["baseline"]["step_s"] / out["leakk_fp32_weights"]["step_s"]
    return out


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
