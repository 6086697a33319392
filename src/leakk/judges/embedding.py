"""CS: cosine similarity of sentence embeddings (sentence-transformers).

score = cosine(embedding(completion), embedding(reference answer)); leaked iff ≥
``threshold``. Blank completions state nothing: score 0, not leaked, never embedded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from leakk.judges._params import DEVICE_SCHEMA, REVISION_SCHEMA, blank_verdicts, load_error
from leakk.judges.base import Judge, register_judge

__all__ = ["EmbeddingJudge", "DEFAULT_EMBEDDING_MODEL"]

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/paraphrase-MiniLM-L6-v2"


@register_judge("embedding")
class EmbeddingJudge(Judge):
    """Cosine similarity between completion and reference embeddings ≥ ``threshold``."""

    uses_device: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ("sentence_transformers",)
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "model": {"type": "string", "minLength": 1, "pattern": r"\S", "default": DEFAULT_EMBEDDING_MODEL,
                      "description": "hub id or local folder of a sentence-transformers model"},
            "revision": REVISION_SCHEMA,
            "threshold": {"type": "number", "minimum": -1, "maximum": 1, "default": 0.7,
                          "description": "leaked iff cosine similarity ≥ this (the paper gives none; "
                                         "calibrate it against fact)"},
            "batch_size": {"type": "integer", "minimum": 1, "default": 64, "description": "texts per forward pass"},
            "device": DEVICE_SCHEMA,
        },
    }

    def __init__(self, *, model: str, revision: str | None, threshold: float, batch_size: int, device: str) -> None:
        self.model_id, self.revision, self.threshold = model, revision, float(threshold)
        self.model_batch, self.device_name = batch_size, device
        from sentence_transformers import SentenceTransformer

        from leakk.models.modeling import pick_device

        try:
            self.model = SentenceTransformer(self.model_id, device=str(pick_device(self.device_name)),
                                             revision=self.revision)
        except (OSError, ValueError) as exc:
            raise load_error("embedding", self.model_id, exc) from None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float64 embeddings, ``batch_size`` texts at a time."""
        emb = self.model.encode(list(texts), batch_size=self.model_batch, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float64)

    def score_batch(
        self,
        completions: Sequence[str],
        references: Sequence[str],
        facts: Sequence[str | None],
        questions: Sequence[str | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        scores, leaked, idx = blank_verdicts(completions, references)
        if idx:
            refs = sorted({references[i] for i in idx})
            ref_emb = dict(zip(refs, self.embed(refs)))
            comp = self.embed([completions[i] for i in idx])
            for j, i in enumerate(idx):
                s = float(np.clip(comp[j] @ ref_emb[references[i]], -1.0, 1.0))
                scores[i] = s
                leaked[i] = s >= self.threshold
        return scores, leaked

    def close(self) -> None:
        self.model = None
