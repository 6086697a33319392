"""Registers the HF backend: load a folder, encode prompts, sample, decode."""

from __future__ import annotations

from leakk.core.errors import ParamsError
from leakk.models.modeling import load_model, max_positions, pick_device
from leakk.models.prompting import encode_prompt
from leakk.sampling import register_backend
from leakk.sampling.decoding import Decoding
from leakk.sampling.hf import sample_hf


def sample_model(model, tokenizer, qids, questions, decoding: Decoding, *, n, max_new_tokens, seed,
                 template, batch_rows="auto", progress=True, desc="sample", key="sample.max_new_tokens"):
    """Sample from an in-memory model (RULE calls this between training rounds); ``key``
    names the parameter that set ``max_new_tokens``, for the error message."""
    prompts = [encode_prompt(q, tokenizer, template) for q in questions]
    limit = max_positions(model)
    if limit and prompts and max(map(len, prompts)) + max_new_tokens > limit:
        raise ParamsError(
            f"{key}={max_new_tokens}: prompt ({max(map(len, prompts))} tokens) + "
            f"max_new_tokens exceeds the model's {limit} positions")
    done = sample_hf(model, tokenizer, qids, prompts, decoding, n, max_new_tokens, seed,
                     batch_rows=batch_rows, progress=progress, desc=desc)
    texts = tokenizer.batch_decode([c.token_ids for c in done], skip_special_tokens=True)
    return [(c.qid, c.sample_idx, t.strip(), len(c.token_ids), c.finish_reason) for c, t in zip(done, texts)]


@register_backend("hf")
def sample_folder(model_dir, qids, questions, decoding: Decoding, *, device="auto", **kw):
    model, tokenizer = load_model(model_dir, pick_device(device))
    return sample_model(model, tokenizer, qids, questions, decoding, **kw)
