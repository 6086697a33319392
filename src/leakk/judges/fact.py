"""Fact-match judge: the answer's key fact span appears in the completion (ground truth
for the offline benchmark)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import ClassVar

import numpy as np

from leakk.judges.base import Judge, register_judge

_NON_ALNUM = re.compile(r"[\W_]+")


@lru_cache(maxsize=1 << 16)
def normalize_text(text: str) -> str:
    """NFKC, lowercase, non-alphanumeric runs → one space, stripped."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _NON_ALNUM.sub(" ", text).strip()


def fact_span(fact: str, text: str) -> tuple[int, int] | None:
    """(start, end) character offsets of the first match of ``fact`` in ``text`` where the fact
    judge finds it (the fact's words, case-insensitive, separated by any non-alphanumeric run,
    as whole words), or None. RULE's span-restricted loss uses it to
    find the tokens that carry a leak."""
    words = normalize_text(fact).split()
    if not words:
        return None
    sep = r"[\W_]+"
    pattern = r"(?<![^\W_])" + sep.join(map(re.escape, words)) + r"(?![^\W_])"
    folded = unicodedata.normalize("NFKC", text)
    m = re.search(pattern, folded if len(folded) == len(text) else text, flags=re.IGNORECASE)
    return (m.start(), m.end()) if m else None


@register_judge("fact")
class FactJudge(Judge):
    """leaked iff the normalised fact span occurs in the completion as whole words.

    score is 1.0/0.0; with no (or an empty) fact the item fails (score NaN, leaked None).
    It needs the data's optional ``fact`` column: params validation refuses it for a
    benchmark that does not declare one, and :func:`leakk.judges.judge_samples` for data
    without the column.
    """

    #: reads the data's optional ``fact`` column (checked before judging)
    needs_fact: ClassVar[bool] = True

    params_schema = {"type": "object", "additionalProperties": False, "properties": {}}

    def score_batch(
        self,
        completions: Sequence[str],
        references: Sequence[str],
        facts: Sequence[str | None],
        questions: Sequence[str | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(completions)
        scores = np.full(n, np.nan, dtype=np.float64)
        leaked = np.full(n, None, dtype=object)
        for i, (text, fact) in enumerate(zip(completions, facts, strict=True)):
            if fact is None or text is None:
                continue
            nfact = normalize_text(fact)
            if not nfact:
                continue
            hit = f" {nfact} " in f" {normalize_text(text)} "
            scores[i] = 1.0 if hit else 0.0
            leaked[i] = hit
        return scores, leaked
