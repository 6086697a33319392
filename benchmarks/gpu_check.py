"""One GPU check: correctness, every model stage's device plumbing, speed, and the TOFU projection.

    python3 benchmarks/gpu_check.py                       # one H200: ≤ 8 minutes (aim: 5)
    .venv/bin/python benchmarks/gpu_check.py --device cpu --tiny   # the same code path on a CPU, ~2 min

Prints one JSON (also written to ``--out``):
- ``correctness``: greedy = ``model.generate`` (GPT-2, and a grouped-query Llama through the
  grouped decoding attention); sampled rows identical between 1 and 4 question shards (fp32
  and bf16); a chat-templated prompt's token ids hold one BOS (and vLLM's equal them where
  vLLM is installed);
- ``stages``: ``leakk data, finetune, unlearn, rule-round, sample, judge`` as subprocesses on a
  small slice of the default with ``device`` and (on a GPU) ``precision: bf16, weights: bf16``;
- ``sampler`` / ``training``: benchmarks/speed.py's side-by-side runs on the Llama-3.2-1B shape
  (tokens/s, % of the bf16 bound, MFU, peak memory against leakk's estimate);
- ``tofu_projection``: the TOFU preset's wall time from the measured rates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import speed  # noqa: E402
from leakk.sampling.decoding import GREEDY, Decoding  # noqa: E402
from leakk.sampling.hf import sample_hf  # noqa: E402


def _same_rows(a, b) -> float:
    key = lambda c: (c.qid, c.sample_idx)  # noqa: E731
    a, b = sorted(a, key=key), sorted(b, key=key)
    assert [key(c) for c in a] == [key(c) for c in b]
    return float(np.mean([x.token_ids == y.token_ids for x, y in zip(a, b)]))


def _greedy_vs_generate(model, prompts, device, max_new=24) -> str:
    qids = [f"q{i}" for i in range(len(prompts))]
    ours = {c.qid: c.token_ids for c in sample_hf(model, speed.IdTokenizer, qids, prompts, GREEDY, 1, max_new, 0,
                                                  batch_rows=8, progress=False)}
    same = 0
    for q, p in zip(qids, prompts):
        ref = model.generate(torch.tensor([p], device=device), attention_mask=torch.ones(1, len(p), device=device,
                             dtype=torch.long), max_new_tokens=max_new, do_sample=False, eos_token_id=2,
                             pad_token_id=0)[0, len(p):].tolist()
        same += ours[q] == (ref[: ref.index(2) + 1] if 2 in ref else ref)
    return f"{same}/{len(prompts)}"


def _shards(model, prompts, n, max_new) -> float:
    qids = [f"q{i}" for i in range(len(prompts))]
    dec = Decoding(1.0, 1.0)
    whole = sample_hf(model, speed.IdTokenizer, qids, prompts, dec, n, max_new, 11, progress=False)
    parts = []
    for s in range(4):
        lo, hi = round(s * len(qids) / 4), round((s + 1) * len(qids) / 4)
        parts += sample_hf(model, speed.IdTokenizer, qids[lo:hi], prompts[lo:hi], dec, n, max_new, 11, progress=False)
    return _same_rows(whole, parts)


def _chat_ids() -> dict:
    """A Llama-style tokenizer (BOS from its post-processor and from the chat template)."""
    from tokenizers import processors

    from leakk.models.modeling import build_tokenizer
    from leakk.models.prompting import encode_prompt, prompt_text

    tok = build_tokenizer([f"who wrote book {i}? author {i % 7}." for i in range(200)], 200)
    bos = tok.bos_token_id
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}{{ m['content'] }} {% endfor %}"
                         "{% if add_generation_prompt %}A:{% endif %}")
    ids = encode_prompt("who wrote book 12?", tok, "chat")
    out = {"bos_in_prompt_ids": ids.count(bos), "bos_if_text_were_retokenised":
           tok(prompt_text("who wrote book 12?", tok, "chat"))["input_ids"].count(bos)}
    try:
        import vllm  # noqa: F401

        out["vllm"] = "installed: tests/test_vllm.py checks its prompt ids"
    except ImportError:
        out["vllm"] = "not installed here (make test-vllm checks it on a CPU)"
    return out


def correctness(device, tiny: bool) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel

    out = {}
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=512, n_layer=2, n_embd=64, n_head=4, n_positions=128,
                                      eos_token_id=2, pad_token_id=0, bos_token_id=1)).to(device).eval()
    with torch.no_grad():
        gpt2.lm_head.weight[2] += 0.2  # finish at varied lengths
    prompts = speed.make_prompts(16, 512, 3, 12)
    out["greedy_equals_generate_gpt2_fp32"] = _greedy_vs_generate(gpt2, prompts, device)
    llama = speed.build_llama("tiny", device, torch.float32)
    out["greedy_equals_generate_gqa_llama_fp32"] = _greedy_vs_generate(llama, speed.make_prompts(16, 512, 3, 12),
                                                                       device)
    shape = "tiny" if tiny else "proxy"
    for dtype in (torch.float32, torch.bfloat16):
        model = speed.build_llama(shape, device, dtype)
        prompts = speed.make_prompts(8 if tiny else 32, model.config.vocab_size, 8, 40)
        name = str(dtype).removeprefix("torch.")
        out[f"identical_rows_1_vs_4_shards_{name}"] = _shards(model, prompts, 8 if tiny else 64, 16 if tiny else 48)
    out["chat_template"] = _chat_ids()
    return out


def stage_params(device: str, tiny: bool, bf16: bool) -> dict:
    """The default params.yaml, sliced small, on ``device`` (``bf16``: bf16 training, bf16 weights)."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["device"] = device
    p["data"]["synthetic"].update(authors=12 if tiny else 30, qa_per_author=5)
    p["finetune"]["epochs"] = 2 if tiny else 6
    p["training"] = {"precision": "bf16", "weights": "bf16"} if bf16 else {"precision": "fp32"}
    p["unlearn"] = {"npo": {**p["unlearn"]["npo"], "steps": 4, "stop": {"greedy_leak": 0.15, "every": 2}}}
    p["rule"] = {"rule_npo": {**p["rule"]["rule_npo"], "rounds": 1, "n": 8, "steps": 2}}
    p["sample"].update(n=8 if tiny else 32, decodings=[{"temperature": 1.0, "top_p": 1.0}])
    p["estimate"].update(ks=[1, 2, 4, 8], bootstrap=100)
    return p


def stages(device: str, tiny: bool, work: Path, bf16: bool, log: Path) -> dict:
    """Each model stage's real command, as the workflow runs it (their output: ``log``)."""
    work.mkdir(parents=True, exist_ok=True)
    params = work / "params.yaml"
    params.write_text(yaml.safe_dump(stage_params(device, tiny, bf16), sort_keys=False))
    r = work / "results"
    data, full, npo, round1 = r / "data.parquet", r / "models/full", r / "models/npo", r / "rule/round_1"
    commands = {
        "data": ["data", "--out", data],
        "finetune": ["finetune", "--data", data, "--which", "full", "--out", full],
        "unlearn": ["unlearn", "--data", data, "--name", "npo", "--model-dir", full, "--out", npo],
        "rule-round": ["rule-round", "--data", data, "--name", "rule_npo", "--round", "1", "--prev", npo,
                       "--out", round1, "--reference", full],
        "sample": ["sample", "--data", data, "--model", "npo", "--model-dir", npo, "--decoding", "all",
                   "--out", r / "samples/npo"],
        "judge": ["judge", "--data", data, "--samples", r / "samples/npo", "--out", r / "judgments/npo"],
    }
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
               TQDM_DISABLE="1")
    out = {}
    for name, args in commands.items():
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "leakk.cli", "--params", str(params), *map(str, args)],
                              capture_output=True, text=True, env=env, cwd=work)
        with log.open("a") as f:
            f.write(f"=== leakk {name} (rc {proc.returncode})\n{proc.stdout}{proc.stderr}\n")
        out[name] = {"rc": proc.returncode, "seconds": round(time.perf_counter() - t, 1)}
        if proc.returncode:
            out[name]["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][-300:]
            break
    if out.get("rule-round", {}).get("rc") == 0:
        import polars as pl

        log = pl.read_parquet(round1 / "round.parquet")
        out["rule-round"]["leaked_samples"] = int(log["leaked_samples"][0])
    if out.get("judge", {}).get("rc") == 0:
        import polars as pl

        judged = pl.concat([pl.read_parquet(f) for f in sorted((r / "judgments/npo").rglob("*.parquet"))])
        out["judge"]["rows"] = judged.height
    return out


def tofu_projection(sampler: dict, training: dict, mean_tokens: int) -> dict:
    """Hours for configs/tofu_forget10.yaml at the measured rates: sampling (every draw of the
    main DAG, RULE's rounds and RULE's evaluation of its middle rounds) and the training steps;
    judging (ROUGE-L on CPU) and model loading are left out."""
    p = yaml.safe_load((ROOT / "configs/tofu_forget10.yaml").read_text())
    forget, retain = 400, 3600
    s = p["sample"]
    models = len(p["models"]) + len(p["unlearn"]) + len(p["rule"])
    sampled = models * len(s["decodings"]) * forget * s["n"]
    greedy = models * (forget + retain)
    rule_draws = sum(c["rounds"] * forget * c["n"] for c in p["rule"].values())
    middle = sum(max(0, c["rounds"] - 1) for c in p["rule"].values())  # rule_eval samples these itself
    rule_eval = middle * (forget * s["n"] + retain)
    completions = sampled + greedy + rule_draws + rule_eval
    steps = sum(r["steps"] for r in p["unlearn"].values()) + sum(c["rounds"] * c["steps"] for c in p["rule"].values())
    rate, step_s = sampler["tokens_per_s"], training["step_s"]
    out = {"completions": completions, "training_steps": steps, "sampler_tokens_per_s": round(rate),
           "train_step_s": round(step_s, 3)}
    for label, tokens in (("upper_bound_all_max_new_tokens", s["max_new_tokens"]),
                          (f"at_{mean_tokens}_tokens_per_completion", mean_tokens)):
        hours = (completions * tokens / rate + steps * step_s) / 3600
        out[f"hours_{label}"] = round(hours, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="small models and counts (a CPU smoke run of every part)")
    ap.add_argument("--out", default=None, help="also write the JSON (and the stage logs beside it) here")
    ap.add_argument("--peak", type=float, default=790.0, help="bf16 TFLOP/s bound (H200 measured: ~790)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--mean-tokens", type=int, default=60,
                    help="assumed mean completion length for the TOFU projection (besides the upper bound)")
    ap.add_argument("--sampler", type=lambda x: tuple(map(int, x.split(","))), default=(64, 64, 128),
                    help="questions,n,max_new_tokens of the 1B sampler run (default: 64,64,128)")
    ap.add_argument("--bf16-stages", action="store_true", help="bf16 training in the stages on a CPU too")
    ap.add_argument("--profile-rows", type=int, default=1024,
                    help="profile this many rows of the 1B sampler last, if time is left (0: never)")
    ap.add_argument("--budget", type=float, default=330.0, help="seconds after which optional parts are skipped")
    ap.add_argument("--skip", action="append", default=[], choices=["correctness", "stages", "sampler", "training"])
    args = ap.parse_args()
    device = args.device
    gpu = torch.device(device).type == "cuda"
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
    import transformers

    result: dict = {"device": torch.cuda.get_device_name(0) if gpu else "cpu", "torch": torch.__version__,
                    "transformers": transformers.__version__, "tiny": args.tiny}
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))  # the stages' results
    outdir = Path(args.out).parent if args.out else work  # the JSON, the stages' log, the profile
    outdir.mkdir(parents=True, exist_ok=True)

    def part(name, fn):
        if name in args.skip:
            return
        t = time.perf_counter()
        try:
            result[name] = fn()
        except Exception as exc:  # noqa: BLE001 - one broken part must not hide the others' results
            result[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        result.setdefault("seconds", {})[name] = round(time.perf_counter() - t, 1)
        print(f"[gpu_check] {name}: {result['seconds'][name]} s: {json.dumps(result[name])}", file=sys.stderr,
              flush=True)
        if args.out:  # what finished so far survives a run cut short
            Path(args.out).write_text(json.dumps(result, indent=1))

    shape = "tiny" if args.tiny else "llama-1b"
    part("correctness", lambda: correctness(device, args.tiny))

    def sampler():
        model = speed.build_llama(shape, device, torch.bfloat16 if gpu else torch.float32)
        q, n, m = (4, 8, 12) if args.tiny else args.sampler
        out = speed.sampler_ab(model, device, questions=q, n=n, max_new=m, repeats=args.repeats,
                               peak_tflops=args.peak, baseline_repeats=1)
        del model
        return out

    part("sampler", sampler)
    part("training", lambda: speed.train_ab(shape, device, examples=4 if args.tiny else 32,
                                            steps=2 if args.tiny else 4, peak_tflops=args.peak) if gpu else
         speed.train_ab_cpu(shape, device, examples=4, steps=1, peak_tflops=args.peak))
    part("stages", lambda: stages(device, args.tiny, work, bf16=gpu or args.bf16_stages,
                                  log=outdir / "stages.log"))
    s, t = result.get("sampler", {}), result.get("training", {})
    if "leakk" in s and ("leakk_bf16_weights" in t or "leakk_fp32_weights" in t):
        part("tofu_projection", lambda: tofu_projection(s["leakk"], t.get("leakk_bf16_weights")
                                                        or t["leakk_fp32_weights"], args.mean_tokens))
    if gpu and args.profile_rows and time.perf_counter() - started < args.budget:
        def profile():
            model = speed.build_llama(shape, device, torch.bfloat16)
            table = speed.profile_sampler(model, device, questions=max(1, args.profile_rows // 64), n=64, steps=8)
            (outdir / "profile.txt").write_text(table)
            return table.splitlines()[:18]

        part("profile", profile)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
