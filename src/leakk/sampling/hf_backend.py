"""The HF backend: a transformers model (loaded from a folder, or already in memory between
RULE's and the stop criterion's training steps) sampled by :func:`leakk.sampling.hf.sample_hf`.

torch and transformers are imported where used: every ``leakk`` job reads this class's
``requires`` when it checks the host, and a judge or estimate job must not pay their import."""

from __future__ import annotations

from typing import Any

from leakk.sampling import register_backend
from leakk.sampling.backend import Backend, Completion, Row, SamplingRequest, sample_texts
from leakk.sampling.decoding import Decoding


@register_backend("hf")
class HFBackend(Backend):
    def __init__(self, model, tokenizer, batch_rows: int | str = "auto"):
        from leakk.models.modeling import max_positions

        self.model, self.tokenizer, self.batch_rows = model, tokenizer, batch_rows
        self.max_positions = max_positions(model)

    @classmethod
    def load(cls, model_dir: str, *, device: str = "auto", batch_rows: int | str = "auto",
             options: dict[str, Any] | None = None) -> HFBackend:
        from leakk.models.modeling import load_model, pick_device

        model, tokenizer = load_model(model_dir, pick_device(device))
        return cls(model, tokenizer, batch_rows)

    def generate(self, qids: list[str], prompts: list[list[int]], request: SamplingRequest, *,
                 progress: bool = False, desc: str = "sample") -> list[Completion]:
        from leakk.sampling.hf import sample_hf

        return sample_hf(self.model, self.tokenizer, qids, prompts, request.decoding, request.n,
                         request.max_new_tokens, request.seed, batch_rows=self.batch_rows, progress=progress,
                         desc=desc)


def sample_model(model, tokenizer, qids, questions, decoding: Decoding, *, n, max_new_tokens, seed, template,
                 batch_rows="auto", progress=True, desc="sample", key="sample.max_new_tokens") -> list[Row]:
    """Rows of an in-memory model's completions (a convenience over :class:`HFBackend`)."""
    return sample_texts(HFBackend(model, tokenizer, batch_rows), qids, questions,
                        SamplingRequest.build(decoding, n=n, max_new_tokens=max_new_tokens, seed=seed),
                        template=template, progress=progress, desc=desc, key=key)
