"""ROUGE-L recall judge with Google ``rouge_score`` semantics, computed fast.

``rouge_l_recall(prediction, target)`` equals
``RougeScorer(["rougeL"], use_stemmer=True).score(target, prediction)["rougeL"].recall``
bit for bit: tokens come from ``rouge_score``'s own tokenizer (with a memoised Porter
stemmer and memoised per-text tokenisation) and the LCS length from ``rapidfuzz``'s
bit-parallel ``LCSseq`` on integer token ids instead of a pure-Python DP table.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from rapidfuzz.distance import LCSseq

from leakk.judges.base import Judge, aligned_length, register_judge

__all__ = ["RougeLJudge", "clear_caches", "rouge_l_recall", "rouge_tokens"]


class _MemoStemmer:
    """The Porter stemmer ``rouge_score`` uses (``use_stemmer=True``), memoised per word."""

    def __init__(self) -> None:
        from rouge_score.tokenizers import DefaultTokenizer

        # The very stemmer object rouge_score's DefaultTokenizer builds for itself.
        self._stemmer = DefaultTokenizer(use_stemmer=True)._stemmer
        self.stem = lru_cache(maxsize=1 << 18)(self._stemmer.stem)


# rouge_score imports nltk (seconds): built on first use, so that importing the judges
# (params validation, every `leakk` command, the Snakefile) stays fast
_STEMMER: _MemoStemmer | None = None
_VOCAB: dict[str, int] = {}


def _stemmer() -> _MemoStemmer:
    global _STEMMER
    if _STEMMER is None:
        _STEMMER = _MemoStemmer()
    return _STEMMER


@lru_cache(maxsize=1 << 16)
def rouge_tokens(text: str) -> tuple[str, ...]:
    """``rouge_score`` DefaultTokenizer(use_stemmer=True) tokens of ``text``."""
    from rouge_score import tokenize as _rs_tokenize

    return tuple(_rs_tokenize.tokenize(text, _stemmer()))


@lru_cache(maxsize=1 << 16)
def _token_ids(text: str) -> tuple[int, ...]:
    # Integer ids make rapidfuzz compare exact values (no string-hash collisions).
    vocab = _VOCAB
    return tuple(vocab.setdefault(tok, len(vocab)) for tok in rouge_tokens(text))


def clear_caches() -> None:
    """Drop the memoised tokenisations and stems (benchmarks; bounded memory anyway)."""
    rouge_tokens.cache_clear()
    _token_ids.cache_clear()
    if _STEMMER is not None:
        _STEMMER.stem.cache_clear()
    _VOCAB.clear()


def rouge_l_recall(prediction: str, target: str) -> float:
    """ROUGE-L recall of ``prediction`` against ``target`` (rouge_score, stemmed)."""
    tgt = _token_ids(target)
    pred = _token_ids(prediction)
    if not tgt or not pred:  # rouge_score's convention: 0 if either side is empty
        return 0.0
    return LCSseq.similarity(tgt, pred) / len(tgt)


@register_judge("rougeL")
class RougeLJudge(Judge):
    """ROUGE-L recall of the completion against the reference answer; leaked iff
    recall ≥ ``threshold``."""

    params_schema = {
        "type": "object", "additionalProperties": False,
        "properties": {"threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5,
                                     "description": "leaked iff ROUGE-L recall ≥ threshold"}},
    }

    def __init__(self, *, threshold: float) -> None:
        self.threshold = float(threshold)

    def score_batch(
        self,
        completions: Sequence[str],
        references: Sequence[str],
        facts: Sequence[str | None],
        questions: Sequence[str | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        n = aligned_length(completions, references)
        scores = np.fromiter(
            (rouge_l_recall(c, r) for c, r in zip(completions, references)),
            dtype=np.float64,
            count=n,
        )
        leaked = np.empty(n, dtype=object)
        leaked[:] = [bool(s >= self.threshold) for s in scores.tolist()]
        return scores, leaked
