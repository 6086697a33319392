"""The report's leaked-completions page (leakk.report.examples): which questions it shows, and what
it highlights."""

from __future__ import annotations

import copy

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import MICRO
from leakk.config import validate_params
from leakk.report.examples import examples_page, highlight, leaked_examples, shared_word_spans, write_examples
from leakk.core.io import write_parquet

QUESTIONS = pl.DataFrame({"qid": ["q1", "q2", "q3", "q4", "q5"],
                          "question": [f"Who is {q}?" for q in ("A", "B", "C", "D", "E")],
                          "answer": [f"{q} is Fact {q}." for q in ("A", "B", "C", "D", "E")],
                          "fact": [f"Fact {q}" for q in ("A", "B", "C", "D", "E")]})


def _judged(model, rows):
    return pl.DataFrame([{"model": model, "qid": q, "sample_idx": i, "text": t, "leaked": v} for q, i, t, v in rows],
                        schema={"model": pl.String, "qid": pl.String, "sample_idx": pl.Int64, "text": pl.String,
                                "leaked": pl.Boolean})


GREEDY = _judged("ga", [("q1", 0, "A is nobody.", False), ("q2", 0, "B is Fact B.", True),
                        ("q3", 0, "C is ...", None), ("q4", 0, "D is nobody.", False), ("q5", 0, "E is x.", False)])
SAMPLED = _judged("ga", [("q1", 0, "A is y.", False), ("q1", 1, "A is Fact A.", True), ("q1", 2, "no", None),
                         ("q1", 3, "Fact A!", True),
                         ("q2", 0, "B is Fact B.", True), ("q3", 0, "C is Fact C.", True),
                         ("q4", 0, "D is z.", False), ("q4", 1, "D is w.", False),
                         ("q5", 0, "E is Fact E.", True), ("q5", 1, "E.", False), ("q5", 2, "E?", False)])


def test_a_question_is_shown_when_greedy_says_no_and_a_sample_leaks():
    """Greedy leaked (q2) or failed (q3: null is not "no leak") and questions no sample leaks
    (q4) are out; the rest are ranked by leak rate c/n over judged samples (q1: 2 of 3, q5:
    1 of 3), each with its lowest-index leaked sample."""
    table = leaked_examples(QUESTIONS, GREEDY, SAMPLED, per_model=3)
    assert table["qid"].to_list() == ["q1", "q5"]
    q1 = table.row(0, named=True)
    assert (q1["sample_idx"], q1["sampled_text"], q1["greedy_text"]) == (1, "A is Fact A.", "A is nobody.")
    assert (q1["leaked_samples"], q1["judged_samples"]) == (2, 3)
    assert q1["question"] == "Who is A?" and q1["fact"] == "Fact A"
    assert leaked_examples(QUESTIONS, GREEDY, SAMPLED, per_model=1)["qid"].to_list() == ["q1"]


def test_the_fact_is_highlighted_where_the_fact_judge_matches_and_text_is_escaped():
    assert highlight("<b>A</b> is fact a, really", "Fact A", "") == "&lt;b&gt;A&lt;/b&gt; is <mark>fact a</mark>, really"
    assert highlight("no match here", "Fact A", "") == "no match here"
    # without a fact: the words of a longest common subsequence with the reference
    assert highlight("Mira was born in Oslo in May", None, "Mira was born in May") == \
        "<mark>Mira</mark> <mark>was</mark> <mark>born</mark> <mark>in</mark> Oslo in <mark>May</mark>"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("a b c d e".split()), max_size=12),
       st.lists(st.sampled_from("a b c d e".split()), max_size=12))
def test_shared_words_are_a_longest_common_subsequence(text_words, ref_words):
    """Checked against rapidfuzz's LCS length (an independent implementation): the marked
    words are a common subsequence, in order, and as long as the longest."""
    from rapidfuzz.distance import LCSseq

    text, ref = " ".join(text_words), " ".join(ref_words)
    spans = shared_word_spans(text, ref)
    marked = [text[a:b] for a, b in spans]
    ids = {w: chr(65 + i) for i, w in enumerate("abcde")}
    assert len(marked) == LCSseq.similarity("".join(ids[w] for w in text_words), "".join(ids[w] for w in ref_words))
    it = iter(ref_words)
    assert all(w in it for w in marked)  # a subsequence of the reference
    assert spans == sorted(spans) and all(a < b for a, b in spans)


def test_the_page_has_a_section_per_unlearned_model_from_the_run_artifacts(tmp_path):
    p = copy.deepcopy(MICRO)
    p = validate_params(dict(p, rule={}, unlearn={"ga": p["unlearn"]["ga"], "npo": p["unlearn"]["npo"]}))
    data = QUESTIONS.with_columns(group=pl.lit("g"), split=pl.lit("forget"),
                                  paraphrased_question=pl.col("question"))
    common = {k: pl.lit(v) for k, v in dict(finish_reason="stop", n_tokens=3, temperature=1.0, top_p=1.0, seed=5,
                                             split="forget").items()}
    for model, greedy, sampled in (("ga", GREEDY, SAMPLED),
                                   ("npo", GREEDY.with_columns(model=pl.lit("npo"), leaked=pl.lit(True)),
                                    SAMPLED.with_columns(model=pl.lit("npo"))),
                                   ("full", GREEDY, SAMPLED)):
        for decoding, frame in (("greedy", greedy), ("t1.0_p1.0", sampled)):
            samples = frame.select("qid", "sample_idx", "text").with_columns(model=pl.lit(model),
                                                                              decoding=pl.lit(decoding), **common)
            write_parquet(samples, tmp_path / "samples" / model / f"{decoding}.parquet", "samples")
            judged = frame.select("qid", "sample_idx", "leaked").with_columns(judge=pl.lit("fact"),
                                                                               score=pl.lit(1.0))
            write_parquet(judged, tmp_path / "judgments" / model / "fact" / f"{decoding}.parquet", "judgments")
    out = tmp_path / "examples.html"
    table = write_examples(data, p, tmp_path / "samples", tmp_path / "judgments", out)
    assert table["model"].unique().to_list() == ["ga"]  # npo's greedy always leaks; full is a baseline
    page = out.read_text()
    assert page.index("<h2>ga</h2>") < page.index("<h2>npo</h2>") and "<h2>full</h2>" not in page
    assert "A is <mark>Fact A</mark>." in page and "No forget question whose greedy answer hides a leak" in page
    assert examples_page(table, ["ga"], "fact", "t1.0_p1.0").count("<tr>") == 1 + 2  # header + two questions
