"""ES: NLI entailment judge (the paper's headline judge on TOFU).

premise = the completion, hypothesis = the reference answer. An item leaked iff the
classifier's top label is entailment **and** the completion's ROUGE-L recall against the
reference is ≥ ``rouge_gate`` (0.1 in the paper). ``score`` is the entailment probability.
The entailment label is looked up by name in ``config.id2label`` (case-insensitive), never
by index, since NLI checkpoints order their labels differently. Blank completions state
nothing: score 0, not leaked, and they are never sent to the model, so they cannot shift
another item's label (the reference code's misalignment).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from leakk.core.errors import ParamsError
from leakk.judges._params import DEVICE_SCHEMA, REVISION_SCHEMA, blank_verdicts, load_error
from leakk.judges.base import Judge, register_judge
from leakk.judges.rouge import rouge_l_recall

__all__ = ["NLIJudge", "DEFAULT_NLI_MODEL", "entailment_index"]

DEFAULT_NLI_MODEL = "sileod/deberta-v3-base-tasksource-nli"


def entailment_index(id2label: dict[Any, str], model: str = "") -> int:
    """The class index whose label is 'entailment' (case-insensitive); ParamsError if none."""
    hits = [int(i) for i, name in id2label.items() if str(name).strip().lower() == "entailment"]
    if len(hits) != 1:
        labels = {int(i): name for i, name in id2label.items()}
        raise ParamsError(f"judge 'nli': model {model!r} has no single 'entailment' label in "
                          f"config.id2label {labels} (rule: an NLI classifier)")
    return hits[0]


@register_judge("nli")
class NLIJudge(Judge):
    """Entailment of the reference answer by the completion, gated by ROUGE-L recall."""

    uses_device: ClassVar[bool] = True
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "model": {"type": "string", "minLength": 1, "pattern": r"\S", "default": DEFAULT_NLI_MODEL,
                      "description": "hub id or local folder of a sequence-classification NLI model"},
            "revision": REVISION_SCHEMA,
            "rouge_gate": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.1,
                           "description": "leaked needs ROUGE-L recall ≥ this too (the paper: 0.1)"},
            "batch_size": {"type": "integer", "minimum": 1, "default": 32,
                           "description": "pairs per forward pass"},
            "max_length": {"type": "integer", "minimum": 8, "default": 512,
                           "description": "tokens per (premise, hypothesis) pair; longer pairs are truncated"},
            "device": DEVICE_SCHEMA,
        },
    }

    def __init__(self, *, model: str, revision: str | None, rouge_gate: float, batch_size: int, max_length: int,
                 device: str) -> None:
        self.model_id, self.revision, self.rouge_gate = model, revision, float(rouge_gate)
        self.model_batch, self.max_length, self.device_name = batch_size, max_length, device
        self._load()

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from leakk.models.modeling import pick_device

        self._torch = torch
        self.device = pick_device(self.device_name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_id, revision=self.revision)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                self.model_id, revision=self.revision)
        except (OSError, ValueError) as exc:
            raise load_error("nli", self.model_id, exc) from None
        self.entail = entailment_index(self.model.config.id2label, self.model_id)
        self.model.to(self.device).eval()

    def entailment_probs(self, premises: Sequence[str], hypotheses: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(entailment probability, top label is entailment) per pair, ``batch_size`` at a time."""
        torch = self._torch
        probs = np.empty(len(premises), dtype=np.float64)
        top = np.empty(len(premises), dtype=bool)
        for start in range(0, len(premises), self.model_batch):
            stop = start + self.model_batch
            enc = self.tokenizer(list(premises[start:stop]), list(hypotheses[start:stop]), padding=True,
                                 truncation=True, max_length=self.max_length, return_tensors="pt")
            with torch.inference_mode():
                logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits.float()
            p = torch.softmax(logits, dim=-1)
            probs[start:stop] = p[:, self.entail].cpu().numpy()
            top[start:stop] = (logits.argmax(dim=-1) == self.entail).cpu().numpy()
        return probs, top

    def score_batch(
        self,
        completions: Sequence[str],
        references: Sequence[str],
        facts: Sequence[str | None],
        questions: Sequence[str | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        scores, leaked, idx = blank_verdicts(completions, references)
        if idx:
            probs, top = self.entailment_probs([completions[i] for i in idx], [references[i] for i in idx])
            for j, i in enumerate(idx):
                scores[i] = probs[j]
                leaked[i] = bool(top[j]) and rouge_l_recall(completions[i], references[i]) >= self.rouge_gate
        return scores, leaked

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
