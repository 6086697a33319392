"""Judge a samples artifact: every judge sees each distinct (question, completion) once."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from leakk.core.errors import ArtifactError, LeakkError, ParamsError
from leakk.core.schema import defaults
from leakk.judges.base import JUDGES, STAGE_KEYS, Judge, construct

__all__ = ["judge_samples", "build_judges", "judge_spec", "check_missing", "missing_fraction",
           "JudgeFailedError", "PASS_THROUGH", "judge_type", "utility_judge"]


class JudgeFailedError(LeakkError):
    """Too many judgments failed (more than the judge's ``max_missing``)."""

log = logging.getLogger(__name__)

#: Columns copied from the samples (or, for ``split``, the data) into the judgments.
PASS_THROUGH = ("model", "decoding", "split")

_SECRET = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|(?i:bearer)\s+\S+|(?i:api[_-]?key|token|password|secret)"
    r"\s*[=:]\s*\S+)"
)


def _redact(msg: str, limit: int = 300) -> str:
    """``msg`` without keys (the registered values, key shapes, ``api_key=…``), then cut to ``limit``."""
    from leakk.core.checks import redact

    msg = _SECRET.sub("[redacted]", redact(msg))
    return msg if len(msg) <= limit else msg[:limit] + "…"


def judge_spec(label: str, params: Mapping[str, Any] | None) -> tuple[str, dict[str, Any], float]:
    """Split ``judge.<label>`` (validated when params were loaded) into (judge type, constructor
    params, max_missing)."""
    params = dict(params or {})
    kind = str(params.pop("type", label))
    max_missing = params.pop("max_missing", STAGE_KEYS["max_missing"]["default"])
    return kind, params, float(max_missing)


def build_judges(judges: Mapping[str, Mapping[str, Any] | None],
                 device: str | None = None) -> dict[str, Judge]:
    """Instantiate ``{label: params}``. The judge type is ``params["type"]`` if given,
    else the label itself, so one judge can appear twice (e.g. two thresholds).
    ``device`` is passed to judges that take one unless their params name their own."""
    if not judges:
        raise ParamsError("judges: at least one judge is required")
    out: dict[str, Judge] = {}
    for label, params in judges.items():
        kind, kw, _ = judge_spec(str(label), params)
        cls = JUDGES.get(kind)
        if cls.uses_device:  # the experiment's device, else the machine's choice
            kw.setdefault("device", device or "auto")
        out[str(label)] = construct(cls, {**defaults(cls.params_schema), **kw})
    return out


def missing_fraction(judgments: pl.DataFrame) -> float:
    """Fraction of judgments with ``leaked`` null (0 for an empty table)."""
    return judgments["leaked"].null_count() / judgments.height if judgments.height else 0.0


def check_missing(judgments: pl.DataFrame, label: str, max_missing: float, where: str = "") -> None:
    """Raise :class:`JudgeFailedError` when more than ``max_missing`` of the judgments failed."""
    frac = missing_fraction(judgments)
    if frac > max_missing:
        n = judgments["leaked"].null_count()
        raise JudgeFailedError(
            f"{where + ': ' if where else ''}judge {label!r} failed on {n} of {judgments.height} "
            f"judgments ({frac:.1%} > judge.{label}.max_missing = {max_missing:g}); "
            "see the warnings above, fix the judge and re-run")


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
    questions: list[str | None],
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
                s, lk = _check_result(judge.score_batch([texts[i] for i in idx], [refs[i] for i in idx],
                                                        [facts[i] for i in idx], [questions[i] for i in idx]),
                                      len(idx))
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
    device: str | None = None,
) -> pl.DataFrame:
    """Judge every sample with every judge; return the judgments table (long format).

    ``samples`` needs ``qid, sample_idx, text``; ``data`` needs ``qid, answer``, and ``fact``
    where a judge needs it (``needs_fact``; without the column such a judge is refused); it
    passes ``question`` to the judges where the data has one.
    ``judges`` maps a label to the judge's params (``{"rougeL": {"threshold": 0.5}}``,
    ``{"rouge_lo": {"type": "rougeL", "threshold": 0.1}}``) or to a built ``Judge``.
    Each distinct ``(qid, text)`` is judged once per judge and broadcast back
    (``dedup=False`` judges every row; same result). A batch on which a judge raises is
    recorded as ``score=NaN, leaked=null`` with a warning. ``device`` goes to the judges
    that take one (unless their params name their own); the caller checks ``max_missing``.

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
        built = build_judges(judges, device=device)  # type: ignore[arg-type]

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
    if "question" in data.columns:
        question_of = dict(zip(data["qid"].to_list(), data["question"].to_list()))
        questions = [question_of[q] for q in pair_qids]
    else:
        questions = [None] * len(pair_qids)

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
            s, lk, failed = _run_judge(label, judge, pair_texts, refs, facts, questions, progress)
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


def judge_type(p: dict[str, Any], label: str) -> str:
    """The judge class name of ``judge.<label>`` (its ``type`` key, else the label)."""
    return (p["judge"][label] or {}).get("type", label)


def utility_judge(p: dict[str, Any]) -> str:
    """The judge label that scores retain-set greedy answers: the first judge of type
    ``fact`` (ground truth, where the benchmark has facts; chosen by type, not label), else
    the headline judge."""
    facts = [label for label in p["judge"] if judge_type(p, label) == "fact"]
    return facts[0] if facts else p["estimate"]["headline_judge"]
