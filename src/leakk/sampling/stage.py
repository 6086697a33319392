"""The sample stage: a model + benchmark → a samples Parquet frame (one row per completion)."""

from __future__ import annotations

from typing import Any

import polars as pl

from leakk.errors import ArtifactError, ParamsError
from leakk.io import contract_schema
from leakk.sampling import load_backend
from leakk.sampling.decoding import Decoding


def shard_questions(data: pl.DataFrame, shard: int, shards: int) -> pl.DataFrame:
    """Shard ``shard`` of ``shards``: a contiguous slice of the questions sorted by qid."""
    if not 0 <= shard < shards:
        raise ParamsError(f"sample shard {shard} is outside [0, {shards})")
    data = data.sort("qid")
    bounds = [round(i * data.height / shards) for i in range(shards + 1)]
    return data.slice(bounds[shard], bounds[shard + 1] - bounds[shard])


#: What a backend returns per completion (the first columns of the samples contract).
ROW_SCHEMA = contract_schema("samples", ("qid", "sample_idx", "text", "n_tokens", "finish_reason"))


def questions_for(data: pl.DataFrame, splits: list[str], question_column: str) -> pl.DataFrame:
    """``qid, split, prompt_question`` of the given splits, sorted by qid; the prompt is the
    ``question_column`` (e.g. the held-out paraphrase). Params validation checks the column
    against the benchmark's declared columns; a data file without it is refused here, never
    silently replaced by another column."""
    if question_column not in data.columns:
        raise ArtifactError(f"data: no question column {question_column!r} (columns: {data.columns}); "
                            "rebuild the data or change the question_column param")
    return data.filter(pl.col("split").is_in(splits)).select(
        "qid", "split", pl.col(question_column).alias("prompt_question")).sort("qid")


def sample_questions(data: pl.DataFrame, decoding: Decoding, question_column: str) -> pl.DataFrame:
    """Forget questions for every decoding; greedy adds the retain questions (utility)."""
    return questions_for(data, ["forget", "retain"] if decoding.greedy else ["forget"], question_column)


def run_sampling(model_dir: str, data: pl.DataFrame, decoding: Decoding, *, model_name: str,
                 params: dict[str, Any], template: str, shard: int = 0, shards: int = 1,
                 progress: bool = True) -> pl.DataFrame:
    """Sample one (model, decoding) — or one shard of it — into a samples frame."""
    backend = load_backend(params.get("backend", "hf"))
    questions = shard_questions(sample_questions(data, decoding, params["question_column"]), shard, shards)
    n = 1 if decoding.greedy else params["n"]
    rows = backend(
        model_dir, questions["qid"].to_list(), questions["prompt_question"].to_list(), decoding,
        n=n, max_new_tokens=params["max_new_tokens"], seed=params["seed"], template=template,
        batch_rows=params.get("batch_rows", "auto"), device=params.get("device", "auto"),
        progress=progress, desc=f"sample {model_name} {decoding.name}",
    )
    frame = pl.DataFrame(rows, schema=ROW_SCHEMA, orient="row")
    return frame.join(questions.select("qid", "split"), on="qid", how="left").with_columns(
        model=pl.lit(model_name), decoding=pl.lit(decoding.name),
        temperature=pl.lit(float(decoding.temperature)), top_p=pl.lit(float(decoding.top_p)),
        seed=pl.lit(int(params["seed"]), dtype=pl.Int64),
    ).sort("qid", "sample_idx")
