"""Judges: fact match, bit-exact fast ROUGE-L, registry, dedup and failure handling."""

from __future__ import annotations

import math
import random

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer
from rouge_score.tokenizers import DefaultTokenizer

from leakk.core.errors import ArtifactError, ParamsError
from leakk.judges import (
    JUDGES,
    Judge,
    make_judge,
    register_judge,
    rouge_l_recall,
    rouge_tokens,
)
from leakk.judges.run import judge_samples

_SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def ref_recall(prediction: str, target: str) -> float:
    return _SCORER.score(target, prediction)["rougeL"].recall


# ---------------------------------------------------------------- fact judge

@pytest.mark.parametrize(
    ("text", "fact", "expected"),
    [
        ("She was born on March 3, 1987.", "March 3, 1987", True),
        ("born march 3 1987", "March 3, 1987", True),
        ("BORN ON MARCH-3--1987!!", "march 3 1987", True),
        ("She wrote 'The Glass Harbor'.", "The Glass Harbor", True),
        ("She wrote The Glass Harbors.", "The Glass Harbor", False),  # word boundary
        ("catalog", "cat", False),
        ("a cat.", "cat", True),
        ("cat", "cat", True),
        ("Ｔｏｋｙｏ ｉｓ ｂｉｇ", "tokyo", True),  # NFKC fullwidth
        ("Zoë Okafor", "zoë okafor", True),
        ("snake_case_name", "case", True),  # underscore is not alphanumeric
        ("1987", "987", False),
        ("", "cat", False),
    ],
)
def test_fact_judge_matches(text, fact, expected):
    scores, leaked = make_judge("fact").score_batch([text], ["ref"], [fact])
    assert leaked[0] is expected
    assert scores[0] == (1.0 if expected else 0.0)


@pytest.mark.parametrize("fact", [None, "", "  ", "?!"])
def test_fact_judge_without_fact_fails(fact):
    scores, leaked = make_judge("fact").score_batch(["anything at all"], ["ref"], [fact])
    assert leaked[0] is None
    assert math.isnan(scores[0])


# ---------------------------------------------------------------- ROUGE-L

_WORDS = [
    "running", "runs", "run", "ran", "runner", "the", "The", "a", "of", "book", "books",
    "booking", "author", "authors", "wrote", "writing", "written", "1987", "3", "42",
    "March", "march", "Paris", "paris", "généralement", "naïve", "東京", "über", "ﬁle",
    "İstanbul", "ß", "can't", "won't", "e-mail", "U.S.A.", "x", "xyz", "caresses",
    "ponies", "generously", "happiness", "relational", "conditional", "sky", "sky's",
]
_PUNCT = ["", ".", ",", "!", "?", "...", " - ", "'", "\"", "(", ")", ";", ":", "\n", "\t"]


def _corpus(seed: int = 0, n: int = 400) -> list[tuple[str, str]]:
    rng = random.Random(seed)

    def sent(lo: int, hi: int) -> str:
        parts = []
        for _ in range(rng.randint(lo, hi)):
            parts.append(rng.choice(_WORDS) + rng.choice(_PUNCT))
        return " ".join(parts)

    special = ["", " ", "...", "!!! ???", "\n\n", "—", "東京", "a", "the the the the",
               "running runs run", "1,000,000", "ＡＢＣ", "x" * 50]
    pairs = [(a, b) for a in special for b in special[:6]]
    refs = [sent(1, 25) for _ in range(40)]
    while len(pairs) < n:
        r = rng.random()
        target = rng.choice(refs)
        if r < 0.3:
            pred = sent(0, 40)
        elif r < 0.5:  # perturbed copy of the reference
            toks = target.split()
            rng.shuffle(toks) if rng.random() < 0.5 else None
            pred = " ".join(t for t in toks if rng.random() < 0.7)
        elif r < 0.6:
            pred = target
        elif r < 0.7:
            pred = (target + " ") * rng.randint(1, 3)  # repeated words
        elif r < 0.8:
            pred, target = rng.choice(special), sent(0, 10)
        else:
            pred = sent(0, 40) + " " + target
        pairs.append((pred, target))
    return pairs


def test_tokens_match_rouge_score_tokenizer():
    tok = DefaultTokenizer(use_stemmer=True)
    for pred, target in _corpus(1, 300):
        for text in (pred, target):
            assert list(rouge_tokens(text)) == tok.tokenize(text)


def test_rouge_l_recall_bit_identical_on_corpus():
    pairs = _corpus(0, 500)
    mismatches = [(p, t) for p, t in pairs if rouge_l_recall(p, t) != ref_recall(p, t)]
    assert mismatches == []
    # the corpus exercises both extremes and the middle
    vals = {rouge_l_recall(p, t) for p, t in pairs}
    assert 0.0 in vals and 1.0 in vals and any(0 < v < 1 for v in vals)


def test_rouge_empty_conventions():
    for p, t in [("", ""), ("", "a b"), ("a b", ""), ("...", "a"), ("a", "!!!")]:
        assert rouge_l_recall(p, t) == ref_recall(p, t) == 0.0
    assert rouge_l_recall("he runs", "The runner was running") == ref_recall(
        "he runs", "The runner was running")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(_WORDS + _PUNCT), max_size=30),
    st.lists(st.sampled_from(_WORDS + _PUNCT), max_size=20),
)
def test_rouge_l_recall_bit_identical_hypothesis(pred_toks, target_toks):
    pred, target = " ".join(pred_toks), " ".join(target_toks)
    assert rouge_l_recall(pred, target) == ref_recall(pred, target)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60), st.text(max_size=60))
def test_rouge_l_recall_bit_identical_arbitrary_text(pred, target):
    assert rouge_l_recall(pred, target) == ref_recall(pred, target)


def test_rouge_threshold_boundary():
    # target has 4 tokens; prediction shares 2 in order → recall exactly 0.5
    target, pred = "alpha beta gamma delta", "alpha zzz gamma"
    assert rouge_l_recall(pred, target) == 0.5
    _, at = make_judge("rougeL", threshold=0.5).score_batch([pred], [target], [None])
    _, above = make_judge("rougeL", threshold=0.5000001).score_batch([pred], [target], [None])
    assert at[0] is True and above[0] is False
    scores, leaked = make_judge("rougeL", threshold=0.0).score_batch(["", "x"], [target, target], [None, None])
    assert list(leaked) == [True, True] and list(scores) == [0.0, 0.0]


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5", None, float("nan"), True])
def test_rouge_bad_threshold(bad):
    with pytest.raises(ParamsError):
        make_judge("rougeL", threshold=bad)


# ---------------------------------------------------------------- registry

def test_unknown_judge_lists_known():
    with pytest.raises(ParamsError) as exc:
        make_judge("nope")
    assert "rougeL" in str(exc.value) and "fact" in str(exc.value)


def test_unexpected_param_is_params_error():
    with pytest.raises(ParamsError):
        make_judge("fact", threshold=0.3)


def test_registry_contents():
    assert {"fact", "rougeL"} <= set(JUDGES)
    assert make_judge("rougeL").name == "rougeL"


# ---------------------------------------------------------------- judge_samples

def _frames(seed: int = 0):
    rng = random.Random(seed)
    qids = list(range(12))
    answers = [f"The author {q} wrote The Glass Harbor {q} in March {q} 1987" for q in qids]
    facts = [f"Glass Harbor {q}" if q % 4 else None for q in qids]
    data = pl.DataFrame({"qid": qids, "group": [q // 3 for q in qids], "question": "?",
                         "answer": answers, "fact": facts,
                         "split": ["forget"] * 6 + ["retain"] * 6})
    rows = []
    for q in qids:
        pool = [answers[q], "I do not know.", f"Glass Harbor {q} maybe", "", "the author wrote"]
        for i in range(20):
            rows.append({"qid": q, "sample_idx": i, "text": rng.choice(pool),
                         "model": "m", "decoding": "t1p1"})
    return pl.DataFrame(rows), data


def test_judge_samples_contract_and_dedup_equivalence():
    samples, data = _frames()
    judges = {"rougeL": {"threshold": 0.5}, "fact": {},
              "rouge_lo": {"type": "rougeL", "threshold": 0.1}}
    a = judge_samples(samples, data, judges, progress=False)
    b = judge_samples(samples, data, judges, dedup=False, progress=False)
    assert a.equals(b)
    assert a.height == samples.height * 3
    assert a.columns[:5] == ["qid", "sample_idx", "judge", "score", "leaked"]
    assert {"model", "decoding", "split"} <= set(a.columns)
    assert a.schema["score"] == pl.Float64 and a.schema["leaked"] == pl.Boolean
    # scores match the per-pair reference implementation
    r = a.filter(pl.col("judge") == "rougeL").join(samples, on=["qid", "sample_idx"])
    ans = dict(zip(data["qid"], data["answer"]))
    for q, text, score in r.select("qid", "text", "score").iter_rows():
        assert score == ref_recall(text, ans[q])
    # fact judge: null fact → null leaked
    f = a.filter(pl.col("judge") == "fact")
    assert f.filter(pl.col("qid") % 4 == 0)["leaked"].null_count() == f.filter(pl.col("qid") % 4 == 0).height
    assert f.filter(pl.col("qid") % 4 != 0)["leaked"].null_count() == 0


class _Boom(Judge):
    batch_size = 7

    def __init__(self, fail_on: str = "") -> None:
        self.fail_on = fail_on

    def score_batch(self, completions, references, facts, questions=None):
        if not self.fail_on or self.fail_on in completions:
            raise RuntimeError("endpoint down; api_key=sk-SECRETSECRET123")
        n = len(completions)
        return np.ones(n), np.array([True] * n, dtype=object)


@pytest.fixture
def boom():
    register_judge("_boom_test")(_Boom)
    yield
    JUDGES.pop("_boom_test", None)


def test_failing_judge_gives_nulls_not_false(boom, caplog):
    samples, data = _frames()
    with caplog.at_level("WARNING"):
        out = judge_samples(samples, data, {"_boom_test": {}, "fact": {}}, progress=False)
    b = out.filter(pl.col("judge") == "_boom_test")
    assert b.height == samples.height
    assert b["leaked"].null_count() == b.height
    assert b["score"].is_nan().all()
    assert (out.filter(pl.col("judge") == "fact")["leaked"] == False).sum() > 0  # noqa: E712
    assert "RuntimeError" in caplog.text and "endpoint down" in caplog.text
    assert "SECRETSECRET" not in caplog.text


def test_partially_failing_judge_only_nulls_its_batch(boom):
    samples, data = _frames()
    out = judge_samples(samples, data, {"_boom_test": {"fail_on": "I do not know."}},
                        progress=False)
    lk = out["leaked"]
    assert lk.null_count() > 0 and (lk == True).sum() > 0  # noqa: E712
    assert (lk == False).sum() == 0  # noqa: E712
    # every row whose completion triggered the failure is null
    bad = out.join(samples, on=["qid", "sample_idx"]).filter(pl.col("text") == "I do not know.")
    assert bad["leaked"].null_count() == bad.height


def test_judge_returning_garbage_is_failure():
    class Garbage(Judge):
        def score_batch(self, completions, references, facts):  # the pre-question interface
            return np.zeros(len(completions) - 1), [False] * (len(completions) - 1)

    samples, data = _frames()
    out = judge_samples(samples, data, {"g": Garbage()}, progress=False)
    assert out["leaked"].null_count() == out.height


def test_null_text_is_failure_and_errors():
    samples, data = _frames()
    samples = samples.with_columns(
        pl.when(pl.col("sample_idx") == 0).then(None).otherwise(pl.col("text")).alias("text"))
    out = judge_samples(samples, data, {"rougeL": {}}, progress=False)
    assert out.filter(pl.col("sample_idx") == 0)["leaked"].null_count() == 12
    assert out.filter(pl.col("sample_idx") != 0)["leaked"].null_count() == 0
    with pytest.raises(ParamsError):
        judge_samples(samples, data, {"nope": {}}, progress=False)
    with pytest.raises(ParamsError):
        judge_samples(samples, data, {}, progress=False)
    with pytest.raises(ArtifactError):
        judge_samples(samples, data.filter(pl.col("qid") != 3), {"rougeL": {}}, progress=False)
    with pytest.raises(ArtifactError):
        judge_samples(samples.drop("text"), data, {"rougeL": {}}, progress=False)


def test_empty_samples():
    samples, data = _frames()
    out = judge_samples(samples.head(0), data, {"rougeL": {}, "fact": {}}, progress=False)
    assert out.height == 0
    assert out.schema["score"] == pl.Float64 and out.schema["leaked"] == pl.Boolean


def test_judges_get_the_question():
    seen = []

    class Spy(Judge):
        def score_batch(self, completions, references, facts, questions=None):
            seen.extend(zip(completions, questions))
            return np.zeros(len(completions)), np.array([False] * len(completions), dtype=object)

    samples, data = _frames()
    data = data.with_columns(question=pl.format("question {}?", pl.col("qid")))
    judge_samples(samples.head(40), data, {"spy": Spy()}, progress=False)
    assert seen and all(q == f"question {qid}?" for (_, q), qid in
                        zip(seen, samples.head(40).unique(["qid", "text"], maintain_order=True)["qid"]))


def test_max_missing(boom):
    from leakk.judges.run import JudgeFailedError, check_missing, judge_spec

    samples, data = _frames()
    out = judge_samples(samples, data, {"_boom_test": {"fail_on": "I do not know."}}, progress=False)
    frac = out["leaked"].null_count() / out.height
    assert 0 < frac < 1
    check_missing(out, "x", frac)
    with pytest.raises(JudgeFailedError, match="max_missing") as exc:
        check_missing(out, "x", frac - 1e-9)
    assert "\n" not in str(exc.value)
    assert judge_spec("r", {"type": "rougeL", "threshold": 0.2, "max_missing": 0.3}) == ("rougeL", {"threshold": 0.2}, 0.3)
    assert judge_spec("fact", None) == ("fact", {}, 0.05)
    # a bad max_missing is refused once, when params are loaded (judge_spec trusts them)
    from conftest import MICRO
    from leakk.config import validate_params

    for bad in (-0.1, 1.5, "x", True, float("nan")):
        with pytest.raises(ParamsError, match=r"judge\.r\.max_missing"):
            validate_params(dict(MICRO, judge={**MICRO["judge"], "r": {"type": "rougeL", "max_missing": bad}}))
    # the stage keys never reach the constructor
    assert judge_samples(samples, data, {"rougeL": {"max_missing": 0.0}}, progress=False).height == samples.height
