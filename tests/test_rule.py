"""RULE: leaked-pair selection, early stop, and the forget set holding only judged leaks."""

from __future__ import annotations

import polars as pl
import pytest

from conftest import MICRO, register_rule_judge
from leakk.config import validate_params
from leakk.data.synthetic import generate
from leakk.models.finetune import finetune
from leakk.unlearn.rule import LEAKED_SCHEMA, run_round, select_leaked

QUESTIONS = pl.DataFrame({"qid": ["a", "a", "b"], "phrasing": [0, 1, 0], "prompt_question": ["Qa?", "Qa'?", "Qb?"]})


def test_select_leaked_only_true_and_deduplicated():
    judged = pl.DataFrame({
        "qid": ["a", "a", "a", "a", "b", "b", "b"],
        "sample_idx": [0, 1, 2, 3, 0, 1, 2],
        "phrasing": [0, 0, 0, 1, 0, 0, 0],
        "text": ["x", "x", "y", "u", "z", "w", "v"],
        "leaked": [True, True, False, True, None, True, True],
    })
    known = pl.DataFrame({"qid": ["b"], "question": ["Qb?"], "completion": ["v"], "round": [1]}, schema=LEAKED_SCHEMA)
    new = select_leaked(judged, QUESTIONS, known, round_idx=2)
    # each pair keeps the phrasing its completion was sampled from
    assert new.select("qid", "question", "completion").rows() == [("a", "Qa'?", "u"), ("a", "Qa?", "x"), ("b", "Qb?", "w")]
    assert new["round"].to_list() == [2, 2, 2]


register_rule_judge("never_leaks", lambda text: False)
register_rule_judge("leaks_if_long", lambda text: len(text.split()) >= 4)  # some leak, some do not


@pytest.fixture(scope="module")
def base(micro_full):
    return micro_full


def _params(judge):
    p = dict(MICRO, judge={"fact": {}, judge: {}})
    p["rule"] = {"rule_npo": dict(MICRO["rule"]["rule_npo"], judge=judge)}
    return validate_params(p)


def test_round_without_leaks_stops_early(base, tmp_path):
    root, data = base
    p = _params("never_leaks")
    run_round(data, p, name="rule_npo", round_idx=1, prev_dir=root / "model", out_dir=tmp_path / "r1",
              reference_dir=root / "model")
    log = pl.read_parquet(tmp_path / "r1/round.parquet")
    assert log["stopped"][0] and not log["trained"][0] and log["new_leaked"][0] == 0
    assert (tmp_path / "r1/model/model.safetensors").read_bytes() == (root / "model/model.safetensors").read_bytes()
    run_round(data, p, name="rule_npo", round_idx=2, prev_dir=tmp_path / "r1", out_dir=tmp_path / "r2")
    assert pl.read_parquet(tmp_path / "r2/round.parquet")["stopped"][0]


def test_forget_set_holds_only_judged_leaks(base, tmp_path):
    root, data = base
    p = _params("leaks_if_long")
    run_round(data, p, name="rule_npo", round_idx=1, prev_dir=root / "model", out_dir=tmp_path / "r1",
              reference_dir=root / "model")
    leaked = pl.read_parquet(tmp_path / "r1/leaked.parquet")
    log = pl.read_parquet(tmp_path / "r1/round.parquet")
    assert leaked.height == log["new_leaked"][0] > 0
    assert all(len(c.split()) >= 4 for c in leaked["completion"])
    assert log["trained"][0] and not log["stopped"][0]
    assert log["train_seed"][0] != p["sample"]["seed"]
    # RULE sampled the training phrasings only, never the held-out evaluation phrasing
    forget = data.filter(pl.col("split") == "forget")
    trained_on = {q for qs in forget["train_questions"] for q in qs}
    assert set(leaked["question"]) <= trained_on
    assert not set(leaked["question"]) & set(forget["paraphrased_question"])
    n_pairs = sum(len(q) for q in data.filter(pl.col("split") == "forget")["train_questions"])
    assert log["forget_size"][0] == n_pairs + leaked.height
    assert (tmp_path / "r1/model/model.safetensors").read_bytes() != (root / "model/model.safetensors").read_bytes()
