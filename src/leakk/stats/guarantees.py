"""Per-question guarantees: exact Clopper–Pearson upper bounds on the per-sample leak probability.

With c leaked of n samples of a question, the one-sided exact (Clopper–Pearson) upper
confidence bound at level 1 − α is the (1 − α) quantile of Beta(c + 1, n − c) (1 when
c = n): the largest q for which seeing ≤ c leaks still has probability ≥ α. It is
conservative — coverage ≥ 1 − α for every true q — and computed with ``scipy.stats.beta``.

Simultaneous statement over Q questions ("with 95% confidence *no* forget question leaks
with probability above x per sample"): Bonferroni — each question's bound at level
1 − α/Q, and x = the largest of them. By the union bound the chance that any question's
true probability exceeds its bound is ≤ Q · α/Q = α, whatever the dependence between
questions. Conservative, and said so in the table (``correction = "bonferroni"``).

A per-sample bound x turns into a leak@k guarantee for each question: leak@k ≤ 1 − (1 − x)^k.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from scipy import stats

GUARANTEE_COLUMNS = ("model", "decoding", "judge", "questions", "n_min", "leaked_questions",
                     "confidence", "correction", "max_upper", "max_upper_pointwise", "statement")


def cp_upper(c, n, confidence: float = 0.95) -> np.ndarray | float:
    """One-sided exact Clopper–Pearson upper bound(s) on a binomial proportion.

    ``c``, ``n`` broadcast; returns 1.0 where c = n. ``scipy.stats.beta.ppf``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must lie in (0, 1)")
    c_arr, n_arr = np.broadcast_arrays(np.asarray(c, dtype=np.float64), np.asarray(n, dtype=np.float64))
    if np.any(n_arr < 1) or np.any(c_arr < 0) or np.any(c_arr > n_arr):
        raise ValueError("need n ≥ 1 and 0 ≤ c ≤ n")
    full = c_arr >= n_arr
    out = np.ones(c_arr.shape)
    out[~full] = stats.beta.ppf(confidence, c_arr[~full] + 1, n_arr[~full] - c_arr[~full])
    return float(out) if out.ndim == 0 else out


def per_question(counts: pl.DataFrame, confidence: float = 0.95) -> pl.DataFrame:
    """Add ``upper`` (pointwise, level ``confidence``) and ``upper_simultaneous`` (Bonferroni
    over the questions of the same model, decoding, judge) to per-question counts
    ``model, decoding, judge, qid, n, c``."""
    out = []
    for _, part in counts.group_by(["model", "decoding", "judge"], maintain_order=True):
        q = part.height
        n, c = part["n"].to_numpy(), part["c"].to_numpy()
        out.append(part.with_columns(
            upper=pl.Series(np.atleast_1d(cp_upper(c, n, confidence))),
            upper_simultaneous=pl.Series(np.atleast_1d(cp_upper(c, n, 1 - (1 - confidence) / q))),
        ))
    return pl.concat(out) if out else counts.with_columns(upper=pl.lit(None, pl.Float64),
                                                          upper_simultaneous=pl.lit(None, pl.Float64))


def guarantee_table(per_q: pl.DataFrame, confidence: float = 0.95) -> pl.DataFrame:
    """One row per (model, decoding, judge): the simultaneous bound x and its sentence."""
    rows: list[dict[str, Any]] = []
    for (model, decoding, judge), part in per_q.group_by(["model", "decoding", "judge"], maintain_order=True):
        x = float(part["upper_simultaneous"].max())
        rows.append({
            "model": model, "decoding": decoding, "judge": judge, "questions": part.height,
            "n_min": int(part["n"].min()), "leaked_questions": int((part["c"] > 0).sum()),
            "confidence": confidence, "correction": "bonferroni", "max_upper": x,
            "max_upper_pointwise": float(part["upper"].max()),
            "statement": (f"with {confidence:.0%} confidence (Bonferroni over {part.height} questions) "
                          f"no forget question leaks with probability above {x:.3f} per sample"),
        })
    if not rows:
        return pl.DataFrame(schema={c: pl.String for c in GUARANTEE_COLUMNS})
    return pl.DataFrame(rows).select(GUARANTEE_COLUMNS)
