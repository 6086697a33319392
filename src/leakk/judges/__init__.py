"""Judges: map completions to (score, leaked). See :mod:`leakk.judges.base`.

Importing this package registers the built-in judges; each further judge (NLI,
embedding, LLM endpoint) is one module imported here that keeps heavy imports lazy.
"""

from leakk.judges.base import JUDGES, Judge, make_judge, register_judge
from leakk.judges import fact as _fact  # noqa: F401  (registers "fact")
from leakk.judges import rouge as _rouge  # noqa: F401  (registers "rougeL")
from leakk.judges import nli as _nli  # noqa: F401  (registers "nli"; torch/transformers load lazily)
from leakk.judges import embedding as _embedding  # noqa: F401  (registers "embedding")
from leakk.judges import llm as _llm  # noqa: F401  (registers "llm"; openai loads lazily)
from leakk.judges.fact import FactJudge, normalize_text
from leakk.judges.rouge import RougeLJudge, clear_caches, rouge_l_recall, rouge_tokens
from leakk.judges.run import build_judges, judge_samples

__all__ = [
    "JUDGES", "Judge", "make_judge", "register_judge",
    "FactJudge", "normalize_text",
    "RougeLJudge", "clear_caches", "rouge_l_recall", "rouge_tokens",
    "build_judges", "judge_samples",
]
