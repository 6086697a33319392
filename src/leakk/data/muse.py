"""MUSE (muse-bench/MUSE-News, muse-bench/MUSE-Books).

Two tasks, one per experiment (``data.muse.task``), read from the hub layout through
``datasets``:
- ``knowmem``: config ``knowmem``, splits ``forget_qa`` / ``retain_qa`` (``question`` →
  ``answer``). Prompt with a QA template such as ``"Question: {question}\\nAnswer:"``.
- ``verbmem``: config ``verbmem``, split ``forget`` (``prompt`` → ``gt``, the ground-truth
  continuation). ``question`` is the prompt itself and ``answer`` the continuation, so the
  preset's ``prompt_template`` is ``"{question}"`` and a judge (rougeL) compares the sampled
  continuation with the true one. verbmem has no retain split.
MUSE questions are independent (no shared author): each row is its own bootstrap group.
There is no fact span and no paraphrase (sample with ``question_column: question``).
"""

from __future__ import annotations

import polars as pl

from leakk.data import hub_schema, register_benchmark
from leakk.data.hubdata import load_split, require

TASKS = {
    "knowmem": (("forget_qa", "forget"), ("retain_qa", "retain")),
    "verbmem": (("forget", "forget"),),
}


SCHEMA = hub_schema(task={"enum": sorted(TASKS), "default": "knowmem"},
                    limit={"type": ["integer", "null"], "minimum": 1, "default": None})


@register_benchmark("muse", columns=("task",), schema=SCHEMA)
def build(*, source: str, task: str, limit: int | None, seed: int) -> pl.DataFrame:
    """The MUSE frame of ``task`` (first ``limit`` rows of each split)."""
    parts = []
    for hub_split, split in TASKS[task]:
        frame = load_split(source, task, hub_split)
        q, a = ("question", "answer") if task == "knowmem" else ("prompt", "gt")
        require(frame, (q, a), f"MUSE {task}/{hub_split}")
        frame = frame.with_row_index("row")
        if limit is not None:
            frame = frame.head(limit)
        qid = pl.format("{}_{}_{}", pl.lit(task), pl.lit(hub_split), pl.col("row").cast(pl.String).str.zfill(4))
        parts.append(frame.select(qid.alias("qid"), qid.alias("group"), pl.col(q).cast(pl.String).alias("question"),
                                  pl.col(a).cast(pl.String).alias("answer"), pl.lit(split).alias("split"),
                                  pl.lit(task).alias("task")))
    return pl.concat(parts)
