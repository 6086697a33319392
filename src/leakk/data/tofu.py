"""TOFU (locuslab/TOFU): 200 fictitious authors × 20 QA pairs.

Configs used (hub layout: one JSON file per config, listed in the repo README's ``configs``):
``forget01/05/10`` (the last 1/5/10 % of authors) with their complements ``retain99/95/90``,
``holdout01/05/10`` (authors of the same size never trained on), and ``forgetXX_perturbed``
(the forget questions with ``paraphrased_question``). Columns ``question``, ``answer``.

Rows of a config come author by author, 20 consecutive rows each, so ``group`` (the cluster
of the bootstrap) is ``<config>/author<NNN>`` with NNN = row // 20. Evaluation asks the
``paraphrased_question``; retain (and holdout) questions have no paraphrase in TOFU, so there
``paraphrased_question`` is the question itself (``paraphrased`` says which rows have one).
TOFU has no key-fact span: the ``fact`` judge is refused (use rougeL / ES).
"""

from __future__ import annotations

import polars as pl

from leakk.data import hub_schema, register_benchmark
from leakk.data.hubdata import load_split, require
from leakk.core.errors import ArtifactError

QA_PER_AUTHOR = 20
FORGETS = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}


def _rows(frame: pl.DataFrame, config: str, split: str, limit: int | None) -> pl.DataFrame:
    require(frame, ("question", "answer"), f"TOFU {config}")
    frame = frame.with_row_index("row")
    if limit is not None:
        frame = frame.head(limit)
    return frame.select(
        pl.format("{}_{}", pl.lit(config), pl.col("row").cast(pl.String).str.zfill(4)).alias("qid"),
        pl.format("{}/author{}", pl.lit(config), (pl.col("row") // QA_PER_AUTHOR).cast(pl.String).str.zfill(3))
        .alias("group"),
        pl.col("question").cast(pl.String),
        pl.col("answer").cast(pl.String),
        pl.lit(split).alias("split"),
        pl.lit(config).alias("source_config"),
    )


SCHEMA = hub_schema(
    forget={"enum": sorted(FORGETS), "default": "forget10"},
    forget_limit={"type": ["integer", "null"], "minimum": 1, "default": None,
                  "description": "first N forget rows (the paper: 400 of forget10)"},
    retain_limit={"type": ["integer", "null"], "minimum": 1, "default": None, "description": "first N retain rows"},
    holdout={"type": "boolean", "default": False})


@register_benchmark("tofu", columns=("paraphrased_question", "paraphrased", "source_config"), schema=SCHEMA)
def build(*, source: str, forget: str, forget_limit: int | None, retain_limit: int | None, holdout: bool,
          seed: int) -> pl.DataFrame:
    """The TOFU frame: ``forget`` (first ``forget_limit`` rows; the paper: the first 400 of
    forget10), its retain complement (first ``retain_limit`` rows) and, with ``holdout``, the
    matching holdout split. ``seed`` is unused (TOFU is fixed data)."""
    fq = _rows(load_split(source, forget, "train"), forget, "forget", forget_limit)
    para = load_split(source, f"{forget}_perturbed", "train")
    require(para, ("question", "paraphrased_question"), f"TOFU {forget}_perturbed")
    para_of = dict(zip(para["question"].to_list(), para["paraphrased_question"].to_list()))
    lacking = [q for q in fq["question"].to_list() if q not in para_of]
    if lacking:
        raise ArtifactError(f"TOFU {forget}_perturbed: no paraphrase for {len(lacking)} forget question(s), "
                            f"e.g. {lacking[0]!r}")
    fq = fq.with_columns(pl.Series("paraphrased_question", [para_of[q] for q in fq["question"].to_list()],
                                   dtype=pl.String), paraphrased=pl.lit(True))
    parts = [fq]
    others = [(FORGETS[forget], "retain", retain_limit)]
    if holdout:
        others.append((forget.replace("forget", "holdout"), "holdout", None))
    for config, split, limit in others:
        rows = _rows(load_split(source, config, "train"), config, split, limit)
        parts.append(rows.with_columns(paraphrased_question=pl.col("question"), paraphrased=pl.lit(False)))
    return pl.concat(parts)
