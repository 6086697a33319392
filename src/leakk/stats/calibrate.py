"""Judge calibration against ground truth (the ``fact`` judge of the offline benchmark).

For every other judge, per (model, decoding), on the forget-split completions that both
the judge and ``fact`` judged (neither null): the confusion counts, precision, recall, F1
and false-positive rate of "leaked", and leak@1 / leak@k under the judge beside the same
numbers under ``fact`` — how far a proxy judge moves the headline number (e.g. the
retrain model's leak@k is all false positives, since it never saw the forget facts).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from leakk.core.errors import ArtifactError

__all__ = ["CALIBRATION_COLUMNS", "calibration_table", "plot_calibration", "write_calibration"]

TRUTH = "fact"

CALIBRATION_COLUMNS = (
    "judge", "model", "decoding", "items", "tp", "fp", "fn", "tn", "precision", "recall", "f1",
    "false_positive_rate", "k", "leak_at_1", "leak_at_1_fact", "leak_at_k", "leak_at_k_fact",
)
_SCHEMA = {c: pl.String for c in ("judge", "model", "decoding")} | {
    c: pl.Int64 for c in ("items", "tp", "fp", "fn", "tn", "k")} | {
    c: pl.Float64 for c in ("precision", "recall", "f1", "false_positive_rate", "leak_at_1", "leak_at_1_fact",
                            "leak_at_k", "leak_at_k_fact")}


def _ratio(a: int, b: int) -> float | None:
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
        return pl.DataFrame(schema=_SCHEMA)
    others = frame.filter(pl.col("judge") != truth)
    joined = others.select("judge", *keys, "leaked").join(gt, on=keys, how="inner").drop_nulls(["leaked", "_truth"])
    for (judge, model, decoding), part in joined.group_by(["judge", "model", "decoding"], maintain_order=True):
        j, t = part["leaked"].to_numpy().astype(bool), part["_truth"].to_numpy().astype(bool)
        tp, fp = int((j & t).sum()), int((j & ~t).sum())
        fn, tn = int((~j & t).sum()), int((~j & ~t).sum())
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
        per_q = part.group_by("qid").agg(n=pl.len(), c=pl.col("leaked").sum(), c_fact=pl.col("_truth").sum())
        n_min = int(per_q["n"].min())
        k = max([k for k in ks if k <= n_min], default=1)
        rows.append({
            "judge": judge, "model": model, "decoding": decoding, "items": part.height,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": precision, "recall": recall, "f1": f1,
            "false_positive_rate": _ratio(fp, fp + tn), "k": k,
            "leak_at_1": _mean_leak(per_q, "c", 1), "leak_at_1_fact": _mean_leak(per_q, "c_fact", 1),
            "leak_at_k": _mean_leak(per_q, "c", k), "leak_at_k_fact": _mean_leak(per_q, "c_fact", k),
        })
    if not rows:
        return pl.DataFrame(schema=_SCHEMA)
    from leakk.stats.estimate import model_order

    order = {m: i for i, m in enumerate(model_order(sorted({r["model"] for r in rows})))}
    table = pl.DataFrame(rows, schema=_SCHEMA)
    return (table.with_columns(_o=pl.col("model").replace_strict(order, return_dtype=pl.Int64))
            .sort(["judge", "_o", "decoding"]).drop("_o"))


def plot_calibration(table: pl.DataFrame, out_path: str | os.PathLike, decoding: str | None = None) -> None:
    """Left: precision / recall / false-positive rate per judge (pooled over models) at
    ``decoding``. Right: leak@k under each judge vs under fact, one point per model."""
    from leakk.report.figures import _pyplot, _save

    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    if table.is_empty():
        for ax in (ax1, ax2):
            ax.text(0.5, 0.5, "no ground truth (fact) to calibrate against", ha="center", va="center")
            ax.set_axis_off()
        _save(fig, out_path)
        return
    if decoding is None or decoding not in table["decoding"].to_list():
        decoding = table["decoding"].to_list()[0]
    sub = table.filter(pl.col("decoding") == decoding)
    pooled = sub.group_by("judge", maintain_order=True).agg(pl.col("tp", "fp", "fn", "tn").sum())
    judges = pooled["judge"].to_list()
    x = np.arange(len(judges))
    for off, (name, fn) in zip((-0.27, 0.0, 0.27), (
            ("precision", lambda r: _ratio(r["tp"], r["tp"] + r["fp"])),
            ("recall", lambda r: _ratio(r["tp"], r["tp"] + r["fn"])),
            ("false-positive rate", lambda r: _ratio(r["fp"], r["fp"] + r["tn"])))):
        vals = [fn(r) for r in pooled.iter_rows(named=True)]
        ax1.bar(x + off, [np.nan if v is None else v for v in vals], width=0.27, label=name)
    ax1.set_xticks(x, judges, rotation=20)
    ax1.set_ylim(0, 1.05)
    ax1.set_title(f"vs fact, per completion ({decoding}, all models)")
    ax1.legend(frameon=False, fontsize=8)
    markers = "osD^v<>P*X"
    for i, judge in enumerate(judges):
        part = sub.filter(pl.col("judge") == judge)
        ax2.scatter(part["leak_at_k_fact"].to_numpy(), part["leak_at_k"].to_numpy(), marker=markers[i % 10],
                    label=judge)
        for r in part.iter_rows(named=True):
            ax2.annotate(r["model"], (r["leak_at_k_fact"], r["leak_at_k"]), fontsize=6, alpha=0.7)
    ax2.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax2.set_xlim(-0.03, 1.03)
    ax2.set_ylim(-0.03, 1.03)
    ks = sorted(set(sub["k"].to_list()))
    ax2.set_xlabel(f"leak@{ks[-1] if len(ks) == 1 else 'k'} under fact (ground truth)")
    ax2.set_ylabel("leak@k under the judge")
    ax2.set_title("how far each judge moves leak@k")
    ax2.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    _save(fig, out_path)


def write_calibration(judgments_dir: str | os.PathLike, data: pl.DataFrame, params: dict[str, Any],
                      out_dir: str | os.PathLike, figure: str | os.PathLike) -> pl.DataFrame:
    """The ``calibrate`` stage: calibration.parquet/.csv in ``out_dir`` and the figure.
    Without a ``fact`` judge (or facts) the table is empty and the figure says so."""
    from leakk.core.io import atomic_path, write_parquet
    from leakk.stages.evaluate import collect_judgments

    if TRUTH in params["judge"] and data["fact"].null_count() < data.height:
        table = calibration_table(collect_judgments(judgments_dir, data, params), params["estimate"]["ks"])
    else:
        table = pl.DataFrame(schema=_SCHEMA)
    out_dir = Path(out_dir)
    write_parquet(table, out_dir / "calibration.parquet", "calibration")
    with atomic_path(out_dir / "calibration.csv") as tmp:
        table.write_csv(tmp)
    plot_calibration(table, figure, params["estimate"].get("headline_decoding"))
    return table
