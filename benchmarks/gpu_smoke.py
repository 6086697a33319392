"""GPU smoke test of the HF sampling path (run on a CUDA machine; models built from configs).

Checks on the device: greedy equals ``model.generate``; sampled rows do not depend on the
batch size; S = 4 question shards reproduce the S = 1 rows (bf16 Llama). Prints one JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from leakk.sampling.decoding import GREEDY, Decoding  # noqa: E402
from leakk.sampling.hf import sample_hf  # noqa: E402


class Tok:
    pad_token_id, eos_token_id = 0, 2


def same_rows(a, b) -> float:
    key = lambda c: (c.qid, c.sample_idx)  # noqa: E731
    a, b = sorted(a, key=key), sorted(b, key=key)
    assert [key(c) for c in a] == [key(c) for c in b]
    return float(np.mean([x.token_ids == y.token_ids for x, y in zip(a, b)]))


def main() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    out: dict = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "torch": torch.__version__}
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=512, n_layer=2, n_embd=64, n_head=4, n_positions=128,
                                      eos_token_id=2, pad_token_id=0, bos_token_id=1)).to(dev).eval()
    with torch.no_grad():
        gpt2.lm_head.weight[2] += 0.2  # finish at varied lengths
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 512, (int(torch.randint(3, 12, (1,), generator=gen)),), generator=gen).tolist()
               for _ in range(16)]
    qids = [f"q{i}" for i in range(16)]
    greedy = {c.qid: c.token_ids for c in sample_hf(gpt2, Tok, qids, prompts, GREEDY, 1, 30, 0, 8, False)}
    matches = 0
    for q, p in zip(qids, prompts):
        ref = gpt2.generate(torch.tensor([p], device=dev), max_new_tokens=30, do_sample=False,
                            eos_token_id=2, pad_token_id=0)[0, len(p):].tolist()
        ref = ref[: ref.index(2) + 1] if 2 in ref else ref
        matches += greedy[q] == ref
    out["gpt2_greedy_equals_generate"] = f"{matches}/16"
    dec = Decoding(1.0, 1.0)
    a = sample_hf(gpt2, Tok, qids, prompts, dec, 32, 30, 7, 512, False)
    b = sample_hf(gpt2, Tok, qids, prompts, dec, 32, 30, 7, 40, False)
    out["gpt2_identical_rows_batch512_vs_40"] = same_rows(a, b)
    out["gpt2_finish_reasons"] = sorted({c.finish_reason for c in a})

    cfg = LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
                      num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    with torch.device(dev):
        llama = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    prompts = [torch.randint(3, 32000, (int(torch.randint(8, 40, (1,), generator=gen)),), generator=gen).tolist()
               for _ in range(32)]
    qids = [f"q{i}" for i in range(32)]
    t = time.perf_counter()
    whole = sample_hf(llama, Tok, qids, prompts, dec, 64, 64, 11, "auto", False)
    sync()
    out["llama_small_bf16_s1_seconds"] = time.perf_counter() - t
    shards = []
    for s in range(4):
        lo, hi = round(s * 32 / 4), round((s + 1) * 32 / 4)
        shards += sample_hf(llama, Tok, qids[lo:hi], prompts[lo:hi], dec, 64, 64, 11, "auto", False)
    out["llama_small_bf16_identical_rows_S1_vs_S4"] = same_rows(whole, shards)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
