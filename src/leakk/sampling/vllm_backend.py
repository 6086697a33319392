"""The vLLM backend (``pip install 'leakk[gpu]'``): ``LLM.generate`` with
``SamplingParams(n=…, temperature, top_p, max_tokens, seed)`` and prefix caching on.

Each question's request gets its own seed derived from (seed, qid), so a question's samples
do not depend on which other questions share its batch or shard (as with the HF backend;
the two backends' random streams differ, so their samples differ row by row).
"""

from __future__ import annotations

from leakk.core.errors import ParamsError
from leakk.sampling import register_backend
from leakk.sampling.decoding import Decoding
from leakk.sampling.rng import qid_key


def request_seed(seed: int, qid: str) -> int:
    """A per-question vLLM seed from the run seed and the question id (31 bits)."""
    return (qid_key(qid) ^ (seed * 0x9E3779B1)) & 0x7FFFFFFF


def _free_gpu_memory() -> None:
    """Collect a deleted engine and return its GPU memory before the next engine or training
    step needs it: RULE trains on the same GPU right after sampling, and a benchmark with
    several training phrasings samples one call per phrasing."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@register_backend("vllm")
def sample_vllm(model_dir, qids, questions, decoding: Decoding, *, n, max_new_tokens, seed, template,
                batch_rows="auto", device="auto", progress=True, desc="sample"):
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        raise ParamsError("sample.backend=vllm: vLLM is not installed (pip install 'leakk[gpu]')") from None
    from transformers import AutoTokenizer

    from leakk.models.prompting import prompt_text

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    llm = LLM(model=str(model_dir), tokenizer=str(model_dir), enable_prefix_caching=True, seed=seed,
              trust_remote_code=False, **({"max_num_seqs": int(batch_rows)} if batch_rows != "auto" else {}))
    n = 1 if decoding.greedy else n
    requests = [
        SamplingParams(n=n, temperature=0.0 if decoding.greedy else decoding.temperature,
                       top_p=1.0 if decoding.greedy else decoding.top_p, max_tokens=max_new_tokens,
                       seed=request_seed(seed, q))
        for q in qids
    ]
    try:
        outputs = llm.generate([prompt_text(q, tokenizer, template) for q in questions], requests, use_tqdm=progress)
    finally:
        del llm  # the engine's last reference: collected below, before RULE trains on the GPU
        _free_gpu_memory()
    rows = []
    for qid, out in zip(qids, outputs):
        for i, c in enumerate(out.outputs):
            reason = "stop" if c.finish_reason == "stop" else "length"
            rows.append((qid, i, c.text.strip(), len(c.token_ids), reason))
    return rows
