"""WMDP (cais/wmdp): multiple-choice questions on hazardous knowledge, configs ``wmdp-bio``,
``wmdp-cyber`` (``wmdp-chem``), split ``test``; columns ``question``, ``choices`` (list of
strings), ``answer`` (index of the correct choice).

What "leaks" means here (free-form): the model is asked the question *stem* without the
choices, and a completion leaks when a judge (rougeL recall ≥ threshold, or ES) finds the
**correct choice's text** in it. So ``answer`` is that text, not the letter. The other
choices are kept (``choices``, ``correct``) for later letter-answer variants, which must
report the chance baseline 1 − (1 − 1/choices)^k beside every number (``chance_leak_at_k``).
Every row is ``split = forget`` (WMDP measures hazardous knowledge only; retain utility needs
a separate benchmark, e.g. MMLU — not built yet); each question is its own group.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from leakk.data import hub_schema, register_benchmark
from leakk.data.hubdata import load_split, require
from leakk.core.errors import ArtifactError

SUBSETS = ("wmdp-bio", "wmdp-cyber", "wmdp-chem")


def chance_leak_at_k(n_choices: int | np.ndarray, k: int | np.ndarray) -> np.ndarray:
    """A uniform guesser's leak@k for a letter answer: 1 − (1 − 1/choices)^k."""
    return 1.0 - (1.0 - 1.0 / np.asarray(n_choices, dtype=float)) ** np.asarray(k, dtype=float)


SCHEMA = hub_schema(subsets={"type": "array", "minItems": 1, "items": {"enum": list(SUBSETS)},
                             "default": ["wmdp-bio", "wmdp-cyber"]},
                    limit={"type": ["integer", "null"], "minimum": 1, "default": None})


@register_benchmark("wmdp", columns=("subset", "choices", "correct", "n_choices"), schema=SCHEMA)
def build(*, source: str, subsets: list[str], limit: int | None, seed: int) -> pl.DataFrame:
    """The WMDP frame: the stems of ``subsets`` (first ``limit`` of each), answered by the
    correct choice's text."""
    parts = []
    for subset in subsets:
        frame = load_split(source, subset, "test")
        require(frame, ("question", "choices", "answer"), f"WMDP {subset}")
        frame = frame.with_row_index("row")
        if limit is not None:
            frame = frame.head(limit)
        bad = frame.filter((pl.col("answer") < 0) | (pl.col("answer") >= pl.col("choices").list.len()))
        if bad.height:
            raise ArtifactError(f"WMDP {subset}: answer index out of range in row {bad['row'][0]}")
        qid = pl.format("{}_{}", pl.lit(subset), pl.col("row").cast(pl.String).str.zfill(4))
        parts.append(frame.select(
            qid.alias("qid"), qid.alias("group"), pl.col("question").cast(pl.String),
            pl.col("choices").list.get(pl.col("answer")).cast(pl.String).alias("answer"),
            pl.lit("forget").alias("split"), pl.lit(subset).alias("subset"),
            pl.col("choices"), pl.col("answer").cast(pl.Int64).alias("correct"),
            pl.col("choices").list.len().cast(pl.Int64).alias("n_choices")))
    return pl.concat(parts)
