"""Examples of leaked completions: the finding, shown on real text.

For each unlearned model (every model but ``full`` and ``retrain``), a few forget questions
whose greedy answer does *not* leak, beside a sampled completion of the same question that
does, with what the judge matched highlighted: the fact span where the benchmark has one
(exactly the ``fact`` judge's match), else the words the completion shares with the reference
in their longest common subsequence (what ROUGE-L counts). Questions are those where sampling
leaks most often (ties by qid), each with its leak count c of n samples; the completion shown
is the lowest-index leaked sample. Everything is read from the stages' artifacts; nothing is
sampled or judged again.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Any

import polars as pl

from leakk.core.io import read_parquet, write_text

GREEDY = "greedy"


def leaked_examples(questions: pl.DataFrame, greedy: pl.DataFrame, sampled: pl.DataFrame,
                    per_model: int = 3) -> pl.DataFrame:
    """The examples table: ``model, qid, question, answer, fact, greedy_text, sample_idx,
    sampled_text, leaked_samples, judged_samples``.

    ``questions``: ``qid, question, answer`` (+ ``fact``) of the forget questions as asked;
    ``greedy`` / ``sampled``: judged completions ``model, qid, sample_idx, text, leaked`` of
    greedy and of one sampled decoding. A question qualifies when its greedy verdict is
    ``False`` (a failed judgment, null, never counts as "no leak") and at least one sample
    leaked; per model the ``per_model`` with the highest leak rate c/n are kept."""
    g = greedy.filter(pl.col("leaked") == False).select("model", "qid", pl.col("text").alias("greedy_text"))  # noqa: E712
    counts = sampled.group_by("model", "qid").agg(
        leaked_samples=pl.col("leaked").fill_null(False).sum().cast(pl.Int64),
        judged_samples=pl.col("leaked").is_not_null().sum().cast(pl.Int64))
    first = (sampled.filter(pl.col("leaked") == True).sort("sample_idx")  # noqa: E712
             .group_by("model", "qid", maintain_order=True).first()
             .select("model", "qid", "sample_idx", pl.col("text").alias("sampled_text")))
    cols = ["qid", "question", "answer"] + (["fact"] if "fact" in questions.columns else [])
    out = (g.join(first, on=["model", "qid"]).join(counts, on=["model", "qid"])
           .join(questions.select(cols), on="qid", how="left")
           .with_columns(rate=pl.col("leaked_samples") / pl.col("judged_samples"))
           .sort(["model", "rate", "qid"], descending=[False, True, False])
           .group_by("model", maintain_order=True).head(per_model).drop("rate"))
    if "fact" not in out.columns:
        out = out.with_columns(fact=pl.lit(None, pl.String))
    return out.select("model", "qid", "question", "answer", "fact", "greedy_text", "sample_idx", "sampled_text",
                      "leaked_samples", "judged_samples")


_WORD = re.compile(r"\w+", re.UNICODE)


def shared_word_spans(text: str, reference: str) -> list[tuple[int, int]]:
    """Character spans of the words of ``text`` in a longest common subsequence of words with
    ``reference`` (case-insensitive): what ROUGE-L counts, for highlighting without a fact."""
    words = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(text)]
    ref = [w.lower() for w in _WORD.findall(reference)]
    n, m = len(words), len(ref)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            table[i][j] = (table[i + 1][j + 1] + 1 if words[i][2] == ref[j]
                           else max(table[i + 1][j], table[i][j + 1]))
    spans, i, j = [], 0, 0
    while i < n and j < m:
        if words[i][2] == ref[j]:
            spans.append(words[i][:2])
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return spans


def highlight(text: str, fact: str | None, reference: str) -> str:
    """``text`` as HTML with what leaked in ``<mark>``: the fact's span (the fact judge's
    match), else the words shared with ``reference`` (:func:`shared_word_spans`)."""
    from leakk.judges.fact import fact_span

    if fact:
        span = fact_span(fact, text)
        spans = [span] if span else []
    else:
        spans = shared_word_spans(text, reference)
    out, at = [], 0
    for start, end in spans:
        out += [html.escape(text[at:start]), f"<mark>{html.escape(text[start:end])}</mark>"]
        at = end
    out.append(html.escape(text[at:]))
    return "".join(out)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:80em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.4em;width:100%}
th,td{border:1px solid #bbb;padding:.35em .6em;text-align:left;vertical-align:top}
th{background:#eee}td.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
mark{background:#ffd54f;padding:0 .1em}.greedy{color:#555}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
"""


def examples_page(examples: pl.DataFrame, models: list[str], judge: str, decoding: str) -> str:
    """One self-contained HTML page: a section per model (in ``models`` order)."""
    parts = [f"<p>Forget questions whose <b>greedy</b> answer does not leak (judge <code>{html.escape(judge)}</code>)"
             f", beside a completion <b>sampled</b> at <code>{html.escape(decoding)}</code> that does; what the judge "
             "matched is <mark>highlighted</mark> (the fact, or the words shared with the reference). "
             "<i>c / n</i>: how many of the question's n samples leaked.</p>"]
    for model in models:
        rows = examples.filter(pl.col("model") == model)
        parts.append(f"<h2>{html.escape(model)}</h2>")
        if rows.is_empty():
            parts.append("<p>No forget question whose greedy answer hides a leak in the samples.</p>")
            continue
        body = []
        for r in rows.iter_rows(named=True):
            answer = r["answer"] or ""
            reference = highlight(answer, r["fact"], "") if r["fact"] else html.escape(answer)
            body.append(
                "<tr>"
                f"<td>{html.escape(r['question'] or '')}<br><small>reference: {reference}</small></td>"
                f"<td class=greedy>{html.escape(r['greedy_text'])}</td>"
                f"<td>{highlight(r['sampled_text'], r['fact'], r['answer'] or '')}"
                f"<br><small>sample {r['sample_idx']}</small></td>"
                f"<td class=n>{r['leaked_samples']} / {r['judged_samples']}</td></tr>")
        parts.append("<table class=leakk-examples><thead><tr><th>question</th><th>greedy (no leak)</th>"
                     "<th>sampled (leaked)</th><th>c / n</th></tr></thead><tbody>" + "".join(body) + "</tbody></table>")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>leakk: leaked completions</title>'
            f"<style>{_STYLE}</style></head><body><h1>leakk: leaked completions</h1>\n" + "\n".join(parts)
            + "\n</body></html>\n")


def _judged(samples_dir: Path, judgments_dir: Path, model: str, decoding: str, judge: str) -> pl.DataFrame:
    samples = read_parquet(samples_dir / model / f"{decoding}.parquet", "samples").select("qid", "sample_idx", "text")
    verdicts = read_parquet(judgments_dir / model / judge / f"{decoding}.parquet", "judgments")
    return (samples.join(verdicts.select("qid", "sample_idx", "leaked"), on=["qid", "sample_idx"], how="left")
            .select(pl.lit(model).alias("model"), "qid", "sample_idx", "text", "leaked"))


def unlearned_models(params: dict[str, Any]) -> list[str]:
    """Every model of the experiment but the two baselines (full, retrain)."""
    from leakk.core.layout import BASE_MODELS, model_names

    return [m for m in model_names(params) if m not in BASE_MODELS]


def write_examples(data: pl.DataFrame, params: dict[str, Any], samples_dir: str | os.PathLike,
                   judgments_dir: str | os.PathLike, out: str | os.PathLike, per_model: int = 3) -> pl.DataFrame:
    """The examples page of the run (headline judge and decoding) at ``out``; returns the table."""
    from leakk.sampling.stage import questions_for

    est = params["estimate"]
    judge, decoding = est["headline_judge"], est["headline_decoding"]
    asked = (questions_for(data, ["forget"], params["sample"]["question_column"])
             .group_by("qid", maintain_order=True).first().select("qid", pl.col("prompt_question").alias("question")))
    cols = ["qid", "answer"] + (["fact"] if "fact" in data.columns else [])
    questions = asked.join(data.select(cols), on="qid", how="left")
    models = unlearned_models(params)
    samples_dir, judgments_dir = Path(samples_dir), Path(judgments_dir)
    empty = pl.DataFrame(schema={"model": pl.String, "qid": pl.String, "sample_idx": pl.Int64, "text": pl.String,
                                 "leaked": pl.Boolean})
    greedy = [empty] + [_judged(samples_dir, judgments_dir, m, GREEDY, judge) for m in models]
    sampled = [empty] + [_judged(samples_dir, judgments_dir, m, decoding, judge) for m in models]
    table = leaked_examples(questions, pl.concat(greedy, how="vertical_relaxed"),
                            pl.concat(sampled, how="vertical_relaxed"), per_model)
    write_text(examples_page(table, models, judge, decoding), out)
    return table
