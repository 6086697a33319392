"""Judge calibration against ground truth (the ``fact`` judge of the offline benchmark).

For every other judge, per (model, decoding), on the forget-split completions that both
the judge and ``fact`` judged (neither null): the confusion counts, precision, recall, F1
and false-positive rate of "leaked", and leak@1 / leak@k under the judge beside the same
numbers under ``fact`` — how far a proxy judge moves the headline number (e.g. the
retrain model's leak@k is all false positives, since it never saw the forget facts).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from leakk.core.errors import ArtifactError

__all__ = ["CALIBRATION_COLUMNS", "EMPTY", "calibration_table", "ratio"]

TRUTH = "fact"

CALIBRATION_COLUMNS = (
    "judge", "model", "decoding", "items", "tp", "fp", "fn", "tn", "precision", "recall", "f1",
    "false_positive_rate", "k", "leak_at_1", "leak_at_1_fact", "leak_at_k", "leak_at_k_fact",
)
#: the table's columns and dtypes (an empty table: ``pl.DataFrame(schema=EMPTY)``)
EMPTY = {c: pl.String for c in ("judge", "model", "decoding")} | {
    c: pl.Int64 for c in ("items", "tp", "fp", "fn", "tn", "k")} | {
    c: pl.Float64 for c in ("precision", "recall", "f1", "false_positive_rate", "leak_at_1", "leak_at_1_fact",
                            "leak_at_k", "leak_at_k_fact")}


def ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _mean_leak(per_q: pl.DataFrame, col: str, k: int) -> float | None:
    from leakk.stats.estimate import leak_at_k

    usable = per_q.filter(pl.col("n") >= k)
    if usable.is_empty():
        return None
    return float(np.mean(leak_at_k(usable["n"].to_numpy(), usable[col].to_numpy(), k)))


def calibration_table(frame: pl.DataFrame, ks: list[int], truth: str = TRUTH) -> pl.DataFrame:
    """One row per (judge ≠ truth, model, decoding); ``frame`` is
    :func:`leakk.stages.evaluate.collect_judgments`'s long frame. ``k`` = the largest of ``ks`` that
    every scored question's n reaches (1 for greedy). Empty when ``truth`` is absent."""
    need = {"judge", "model", "decoding", "qid", "sample_idx", "leaked", "split"}
    missing = need - set(frame.columns)
    if missing:
        raise ArtifactError(f"calibration: judgments lack columns {sorted(missing)}")
    frame = frame.filter(pl.col("split") == "forget")
    keys = ["model", "decoding", "qid", "sample_idx"]
    gt = frame.filter(pl.col("judge") == truth).select(*keys, pl.col("leaked").alias("_truth"))
    rows: list[dict[str, Any]] = []
    if gt.is_empty() or gt["_truth"].null_count() == gt.height:
        return pl.DataFrame(schema=EMPTY)
    others = frame.filter(pl.col("judge") != truth)
    joined = others.select("judge", *keys, "leaked").join(gt, on=keys, how="inner").drop_nulls(["leaked", "_truth"])
    for (judge, model, decoding), part in joined.group_by(["judge", "model", "decoding"], maintain_order=True):
        j, t = part["leaked"].to_numpy().astype(bool), part["_truth"].to_numpy().astype(bool)
        tp, fp = int((j & t).sum()), int((j & ~t).sum())
        fn, tn = int((~j & t).sum()), int((~j & ~t).sum())
        precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
        f1 = ratio(2 * tp, 2 * tp + fp + fn)
        per_q = part.group_by("qid").agg(n=pl.len(), c=pl.col("leaked").sum(), c_fact=pl.col("_truth").sum())
        n_min = int(per_q["n"].min())
        k = max([k for k in ks if k <= n_min], default=1)
        rows.append({
            "judge": judge, "model": model, "decoding": decoding, "items": part.height,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": precision, "recall": recall, "f1": f1,
            "false_positive_rate": ratio(fp, fp + tn), "k": k,
            "leak_at_1": _mean_leak(per_q, "c", 1), "leak_at_1_fact": _mean_leak(per_q, "c_fact", 1),
            "leak_at_k": _mean_leak(per_q, "c", k), "leak_at_k_fact": _mean_leak(per_q, "c_fact", k),
        })
    if not rows:
        return pl.DataFrame(schema=EMPTY)
    from leakk.stats.estimate import model_order

    order = {m: i for i, m in enumerate(model_order(sorted({r["model"] for r in rows})))}
    table = pl.DataFrame(rows, schema=EMPTY)
    return (table.with_columns(_o=pl.col("model").replace_strict(order, return_dtype=pl.Int64))
            .sort(["judge", "_o", "decoding"]).drop("_o"))
