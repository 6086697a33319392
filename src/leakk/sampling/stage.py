"""The sample stage: a model + benchmark → a samples Parquet frame (one row per completion)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import polars as pl

from leakk.data import training_column
from leakk.core.errors import ArtifactError, ParamsError
from leakk.core.io import contract_schema
from leakk.sampling import open_backend
from leakk.sampling.backend import Backend, SamplingRequest, sample_texts
from leakk.sampling.decoding import Decoding


def check_shard(shard: int, shards: int) -> None:
    """Refuse a shard index outside [0, shards) (before any model is loaded)."""
    if not 0 <= shard < shards:
        raise ParamsError(f"sample shard {shard} is outside [0, {shards})")


def shard_questions(data: pl.DataFrame, shard: int, shards: int) -> pl.DataFrame:
    """Shard ``shard`` of ``shards``: a contiguous slice of the qids in sorted order (all
    phrasings of a qid stay in one shard)."""
    check_shard(shard, shards)
    qids = data["qid"].unique().sort()
    bounds = [round(i * qids.len() / shards) for i in range(shards + 1)]
    keep = qids.slice(bounds[shard], bounds[shard + 1] - bounds[shard])
    return data.filter(pl.col("qid").is_in(keep.implode())).sort("qid")


#: What a backend returns per completion (the first columns of the samples contract).
ROW_SCHEMA = contract_schema("samples", ("qid", "sample_idx", "text", "n_tokens", "finish_reason"))


#: ``question_column`` value meaning "the phrasings the model was trained on"
TRAINING_PHRASINGS = "training"


def questions_for(data: pl.DataFrame, splits: list[str], question_column: str) -> pl.DataFrame:
    """``qid, split, phrasing, prompt_question`` of the given splits, sorted by (qid, phrasing).

    The prompt is the ``question_column`` (e.g. the held-out paraphrase: one phrasing per
    qid), or with :data:`TRAINING_PHRASINGS` every phrasing the model was trained on (several
    rows per qid where the benchmark has several). Params validation checks the column
    against the benchmark's declared columns; a data file without it is refused here, never
    silently replaced by another column."""
    column = training_column(data) if question_column == TRAINING_PHRASINGS else question_column
    if column not in data.columns:
        raise ArtifactError(f"data: no question column {column!r} (columns: {data.columns}); "
                            "rebuild the data or change the question_column param")
    frame = data.filter(pl.col("split").is_in(splits)).select("qid", "split", pl.col(column).alias("prompt_question"))
    if frame.schema["prompt_question"] == pl.String and (empty := frame["prompt_question"].null_count()):
        raise ArtifactError(f"data: question column {column!r} is empty for {empty} of {frame.height} questions: "
                            "the benchmark was built without that phrasing (for validation_question: "
                            "data.synthetic.validation_phrasing: true)")
    if frame.schema["prompt_question"] == pl.List(pl.String):
        frame = (frame.with_columns(phrasing=pl.int_ranges(pl.col("prompt_question").list.len()))
                 .explode("prompt_question", "phrasing").drop_nulls("prompt_question"))
    else:
        frame = frame.with_columns(phrasing=pl.lit(0, dtype=pl.Int64))
    return frame.with_columns(pl.col("phrasing").cast(pl.Int64)).sort("qid", "phrasing")


def sample_questions(data: pl.DataFrame, decoding: Decoding, question_column: str) -> pl.DataFrame:
    """Forget questions for every decoding; greedy adds the retain questions (utility)."""
    return questions_for(data, ["forget", "retain"] if decoding.greedy else ["forget"], question_column)


def sample_phrasings(backend: Backend, questions: pl.DataFrame, request: SamplingRequest, *, template: str,
                     every_phrasing: bool = False, progress: bool = False, desc: str = "sample",
                     key: str = "sample.max_new_tokens") -> pl.DataFrame:
    """Draw completions of every qid of ``questions`` (:func:`questions_for`) through ``backend``.

    ``request.n`` completions per qid are spread over its phrasings as evenly as possible
    (phrasing j of P gets ``n//P + (j < n % P)``, drawn with seed ``request.seed + j``);
    ``every_phrasing`` draws ``request.n`` per phrasing instead (the stop criterion's one
    greedy answer to each). With one phrasing per qid this is exactly one backend call with
    the request. ``sample_idx`` runs over the qid's completions; ``phrasing`` says which
    phrasing each came from."""
    n = request.n
    count = questions.group_by("qid").agg(P=pl.len())
    plan = questions.join(count, on="qid", how="left").with_columns(
        take=(pl.lit(n) if every_phrasing else
              pl.lit(n) // pl.col("P") + (pl.col("phrasing") < pl.lit(n) % pl.col("P")).cast(pl.Int64)),
        offset=(pl.col("phrasing") * n if every_phrasing else
                pl.col("phrasing") * (pl.lit(n) // pl.col("P"))
                + pl.min_horizontal(pl.col("phrasing"), pl.lit(n) % pl.col("P"))))
    frames = []
    for (phrasing, take), part in plan.filter(pl.col("take") > 0).group_by(["phrasing", "take"], maintain_order=True):
        rows = sample_texts(backend, part["qid"].to_list(), part["prompt_question"].to_list(),
                            request.with_(n=int(take), seed=request.seed + int(phrasing)), template=template,
                            progress=progress, desc=desc, key=key)
        frame = pl.DataFrame(rows, schema=ROW_SCHEMA, orient="row")
        frames.append(frame.join(part.select("qid", "offset"), on="qid", how="left").with_columns(
            sample_idx=pl.col("sample_idx") + pl.col("offset"), phrasing=pl.lit(int(phrasing), dtype=pl.Int64)
        ).drop("offset"))
    if not frames:
        return pl.DataFrame(schema={**ROW_SCHEMA, "phrasing": pl.Int64})
    return pl.concat(frames).sort("qid", "sample_idx")


def request_from(section: dict[str, Any], decoding: Decoding) -> SamplingRequest:
    """The request a ``sample:``-shaped section (``n``, ``max_new_tokens``, ``seed``) makes for ``decoding``."""
    return SamplingRequest.build(decoding, n=section["n"], max_new_tokens=section["max_new_tokens"],
                                 seed=section["seed"])


def run_sampling(model: str | Backend, data: pl.DataFrame, decoding: Decoding, *, model_name: str,
                 params: dict[str, Any], template: str, shard: int = 0, shards: int = 1,
                 progress: bool = True) -> pl.DataFrame:
    """Sample one (model, decoding) — or one shard of it — into a samples frame. ``model`` is a
    model folder (loaded here) or a backend already open (one load for every decoding)."""
    questions = shard_questions(sample_questions(data, decoding, params["question_column"]), shard, shards)
    opened = nullcontext(model) if isinstance(model, Backend) else open_backend(params, model,
                                                                                 params.get("device", "auto"))
    with opened as backend:
        frame = sample_phrasings(backend, questions, request_from(params, decoding), template=template,
                                 progress=progress, desc=f"sample {model_name} {decoding.name}").drop("phrasing")
    return frame.join(questions.select("qid", "split").unique("qid"), on="qid", how="left").with_columns(
        model=pl.lit(model_name), decoding=pl.lit(decoding.name),
        temperature=pl.lit(float(decoding.temperature)), top_p=pl.lit(float(decoding.top_p)),
        seed=pl.lit(int(params["seed"]), dtype=pl.Int64),
    ).sort("qid", "sample_idx")
