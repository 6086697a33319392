"""Judge a samples artifact: every judge sees each distinct (question, completion) once."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from leakk.errors import ArtifactError, ParamsError
from leakk.judges.base import Judge, make_judge

__all__ = ["judge_samples", "build_judges", "PASS_THROUGH"]

log = logging.getLogger(__name__)

#: Columns copied from the samples (or, for ``split``, the data) into the judgments.
PASS_THROUGH = ("model", "decoding", "split")

_SECRET = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|(?i:bearer)\s+\S+|(?i:api[_-]?key|token|password|secret)"
    r"\s*[=:]\s*\S+)"
)


def _redact(msg: str, limit: int = 300) -> str:
    msg = _SECRET.sub("[redacted]", msg)
    return msg if len(msg) <= limit else msg[:limit] + "…"


def build_judges(judges: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Judge]:
    """Instantiate ``{label: params}``. The judge type is ``params["type"]`` if given,
    else the label itself, so one judge can appear twice (e.g. two thresholds)."""
    if not judges:
        raise ParamsError("judges: at least one judge is required")
    out: dict[str, Judge] = {}
    for label, params in judges.items():
        params = dict(params or {})
        kind = params.pop("type", label)
        out[str(label)] = make_judge(kind, **params)
    return out


def _check_result(result: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate a judge's ``(scores, leaked)``; raise ValueError if off-contract."""
    if not isinstance(result, tuple) or len(result) != 2:
        raise ValueError("score_batch must return a (scores, leaked) tuple")
    scores = np.asarray(result[0], dtype=np.float64)
    raw = result[1]
    if scores.shape != (n,) or len(raw) != n:
        raise ValueError(f"score_batch returned {scores.shape} scores / {len(raw)} flags for {n} items")
    leaked = np.empty(n, dtype=object)
    for i, v in enumerate(raw):
        if v is None:
            leaked[i] = None
        elif isinstance(v, (bool, np.bool_)):
            leaked[i] = bool(v)
        else:
            raise ValueError(f"leaked flag #{i} is {v!r}, not True/False/None")
    return scores, leaked


def _run_judge(
    label: str,
    judge: Judge,
    texts: list[str | None],
    refs: list[str],
    facts: list[str | None],
    progress: bool | None,
) -> tuple[np.ndarray, np.ndarray, int]:
    n = len(texts)
    scores = np.full(n, np.nan, dtype=np.float64)
    leaked = np.full(n, None, dtype=object)
    # Null completions (a generation that produced no record) cannot be judged.
    todo = [i for i, t in enumerate(texts) if t is not None]
    bs = judge.batch_size or max(len(todo), 1)
    failed = 0
    with tqdm(total=len(todo), desc=f"judge {label}", unit="pair",
              disable=True if progress is False else None, leave=False) as bar:
        for start in range(0, len(todo), bs):
            idx = todo[start:start + bs]
            try:
                s, lk = _check_result(
                    judge.score_batch([texts[i] for i in idx], [refs[i] for i in idx],
                                      [facts[i] for i in idx]),
                    len(idx),
                )
            except Exception as exc:  # a failed batch is recorded as "unknown", never False
                failed += len(idx)
                log.warning(
                    "judge %s failed on items %d-%d of %d (recorded as leaked=null): %s: %s",
                    label, start, start + len(idx) - 1, len(todo),
                    type(exc).__name__, _redact(str(exc)),
                )
            else:
                scores[idx] = s
                leaked[idx] = lk
            bar.update(len(idx))
    return scores, leaked, failed


def judge_samples(
    samples: pl.DataFrame,
    data: pl.DataFrame,
    judges: Mapping[str, Mapping[str, Any] | None] | Mapping[str, Judge],
    *,
    dedup: bool = True,
    progress: bool | None = None,
) -> pl.DataFrame:
    """Judge every sample with every judge; return the judgments table (long format).

    ``samples`` needs ``qid, sample_idx, text``; ``data`` needs ``qid, answer``, and ``fact``
    where a judge needs it (``needs_fact``; without the column such a judge is refused).
    ``judges`` maps a label to the judge's params (``{"rougeL": {"threshold": 0.5}}``,
    ``{"rouge_lo": {"type": "rougeL", "threshold": 0.1}}``) or to a built ``Judge``.
    Each distinct ``(qid, text)`` is judged once per judge and broadcast back
    (``dedup=False`` judges every row; same result). A batch on which a judge raises is
    recorded as ``score=NaN, leaked=null`` with a warning.

    Output columns: ``qid, sample_idx, judge, score (Float64), leaked (Boolean)`` plus
    ``model, decoding, split`` when the samples (or, for ``split``, the data) have them;
    rows ordered by judge, then by sample row.
    """
    for df, cols, what in ((samples, ("qid", "sample_idx", "text"), "samples"),
                           (data, ("qid", "answer"), "data")):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ArtifactError(f"{what}: missing required columns {missing}")
    if data["qid"].n_unique() != data.height:
        raise ArtifactError("data: qid is not unique")

    if judges and all(isinstance(j, Judge) for j in judges.values()):
        built: dict[str, Judge] = dict(judges)  # type: ignore[arg-type]
    else:
        built = build_judges(judges)  # type: ignore[arg-type]

    if "fact" not in data.columns:
        needy = [label for label, j in built.items() if getattr(j, "needs_fact", False)]
        if needy:
            raise ArtifactError(f"judge {needy[0]!r} ({built[needy[0]].name}) needs the data's fact column, "
                                "which this benchmark does not have; judge it with another judge (rougeL, …)")
    ref_of = dict(zip(data["qid"].to_list(), data["answer"].to_list()))
    fact_of = dict(zip(data["qid"].to_list(), data["fact"].to_list())) if "fact" in data.columns else {}

    n = samples.height
    if dedup:
        g = (
            samples.select("qid", "text")
            .with_row_index("_row")
            .group_by(["qid", "text"], maintain_order=True)
            .agg(pl.col("_row"))
            .with_row_index("_pair")
        )
        pair_qids = g["qid"].to_list()
        pair_texts = g["text"].to_list()
        ex = g.select("_pair", "_row").explode("_row")
        pair_of_row = np.empty(n, dtype=np.int64)
        pair_of_row[ex["_row"].to_numpy()] = ex["_pair"].to_numpy()
    else:
        pair_qids = samples["qid"].to_list()
        pair_texts = samples["text"].to_list()
        pair_of_row = np.arange(n, dtype=np.int64)

    unknown = sorted({q for q in pair_qids if q not in ref_of}, key=str)
    if unknown:
        raise ArtifactError(
            f"samples: {len(unknown)} qid(s) absent from the data, e.g. {unknown[:5]}")
    refs = [ref_of[q] for q in pair_qids]
    if any(r is None for r in refs):
        bad = sorted({q for q in pair_qids if ref_of[q] is None}, key=str)
        raise ArtifactError(f"data: null answer for qid(s) {bad[:5]}")
    facts = [fact_of.get(q) for q in pair_qids]

    base = samples.select("qid", "sample_idx",
                          *[c for c in PASS_THROUGH if c in samples.columns])
    if "split" not in base.columns and "split" in data.columns:
        split_of = dict(zip(data["qid"].to_list(), data["split"].to_list()))
        base = base.with_columns(
            pl.Series("split", [split_of[q] for q in samples["qid"].to_list()],
                      dtype=data.schema["split"]))

    parts = []
    try:
        for label, judge in built.items():
            s, lk, failed = _run_judge(label, judge, pair_texts, refs, facts, progress)
            if failed:
                log.warning("judge %s: %d of %d distinct items failed (leaked=null)",
                            label, failed, len(pair_texts))
            parts.append(base.with_columns(
                pl.lit(label, dtype=pl.String).alias("judge"),
                pl.Series("score", s[pair_of_row], dtype=pl.Float64, nan_to_null=False),
                pl.Series("leaked", lk[pair_of_row].tolist(), dtype=pl.Boolean),
            ))
    finally:
        for judge in built.values():
            try:
                judge.close()
            except Exception as exc:  # pragma: no cover
                log.warning("judge %s: close() failed: %s", judge.name, type(exc).__name__)

    out = pl.concat(parts, how="vertical")
    front = ["qid", "sample_idx", "judge", "score", "leaked"]
    return out.select(front + [c for c in out.columns if c not in front])
